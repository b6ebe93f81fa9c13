package client

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Message is a channel message as subscribers and history see it.
type Message struct {
	// ID identifies the message; publishing the same ID again within the
	// server's dedup window is acknowledged and not delivered twice. The
	// SDK generates one when it is empty.
	ID   string
	Name string // event name
	// Data is the payload. Encoding says how the publisher described it:
	// "json" for a JSON value (Data holds the JSON text), "" or a
	// text encoding for text, and base64 transport is undone here.
	Data         []byte
	Encoding     string
	ContentType  string
	ClientID     string
	ConnectionID string
	Timestamp    time.Time
	Extras       map[string]string
	// Channel and Serial are set by the server. Serial is the channel
	// serial to resume after this message.
	Channel string
	Serial  string
}

// String returns Data as text.
func (m *Message) String() string { return string(m.Data) }

// DecodeJSON unmarshals Data into v.
func (m *Message) DecodeJSON(v any) error { return json.Unmarshal(m.Data, v) }

// wireMessage is the JSON form of a message on the wire.
type wireMessage struct {
	ID           string            `json:"id,omitempty"`
	Name         string            `json:"name,omitempty"`
	Data         json.RawMessage   `json:"data,omitempty"`
	Encoding     string            `json:"encoding,omitempty"`
	ContentType  string            `json:"contentType,omitempty"`
	ClientID     string            `json:"clientId,omitempty"`
	ConnectionID string            `json:"connectionId,omitempty"`
	Timestamp    int64             `json:"timestamp,omitempty"`
	Extras       map[string]string `json:"extras,omitempty"`
	Channel      string            `json:"channel,omitempty"`
	Serial       string            `json:"serial,omitempty"`
}

// toWire renders m for publishing: text as a string, a JSON value as
// itself (Encoding "json"), anything else as base64.
func (m *Message) toWire() (wireMessage, error) {
	w := wireMessage{ID: m.ID, Name: m.Name, ContentType: m.ContentType, Extras: m.Extras, Encoding: m.Encoding}
	switch {
	case len(m.Data) == 0:
	case m.Encoding == "json":
		if !json.Valid(m.Data) {
			return w, fmt.Errorf("message %q: encoding json but Data is not valid JSON", m.ID)
		}
		w.Data = json.RawMessage(m.Data)
	case utf8.Valid(m.Data):
		w.Data, _ = json.Marshal(string(m.Data))
	default:
		w.Data, _ = json.Marshal(base64.StdEncoding.EncodeToString(m.Data))
		if w.Encoding == "" {
			w.Encoding = "base64"
		} else {
			w.Encoding += "/base64"
		}
	}
	return w, nil
}

// fromWire decodes a message the server sent.
func fromWire(w wireMessage) (*Message, error) {
	m := &Message{
		ID: w.ID, Name: w.Name, ContentType: w.ContentType, ClientID: w.ClientID,
		ConnectionID: w.ConnectionID, Extras: w.Extras, Channel: w.Channel, Serial: w.Serial,
		Encoding: w.Encoding,
	}
	if w.Timestamp != 0 {
		m.Timestamp = time.UnixMilli(w.Timestamp)
	}
	if len(w.Data) == 0 {
		return m, nil
	}
	switch {
	case w.Encoding == "json" && len(w.Data) > 0 && w.Data[0] != '"':
		m.Data = []byte(w.Data)
	case w.Encoding == "base64" || strings.HasSuffix(w.Encoding, "/base64"):
		var s string
		if err := json.Unmarshal(w.Data, &s); err != nil {
			return nil, fmt.Errorf("message %q: base64 data is not a string: %w", w.ID, err)
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("message %q: bad base64 data: %w", w.ID, err)
		}
		m.Data = b
		m.Encoding = strings.TrimSuffix(strings.TrimSuffix(w.Encoding, "base64"), "/")
	default:
		var s string
		if err := json.Unmarshal(w.Data, &s); err != nil {
			return nil, fmt.Errorf("message %q: data is neither a string nor declared JSON: %w", w.ID, err)
		}
		m.Data = []byte(s)
	}
	return m, nil
}

// PublishResult is what the server acknowledged for one published message.
type PublishResult struct {
	ID        string
	Serial    string
	Timestamp time.Time
	// Duplicate is set when the ID had been accepted before: the message
	// was not delivered again.
	Duplicate bool
}

// PresenceMember is a member of a channel's presence set, or a presence
// event.
type PresenceMember struct {
	Action       string `json:"action"` // enter, update, leave, present
	Channel      string `json:"channel,omitempty"`
	ClientID     string `json:"clientId"`
	ConnectionID string `json:"connectionId"`
	Data         string `json:"data,omitempty"`
	Encoding     string `json:"encoding,omitempty"`
	Timestamp    int64  `json:"timestamp"`
}
