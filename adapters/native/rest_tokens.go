package native

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/switchboardhq/switchboard/core/apierr"
	"github.com/switchboardhq/switchboard/core/auth"
	"github.com/switchboardhq/switchboard/internal/strictjson"
)

// restTokenRequest is the body of POST /v1/tokens. Every field is
// optional; an empty body asks for a token with the key's full capability
// and the default lifetime.
type restTokenRequest struct {
	// Capability is a capability object such as {"chat:*":["subscribe"]}.
	Capability json.RawMessage `json:"capability"`
	// ClientID fixes the holder's client id; "*" lets the holder choose.
	ClientID *string `json:"clientId"`
	// TTL is a Go duration string ("1h", "90s") or whole milliseconds.
	TTL json.RawMessage `json:"ttl"`
}

// restTokenResponse is the reply to POST /v1/tokens.
type restTokenResponse struct {
	Token string `json:"token"`
	// Expires is when the token expires, in Unix milliseconds.
	Expires    int64           `json:"expires"`
	KeyName    string          `json:"keyName"`
	ClientID   string          `json:"clientId,omitempty"`
	Capability auth.Capability `json:"capability"`
}

// handleToken serves POST /v1/tokens: a key-authenticated caller gets a
// token signed with its key. Dev, anonymous and token callers are refused
// by the authenticator.
func (a *restAPI) handleToken(w http.ResponseWriter, r *http.Request) {
	id, _, ok := a.begin(w, r)
	if !ok {
		return
	}
	body, err := a.readJSONBody(w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	req, err := decodeTokenRequest(body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	token, expires, err := a.auth.IssueToken(id, req)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	capab := req.Capability
	if capab == nil {
		capab = id.Capability
	}
	a.writeJSON(w, r, http.StatusCreated, restTokenResponse{
		Token:      token,
		Expires:    expires.UnixMilli(),
		KeyName:    id.KeyName,
		ClientID:   req.ClientID,
		Capability: capab,
	})
}

// decodeTokenRequest decodes the body of POST /v1/tokens. Malformed JSON,
// unknown fields and fields of the wrong type are InvalidJSON errors; a
// lifetime that is not positive is an InvalidParameter error.
func decodeTokenRequest(body []byte) (auth.TokenRequest, error) {
	var req auth.TokenRequest
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return req, nil
	}
	var in restTokenRequest
	if err := strictjson.Unmarshal(body, &in); err != nil {
		return req, err
	}
	if in.ClientID != nil {
		req.ClientID = *in.ClientID
	}
	if c := bytes.TrimSpace(in.Capability); len(c) > 0 && !bytes.Equal(c, []byte("null")) {
		capab, err := auth.ParseCapabilityJSON(c)
		if err != nil {
			e := apierr.From(err)
			return req, apierr.Wrap(err, e.Code, "field \"capability\": %s", e.Message)
		}
		req.Capability = capab
	}
	ttl, err := parseTokenTTL(in.TTL)
	if err != nil {
		return req, err
	}
	req.TTL = ttl
	return req, nil
}

// parseTokenTTL parses the ttl field: absent or null (the default), a Go
// duration string, or a whole number of milliseconds.
func parseTokenTTL(raw json.RawMessage) (time.Duration, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return 0, nil
	}
	var d time.Duration
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, apierr.Wrap(err, apierr.InvalidJSON, "field \"ttl\" is not a valid JSON string")
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return 0, apierr.Wrap(err, apierr.InvalidParameter, "field \"ttl\" must be a duration such as \"1h\" or \"90s\", or milliseconds")
		}
		d = v
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		ms, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			var ne *strconv.NumError
			if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
				return 0, apierr.New(apierr.InvalidParameter, "field \"ttl\" is too large")
			}
			return 0, apierr.Wrap(err, apierr.InvalidJSON, "field \"ttl\" must be a whole number of milliseconds or a duration string")
		}
		if ms > math.MaxInt64/int64(time.Millisecond) {
			return 0, apierr.New(apierr.InvalidParameter, "field \"ttl\" is too large")
		}
		d = time.Duration(ms) * time.Millisecond
	default:
		return 0, apierr.New(apierr.InvalidJSON, "field \"ttl\" must be a duration string or a number of milliseconds")
	}
	if d <= 0 {
		return 0, apierr.New(apierr.InvalidParameter, "field \"ttl\" must be positive")
	}
	return d, nil
}
