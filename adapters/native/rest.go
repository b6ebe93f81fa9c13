// Package native is Switchboard's native adapter: the REST API under /v1/
// (and the native realtime protocol). It translates HTTP requests onto the
// channel engine in package core and nothing more.
package native

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/switchboardhq/switchboard/core"
	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/channel"
)

// Defaults for RESTOptions.
const (
	// DefaultMaxRequestBody is the largest request body accepted when
	// RESTOptions.MaxRequestBody is 0.
	DefaultMaxRequestBody int64 = 1 << 20
	// DefaultPublishTimeout bounds how long a REST publish waits for its
	// acknowledgement when RESTOptions.PublishTimeout is 0.
	DefaultPublishTimeout = 10 * time.Second
)

// Limits of the channel listing (GET /v1/channels).
const (
	DefaultChannelsLimit = 100
	MaxChannelsLimit     = 1000
)

// RESTOptions configure the REST API.
type RESTOptions struct {
	// MaxRequestBody bounds request bodies in bytes; 0 means
	// DefaultMaxRequestBody. Larger bodies are refused with HTTP 413 and
	// code 41300 (apierr.RequestTooLarge).
	MaxRequestBody int64
	// PublishTimeout bounds how long a publish waits to be acknowledged
	// under the configured durability; 0 means DefaultPublishTimeout.
	// A publish that takes longer fails with HTTP 504 and code 50400, and
	// can be retried safely with the same message ids.
	PublishTimeout time.Duration
	// Logger receives request errors; nil discards them.
	Logger *slog.Logger
}

// restAPI serves the REST API. It is immutable after NewREST.
type restAPI struct {
	engine         *core.Engine
	auth           *auth.Authenticator
	maxBody        int64
	publishTimeout time.Duration
	log            *slog.Logger
	started        time.Time
	mux            *http.ServeMux
}

// NewREST returns a handler serving the REST API under /v1/:
//
//	POST /v1/channels/{channel}/messages   publish one message or an array (201)
//	GET  /v1/channels/{channel}/messages   history, paginated with Link rel="next"
//	GET  /v1/channels/{channel}/presence   current presence members
//	GET  /v1/channels                      active channels the caller may see
//	POST /v1/tokens                        issue a token (key credentials only)
//	GET  /v1/stats                         engine statistics
//
// It does not serve /v1/realtime, /v1/sse, /healthz or /metrics; the server
// mounts those. Every response is JSON. Errors have the body
// {"error":{"code":N,"statusCode":N,"message":"..."}} with the HTTP status
// equal to statusCode; unknown paths are 404 (code 40400) and known paths
// with a wrong method are 405 (code 40500) with an Allow header.
//
// Channel names are taken from the escaped path segment and unescaped, so
// "sensors%2F42" names the channel "sensors/42". Every request is
// authenticated with the credentials of auth.CredentialsFromHTTP; requests
// without credentials are anonymous (or dev in dev mode) and get 401 where
// their rules do not allow the operation.
//
// Behaviour every endpoint shares:
//   - Query parameters are strict: an unknown, repeated or empty parameter
//     is a 400 with code 40013 naming it. The credential parameters key and
//     accessToken are accepted everywhere.
//   - Request bodies must have no Content-Type or application/json (400 with
//     code 40000 otherwise) and at most MaxRequestBody bytes (413, 41300).
//   - 401 replies carry "WWW-Authenticate: Bearer".
//   - Every reply has an X-Request-Id that server-side failures are logged
//     with; the causes of internal errors are logged, never returned.
//
// History takes limit (1–1000, default 100), direction (forwards or
// backwards, default backwards), start and end (inclusive, Unix
// milliseconds or RFC 3339) and from (a channel serial or the cursor of
// the previous page). The channel listing takes prefix, after (the last
// name of the previous page) and limit (1–1000, default 100); it lists
// only channels the caller may subscribe to or administer. Next pages are
// announced with a relative Link header carrying the same query (without
// credential parameters, which are never echoed) with the cursor set. Rewind qualifiers are
// refused with code 40011 on publish, history and presence. The token
// body is {"capability":{...},"clientId":"...","ttl":"1h" or
// milliseconds}, every field optional. Statistics are open to every
// caller with credentials, and to dev mode; anonymous callers get 401.
func NewREST(e *core.Engine, authn *auth.Authenticator, opts RESTOptions) http.Handler {
	a := &restAPI{
		engine:         e,
		auth:           authn,
		maxBody:        opts.MaxRequestBody,
		publishTimeout: opts.PublishTimeout,
		log:            opts.Logger,
		started:        time.Now(),
		mux:            http.NewServeMux(),
	}
	if a.maxBody <= 0 {
		a.maxBody = DefaultMaxRequestBody
	}
	if a.publishTimeout <= 0 {
		a.publishTimeout = DefaultPublishTimeout
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.mux.HandleFunc("POST /v1/channels/{channel}/messages", a.handlePublish)
	a.mux.HandleFunc("GET /v1/channels/{channel}/messages", a.handleHistory)
	a.mux.HandleFunc("GET /v1/channels/{channel}/presence", a.handlePresence)
	a.mux.HandleFunc("GET /v1/channels", a.handleChannels)
	a.mux.HandleFunc("POST /v1/tokens", a.handleToken)
	a.mux.HandleFunc("GET /v1/stats", a.handleStats)
	return a
}

// ServeHTTP routes a request, turning the router's own 404 and 405
// replies into JSON errors.
func (a *restAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Request-Id", newRESTRequestID())
	h, pattern := a.mux.Handler(r)
	if pattern != "" {
		// ServeHTTP (unlike the handler alone) sets the path values.
		a.mux.ServeHTTP(w, r)
		return
	}
	// No pattern matched: the router answers 404, 405 or a redirect to a
	// cleaned path. Capture its answer and rewrite the errors as JSON.
	rec := newRESTCaptureWriter()
	h.ServeHTTP(rec, r)
	switch rec.status {
	case http.StatusMethodNotAllowed:
		allow := rec.header.Get("Allow")
		w.Header().Set("Allow", allow)
		a.writeError(w, r, apierr.New(apierr.MethodNotAllowed, "method %s is not allowed on %s; allowed: %s",
			r.Method, restTruncate(r.URL.EscapedPath()), allow))
	case http.StatusNotFound:
		a.writeError(w, r, apierr.New(apierr.NotFound, "no such resource: %s", restTruncate(r.URL.EscapedPath())))
	default:
		rec.replay(w)
	}
}

// authenticate returns who the request is.
func (a *restAPI) authenticate(r *http.Request) (*auth.Identity, error) {
	creds, err := auth.CredentialsFromHTTP(r)
	if err != nil {
		return nil, err
	}
	id, err := a.auth.Authenticate(creds)
	if err != nil {
		return nil, err
	}
	return id, nil
}

// restChannelName parses the channel of the request path. Qualifiers are
// accepted but rewind is refused: it only applies to subscribing.
func restChannelName(r *http.Request, op string) (string, error) {
	sp, err := channel.Parse(r.PathValue("channel"))
	if err != nil {
		return "", err
	}
	if sp.HasRewind {
		return "", apierr.New(apierr.InvalidQualifier, "rewind applies to subscribing, not %s", op)
	}
	return sp.Name, nil
}

// restPublishResponse is the reply to a publish.
type restPublishResponse struct {
	Channel  string               `json:"channel"`
	Messages []core.PublishResult `json:"messages"`
}

// begin authenticates a request and parses its query, which may carry the
// allowed parameters (and credentials). On failure it writes the error and
// returns ok=false.
func (a *restAPI) begin(w http.ResponseWriter, r *http.Request, allowed ...string) (id *auth.Identity, q restQuery, ok bool) {
	id, err := a.authenticate(r)
	if err == nil {
		q, err = parseRESTQuery(r, allowed...)
	}
	if err != nil {
		a.writeError(w, r, err)
		return nil, restQuery{}, false
	}
	return id, q, true
}

// handlePublish serves POST /v1/channels/{channel}/messages.
func (a *restAPI) handlePublish(w http.ResponseWriter, r *http.Request) {
	id, _, ok := a.begin(w, r)
	if !ok {
		return
	}
	name, err := restChannelName(r, "publishing")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	// Refuse before reading the body when the caller may not publish here.
	if err := id.Check(name, auth.OpPublish); err != nil {
		a.writeError(w, r, err)
		return
	}
	body, err := a.readJSONBody(w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	msgs, err := core.DecodeMessagesJSON(body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	clientID := id.ClientID
	if clientID == "*" {
		clientID = ""
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.publishTimeout)
	defer cancel()
	res, err := a.engine.Publish(ctx, id, "", clientID, name, msgs)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	a.writeJSON(w, r, http.StatusCreated, restPublishResponse{Channel: name, Messages: res})
}

// handleHistory serves GET /v1/channels/{channel}/messages.
func (a *restAPI) handleHistory(w http.ResponseWriter, r *http.Request) {
	id, q, ok := a.begin(w, r, "limit", "direction", "start", "end", "from")
	if !ok {
		return
	}
	name, err := restChannelName(r, "history")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	hq := core.HistoryQuery{Channel: name}
	if hq.Limit, err = q.intParam("limit", core.DefaultHistoryLimit, 1, core.MaxHistoryLimit); err != nil {
		a.writeError(w, r, err)
		return
	}
	if v, ok := q.get("direction"); ok {
		if v == "" {
			a.writeError(w, r, apierr.New(apierr.InvalidParameter, "parameter direction is empty; use forwards or backwards"))
			return
		}
		if hq.Direction, err = core.ParseDirection(v); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	if hq.Start, err = q.timeParam("start"); err != nil {
		a.writeError(w, r, err)
		return
	}
	if hq.End, err = q.timeParam("end"); err != nil {
		a.writeError(w, r, err)
		return
	}
	if v, ok := q.get("from"); ok {
		if v == "" {
			a.writeError(w, r, apierr.New(apierr.InvalidParameter, "parameter from is empty; give a channel serial"))
			return
		}
		hq.From = v
	}
	page, err := a.engine.History(r.Context(), id, hq)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if page.Next != "" {
		w.Header().Set("Link", q.nextLink(r, "from", page.Next))
	}
	msgs := page.Messages
	if msgs == nil {
		msgs = []*core.Message{}
	}
	a.writeJSON(w, r, http.StatusOK, msgs)
}

// handlePresence serves GET /v1/channels/{channel}/presence.
func (a *restAPI) handlePresence(w http.ResponseWriter, r *http.Request) {
	id, _, ok := a.begin(w, r)
	if !ok {
		return
	}
	name, err := restChannelName(r, "presence")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	members, err := a.engine.PresenceMembers(r.Context(), id, name)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if members == nil {
		members = []core.PresenceMessage{}
	}
	a.writeJSON(w, r, http.StatusOK, members)
}

// handleChannels serves GET /v1/channels. The list holds only the active
// channels the caller may subscribe to or administer; it is never an
// error to list, a caller who may see nothing gets an empty list.
func (a *restAPI) handleChannels(w http.ResponseWriter, r *http.Request) {
	id, q, ok := a.begin(w, r, "prefix", "limit", "after")
	if !ok {
		return
	}
	limit, err := q.intParam("limit", DefaultChannelsLimit, 1, MaxChannelsLimit)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	prefix, _ := q.get("prefix")
	after, _ := q.get("after")
	for _, p := range [][2]string{{"prefix", prefix}, {"after", after}} {
		if len(p[1]) > channel.MaxNameLen {
			a.writeError(w, r, apierr.New(apierr.InvalidParameter, "parameter %s is longer than %d bytes", p[0], channel.MaxNameLen))
			return
		}
	}
	var list []core.ChannelInfo
	if restSeesEverything(id) {
		list = a.engine.ActiveChannels(prefix, after, limit+1)
	} else {
		// One pass over the active channels, keeping the visible ones.
		for _, c := range a.engine.ActiveChannels(prefix, after, 0) {
			if id.Can(c.Name, auth.OpSubscribe) || id.Can(c.Name, auth.OpAdmin) {
				list = append(list, c)
				if len(list) > limit {
					break
				}
			}
		}
	}
	if len(list) > limit {
		list = list[:limit]
		w.Header().Set("Link", q.nextLink(r, "after", list[len(list)-1].Name))
	}
	if list == nil {
		list = []core.ChannelInfo{}
	}
	a.writeJSON(w, r, http.StatusOK, list)
}

// restSeesEverything reports whether id may subscribe to or administer every
// channel, so that the channel listing needs no filter.
func restSeesEverything(id *auth.Identity) bool {
	if id.Dev {
		return true
	}
	if id.Anonymous {
		return false
	}
	for _, op := range id.Capability["*"] {
		if op == auth.OpSubscribe || op == auth.OpAdmin {
			return true
		}
	}
	return false
}

// restStatsResponse is the reply to GET /v1/stats.
type restStatsResponse struct {
	core.Stats
	// ServerTime is the server's clock in Unix milliseconds.
	ServerTime int64 `json:"serverTime"`
	// UptimeMs is how long the REST API has been serving, in milliseconds.
	UptimeMs int64 `json:"uptimeMs"`
}

// handleStats serves GET /v1/stats. Any authenticated caller (key or
// token) and dev mode may read the statistics; anonymous callers get 401.
func (a *restAPI) handleStats(w http.ResponseWriter, r *http.Request) {
	id, err := a.authenticate(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if id.Anonymous {
		a.writeError(w, r, apierr.New(apierr.Unauthorized, "credentials required to read statistics"))
		return
	}
	if _, err := parseRESTQuery(r); err != nil {
		a.writeError(w, r, err)
		return
	}
	now := time.Now()
	a.writeJSON(w, r, http.StatusOK, restStatsResponse{
		Stats:      a.engine.Stats(),
		ServerTime: now.UnixMilli(),
		UptimeMs:   now.Sub(a.started).Milliseconds(),
	})
}

// restJSONContentType reports whether the request's Content-Type is absent
// or application/json (with any parameters).
func restJSONContentType(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return true
	}
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}
