package auth

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func FuzzParseToken(f *testing.F) {
	a, _ := newTestAuth(f)
	keys := map[string]Key{appKey.Name: appKey, chatKey.Name: chatKey}

	for _, k := range []Key{appKey, chatKey} {
		id, err := a.Authenticate(Credentials{KeyName: k.Name, KeySecret: k.Secret})
		if err != nil {
			f.Fatal(err)
		}
		tok, _, err := a.IssueToken(id, TokenRequest{ClientID: "c1"})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
	}
	f.Add(signRaw(f, hs256Header("chat"), validClaims(), chatKey.Secret))
	f.Add(signRaw(f, hs256Header("chat"), validClaims(), "wrong"))
	f.Add(signRaw(f, hs256Header("ghost"), validClaims(), "ghost"))
	f.Add(signRaw(f, map[string]any{"alg": "HS512", "kid": "app"}, validClaims(), appKey.Secret))
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims(validClaims()))
	none.Header["kid"] = "app"
	noneTok, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(noneTok)
	f.Add("")
	f.Add("..")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.")
	f.Add("app:" + appKey.Secret)
	f.Add(strings.Repeat("A", 100) + "." + strings.Repeat("B", 100) + "." + strings.Repeat("C", 43))

	f.Fuzz(func(t *testing.T, s string) {
		if s == "" {
			return // no credentials: covered by the anonymous and dev tests
		}
		for _, c := range []Credentials{{Token: s}, {KeySecret: s}} {
			id, err := a.Authenticate(c)
			if err != nil {
				if id != nil {
					t.Fatalf("identity %+v returned with error %v", id, err)
				}
				for _, k := range keys {
					if strings.Contains(err.Error(), k.Secret) {
						t.Fatalf("error reveals a secret: %v", err)
					}
				}
				continue
			}
			if c.Token != "" || !strings.Contains(s, ":") {
				k, ok := keys[id.KeyName]
				if !ok {
					t.Fatalf("accepted a token of unconfigured key %q", id.KeyName)
				}
				if !signedByConfiguredKey(s, k.Secret) {
					t.Fatalf("accepted a token not HS256-signed by key %q: %q", id.KeyName, s)
				}
				if !id.Token() || id.ExpiresAt.Before(testNow.Add(-TokenLeeway)) {
					t.Fatalf("bad token identity %+v", id)
				}
				if !id.Capability.Subset(k.Capability) {
					t.Fatalf("token capability %v exceeds key capability %v", id.Capability, k.Capability)
				}
			}
			if id.Anonymous || id.Dev {
				t.Fatalf("credentials gave identity %+v", id)
			}
		}
	})
}

func FuzzParseCapabilityJSON(f *testing.F) {
	for _, s := range []string{
		`{"chat:*":["publish","subscribe"]}`,
		`{"*":["*"]}`,
		`{"a":["admin"],"b*":["queue","history","presence"]}`,
		`{}`,
		`null`,
		`[]`,
		`{"a*b":["publish"]}`,
		`{"":["publish"]}`,
		`{"a":[]}`,
		`{"a":["read"]}`,
		`{"a":["publish"]} x`,
		`{"\u0000":["publish"]}`,
		`{"a":"publish"}`,
		"{\"\xff*\":[\"publish\"]}",
	} {
		f.Add([]byte(s))
	}
	names := []string{"", "a", "chat", "chat:", "chat:room", "b", "bx", "*", "a*b"}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCapabilityJSON(b)
		if err != nil {
			if c != nil {
				t.Fatalf("capability %v returned with error %v", c, err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed capability %v is invalid: %v", c, err)
		}
		if !c.Subset(c) {
			t.Fatalf("%v is not a subset of itself", c)
		}
		if !reflect.DeepEqual(intersect(c, c), c) {
			t.Fatalf("intersect(%v, %v) = %v", c, c, intersect(c, c))
		}
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseCapabilityJSON(out)
		if err != nil || !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip of %v through %s: %v, %v", c, out, back, err)
		}
		for p, ops := range c {
			prefix := strings.TrimSuffix(p, "*")
			matched := []string{p}
			if prefix != p {
				matched = []string{prefix, prefix + "x", prefix + "chat:room"}
			}
			for _, n := range matched {
				for _, op := range ops {
					if !c.Allows(n, op) {
						t.Fatalf("%v does not allow %s on %q, matched by %q", c, op, n, p)
					}
				}
			}
		}
		for _, n := range names {
			for _, op := range AllOperations() {
				want := false
				for p, ops := range c {
					pt, _ := parsePattern(p)
					if pt.matches(n) && setOf(ops)&op.bit() != 0 {
						want = true
					}
				}
				if c.Allows(n, op) != want {
					t.Fatalf("%v.Allows(%q, %s) = %v, want %v", c, n, op, !want, want)
				}
			}
		}
	})
}
