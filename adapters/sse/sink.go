package sse

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"
)

// sink is where a stream's bytes go: the HTTP response, or, for HTTP/1.x,
// the connection taken over from net/http.
type sink interface {
	// write sends p to the client at once, failing if that takes longer
	// than the write timeout.
	write(p []byte) error
	// gone reports a client known to have left without the stream having
	// written since (checked at heartbeats).
	gone() bool
	// close ends the response. The stream writes nothing after it.
	close()
}

// setStreamHeaders sets the headers of every stream response.
func setStreamHeaders(h http.Header) {
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("X-Accel-Buffering", "no") // nginx and friends: do not buffer
}

// openSink starts the 200 response of a stream. Over HTTP/1.x it takes the
// connection over from net/http, so that an open stream holds only its
// socket and its own goroutine rather than net/http's per-connection
// buffers and goroutines (about 20 KiB); over HTTP/2, or where the
// connection cannot be taken, it writes through the ResponseWriter.
func openSink(w http.ResponseWriter, r *http.Request, timeout time.Duration) (s sink, detached bool, err error) {
	setStreamHeaders(w.Header())
	if r.ProtoMajor == 1 {
		conn, buffered, err := http.NewResponseController(w).Hijack()
		switch {
		case err == nil:
			// Nothing more is read from the client; anything it
			// pipelined after the request is ignored.
			_ = buffered
			hs := &connSink{conn: conn, chunked: r.ProtoAtLeast(1, 1), timeout: timeout}
			if err := hs.start(w.Header(), r.ProtoMinor); err != nil {
				conn.Close()
				return nil, false, err
			}
			return hs, true, nil
		case !errors.Is(err, http.ErrNotSupported):
			return nil, false, err
		}
	}
	w.WriteHeader(http.StatusOK)
	return &responseSink{w: w, rc: http.NewResponseController(w), timeout: timeout}, false, nil
}

// responseSink writes through an http.ResponseWriter, flushing each write.
type responseSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (s *responseSink) write(p []byte) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	if _, err := s.w.Write(p); err != nil {
		return err
	}
	return s.rc.Flush()
}

// gone is false: net/http cancels the request's context when the client
// leaves.
func (s *responseSink) gone() bool { return false }

func (s *responseSink) close() {}

// connSink writes the response on a connection taken over from net/http:
// chunked for HTTP/1.1, delimited by the connection's end for HTTP/1.0.
type connSink struct {
	conn    net.Conn
	chunked bool
	timeout time.Duration
	prefix  []byte
}

var crlf = []byte("\r\n")

// start writes the status line and headers.
func (s *connSink) start(h http.Header, protoMinor int) error {
	var b bytes.Buffer
	b.WriteString("HTTP/1." + strconv.Itoa(min(protoMinor, 1)) + " 200 OK\r\n")
	if err := h.Write(&b); err != nil {
		return err
	}
	if s.chunked {
		b.WriteString("Transfer-Encoding: chunked\r\n")
	}
	// The connection ends with the stream.
	b.WriteString("Connection: close\r\n\r\n")
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
	_, err := s.conn.Write(b.Bytes())
	return err
}

func (s *connSink) write(p []byte) error {
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
	if !s.chunked {
		_, err := s.conn.Write(p)
		return err
	}
	s.prefix = append(strconv.AppendInt(s.prefix[:0], int64(len(p)), 16), '\r', '\n')
	bufs := net.Buffers{s.prefix, p, crlf}
	_, err := bufs.WriteTo(s.conn)
	return err
}

func (s *connSink) gone() bool { return peerClosed(s.conn) }

// close ends the response properly (the last chunk) when the client is
// still there, then closes the connection.
func (s *connSink) close() {
	if s.chunked {
		_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = s.conn.Write([]byte("0\r\n\r\n"))
	}
	_ = s.conn.Close()
}
