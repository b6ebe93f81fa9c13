package wireformat

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestBinaryDataIsBinInMsgpack(t *testing.T) {
	js := []byte(`{"action":"message","channel":"c","msgSerial":3,"messages":[` +
		`{"id":"a","data":"AAEC/w==","encoding":"base64"},` +
		`{"id":"b","data":"aGk=","encoding":"utf-8/base64"},` +
		`{"id":"c","data":"text"},{"id":"d","data":{"n":1.5,"k":[1,2]},"encoding":"json"}]}`)
	mp, err := JSONToMsgpack(js)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := msgpack.Unmarshal(mp, &v); err != nil {
		t.Fatal(err)
	}
	msgs := v["messages"].([]any)
	a := msgs[0].(map[string]any)
	if !bytes.Equal(a["data"].([]byte), []byte{0, 1, 2, 255}) || a["encoding"] != nil {
		t.Errorf("binary message in MessagePack: %#v", a)
	}
	b := msgs[1].(map[string]any)
	if string(b["data"].([]byte)) != "hi" || b["encoding"] != "utf-8" {
		t.Errorf("utf-8/base64 message in MessagePack: %#v", b)
	}
	back, err := MsgpackToJSON(mp)
	if err != nil {
		t.Fatal(err)
	}
	var want, got any
	_ = json.Unmarshal(js, &want)
	_ = json.Unmarshal(back, &got)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %s\nwant %s", back, js)
	}
}

func TestMalformedMsgpack(t *testing.T) {
	for _, b := range [][]byte{
		{0xc1},                               // never used
		{0x81, 0x01, 0x02},                   // map with an integer key
		{0x91},                               // truncated array
		{0xa1, 'a', 0xa1, 'b'},               // two values
		{0xd6, 0xff, 0, 0, 0, 0},             // timestamp extension
		{0xc6, 0xef, 0xb5, 0x51, 0xfe, 0x0a}, // a 4 GiB bin in 6 bytes
		{0xdf, 0xff, 0xff, 0xff, 0xff},       // a map of 4 billion entries
		{0xdd, 0x7f, 0xff, 0xff, 0xff, 0xc0}, // an array of 2 billion
	} {
		if _, err := MsgpackToJSON(b); err == nil {
			t.Errorf("%x: no error", b)
		}
	}
	deep := bytes.Repeat([]byte{0x91}, 200)
	deep = append(deep, 0xc0)
	if _, err := MsgpackToJSON(deep); err == nil {
		t.Error("200 nested arrays: no error")
	}
}

// FuzzMsgpackToJSON: hostile MessagePack never panics, and what converts
// converts back to an equivalent value.
func FuzzMsgpackToJSON(f *testing.F) {
	seed, _ := JSONToMsgpack([]byte(`{"action":"message","channel":"c","msgSerial":1,"messages":{"id":"x","data":"AAE=","encoding":"base64"}}`))
	f.Add(seed)
	f.Add([]byte{0x80})
	f.Add([]byte{0xc1})
	f.Fuzz(func(t *testing.T, b []byte) {
		js, err := MsgpackToJSON(b)
		if err != nil {
			return
		}
		mp, err := JSONToMsgpack(js)
		if err != nil {
			t.Fatalf("%x converted to %s, which does not convert back: %v", b, js, err)
		}
		js2, err := MsgpackToJSON(mp)
		if err != nil {
			t.Fatalf("second conversion of %s: %v", js, err)
		}
		var a, c any
		_ = json.Unmarshal(js, &a)
		_ = json.Unmarshal(js2, &c)
		if !reflect.DeepEqual(a, c) {
			t.Fatalf("%x: %s then %s", b, js, js2)
		}
	})
}
