package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// HistoryOptions select a page of a channel's history.
type HistoryOptions struct {
	// Limit is the page size (server default 100, at most 1000).
	Limit int
	// Forwards lists oldest first (the default is newest first).
	Forwards bool
	// Start and End bound the messages' timestamps.
	Start, End time.Time
	// From continues after a channel serial.
	From string
}

// HistoryPage is one page of history.
type HistoryPage struct {
	Messages []*Message
	c        *Client
	next     string // absolute URL of the next page
}

// HasNext reports whether another page follows.
func (p *HistoryPage) HasNext() bool { return p.next != "" }

// Next fetches the next page.
func (p *HistoryPage) Next(ctx context.Context) (*HistoryPage, error) {
	if p.next == "" {
		return nil, fmt.Errorf("client: no next page")
	}
	return p.c.historyPage(ctx, p.next)
}

// History reads a page of a channel's history over REST.
func (c *Client) History(ctx context.Context, channel string, opts HistoryOptions) (*HistoryPage, error) {
	q := url.Values{}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Forwards {
		q.Set("direction", "forwards")
	}
	if !opts.Start.IsZero() {
		q.Set("start", strconv.FormatInt(opts.Start.UnixMilli(), 10))
	}
	if !opts.End.IsZero() {
		q.Set("end", strconv.FormatInt(opts.End.UnixMilli(), 10))
	}
	if opts.From != "" {
		q.Set("from", opts.From)
	}
	u := c.restURL("/v1/channels/" + url.PathEscape(channel) + "/messages")
	u.RawQuery = q.Encode()
	return c.historyPage(ctx, u.String())
}

func (c *Client) historyPage(ctx context.Context, u string) (*HistoryPage, error) {
	resp, body, err := c.rest(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	var wire []wireMessage
	if err := json.Unmarshal(body, &wire); err != nil {
		return nil, fmt.Errorf("client: history reply: %w", err)
	}
	page := &HistoryPage{c: c}
	for _, w := range wire {
		m, err := fromWire(w)
		if err != nil {
			return nil, err
		}
		page.Messages = append(page.Messages, m)
	}
	if next := nextLink(resp.Header.Get("Link")); next != "" {
		base, _ := url.Parse(u)
		if ref, err := url.Parse(next); err == nil {
			page.next = base.ResolveReference(ref).String()
		}
	}
	return page, nil
}

// TokenRequest asks for a token with a subset of the key's capability.
type TokenRequest struct {
	// Capability maps channel patterns to operations; nil means the key's.
	Capability map[string][]string `json:"capability,omitempty"`
	ClientID   string              `json:"clientId,omitempty"`
	// TTL is the token's lifetime (server default when zero).
	TTL time.Duration `json:"-"`
}

// TokenDetails is an issued token.
type TokenDetails struct {
	Token      string              `json:"token"`
	Expires    int64               `json:"expires"`
	KeyName    string              `json:"keyName"`
	ClientID   string              `json:"clientId,omitempty"`
	Capability map[string][]string `json:"capability"`
}

// RequestToken asks the server for a token (the client must use a key).
func (c *Client) RequestToken(ctx context.Context, req TokenRequest) (*TokenDetails, error) {
	body := map[string]any{}
	if req.Capability != nil {
		body["capability"] = req.Capability
	}
	if req.ClientID != "" {
		body["clientId"] = req.ClientID
	}
	if req.TTL > 0 {
		body["ttl"] = req.TTL.String()
	}
	b, _ := json.Marshal(body)
	_, reply, err := c.rest(ctx, http.MethodPost, c.restURL("/v1/tokens").String(), b)
	if err != nil {
		return nil, err
	}
	var td TokenDetails
	if err := json.Unmarshal(reply, &td); err != nil {
		return nil, fmt.Errorf("client: token reply: %w", err)
	}
	return &td, nil
}

// PresenceMembers reads a channel's members over REST (no connection
// needed).
func (c *Client) PresenceMembers(ctx context.Context, channel string) ([]PresenceMember, error) {
	_, body, err := c.rest(ctx, http.MethodGet, c.restURL("/v1/channels/"+url.PathEscape(channel)+"/presence").String(), nil)
	if err != nil {
		return nil, err
	}
	var members []PresenceMember
	if err := json.Unmarshal(body, &members); err != nil {
		return nil, fmt.Errorf("client: presence reply: %w", err)
	}
	return members, nil
}

func (c *Client) restURL(path string) *url.URL {
	c.mu.Lock()
	h := *c.hostLocked()
	c.mu.Unlock()
	h.Path += path
	h.RawPath = ""
	return &h
}

// rest performs a REST call with the client's credentials; a reply that
// is not 2xx is an *Error.
func (c *Client) rest(ctx context.Context, method, u string, body []byte) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	token, err := c.currentToken(ctx)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case token != "":
		req.Header.Set("Authorization", "Bearer "+token)
	case c.opts.Key != "":
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(c.opts.Key)))
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error *Error `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != nil {
			return nil, nil, e.Error
		}
		return nil, nil, &Error{StatusCode: resp.StatusCode, Message: strings.TrimSpace(string(b))}
	}
	return resp, b, nil
}

// nextLink extracts the rel="next" target of a Link header.
func nextLink(h string) string {
	for _, part := range strings.Split(h, ",") {
		if !strings.Contains(part, `rel="next"`) {
			continue
		}
		start, end := strings.Index(part, "<"), strings.Index(part, ">")
		if start >= 0 && end > start {
			return part[start+1 : end]
		}
	}
	return ""
}
