package core

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/position"
)

func TestMessageJSONRoundTrip(t *testing.T) {
	cases := []struct {
		in       string
		data     []byte
		encoding string
	}{
		{`{"data":"hello"}`, []byte("hello"), ""},
		{`{"data":"AAEC/w==","encoding":"base64"}`, []byte{0, 1, 2, 255}, ""},
		{`{"data":{"a":1}}`, []byte(`{"a":1}`), "json"},
		{`{"data":"eyJhIjoxfQ==","encoding":"json/base64"}`, []byte(`{"a":1}`), "json"},
		{`{"name":"x"}`, nil, ""},
	}
	for _, tc := range cases {
		msgs, err := DecodeMessagesJSON([]byte(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		m := msgs[0]
		if !bytes.Equal(m.Data, tc.data) || m.Encoding != tc.encoding {
			t.Fatalf("%s: data %q encoding %q", tc.in, m.Data, m.Encoding)
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeMessagesJSON(out)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
		if !bytes.Equal(back[0].Data, m.Data) {
			t.Fatalf("%s -> %s -> %q", tc.in, out, back[0].Data)
		}
	}
	// Binary data is rendered as base64 with the encoding saying so.
	out, _ := json.Marshal(&Message{Data: []byte{0xff, 0}})
	if !bytes.Contains(out, []byte(`"encoding":"base64"`)) {
		t.Fatalf("binary rendering %s", out)
	}
}

func TestMessageJSONErrors(t *testing.T) {
	for _, in := range []string{
		``, `nope`, `{"data":1`, `{"id":5}`, `{"extras":{"a":1}}`, `{"unknown":true}`,
		`{"data":"!!","encoding":"base64"}`, `[]`, `{"data":"x"} {"data":"y"}`, `{"data":[1],"encoding":"utf-8"}`,
	} {
		if _, err := DecodeMessagesJSON([]byte(in)); apierr.CodeOf(err) != apierr.InvalidJSON {
			t.Errorf("%q: %v, want InvalidJSON", in, err)
		}
	}
	if _, err := DecodeMessagesJSON([]byte(`[{"data":"a"},{"id":1}]`)); err == nil || !bytes.Contains([]byte(err.Error()), []byte("message 1")) {
		t.Errorf("array error must name the message: %v", err)
	}
}

func FuzzDecodeMessagesJSON(f *testing.F) {
	for _, s := range []string{`{"data":"hello"}`, `[{"id":"a","name":"n","data":{"x":[1,2]},"extras":{"k":"v"}}]`,
		`{"data":"AAEC","encoding":"base64"}`, `{"data":null,"timestamp":5,"serial":"x"}`, `[`, `{"id":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := DecodeMessagesJSON(b)
		if err != nil {
			if apierr.CodeOf(err) != apierr.InvalidJSON {
				t.Fatalf("error without the InvalidJSON code: %v", err)
			}
			return
		}
		for _, m := range msgs {
			out, err := json.Marshal(m)
			if err != nil {
				t.Fatalf("accepted message does not render: %v", err)
			}
			back, err := DecodeMessagesJSON(out)
			if err != nil || !bytes.Equal(back[0].Data, m.Data) {
				t.Fatalf("rendering %s does not decode back to the same data: %v", out, err)
			}
		}
	})
}

func TestRecordRoundTrip(t *testing.T) {
	m := &Message{ID: "id", Name: "n", Data: []byte{0, 1}, Encoding: "json", ContentType: "application/json", ClientID: "c",
		ConnectionID: "k", Timestamp: 1700000000000, Extras: map[string]string{"b": "2", "a": "1"},
		Serial: position.Serial{Region: "local", Epoch: 9, Seq: 42}, idFromClient: true}
	got, err := decodeRecord("ch", encodeRecord(nil, m))
	if err != nil {
		t.Fatal(err)
	}
	m.Channel, m.Position = "ch", position.Of(m.Serial).String()
	a, _ := json.Marshal(m)
	b, _ := json.Marshal(got)
	if !bytes.Equal(a, b) || !got.idFromClient {
		t.Fatalf("round trip:\n%s\n%s", a, b)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(nil, &Message{ID: "x", Data: []byte("hello"), Extras: map[string]string{"k": "v"}, Serial: position.Serial{Region: "r", Epoch: 1, Seq: 2}}))
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeRecord("c", b)
		if err != nil {
			return
		}
		again, err := decodeRecord("c", encodeRecord(nil, m))
		if err != nil || again.Position != m.Position || !bytes.Equal(again.Data, m.Data) {
			t.Fatalf("decoded record does not re-encode: %v", err)
		}
	})
}

// An accepted message renders its JSON once for all subscribers; one not
// yet accepted is rendered afresh, since the engine has still to fill it in.
func TestMessageJSONIsSharedOnceAccepted(t *testing.T) {
	m := &Message{Data: []byte("hi")}
	before := string(m.JSON())
	m.Channel, m.Position = "a", position.Of(position.Serial{Region: "r", Epoch: 1, Seq: 1}).String()
	after := m.JSON()
	if string(after) == before || !bytes.Contains(after, []byte(`"serial":"`+m.Position+`"`)) {
		t.Fatalf("JSON of an accepted message %s does not show its position (before: %s)", after, before)
	}
	if again := m.JSON(); &again[0] != &after[0] {
		t.Error("an accepted message's JSON was rendered twice")
	}
	viaMarshal, err := json.Marshal([]*Message{m})
	if err != nil || string(viaMarshal) != "["+string(after)+"]" {
		t.Errorf("json.Marshal = %s, %v; want [%s]", viaMarshal, err, after)
	}
}

// reflectMessageJSON is the public JSON form rendered by encoding/json, the
// reference for the hand-written renderer.
func reflectMessageJSON(m *Message) []byte {
	j := MessageJSON{
		ID: m.ID, Name: m.Name, ContentType: m.ContentType, ClientID: m.ClientID,
		ConnectionID: m.ConnectionID, Timestamp: m.Timestamp, Extras: m.Extras,
		Channel: m.Channel, Serial: m.Position,
	}
	switch {
	case len(m.Data) == 0 && m.Encoding == "":
	case m.Encoding == "json" && json.Valid(m.Data):
		j.Data, j.Encoding = json.RawMessage(m.Data), m.Encoding
	case utf8.Valid(m.Data):
		j.Data, _ = json.Marshal(string(m.Data))
		j.Encoding = m.Encoding
	default:
		j.Data, _ = json.Marshal(base64.StdEncoding.EncodeToString(m.Data))
		j.Encoding = "base64"
		if m.Encoding != "" {
			j.Encoding = m.Encoding + "/base64"
		}
	}
	b, err := json.Marshal(j)
	if err != nil {
		panic(err)
	}
	return b
}

func FuzzMessageJSONMatchesEncodingJSON(f *testing.F) {
	f.Add("id-1", "greeting", []byte("hello"), "", "text/plain", "alice", "conn", int64(1732368000123), "k", "v<&>", "chat:room", "AQEF")
	f.Add("", "", []byte(`{"a": [1, 2]}`), "json", "", "", "", int64(0), "", "", "", "")
	f.Add("\xff", "\u2028", []byte{0, 1, 0xff}, "utf-8", "\"", "\\", "\x01", int64(-5), "\xfe", "\n", "a", "b")
	f.Add("x", "y", []byte("not json"), "json", "", "", "", int64(1), "", "", "", "")
	f.Add("", "", []byte(`{"a":"<b>&\u2028 ", "c" : 1}`), "json", "", "", "", int64(1), "", "", "", "")
	f.Fuzz(func(t *testing.T, id, name string, data []byte, enc, ct, client, conn string, ts int64, k, v, ch, pos string) {
		m := &Message{ID: id, Name: name, Data: data, Encoding: enc, ContentType: ct, ClientID: client,
			ConnectionID: conn, Timestamp: ts, Channel: ch, Position: pos}
		if k != "" || v != "" {
			m.Extras = map[string]string{k: v, k + "2": v}
		}
		if got, want := m.renderJSON(), reflectMessageJSON(m); !bytes.Equal(got, want) {
			t.Fatalf("renderJSON:\n%s\nencoding/json:\n%s", got, want)
		}
	})
}
