package native

import (
	"testing"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/apierr"
)

// FuzzDecodeClientFrame feeds arbitrary bytes to the realtime frame decoder
// and the parsers of the fields a frame carries: nothing panics, and every
// refusal is an error with a stable code.
func FuzzDecodeClientFrame(f *testing.F) {
	for _, seed := range []string{
		`{"action":"heartbeat"}`,
		`{"action":"attach","channel":"[?rewind=5]room","channelSerial":"AQEFbG9jYWy5isXIoDQB","presence":true}`,
		`{"action":"attach","channel":"room","rewind":"30s","presence":"yes"}`,
		`{"action":"message","channel":"room","msgSerial":3,"messages":[{"id":"a","data":"x"},{"data":{"k":1},"encoding":"json"}]}`,
		`{"action":"message","channel":"room","msgSerial":-1,"messages":{"data":"AAEC","encoding":"base64"}}`,
		`{"action":"presence","channel":"room","msgSerial":1,"presence":{"action":"enter","data":"hi"}}`,
		`{"action":"presence","channel":"room","msgSerial":1,"presence":{"action":"dance"}}`,
		`{"action":"sync","channel":"room","cursor":"YWJj","limit":2}`,
		`{"action":"auth","accessToken":"eyJ"}`,
		`{"action":"close"}`, `{}`, `[]`, `null`, `{"action":1}`, `{"action":"x"}{"action":"y"}`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(what string, err error) {
			if err != nil && apierr.CodeOf(err) == apierr.Internal {
				t.Fatalf("%s of %q: an error without a client code: %v", what, b, err)
			}
		}
		fr, err := decodeClientFrame(b)
		check("decoding", err)
		if err != nil {
			return
		}
		if fr.Action == "" {
			t.Fatalf("decoded %q without an action", b)
		}
		_, err = fr.attachPresence()
		check("attach presence", err)
		_, err = fr.presenceRequest()
		check("presence", err)
		if len(fr.Messages) > 0 {
			msgs, err := core.DecodeMessagesJSON(fr.Messages)
			check("messages", err)
			if err == nil && len(msgs) == 0 {
				t.Fatalf("messages of %q decoded to nothing without an error", b)
			}
		}
	})
}
