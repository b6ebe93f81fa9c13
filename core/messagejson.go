package core

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/internal/jsonw"
	"github.com/switchboardhq/switchboard/internal/strictjson"
)

// MessageJSON is the public JSON form of a message (DESIGN "Message JSON").
// Data is a string, binary data is base64 with "encoding":"base64", and data
// published as a JSON value is returned as that value with "encoding":"json".
type MessageJSON struct {
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

// MarshalJSON renders m in its public JSON form.
func (m *Message) MarshalJSON() ([]byte, error) {
	return m.JSON(), nil
}

// JSON returns m in its public JSON form. An accepted message (one with a
// Position) is rendered once and the result shared by every caller, so it
// must not be modified.
func (m *Message) JSON() []byte {
	if b := m.encoded.Load(); b != nil {
		return *b
	}
	b := m.renderJSON()
	if m.Position != "" {
		m.encoded.Store(&b)
	}
	return b
}

// renderJSON renders the fields of MessageJSON, in its order and with its
// omitempty rules, without reflection: it runs once per accepted message,
// often on a subscriber's goroutine, and stays cheap and shallow.
func (m *Message) renderJSON() []byte {
	b := make([]byte, 0, 160+len(m.Data)+len(m.Data)/3)
	b = append(b, '{')
	b = appendStringField(b, "id", m.ID)
	b = appendStringField(b, "name", m.Name)
	var enc string
	if len(m.Data) > 0 || m.Encoding != "" {
		b = appendFieldName(b, "data")
		b, enc = appendData(b, m.Data, m.Encoding)
	}
	b = appendStringField(b, "encoding", enc)
	b = appendStringField(b, "contentType", m.ContentType)
	b = appendStringField(b, "clientId", m.ClientID)
	b = appendStringField(b, "connectionId", m.ConnectionID)
	if m.Timestamp != 0 {
		b = appendFieldName(b, "timestamp")
		b = strconv.AppendInt(b, m.Timestamp, 10)
	}
	if len(m.Extras) > 0 {
		b = appendFieldName(b, "extras")
		keys := make([]string, 0, len(m.Extras))
		for k := range m.Extras {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonw.String(b, k)
			b = append(b, ':')
			b = jsonw.String(b, m.Extras[k])
		}
		b = append(b, '}')
	}
	b = appendStringField(b, "channel", m.Channel)
	b = appendStringField(b, "serial", m.Position)
	return append(b, '}')
}

func appendFieldName(b []byte, name string) []byte {
	if len(b) > 1 {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

func appendStringField(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	return jsonw.String(appendFieldName(b, name), v)
}

// appendData appends a message's data and returns the encoding to report:
// data published as JSON stays a JSON value, UTF-8 text is a string, and
// anything else is base64 with "/base64" added to the encoding.
func appendData(b, data []byte, enc string) ([]byte, string) {
	if enc == "json" && json.Valid(data) {
		// Compact, with <, >, & and U+2028/9 escaped, as encoding/json
		// renders a raw value.
		var compact bytes.Buffer
		if err := json.Compact(&compact, data); err == nil {
			out := bytes.NewBuffer(b)
			json.HTMLEscape(out, compact.Bytes())
			return out.Bytes(), enc
		}
	}
	if utf8.Valid(data) {
		return jsonw.String(b, data), enc
	}
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, data)
	b = append(b, '"')
	if enc == "" {
		return b, "base64"
	}
	return b, enc + "/base64"
}

// inboundMessage is what clients may send. Fields the engine assigns
// (timestamp, serial, connectionId, channel) are accepted and ignored so that
// a received message can be republished as is.
type inboundMessage struct {
	ID           *string           `json:"id"`
	Name         *string           `json:"name"`
	Data         json.RawMessage   `json:"data"`
	Encoding     *string           `json:"encoding"`
	ContentType  *string           `json:"contentType"`
	ClientID     *string           `json:"clientId"`
	Extras       map[string]string `json:"extras"`
	ConnectionID json.RawMessage   `json:"connectionId"`
	Timestamp    json.RawMessage   `json:"timestamp"`
	Serial       json.RawMessage   `json:"serial"`
	Channel      json.RawMessage   `json:"channel"`
}

// MaxBatchMessages bounds how many messages one publish request may carry.
const MaxBatchMessages = 1000

// DecodeMessagesJSON decodes one message object or an array of them, as
// accepted by the REST and native publish endpoints. Unknown fields, fields
// of the wrong type and bad base64 are InvalidJSON errors naming the field.
func DecodeMessagesJSON(body []byte) ([]*Message, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, apierr.New(apierr.InvalidJSON, "request body is empty; expected a message object or an array of messages")
	}
	var raws []json.RawMessage
	if body[0] == '[' {
		if err := strictjson.Unmarshal(body, &raws); err != nil {
			return nil, err
		}
		if len(raws) == 0 {
			return nil, apierr.New(apierr.InvalidJSON, "message array is empty")
		}
		if len(raws) > MaxBatchMessages {
			return nil, apierr.New(apierr.InvalidJSON, "%d messages in one request; the maximum is %d", len(raws), MaxBatchMessages)
		}
	} else {
		raws = []json.RawMessage{body}
	}
	out := make([]*Message, 0, len(raws))
	for i, raw := range raws {
		m, err := decodeMessageJSON(raw)
		if err != nil {
			if len(raws) > 1 {
				e := apierr.From(err)
				return nil, apierr.Wrap(e.Err, e.Code, "message %d: %s", i, e.Message)
			}
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func decodeMessageJSON(raw []byte) (*Message, error) {
	var in inboundMessage
	if err := strictjson.Unmarshal(raw, &in); err != nil {
		return nil, err
	}
	m := &Message{Extras: in.Extras}
	deref := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	m.ID, m.Name, m.ContentType, m.ClientID = deref(in.ID), deref(in.Name), deref(in.ContentType), deref(in.ClientID)
	enc := deref(in.Encoding)
	data, enc, err := decodeData(in.Data, enc)
	if err != nil {
		return nil, err
	}
	m.Data, m.Encoding = data, enc
	return m, nil
}

func decodeData(raw json.RawMessage, enc string) ([]byte, string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, enc, nil
	}
	if raw[0] != '"' {
		// A JSON value other than a string is kept as JSON text.
		if enc != "" && enc != "json" {
			return nil, "", apierr.New(apierr.InvalidJSON, "field \"data\": a JSON value cannot have encoding %q", enc)
		}
		return append([]byte(nil), raw...), "json", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, "", apierr.Wrap(err, apierr.InvalidJSON, "field \"data\" is not a valid JSON string")
	}
	switch {
	case enc == "base64":
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, "", apierr.New(apierr.InvalidJSON, "field \"data\" is not valid base64")
		}
		return b, "", nil
	case len(enc) > len("/base64") && enc[len(enc)-len("/base64"):] == "/base64":
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, "", apierr.New(apierr.InvalidJSON, "field \"data\" is not valid base64")
		}
		return b, enc[:len(enc)-len("/base64")], nil
	}
	return []byte(s), enc, nil
}

// formatSize renders a byte count for error messages.
func formatSize(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d bytes", n)
}
