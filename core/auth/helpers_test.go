package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// testNow is the fixed current time of the test authenticators.
var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// Test keys.
var (
	appKey = Key{
		Name:       "app",
		Secret:     "app-secret-Zq9x",
		Capability: Capability{"*": {OpPublish, OpSubscribe, OpPresence, OpHistory}},
	}
	chatKey = Key{
		Name:       "chat",
		Secret:     "chat-secret-Wk3y",
		Capability: Capability{"chat:*": {OpPublish, OpSubscribe}, "chat:admin": {OpAdmin}},
	}
)

// clock is a settable time source for tests.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// newTestAuth returns an authenticator with the test keys and a clock
// starting at testNow.
func newTestAuth(t testing.TB, modify ...func(*Options)) (*Authenticator, *clock) {
	t.Helper()
	clk := &clock{t: testNow}
	opts := Options{Keys: []Key{appKey, chatKey}, Now: clk.now}
	for _, m := range modify {
		m(&opts)
	}
	a, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a, clk
}

// b64 encodes a JWT segment.
func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// signRaw builds a compact JWT from an arbitrary header and claims, signed
// with HMAC-SHA256 under secret.
func signRaw(t testing.TB, header, claims map[string]any, secret string) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signing := b64(h) + "." + b64(c)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signing))
	return signing + "." + b64(mac.Sum(nil))
}

// validClaims returns claims of a valid token at testNow.
func validClaims() map[string]any {
	return map[string]any{
		"iat":           testNow.Unix(),
		"exp":           testNow.Add(time.Hour).Unix(),
		CapabilityClaim: map[string][]string{"chat:*": {"subscribe"}},
	}
}

// hs256Header returns the header of a token signed by kid.
func hs256Header(kid string) map[string]any {
	return map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}
}

// signedByConfiguredKey reports, independently of the code under test,
// whether token is an HS256 JWT whose signature verifies under secret.
func signedByConfiguredKey(token, secret string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return false
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hb, &hdr) != nil || hdr.Alg != "HS256" {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	return hmac.Equal(sig, mac.Sum(nil))
}
