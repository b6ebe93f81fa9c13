// Package wireformat converts realtime protocol frames between their JSON
// form and their MessagePack form, so that one frame model serves both.
//
// The forms differ in one place: a message's binary data. In JSON it is a
// base64 string with "base64" (or "<encoding>/base64") as its encoding; in
// MessagePack it is a bin value with the encoding without the suffix. Both
// directions apply that rule to every object with a "data" member;
// everything else maps one to one (JSON numbers become integers when they
// are integral, floats otherwise).
package wireformat

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// maxDepth bounds nesting, so that hostile frames cannot exhaust the stack.
const maxDepth = 64

// MsgpackToJSON converts one MessagePack value to JSON.
func MsgpackToJSON(b []byte) ([]byte, error) {
	r := bytes.NewReader(b)
	dec := msgpack.NewDecoder(r)
	v, err := (&decoder{d: dec, r: r, b: b}).value(0)
	if err != nil {
		return nil, fmt.Errorf("malformed MessagePack: %w", err)
	}
	if _, err := dec.PeekCode(); err == nil {
		return nil, errors.New("malformed MessagePack: trailing data after the value")
	}
	v, err = toJSONValue(v, 0)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// decoder decodes one value, bounding nesting, requiring string map keys,
// and checking every declared length against the bytes left before
// anything is allocated for it (a 4 GiB bin header in a small frame must
// not allocate 4 GiB).
type decoder struct {
	d *msgpack.Decoder
	r *bytes.Reader
	b []byte
}

// declared returns the length an str, bin, array or map header at the
// current position declares (0 for other values).
func (dc *decoder) declared(c byte) int {
	pos := len(dc.b) - dc.r.Len()
	h := dc.b[pos:]
	be := func(n int) int {
		if len(h) < 1+n {
			return len(dc.b) + 1 // truncated header: more than is left
		}
		v := 0
		for _, x := range h[1 : 1+n] {
			v = v<<8 | int(x)
		}
		return v
	}
	switch {
	case msgpcode.IsFixedString(c):
		return int(c & 0x1f)
	case msgpcode.IsFixedArray(c), msgpcode.IsFixedMap(c):
		return int(c & 0x0f)
	}
	switch c {
	case msgpcode.Str8, msgpcode.Bin8:
		return be(1)
	case msgpcode.Str16, msgpcode.Bin16, msgpcode.Array16, msgpcode.Map16:
		return be(2)
	case msgpcode.Str32, msgpcode.Bin32, msgpcode.Array32, msgpcode.Map32:
		return be(4)
	}
	return 0
}

func (dc *decoder) value(depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("value nested too deeply")
	}
	d := dc.d
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	if dc.declared(c) > dc.r.Len() {
		return nil, errors.New("a length exceeds the frame")
	}
	switch {
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		m := make(map[any]any, min(n, 64))
		for range n {
			kc, err := d.PeekCode()
			if err != nil {
				return nil, err
			}
			if !msgpcode.IsFixedString(kc) && kc != msgpcode.Str8 && kc != msgpcode.Str16 && kc != msgpcode.Str32 {
				return nil, errors.New("map key is not a string")
			}
			if dc.declared(kc) > dc.r.Len() {
				return nil, errors.New("a length exceeds the frame")
			}
			k, err := d.DecodeString()
			if err != nil {
				return nil, err
			}
			v, err := dc.value(depth + 1)
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
		return m, nil
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		out := make([]any, 0, min(n, 64))
		for range n {
			v, err := dc.value(depth + 1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case c == msgpcode.Bin8 || c == msgpcode.Bin16 || c == msgpcode.Bin32:
		return d.DecodeBytes()
	case msgpcode.IsExt(c):
		return nil, errors.New("extension types are not part of the protocol")
	}
	return d.DecodeInterfaceLoose()
}

func toJSONValue(v any, depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("MessagePack value nested too deeply")
	}
	switch x := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, val := range x {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("MessagePack map key %v is not a string", k)
			}
			if ks == "data" {
				if bin, ok := val.([]byte); ok {
					m["data"] = base64.StdEncoding.EncodeToString(bin)
					m["encoding"] = withBase64(x["encoding"])
					continue
				}
			}
			if ks == "encoding" {
				if _, ok := x["data"].([]byte); ok {
					continue // set with the data
				}
			}
			conv, err := toJSONValue(val, depth+1)
			if err != nil {
				return nil, err
			}
			m[ks] = conv
		}
		return m, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			conv, err := toJSONValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = conv
		}
		return out, nil
	case []byte:
		return base64.StdEncoding.EncodeToString(x), nil
	case nil, bool, string, int64, uint64, float64, float32:
		return x, nil
	default:
		return nil, fmt.Errorf("MessagePack type %T is not part of the protocol", v)
	}
}

func withBase64(enc any) string {
	s, _ := enc.(string)
	if s == "" {
		return "base64"
	}
	return s + "/base64"
}

// JSONToMsgpack converts one JSON value to MessagePack.
func JSONToMsgpack(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	v, err := toMsgpackValue(v, 0)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func toMsgpackValue(v any, depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("JSON value nested too deeply")
	}
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		enc, _ := x["encoding"].(string)
		data, isString := x["data"].(string)
		if isString && (enc == "base64" || strings.HasSuffix(enc, "/base64")) {
			if bin, err := base64.StdEncoding.DecodeString(data); err == nil {
				m["data"] = bin
				if e := strings.TrimSuffix(strings.TrimSuffix(enc, "base64"), "/"); e != "" {
					m["encoding"] = e
				}
				for k, val := range x {
					if k == "data" || k == "encoding" {
						continue
					}
					conv, err := toMsgpackValue(val, depth+1)
					if err != nil {
						return nil, err
					}
					m[k] = conv
				}
				return m, nil
			}
		}
		for k, val := range x {
			conv, err := toMsgpackValue(val, depth+1)
			if err != nil {
				return nil, err
			}
			m[k] = conv
		}
		return m, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			conv, err := toMsgpackValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = conv
		}
		return out, nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		f, err := x.Float64()
		if err != nil {
			return nil, fmt.Errorf("number %s is out of range", x)
		}
		return f, nil
	default:
		return x, nil
	}
}
