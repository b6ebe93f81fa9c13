package auth

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboardhq/switchboard/core/apierr"
)

func TestNewValidation(t *testing.T) {
	good := Capability{"*": {OpPublish}}
	tests := []struct {
		name string
		opts Options
	}{
		{"empty name", Options{Keys: []Key{{Name: "", Secret: "s", Capability: good}}}},
		{"colon in name", Options{Keys: []Key{{Name: "a:b", Secret: "s", Capability: good}}}},
		{"control char in name", Options{Keys: []Key{{Name: "a\tb", Secret: "s", Capability: good}}}},
		{"empty secret", Options{Keys: []Key{{Name: "a", Secret: "", Capability: good}}}},
		{"duplicate name", Options{Keys: []Key{{Name: "a", Secret: "s", Capability: good}, {Name: "a", Secret: "t", Capability: good}}}},
		{"no capability", Options{Keys: []Key{{Name: "a", Secret: "s"}}}},
		{"invalid capability", Options{Keys: []Key{{Name: "a", Secret: "s", Capability: Capability{"a*b": {OpPublish}}}}}},
		{"unknown op", Options{Keys: []Key{{Name: "a", Secret: "s", Capability: Capability{"*": {"write"}}}}}},
		{"negative max ttl", Options{MaxTokenTTL: -time.Second}},
		{"negative default ttl", Options{DefaultTokenTTL: -time.Second}},
		{"default over max", Options{MaxTokenTTL: time.Minute, DefaultTokenTTL: time.Hour}},
		{"tiny max", Options{MaxTokenTTL: time.Millisecond}},
	}
	for _, tt := range tests {
		a, err := New(tt.opts)
		if a != nil {
			t.Errorf("%s: New succeeded", tt.name)
		}
		wantCode(t, tt.name, err, apierr.BadRequest)
		if strings.Contains(err.Error(), "\"s\"") {
			t.Errorf("%s: error reveals the secret: %v", tt.name, err)
		}
	}
	a, err := New(Options{MaxTokenTTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if a.defaultTTL != 10*time.Minute {
		t.Errorf("default ttl = %s, want it capped at the maximum", a.defaultTTL)
	}
}

func TestNewCopiesKeys(t *testing.T) {
	capab := Capability{"chat:*": {OpSubscribe}}
	keys := []Key{{Name: "k", Secret: "s", Capability: capab}}
	a, err := New(Options{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	capab["*"] = AllOperations()
	capab["chat:*"][0] = OpAdmin
	keys[0].Secret = "changed"
	id, err := a.Authenticate(Credentials{Key: "k:s"})
	if err != nil {
		t.Fatal(err)
	}
	if id.Can("news:x", OpPublish) || id.Can("chat:x", OpAdmin) || !id.Can("chat:x", OpSubscribe) {
		t.Errorf("authenticator affected by changes to the caller's options: %v", id.Capability)
	}
	id.Capability["*"] = AllOperations()
	id2, _ := a.Authenticate(Credentials{Key: "k:s"})
	if id2.Can("news:x", OpPublish) {
		t.Error("changing one identity's capability changed the key's")
	}
}

func TestAuthenticateKey(t *testing.T) {
	a, _ := newTestAuth(t)
	for _, c := range []Credentials{
		{Key: "chat:" + chatKey.Secret},
		{KeyName: "chat", KeySecret: chatKey.Secret},
		{KeySecret: "chat:" + chatKey.Secret},
		{KeyName: "chat:" + chatKey.Secret},
	} {
		id, err := a.Authenticate(c)
		if err != nil {
			t.Fatalf("Authenticate(%+v): %v", c, err)
		}
		if id.KeyName != "chat" || id.Anonymous || id.Dev || id.Token() || !id.ExpiresAt.IsZero() || id.ClientID != "" {
			t.Errorf("identity = %+v", id)
		}
		if !id.Can("chat:x", OpPublish) || id.Can("news:x", OpPublish) || !id.Can("chat:admin", OpAdmin) {
			t.Errorf("capability = %v", id.Capability)
		}
	}

	wrongSecret, err1 := a.Authenticate(Credentials{KeyName: "chat", KeySecret: appKey.Secret})
	unknownKey, err2 := a.Authenticate(Credentials{KeyName: "nobody", KeySecret: chatKey.Secret})
	if wrongSecret != nil || unknownKey != nil {
		t.Fatal("bad credentials accepted")
	}
	wantCode(t, "wrong secret", err1, apierr.InvalidCredentials)
	wantCode(t, "unknown key", err2, apierr.InvalidCredentials)
	if err1.Error() != err2.Error() {
		t.Errorf("wrong secret and unknown key are distinguishable: %q vs %q", err1, err2)
	}

	bad := []Credentials{
		{Key: "chat:"},
		{Key: "chat:" + chatKey.Secret + "x"},
		{Key: "chat:" + chatKey.Secret[:len(chatKey.Secret)-1]},
		{Key: ":" + chatKey.Secret},
		{Key: "chat"},
		{Key: chatKey.Secret},
		{KeyName: "chat"},
		{KeySecret: chatKey.Secret},
		{KeyName: "CHAT", KeySecret: chatKey.Secret},
	}
	for _, c := range bad {
		id, err := a.Authenticate(c)
		if id != nil {
			t.Errorf("Authenticate(%+v) accepted", c)
			continue
		}
		wantCode(t, "bad key", err, apierr.InvalidCredentials)
		for _, k := range []Key{appKey, chatKey} {
			if strings.Contains(err.Error(), k.Secret) || strings.Contains(err.Error(), k.Secret[:len(k.Secret)-1]) {
				t.Errorf("error reveals a secret: %v", err)
			}
		}
	}

	for _, c := range []Credentials{
		{Key: "chat:" + chatKey.Secret, Token: "a.b.c"},
		{Key: "chat:" + chatKey.Secret, KeyName: "chat", KeySecret: chatKey.Secret},
		{KeyName: "chat", KeySecret: chatKey.Secret, Token: "a.b.c"},
	} {
		_, err := a.Authenticate(c)
		wantCode(t, "several forms", err, apierr.BadRequest)
	}
}

func TestAnonymous(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	rules := func(channel string) []Operation {
		mu.Lock()
		asked = append(asked, channel)
		mu.Unlock()
		switch {
		case strings.HasPrefix(channel, "public:"):
			return []Operation{OpSubscribe, OpHistory}
		case strings.HasPrefix(channel, "odd:"):
			return []Operation{"bogus"}
		}
		return nil
	}
	a, _ := newTestAuth(t, func(o *Options) { o.Anonymous = rules })
	id, err := a.Authenticate(Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	if !id.Anonymous || id.Dev || id.KeyName != "" || id.Capability != nil {
		t.Fatalf("identity = %+v", id)
	}
	checks := []struct {
		name string
		op   Operation
		want bool
	}{
		{"public:news", OpSubscribe, true},
		{"public:news", OpHistory, true},
		{"public:news", OpPublish, false},
		{"public:news", OpAdmin, false},
		{"private:x", OpSubscribe, false},
		{"odd:x", "bogus", false},
		{"odd:x", OpSubscribe, false},
	}
	for _, c := range checks {
		if got := id.Can(c.name, c.op); got != c.want {
			t.Errorf("anonymous Can(%q, %s) = %v, want %v", c.name, c.op, got, c.want)
		}
		err := id.Check(c.name, c.op)
		if c.want {
			if err != nil {
				t.Errorf("Check(%q, %s) = %v", c.name, c.op, err)
			}
			continue
		}
		wantCode(t, "anonymous denied", err, apierr.Unauthorized)
		if !strings.Contains(err.Error(), "credentials required") || !strings.Contains(err.Error(), c.name) {
			t.Errorf("Check message = %q", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) == 0 || asked[0] != "public:news" {
		t.Errorf("anonymous rules asked about %v, want the channel names", asked)
	}

	// Without rules anonymous clients can do nothing.
	b, _ := newTestAuth(t)
	id, err = b.Authenticate(Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range AllOperations() {
		if id.Can("public:news", op) {
			t.Errorf("anonymous without rules may %s", op)
		}
		wantCode(t, "no rules", id.Check("anything", op), apierr.Unauthorized)
	}
}

func TestDevMode(t *testing.T) {
	a, _ := newTestAuth(t, func(o *Options) {
		o.Dev = true
		o.Anonymous = func(string) []Operation { return nil }
	})
	id, err := a.Authenticate(Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	if !id.Dev || id.Anonymous || id.KeyName != "" {
		t.Fatalf("identity = %+v", id)
	}
	for _, op := range AllOperations() {
		if !id.Can("any:thing", op) || id.Check("x", op) != nil {
			t.Errorf("dev identity may not %s", op)
		}
	}
	if id.Can("x", "bogus") {
		t.Error("dev identity allowed an unknown operation")
	}
	// Credentials are still verified in dev mode.
	_, err = a.Authenticate(Credentials{Key: "chat:wrong"})
	wantCode(t, "dev wrong secret", err, apierr.InvalidCredentials)
	kid, err := a.Authenticate(Credentials{Key: "chat:" + chatKey.Secret})
	if err != nil || kid.Dev || kid.Can("news:x", OpPublish) {
		t.Errorf("dev mode key identity = %+v, %v", kid, err)
	}
}

func TestIdentityZeroAndNil(t *testing.T) {
	var nilID *Identity
	if nilID.Can("x", OpPublish) || nilID.Token() {
		t.Error("nil identity can do something")
	}
	wantCode(t, "nil Check", nilID.Check("x", OpPublish), apierr.Unauthorized)
	zero := &Identity{}
	if zero.Can("x", OpPublish) {
		t.Error("zero identity can do something")
	}
	wantCode(t, "zero Check", zero.Check("x", OpPublish), apierr.OperationNotAllowed)
	err := (&Identity{KeyName: "k", Capability: Capability{"chat:*": {OpSubscribe}}}).Check("news:1", OpPublish)
	wantCode(t, "Check", err, apierr.OperationNotAllowed)
	if !strings.Contains(err.Error(), `"publish"`) || !strings.Contains(err.Error(), `"news:1"`) {
		t.Errorf("Check message should name the operation and resource: %v", err)
	}
	var nilAuth *Authenticator
	_, err = nilAuth.Authenticate(Credentials{})
	wantCode(t, "nil authenticator", err, apierr.Internal)
}

func TestConcurrentUse(t *testing.T) {
	a, _ := newTestAuth(t, func(o *Options) {
		o.Anonymous = func(ch string) []Operation {
			if strings.HasPrefix(ch, "public:") {
				return []Operation{OpSubscribe}
			}
			return nil
		}
	})
	tok, _, err := a.IssueToken(keyIdentity(t, a, chatKey), TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				var c Credentials
				switch i % 3 {
				case 0:
					c.Token = tok
				case 1:
					c.Key = "app:" + appKey.Secret
				}
				id, err := a.Authenticate(c)
				if err != nil {
					t.Error(err)
					return
				}
				_ = id.Can("public:x", OpSubscribe)
				if i%3 == 1 {
					if _, _, err := a.IssueToken(id, TokenRequest{}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}
