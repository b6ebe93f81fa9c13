package native

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/internal/httperr"
)

// writeError replies with err as a JSON error. Causes are never shown to
// the client; server-side failures are logged with them.
func (a *restAPI) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, _ := httperr.Render(err)
	attrs := []any{
		"method", r.Method, "path", r.URL.EscapedPath(),
		"status", status, "code", int(apierr.CodeOf(err)),
		"requestId", w.Header().Get("X-Request-Id"),
	}
	if status >= 500 {
		a.log.Error("rest request failed", append(attrs, "err", err)...)
	} else {
		a.log.Debug("rest request refused", append(attrs, "message", apierr.From(err).Message)...)
	}
	httperr.Write(w, err)
}

// writeJSON replies with v as JSON.
func (a *restAPI) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		a.writeError(w, r, apierr.Wrap(err, apierr.Internal, "internal error"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// readJSONBody reads a request body of at most the configured size whose
// Content-Type is absent or application/json.
func (a *restAPI) readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if !restJSONContentType(r) {
		return nil, apierr.New(apierr.BadRequest, "Content-Type must be application/json")
	}
	if r.ContentLength > a.maxBody {
		return nil, apierr.New(apierr.RequestTooLarge, "request body of %d bytes exceeds the limit of %d bytes", r.ContentLength, a.maxBody)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, apierr.Wrap(err, apierr.RequestTooLarge, "request body exceeds the limit of %d bytes", a.maxBody)
		}
		return nil, apierr.Wrap(err, apierr.BadRequest, "reading the request body failed")
	}
	return body, nil
}

// restQuery is a request's query, every parameter given at most once.
type restQuery struct {
	values url.Values
}

// parseRESTQuery parses the request's query strictly: it must be well formed,
// every parameter must be one of allowed (or a credential parameter), and
// none may be repeated.
func parseRESTQuery(r *http.Request, allowed ...string) (restQuery, error) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return restQuery{}, apierr.Wrap(err, apierr.InvalidParameter, "malformed query string")
	}
	for name, vs := range vals {
		known := name == auth.KeyParam || name == auth.AccessTokenParam
		for _, a := range allowed {
			if name == a {
				known = true
				break
			}
		}
		if !known {
			if len(allowed) == 0 {
				return restQuery{}, apierr.New(apierr.InvalidParameter, "unknown parameter %s: this endpoint takes no parameters", strconv.Quote(restTruncate(name)))
			}
			return restQuery{}, apierr.New(apierr.InvalidParameter, "unknown parameter %s (allowed: %s)", strconv.Quote(restTruncate(name)), strings.Join(allowed, ", "))
		}
		if len(vs) > 1 {
			return restQuery{}, apierr.New(apierr.InvalidParameter, "parameter %s is given more than once", name)
		}
	}
	return restQuery{values: vals}, nil
}

// get returns the value of a parameter and whether it was given.
func (q restQuery) get(name string) (string, bool) {
	vs, ok := q.values[name]
	if !ok || len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// intParam parses an integer parameter in [lo, hi], or returns def when
// it is absent.
func (q restQuery) intParam(name string, def, lo, hi int) (int, error) {
	v, ok := q.get(name)
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, apierr.New(apierr.InvalidParameter, "parameter %s must be an integer between %d and %d", name, lo, hi)
	}
	return n, nil
}

// restMaxTimeMillis is the end of year 9999 in Unix milliseconds.
const restMaxTimeMillis = 253402300799999

// timeParam parses a time parameter given as Unix milliseconds or RFC 3339;
// absent is the zero time (unbounded).
func (q restQuery) timeParam(name string) (time.Time, error) {
	v, ok := q.get(name)
	if !ok {
		return time.Time{}, nil
	}
	bad := apierr.New(apierr.InvalidParameter,
		"parameter %s must be a time in Unix milliseconds or RFC 3339 (for example 2024-05-01T12:00:00Z)", name)
	if v == "" {
		return time.Time{}, bad
	}
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		if ms < 0 || ms > restMaxTimeMillis {
			return time.Time{}, bad
		}
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil && strings.Contains(v, " ") {
		// An unescaped '+' in a query string arrives as a space.
		t, err = time.Parse(time.RFC3339Nano, strings.ReplaceAll(v, " ", "+"))
	}
	if err != nil || t.UnixMilli() < 0 {
		return time.Time{}, bad
	}
	return t, nil
}

// nextLink renders a Link header pointing at the same path and query with
// the cursor parameter set to cursor. Credential parameters are left out so
// that a response never repeats a secret; the client authenticates the next
// request as it did this one.
func (q restQuery) nextLink(r *http.Request, param, cursor string) string {
	next := make(url.Values, len(q.values)+1)
	for k, vs := range q.values {
		if k == auth.KeyParam || k == auth.AccessTokenParam {
			continue
		}
		next[k] = vs
	}
	next.Set(param, cursor)
	u := url.URL{RawPath: r.URL.EscapedPath(), Path: r.URL.Path, RawQuery: next.Encode()}
	return "<" + u.String() + `>; rel="next"`
}

// restTruncate shortens client-supplied text repeated in an error.
func restTruncate(s string) string {
	const maxLen = 64
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + "..."
}

// newRESTRequestID returns a random id for correlating a reply with logs.
func newRESTRequestID() string {
	return rand.Text()
}

// restCaptureWriter records a reply of the router's built-in handlers (404,
// 405, redirects) so that it can be rewritten or replayed.
type restCaptureWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRESTCaptureWriter() *restCaptureWriter {
	return &restCaptureWriter{header: http.Header{}, status: http.StatusOK}
}

func (c *restCaptureWriter) Header() http.Header { return c.header }

func (c *restCaptureWriter) WriteHeader(status int) { c.status = status }

func (c *restCaptureWriter) Write(b []byte) (int, error) { return c.body.Write(b) }

// replay writes the recorded reply to w.
func (c *restCaptureWriter) replay(w http.ResponseWriter) {
	for k, vs := range c.header {
		w.Header()[k] = vs
	}
	w.WriteHeader(c.status)
	_, _ = w.Write(c.body.Bytes())
}
