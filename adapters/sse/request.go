package sse

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/core/channel"
)

// Query parameters of GET /v1/sse.
const (
	paramChannels  = "channels"
	paramRewind    = "rewind"
	paramPresence  = "presence"
	paramEnveloped = "enveloped"
	paramLastEvent = "lastEvent"
)

// lastEventIDHeader is the header an EventSource sends when it reconnects.
const lastEventIDHeader = "Last-Event-ID"

// request is a validated stream request.
type request struct {
	specs     []channel.Spec // in the order given
	names     []string       // specs' names, same order
	index     map[string]int // position of each name in names
	rewind    *channel.Rewind
	presence  bool
	enveloped bool
	lastEvent string // from the header, else the query
}

// parseRequest validates a stream request strictly: every parameter known
// and given once, every channel valid and named once.
func parseRequest(r *http.Request, maxChannels int) (*request, error) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, apierr.Wrap(err, apierr.InvalidParameter, "malformed query string")
	}
	for name, vs := range vals {
		switch name {
		case paramChannels, paramRewind, paramPresence, paramEnveloped, paramLastEvent, auth.KeyParam, auth.AccessTokenParam:
		default:
			return nil, apierr.New(apierr.InvalidParameter,
				"unknown parameter %s: the parameters are channels, rewind, presence, enveloped, lastEvent, key and accessToken", strconv.Quote(truncate(name)))
		}
		if len(vs) > 1 {
			return nil, apierr.New(apierr.InvalidParameter, "parameter %s is given more than once", name)
		}
	}
	req := &request{enveloped: true}
	list, ok := vals[paramChannels]
	if !ok || list[0] == "" {
		return nil, apierr.New(apierr.InvalidParameter, "parameter channels is required: a comma-separated list of channels")
	}
	parts := strings.Split(list[0], ",")
	if len(parts) > maxChannels {
		return nil, apierr.New(apierr.InvalidParameter, "%d channels is more than the limit of %d per stream", len(parts), maxChannels)
	}
	req.index = make(map[string]int, len(parts))
	for _, p := range parts {
		spec, err := channel.Parse(p)
		if err != nil {
			return nil, err
		}
		if _, dup := req.index[spec.Name]; dup {
			return nil, apierr.New(apierr.InvalidParameter, "channel %s is named more than once", strconv.Quote(truncate(spec.Name)))
		}
		req.index[spec.Name] = len(req.names)
		req.specs = append(req.specs, spec)
		req.names = append(req.names, spec.Name)
	}
	if v, ok := vals[paramRewind]; ok {
		rw, err := channel.ParseRewind(v[0])
		if err != nil {
			return nil, apierr.Wrap(err, apierr.InvalidParameter, "parameter rewind: %s", apierr.From(err).Message)
		}
		req.rewind = &rw
	}
	if req.presence, err = boolParam(vals, paramPresence, false); err != nil {
		return nil, err
	}
	if req.enveloped, err = boolParam(vals, paramEnveloped, true); err != nil {
		return nil, err
	}
	headers := r.Header.Values(lastEventIDHeader)
	switch {
	case len(headers) > 1:
		return nil, apierr.New(apierr.InvalidParameter, "header Last-Event-ID is given more than once")
	case len(headers) == 1 && headers[0] != "":
		// The header is the browser's latest; it wins over the query,
		// which still holds the id the page first opened with.
		req.lastEvent = headers[0]
	default:
		if v, ok := vals[paramLastEvent]; ok {
			if v[0] == "" {
				return nil, apierr.New(apierr.InvalidParameter, "parameter lastEvent is empty")
			}
			req.lastEvent = v[0]
		}
	}
	return req, nil
}

func boolParam(vals url.Values, name string, def bool) (bool, error) {
	v, ok := vals[name]
	if !ok {
		return def, nil
	}
	switch v[0] {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, apierr.New(apierr.InvalidParameter, "parameter %s must be true or false, not %s", name, strconv.Quote(truncate(v[0])))
}

// truncate shortens client-supplied text quoted back in errors.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
