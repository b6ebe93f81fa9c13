package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboardhq/switchboard/core/apierr"
)

// keyIdentity authenticates k against a.
func keyIdentity(t *testing.T, a *Authenticator, k Key) *Identity {
	t.Helper()
	id, err := a.Authenticate(Credentials{KeyName: k.Name, KeySecret: k.Secret})
	if err != nil {
		t.Fatalf("Authenticate(%s): %v", k.Name, err)
	}
	return id
}

// wantCode fails unless err has the given code.
func wantCode(t *testing.T, what string, err error, code apierr.Code) {
	t.Helper()
	if got := apierr.CodeOf(err); got != code {
		t.Fatalf("%s: error = %v (code %d), want code %d", what, err, got, code)
	}
	var e *apierr.Error
	if code != 0 && !errors.As(err, &e) {
		t.Fatalf("%s: %T is not an *apierr.Error", what, err)
	}
}

func TestTokenRoundTrip(t *testing.T) {
	a, _ := newTestAuth(t)
	id := keyIdentity(t, a, chatKey)
	req := TokenRequest{
		Capability: Capability{"chat:lobby": {OpSubscribe}, "chat:*": {OpPublish}},
		ClientID:   "device-7",
		TTL:        30 * time.Minute,
	}
	tok, exp, err := a.IssueToken(id, req)
	if err != nil {
		t.Fatalf("IssueToken: %v", err)
	}
	if want := testNow.Add(30 * time.Minute); !exp.Equal(want) {
		t.Errorf("expiresAt = %v, want %v", exp, want)
	}
	if !signedByConfiguredKey(tok, chatKey.Secret) {
		t.Error("token is not HS256-signed with the key's secret")
	}
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Header["alg"] != "HS256" || parsed.Header["kid"] != "chat" {
		t.Errorf("header = %v", parsed.Header)
	}
	claims := parsed.Claims.(jwt.MapClaims)
	for _, c := range []string{"iat", "exp", CapabilityClaim, ClientIDClaim} {
		if _, ok := claims[c]; !ok {
			t.Errorf("claim %s missing: %v", c, claims)
		}
	}

	got, err := a.Authenticate(Credentials{Token: tok})
	if err != nil {
		t.Fatalf("Authenticate(token): %v", err)
	}
	if got.KeyName != "chat" || got.ClientID != "device-7" || !got.ExpiresAt.Equal(exp) || got.Anonymous || got.Dev || !got.Token() {
		t.Errorf("identity = %+v", got)
	}
	if !reflect.DeepEqual(got.Capability, req.Capability) {
		t.Errorf("capability = %v, want %v", got.Capability, req.Capability)
	}
	checks := []struct {
		name string
		op   Operation
		want bool
	}{
		{"chat:lobby", OpSubscribe, true},
		{"chat:lobby", OpPublish, true},
		{"chat:other", OpPublish, true},
		{"chat:other", OpSubscribe, false},
		{"news:x", OpPublish, false},
		{"chat:admin", OpAdmin, false},
	}
	for _, c := range checks {
		if got.Can(c.name, c.op) != c.want {
			t.Errorf("Can(%q, %s) = %v, want %v", c.name, c.op, !c.want, c.want)
		}
	}
	wantCode(t, "Check denied", got.Check("news:x", OpPublish), apierr.OperationNotAllowed)

	// The same token in every slot that may carry one.
	for _, c := range []Credentials{{KeySecret: tok}, {KeyName: tok}, {Key: tok}} {
		if got, err := a.Authenticate(c); err != nil || got.KeyName != "chat" {
			t.Errorf("Authenticate(%+v) = %v, %v", c, got, err)
		}
	}
}

func TestTokenDefaults(t *testing.T) {
	a, _ := newTestAuth(t)
	tok, exp, err := a.IssueToken(keyIdentity(t, a, appKey), TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if want := testNow.Add(DefaultTokenTTL); !exp.Equal(want) {
		t.Errorf("default expiry = %v, want %v", exp, want)
	}
	id, err := a.Authenticate(Credentials{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(id.Capability, appKey.Capability) || id.ClientID != "" {
		t.Errorf("identity = %+v, want the key's full capability and no clientId", id)
	}
	tok, _, err = a.IssueToken(keyIdentity(t, a, appKey), TokenRequest{ClientID: "*"})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := a.Authenticate(Credentials{Token: tok}); err != nil || id.ClientID != "*" {
		t.Errorf("wildcard clientId: %+v, %v", id, err)
	}
}

func TestTokenExpired(t *testing.T) {
	a, clk := newTestAuth(t)
	tok, exp, err := a.IssueToken(keyIdentity(t, a, appKey), TokenRequest{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	clk.t = exp.Add(TokenLeeway - time.Second)
	if _, err := a.Authenticate(Credentials{Token: tok}); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	clk.t = exp.Add(TokenLeeway + time.Second)
	_, err = a.Authenticate(Credentials{Token: tok})
	wantCode(t, "expired", err, apierr.TokenExpired)
}

func TestTokenRejected(t *testing.T) {
	a, _ := newTestAuth(t)
	good := signRaw(t, hs256Header("chat"), validClaims(), chatKey.Secret)
	if _, err := a.Authenticate(Credentials{Token: good}); err != nil {
		t.Fatalf("self-signed token per the documented format rejected: %v", err)
	}
	parts := strings.Split(good, ".")

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(m jwt.SigningMethod, key any, kid string) string {
		tk := jwt.NewWithClaims(m, jwt.MapClaims(validClaims()))
		tk.Header["kid"] = kid
		s, err := tk.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	without := func(claim string) map[string]any {
		c := validClaims()
		delete(c, claim)
		return c
	}
	with := func(claim string, v any) map[string]any {
		c := validClaims()
		c[claim] = v
		return c
	}
	tests := []struct {
		name  string
		token string
		code  apierr.Code
	}{
		{"forged with another secret", signRaw(t, hs256Header("chat"), validClaims(), "not-the-secret"), apierr.TokenInvalid},
		{"signed by another configured key", signRaw(t, hs256Header("chat"), validClaims(), appKey.Secret), apierr.TokenInvalid},
		{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "chat"), apierr.TokenInvalid},
		{"alg none with empty signature", b64([]byte(`{"alg":"none","kid":"chat"}`)) + "." + parts[1] + ".", apierr.TokenInvalid},
		{"alg HS512 with the right secret", sign(jwt.SigningMethodHS512, []byte(chatKey.Secret), "chat"), apierr.TokenInvalid},
		{"alg RS256", sign(jwt.SigningMethodRS256, rsaKey, "chat"), apierr.TokenInvalid},
		{"alg RS256 header with HMAC signature", signRaw(t, map[string]any{"alg": "RS256", "kid": "chat"}, validClaims(), chatKey.Secret), apierr.TokenInvalid},
		{"unknown alg", signRaw(t, map[string]any{"alg": "XX1", "kid": "chat"}, validClaims(), chatKey.Secret), apierr.TokenInvalid},
		{"no alg", signRaw(t, map[string]any{"kid": "chat"}, validClaims(), chatKey.Secret), apierr.TokenInvalid},
		{"unknown kid", signRaw(t, hs256Header("ghost"), validClaims(), "ghost-secret"), apierr.TokenInvalid},
		{"no kid", signRaw(t, map[string]any{"alg": "HS256"}, validClaims(), chatKey.Secret), apierr.TokenInvalid},
		{"numeric kid", signRaw(t, map[string]any{"alg": "HS256", "kid": 7}, validClaims(), chatKey.Secret), apierr.TokenInvalid},
		{"no exp", signRaw(t, hs256Header("chat"), without("exp"), chatKey.Secret), apierr.TokenInvalid},
		{"expired long ago", signRaw(t, hs256Header("chat"), with("exp", testNow.Add(-time.Hour).Unix()), chatKey.Secret), apierr.TokenExpired},
		{"exp beyond max lifetime", signRaw(t, hs256Header("chat"), with("exp", testNow.Add(DefaultMaxTokenTTL+time.Minute).Unix()), chatKey.Secret), apierr.TokenInvalid},
		{"exp as string", signRaw(t, hs256Header("chat"), with("exp", "soon"), chatKey.Secret), apierr.TokenInvalid},
		{"iat in the future", signRaw(t, hs256Header("chat"), with("iat", testNow.Add(time.Minute).Unix()), chatKey.Secret), apierr.TokenInvalid},
		{"nbf in the future", signRaw(t, hs256Header("chat"), with("nbf", testNow.Add(time.Minute).Unix()), chatKey.Secret), apierr.TokenInvalid},
		{"no capability", signRaw(t, hs256Header("chat"), without(CapabilityClaim), chatKey.Secret), apierr.TokenInvalid},
		{"null capability", signRaw(t, hs256Header("chat"), with(CapabilityClaim, nil), chatKey.Secret), apierr.TokenInvalid},
		{"capability as string", signRaw(t, hs256Header("chat"), with(CapabilityClaim, `{"*":["publish"]}`), chatKey.Secret), apierr.TokenInvalid},
		{"capability bad pattern", signRaw(t, hs256Header("chat"), with(CapabilityClaim, map[string][]string{"a*b": {"publish"}}), chatKey.Secret), apierr.TokenInvalid},
		{"capability bad op", signRaw(t, hs256Header("chat"), with(CapabilityClaim, map[string][]string{"chat:*": {"write"}}), chatKey.Secret), apierr.TokenInvalid},
		{"clientId not a string", signRaw(t, hs256Header("chat"), with(ClientIDClaim, 12), chatKey.Secret), apierr.TokenInvalid},
		{"clientId with control char", signRaw(t, hs256Header("chat"), with(ClientIDClaim, "a\x00b"), chatKey.Secret), apierr.TokenInvalid},
		{"tampered payload", parts[0] + "." + b64([]byte(`{"exp":9999999999,"x-switchboard-capability":{"*":["*"]}}`)) + "." + parts[2], apierr.TokenInvalid},
		{"non-canonical signature encoding", parts[0] + "." + parts[1] + "." + parts[2] + "=", apierr.TokenInvalid},
		{"two segments", parts[0] + "." + parts[1], apierr.TokenInvalid},
		{"four segments", good + ".x", apierr.TokenInvalid},
		{"garbage", "not-a-token", apierr.TokenInvalid},
		{"dots only", "..", apierr.TokenInvalid},
		{"too long", good + strings.Repeat("A", MaxTokenLen), apierr.TokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := a.Authenticate(Credentials{Token: tt.token})
			if id != nil {
				t.Fatalf("accepted: %+v", id)
			}
			wantCode(t, tt.name, err, tt.code)
			t.Log(apierr.From(err).Message)
			for _, k := range []Key{appKey, chatKey} {
				if strings.Contains(err.Error(), k.Secret) {
					t.Fatalf("error reveals a secret: %v", err)
				}
			}
		})
	}
}

func TestIssueTokenErrors(t *testing.T) {
	a, _ := newTestAuth(t, func(o *Options) { o.MaxTokenTTL = 2 * time.Hour })
	chat := keyIdentity(t, a, chatKey)
	tests := []struct {
		name string
		req  TokenRequest
		code apierr.Code
	}{
		{"capability wider pattern", TokenRequest{Capability: Capability{"*": {OpSubscribe}}}, apierr.OperationNotAllowed},
		{"capability other namespace", TokenRequest{Capability: Capability{"news:*": {OpSubscribe}}}, apierr.OperationNotAllowed},
		{"capability chat* vs chat:*", TokenRequest{Capability: Capability{"chat*": {OpSubscribe}}}, apierr.OperationNotAllowed},
		{"capability extra op", TokenRequest{Capability: Capability{"chat:x": {OpHistory}}}, apierr.OperationNotAllowed},
		{"capability admin elsewhere", TokenRequest{Capability: Capability{"chat:x": {OpAdmin}}}, apierr.OperationNotAllowed},
		{"capability invalid", TokenRequest{Capability: Capability{"chat:*x": {OpPublish}}}, apierr.BadRequest},
		{"capability empty", TokenRequest{Capability: Capability{}}, apierr.BadRequest},
		{"ttl over max", TokenRequest{TTL: 2*time.Hour + time.Second}, apierr.InvalidParameter},
		{"ttl negative", TokenRequest{TTL: -time.Second}, apierr.InvalidParameter},
		{"ttl under a second", TokenRequest{TTL: time.Millisecond}, apierr.InvalidParameter},
		{"clientId too long", TokenRequest{ClientID: strings.Repeat("c", MaxClientIDLen+1)}, apierr.InvalidParameter},
		{"clientId control char", TokenRequest{ClientID: "a\nb"}, apierr.InvalidParameter},
	}
	for _, tt := range tests {
		tok, _, err := a.IssueToken(chat, tt.req)
		if tok != "" {
			t.Errorf("%s: issued a token", tt.name)
		}
		wantCode(t, tt.name, err, tt.code)
	}
	if _, _, err := a.IssueToken(chat, TokenRequest{TTL: 2 * time.Hour, Capability: Capability{"chat:admin": {OpAdmin}}}); err != nil {
		t.Errorf("ttl at max with a subset capability: %v", err)
	}

	_, _, err := a.IssueToken(chat, TokenRequest{Capability: Capability{"chat:*": {OpPublish, OpHistory}}})
	if err == nil || !strings.Contains(err.Error(), `"history"`) || !strings.Contains(err.Error(), `"chat:*"`) {
		t.Errorf("not-a-subset message should name the operation and pattern: %v", err)
	}
}

func TestIssueTokenIdentities(t *testing.T) {
	a, _ := newTestAuth(t, func(o *Options) { o.Anonymous = func(string) []Operation { return AllOperations() } })
	dev, _ := newTestAuth(t, func(o *Options) { o.Dev = true })
	tok, _, err := a.IssueToken(keyIdentity(t, a, appKey), TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tokID, err := a.Authenticate(Credentials{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	anon, _ := a.Authenticate(Credentials{})
	devID, _ := dev.Authenticate(Credentials{})
	tests := []struct {
		name string
		a    *Authenticator
		id   *Identity
		code apierr.Code
	}{
		{"nil identity", a, nil, apierr.Unauthorized},
		{"anonymous", a, anon, apierr.Unauthorized},
		{"dev", dev, devID, apierr.Unauthorized},
		{"token", a, tokID, apierr.Forbidden},
		{"hand-built identity", a, &Identity{KeyName: "app", Capability: appKey.Capability}, apierr.Unauthorized},
		{"key from another authenticator", func() *Authenticator {
			b, err := New(Options{Keys: []Key{chatKey}})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}(), keyIdentity(t, a, appKey), apierr.InvalidCredentials},
	}
	for _, tt := range tests {
		_, _, err := tt.a.IssueToken(tt.id, TokenRequest{})
		wantCode(t, tt.name, err, tt.code)
	}
	if _, _, err := dev.IssueToken(keyIdentity(t, dev, appKey), TokenRequest{}); err != nil {
		t.Errorf("dev mode with a key: %v", err)
	}
	var nilAuth *Authenticator
	_, _, err = nilAuth.IssueToken(keyIdentity(t, a, appKey), TokenRequest{})
	wantCode(t, "nil authenticator", err, apierr.Internal)
}

func TestKeyReductionRestrictsTokens(t *testing.T) {
	a, clk := newTestAuth(t)
	tok, _, err := a.IssueToken(keyIdentity(t, a, chatKey), TokenRequest{
		Capability: Capability{"chat:*": {OpPublish, OpSubscribe}, "chat:admin": {OpAdmin}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The configuration is reloaded with a reduced capability for the key.
	reduced := chatKey
	reduced.Capability = Capability{"chat:lobby": {OpSubscribe}, "chat:admin": {OpPublish}}
	b, err := New(Options{Keys: []Key{appKey, reduced}, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	id, err := b.Authenticate(Credentials{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		op   Operation
		want bool
	}{
		{"chat:lobby", OpSubscribe, true},
		{"chat:lobby", OpPublish, false},
		{"chat:other", OpSubscribe, false},
		{"chat:admin", OpPublish, true},
		{"chat:admin", OpAdmin, false},
	}
	for _, c := range checks {
		if id.Can(c.name, c.op) != c.want {
			t.Errorf("after reduction Can(%q, %s) = %v, want %v (capability %v)", c.name, c.op, !c.want, c.want, id.Capability)
		}
	}

	// A changed secret or a removed key revokes the token.
	rotated := chatKey
	rotated.Secret = "rotated"
	for _, keys := range [][]Key{{appKey, rotated}, {appKey}} {
		c, err := New(Options{Keys: keys, Now: clk.now})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Authenticate(Credentials{Token: tok})
		wantCode(t, "revoked", err, apierr.TokenInvalid)
	}
}
