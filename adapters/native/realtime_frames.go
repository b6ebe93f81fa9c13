package native

import (
	"encoding/json"
	"strconv"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/internal/httperr"
	"github.com/switchboardhq/switchboard/internal/jsonw"
	"github.com/switchboardhq/switchboard/internal/strictjson"
)

// Actions of the realtime protocol (docs/protocol.md).
const (
	actionConnected  = "connected"
	actionHeartbeat  = "heartbeat"
	actionAttach     = "attach"
	actionAttached   = "attached"
	actionDetach     = "detach"
	actionDetached   = "detached"
	actionMessage    = "message"
	actionAck        = "ack"
	actionNack       = "nack"
	actionPresence   = "presence"
	actionSync       = "sync"
	actionAuth       = "auth"
	actionAuthorized = "authorized"
	actionContinuity = "continuity"
	actionError      = "error"
	actionClose      = "close"
	actionClosed     = "closed"
	actionDisconnect = "disconnect"
)

// clientFrame is every frame a client may send. Which fields apply depends
// on the action; decoding rejects unknown fields.
type clientFrame struct {
	Action string `json:"action"`
	// attach, detach, message, presence, sync
	Channel string `json:"channel,omitempty"`
	// attach: resume after this channel serial; rewind (count or
	// duration) for a first attach; presence events wanted.
	ChannelSerial string          `json:"channelSerial,omitempty"`
	Rewind        string          `json:"rewind,omitempty"`
	Presence      json.RawMessage `json:"presence,omitempty"`
	// message, presence: the client's serial for the ack.
	MsgSerial *int64 `json:"msgSerial,omitempty"`
	// message: one message object or an array.
	Messages json.RawMessage `json:"messages,omitempty"`
	// sync: page cursor and size.
	Cursor string `json:"cursor,omitempty"`
	Limit  int    `json:"limit,omitempty"`
	// auth: the renewed token.
	AccessToken string `json:"accessToken,omitempty"`
}

// presenceRequest is the presence field of a client presence frame.
type presenceRequest struct {
	Action   core.PresenceAction `json:"action"`
	Data     string              `json:"data,omitempty"`
	Encoding string              `json:"encoding,omitempty"`
}

// decodeClientFrame decodes one frame strictly.
func decodeClientFrame(b []byte) (*clientFrame, error) {
	var f clientFrame
	if err := strictjson.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	if f.Action == "" {
		return nil, apierr.New(apierr.InvalidJSON, "frame has no action")
	}
	return &f, nil
}

// attachPresence reads an attach frame's presence flag.
func (f *clientFrame) attachPresence() (bool, error) {
	if len(f.Presence) == 0 {
		return false, nil
	}
	var v bool
	if err := json.Unmarshal(f.Presence, &v); err != nil {
		return false, apierr.New(apierr.InvalidJSON, "field \"presence\" of attach must be true or false")
	}
	return v, nil
}

// presenceRequest reads a presence frame's presence object.
func (f *clientFrame) presenceRequest() (presenceRequest, error) {
	var p presenceRequest
	if len(f.Presence) == 0 {
		return p, apierr.New(apierr.InvalidJSON, "presence frame needs a presence object")
	}
	if err := strictjson.Unmarshal(f.Presence, &p); err != nil {
		return p, err
	}
	switch p.Action {
	case core.ActionEnter, core.ActionUpdate, core.ActionLeave:
		return p, nil
	}
	return p, apierr.New(apierr.InvalidParameter, "presence action must be enter, update or leave, not %s", strconv.Quote(restTruncate(string(p.Action))))
}

// Server frames are rendered from these.

type errorBody = httperr.Detail

func errorDetail(err error) *errorBody {
	_, body := httperr.Render(err)
	var b httperr.Body
	_ = json.Unmarshal(body, &b)
	return &b.Error
}

type connectionDetails struct {
	ConnectionStateTTL int64 `json:"connectionStateTtl"`
	MaxMessageSize     int   `json:"maxMessageSize"`
	MaxFrameSize       int64 `json:"maxFrameSize"`
	HeartbeatInterval  int64 `json:"heartbeatInterval"`
}

type connectedFrame struct {
	Action            string            `json:"action"`
	ConnectionID      string            `json:"connectionId"`
	ConnectionKey     string            `json:"connectionKey"`
	ClientID          string            `json:"clientId,omitempty"`
	Resumed           bool              `json:"resumed"`
	ConnectionDetails connectionDetails `json:"connectionDetails"`
	Error             *errorBody        `json:"error,omitempty"`
}

type attachedFrame struct {
	Action        string          `json:"action"`
	Channel       string          `json:"channel"`
	ChannelSerial string          `json:"channelSerial"`
	Resumed       bool            `json:"resumed"`
	Continuity    *continuityInfo `json:"continuity,omitempty"`
}

type continuityInfo struct {
	Reason        string `json:"reason"`
	ChannelSerial string `json:"channelSerial,omitempty"`
}

type continuityFrame struct {
	Action        string `json:"action"`
	Channel       string `json:"channel"`
	Reason        string `json:"reason"`
	ChannelSerial string `json:"channelSerial,omitempty"`
}

type channelFrame struct {
	Action  string     `json:"action"`
	Channel string     `json:"channel"`
	Error   *errorBody `json:"error,omitempty"`
}

type publishResultJSON struct {
	ID        string `json:"id"`
	Serial    string `json:"serial"`
	Timestamp int64  `json:"timestamp"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

type ackFrame struct {
	Action    string              `json:"action"`
	MsgSerial int64               `json:"msgSerial"`
	Count     int                 `json:"count"`
	Results   []publishResultJSON `json:"results,omitempty"`
	Error     *errorBody          `json:"error,omitempty"`
}

type presenceFrame struct {
	Action   string                 `json:"action"`
	Channel  string                 `json:"channel"`
	Presence []core.PresenceMessage `json:"presence"`
	Cursor   string                 `json:"cursor,omitempty"`
}

type authorizedFrame struct {
	Action  string `json:"action"`
	Expires int64  `json:"expires,omitempty"`
}

type errorFrame struct {
	Action  string     `json:"action"`
	Channel string     `json:"channel,omitempty"`
	Error   *errorBody `json:"error"`
}

type disconnectFrame struct {
	Action  string     `json:"action"`
	Error   *errorBody `json:"error"`
	RetryIn int64      `json:"retryIn"`
}

type simpleFrame struct {
	Action string `json:"action"`
}

// appendMessageFrame renders a message frame for messages of one channel.
func appendMessageFrame(b []byte, channel string, msgs []*core.Message) []byte {
	b = append(b, `{"action":"message","channel":`...)
	b = jsonw.String(b, channel)
	b = append(b, `,"messages":[`...)
	for i, m := range msgs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, m.JSON()...)
	}
	return append(b, "]}"...)
}
