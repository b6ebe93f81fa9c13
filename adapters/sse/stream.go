package sse

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/position"
	"github.com/switchboardhq/switchboard/internal/httperr"
	"github.com/switchboardhq/switchboard/internal/jsonw"
)

// takeBatch is how many events are written per flush at most.
const takeBatch = 256

// stream is one open SSE response. Its state is owned by the goroutine
// running run.
type stream struct {
	h     *Handler
	sink  sink
	req   *request
	codec *tokenCodec
	conn  *core.Conn
	// endReason says why the stream ended once errStreamEnd is returned.
	endReason string

	// positions[i] is the stream's position on channel i: what the last
	// event id told the client. Zero while the channel has not started.
	positions []position.Position
	// delivered[i] is set once a message of channel i was written, after
	// which the messages' own serials are authoritative.
	delivered []bool
	resumed   []bool
	attached  int

	out     []byte
	scratch []byte // renders control events' data
	events  []core.Event
}

// Stream event names.
const (
	eventMessage    = "message"
	eventPresence   = "presence"
	eventContinuity = "continuity"
	eventAttached   = "attached"
	eventError      = "error"
)

// run writes the stream until the client leaves, the server drains, the
// token expires or an error ends it. It returns why it ended.
func (s *stream) run(ctx context.Context, expiresAt time.Time) string {
	ctx, cancel := context.WithCancel(ctx)
	results := make(chan attachResult, len(s.req.specs))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.attachAll(ctx, results)
	}()
	defer wg.Wait()
	defer cancel()

	s.delivered = make([]bool, len(s.positions))
	s.resumed = make([]bool, len(s.positions))
	s.out = appendRetry(s.out, s.h.opts.Retry)
	if err := s.flush(); err != nil {
		return "write-failed"
	}

	heartbeat := time.NewTicker(s.h.opts.Heartbeat)
	defer heartbeat.Stop()
	var expiry <-chan time.Time
	if !expiresAt.IsZero() {
		t := time.NewTimer(time.Until(expiresAt))
		defer t.Stop()
		expiry = t.C
	}
	for {
		var err error
		select {
		case <-ctx.Done():
			return ctxCause(ctx)
		case <-s.h.draining:
			s.out = appendRetry(s.out, s.h.drainRetry())
			_ = s.flush()
			return "draining"
		case <-expiry:
			s.appendError(apierr.New(apierr.TokenExpired, "the token expired; open a new stream with a new token and lastEvent set to the last event id"))
			_ = s.flush()
			return "token-expired"
		case <-s.conn.Ready():
			err = s.drain()
		case res := <-results:
			err = s.attachDone(res)
		case <-heartbeat.C:
			if s.sink.gone() {
				return "client-closed"
			}
			s.out = append(s.out, ": heartbeat\n\n"...)
			s.h.metrics.events.WithLabelValues("heartbeat").Inc()
			err = s.flush()
		}
		switch {
		case errors.Is(err, errStreamEnd):
			return s.endReason
		case err != nil:
			return "write-failed"
		}
	}
}

// drain writes every queued event, flushing after each batch.
func (s *stream) drain() error {
	for {
		s.events = s.conn.Take(s.events[:0], takeBatch)
		if len(s.events) == 0 {
			if cap(s.events) > 16 {
				s.events = nil // an idle stream keeps no burst-sized batch
			}
			return nil
		}
		var end error
		for i := range s.events {
			if err := s.appendEvent(&s.events[i]); err != nil {
				end = err
				break
			}
		}
		clear(s.events) // drop references to delivered messages
		if err := s.flush(); err != nil {
			return err
		}
		if end != nil {
			return end
		}
	}
}

// appendEvent renders one engine event.
func (s *stream) appendEvent(ev *core.Event) error {
	switch ev.Kind {
	case core.EventMessage:
		m := ev.Message
		i, ok := s.req.index[m.Channel]
		if !ok {
			return nil
		}
		s.positions[i] = s.positions[i].With(m.Serial)
		s.delivered[i] = true
		s.out = appendEvent(s.out, eventMessage, s.codec.encode(s.positions), s.messageData(m))
		s.h.metrics.events.WithLabelValues(eventMessage).Inc()
	case core.EventPresence:
		data, err := json.Marshal(ev.Presence)
		if err != nil {
			return err
		}
		s.out = appendEvent(s.out, eventPresence, "", data)
		s.h.metrics.events.WithLabelValues(eventPresence).Inc()
	case core.EventContinuity:
		c := ev.Continuity
		s.appendContinuity("", continuityEntry{Channel: c.Channel, Reason: string(c.Reason), Serial: c.Position})
		if c.Reason == core.ReasonSlowConsumer {
			// The engine stopped the channel for this connection. The
			// stream ends; the client reconnects with its last event id
			// and resumes exactly where it stopped.
			s.endReason = string(c.Reason)
			return errStreamEnd
		}
		// Otherwise (history trimmed during a replay) the channel goes
		// on; the next message's id moves the stream past the gap.
	}
	return nil
}

// messageData is the data of a message event: the message JSON, or its
// raw data when the stream is not enveloped (base64 when not UTF-8).
func (s *stream) messageData(m *core.Message) []byte {
	if s.req.enveloped {
		return m.JSON() // rendered once per message, shared by every stream
	}
	if utf8.Valid(m.Data) {
		return m.Data
	}
	return base64.StdEncoding.AppendEncode(nil, m.Data)
}

// attachDone applies the result of one channel's attach.
func (s *stream) attachDone(res attachResult) error {
	// Everything the attach queued (its replay) comes first, so that the
	// stream's position never runs ahead of what it has written.
	if err := s.drain(); err != nil {
		return err
	}
	switch {
	case res.err == nil:
	case errors.Is(res.err, context.Canceled) || errors.Is(res.err, context.DeadlineExceeded):
		s.endReason = "client-closed"
		return errStreamEnd
	case errors.Is(res.err, core.ErrClosed):
		// The engine is shutting down: come back shortly.
		s.out = appendRetry(s.out, s.h.drainRetry())
		_ = s.flush()
		s.endReason = "draining"
		return errStreamEnd
	default:
		s.appendError(res.err)
		_ = s.flush()
		s.endReason = "attach-failed"
		if apierr.CodeOf(res.err).Status() >= 500 {
			s.h.log.Error("sse attach failed", "connectionId", s.conn.ID(), "err", res.err)
		}
		return errStreamEnd
	}
	a, i := res.att, res.index
	s.resumed[i] = a.Resumed
	if !s.delivered[i] {
		p, err := position.Parse(a.Position)
		if err != nil {
			return err
		}
		s.positions[i] = p
	}
	if c := a.Continuity; c != nil {
		s.appendContinuity(s.codec.encode(s.positions), continuityEntry{Channel: c.Channel, Reason: string(c.Reason), Serial: c.Position})
	}
	s.attached++
	if s.attached == len(s.positions) {
		s.appendAttached()
	}
	return s.flush()
}

// continuityEntry is one channel of a continuity event.
type continuityEntry struct {
	Channel string `json:"channel"`
	Reason  string `json:"reason"`
	Serial  string `json:"serial,omitempty"`
}

// Control events are rendered without reflection: encoding/json's deep
// stack would grow every stream goroutine's stack for good.

func (s *stream) appendContinuity(id string, c continuityEntry) {
	d := append(s.scratch[:0], `{"channels":[{"channel":`...)
	d = jsonw.String(d, c.Channel)
	d = append(d, `,"reason":`...)
	d = jsonw.String(d, c.Reason)
	if c.Serial != "" {
		d = append(d, `,"serial":`...)
		d = jsonw.String(d, c.Serial)
	}
	d = append(d, "}]}"...)
	s.out = appendEvent(s.out, eventContinuity, id, d)
	s.scratch = d
	s.h.metrics.events.WithLabelValues(eventContinuity).Inc()
}

// attachedEntry is one channel of an attached event.
type attachedEntry struct {
	Channel string `json:"channel"`
	Serial  string `json:"serial"`
	Resumed bool   `json:"resumed"`
}

// appendAttached tells the client every channel is live, with an id that
// holds every channel's position: a reconnect before the first message
// still resumes without a gap.
func (s *stream) appendAttached() {
	d := append(s.scratch[:0], `{"connectionId":`...)
	d = jsonw.String(d, s.conn.ID())
	d = append(d, `,"channels":[`...)
	for i, name := range s.req.names {
		if i > 0 {
			d = append(d, ',')
		}
		d = append(d, `{"channel":`...)
		d = jsonw.String(d, name)
		d = append(d, `,"serial":`...)
		d = jsonw.String(d, s.positions[i].String())
		d = append(d, `,"resumed":`...)
		d = strconv.AppendBool(d, s.resumed[i])
		d = append(d, '}')
	}
	d = append(d, "]}"...)
	s.out = appendEvent(s.out, eventAttached, s.codec.encode(s.positions), d)
	s.scratch = d
	s.h.metrics.events.WithLabelValues(eventAttached).Inc()
}

func (s *stream) appendError(err error) {
	_, body := httperr.Render(err)
	s.out = appendEvent(s.out, eventError, "", body)
	s.h.metrics.events.WithLabelValues(eventError).Inc()
}

// flush writes the pending output to the client; the sink bounds how long
// a client that does not read can hold the stream.
func (s *stream) flush() error {
	if len(s.out) == 0 {
		return nil
	}
	err := s.sink.write(s.out)
	s.out = s.out[:0]
	if cap(s.out) > 64<<10 {
		s.out = nil // do not keep a large burst's buffer on an idle stream
	}
	return err
}

// appendEvent renders one event. Every line of data becomes a data field,
// so line breaks (CR, LF or CRLF) arrive as LF.
func appendEvent(b []byte, event, id string, data []byte) []byte {
	b = append(b, "event: "...)
	b = append(b, event...)
	b = append(b, '\n')
	if id != "" {
		b = append(b, "id: "...)
		b = append(b, id...)
		b = append(b, '\n')
	}
	for {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			break
		}
		b = append(b, "data: "...)
		b = append(b, data[:i]...)
		b = append(b, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	b = append(b, "data: "...)
	b = append(b, data...)
	return append(b, '\n', '\n')
}

func appendRetry(b []byte, d time.Duration) []byte {
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, d.Milliseconds(), 10)
	return append(b, '\n', '\n')
}
