package native

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/switchboardhq/switchboard/core/apierr"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// FuzzPublishBody posts arbitrary bodies to the publish endpoint: the reply
// is never a server error, always JSON, and a 201 accounts for every
// message.
func FuzzPublishBody(f *testing.F) {
	for _, seed := range []string{
		`{"data":"hello"}`,
		`[{"id":"a","name":"n","data":{"x":[1,2]},"extras":{"h":"v"}},{"data":"AAEC","encoding":"base64"}]`,
		`{"data":"x","encoding":"utf-8/base64"}`,
		`{"data":null,"timestamp":5,"serial":"s","channel":"c","connectionId":"k"}`,
		`{"clientId":"someone","contentType":"text/plain","data":"\u0000"}`,
		`[]`, `[[]]`, `{`, `null`, `"x"`, `12`, ``, `{"extras":{"":"v"}}`,
		`{"data":"a"}{"data":"b"}`, `{"name":{"a":1}}`, "\xff\xfe",
	} {
		f.Add([]byte(seed))
	}
	authn := newTestAuth(f)
	e := newMemoryEngine(f, authn, nil)
	h := NewREST(e, authn, RESTOptions{MaxRequestBody: 64 << 10, Logger: discardLogger()})
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/channels/fuzz:ch/messages", bytes.NewReader(body))
		req.SetBasicAuth("app", "s3cret")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.Bytes())
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("reply is not JSON: %q", rec.Body.Bytes())
		}
		if rec.Code == http.StatusCreated {
			var pr struct {
				Messages []json.RawMessage `json:"messages"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &pr); err != nil || len(pr.Messages) == 0 {
				t.Fatalf("201 reply %s (%v)", rec.Body.Bytes(), err)
			}
			return
		}
		var er struct {
			Error struct {
				Code       int `json:"code"`
				StatusCode int `json:"statusCode"`
			} `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil {
			t.Fatal(err)
		}
		if er.Error.StatusCode != rec.Code || apierr.Code(er.Error.Code).Status() != rec.Code {
			t.Fatalf("status %d with error %+v", rec.Code, er.Error)
		}
	})
}
