package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"strings"
	"time"

	"github.com/switchboardhq/switchboard/core/apierr"
)

// Defaults for token lifetimes.
const (
	DefaultMaxTokenTTL = 24 * time.Hour
	DefaultTokenTTL    = time.Hour
)

// Key is an API key from the configuration.
type Key struct {
	// Name identifies the key; it is non-empty, unique and has no ':'.
	Name string
	// Secret authenticates the key and signs its tokens.
	Secret string
	// Capability is what the key, and the tokens it issues, may do.
	Capability Capability
}

// Options configure an [Authenticator].
type Options struct {
	// Keys are the configured API keys.
	Keys []Key
	// Dev is open mode: every request without credentials is a Dev
	// identity that is allowed everything. Credentials that are given are
	// still verified.
	Dev bool
	// Anonymous returns the operations anonymous clients may perform on a
	// channel (the rule of its namespace), or nil for none. Nil means
	// anonymous clients may do nothing. It must be safe for concurrent use.
	Anonymous func(channel string) []Operation
	// MaxTokenTTL is the longest lifetime of a token; 0 means
	// DefaultMaxTokenTTL. Tokens that expire further in the future are
	// neither issued nor accepted.
	MaxTokenTTL time.Duration
	// DefaultTokenTTL is the lifetime of a token issued without one; 0
	// means DefaultTokenTTL (or MaxTokenTTL when that is shorter).
	DefaultTokenTTL time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// keyEntry is a configured key.
type keyEntry struct {
	name       string
	secret     []byte
	secretHash [sha256.Size]byte
	capability Capability
}

// Authenticator verifies credentials and issues tokens. It is immutable
// after [New] and safe for concurrent use. To change the configuration,
// build a new one.
type Authenticator struct {
	keys       map[string]*keyEntry
	dev        bool
	anonymous  func(channel string) []Operation
	maxTTL     time.Duration
	defaultTTL time.Duration
	now        func() time.Time
	// dummyHash is compared against when the key name is unknown, so that
	// unknown names and wrong secrets take the same time.
	dummyHash [sha256.Size]byte
}

// New returns an Authenticator for opts. Key names must be non-empty,
// unique, without ':' or control characters; secrets non-empty; capabilities
// valid and non-empty. Errors are BadRequest errors naming the key.
func New(opts Options) (*Authenticator, error) {
	a := &Authenticator{
		keys:       make(map[string]*keyEntry, len(opts.Keys)),
		dev:        opts.Dev,
		anonymous:  opts.Anonymous,
		maxTTL:     opts.MaxTokenTTL,
		defaultTTL: opts.DefaultTokenTTL,
		now:        opts.Now,
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.maxTTL < 0 || a.defaultTTL < 0 {
		return nil, apierr.New(apierr.BadRequest, "token lifetimes must not be negative")
	}
	if a.maxTTL == 0 {
		a.maxTTL = DefaultMaxTokenTTL
	}
	if a.maxTTL < time.Second {
		return nil, apierr.New(apierr.BadRequest, "maximum token lifetime %s is shorter than 1s", a.maxTTL)
	}
	if a.defaultTTL == 0 {
		a.defaultTTL = min(DefaultTokenTTL, a.maxTTL)
	}
	if a.defaultTTL < time.Second {
		return nil, apierr.New(apierr.BadRequest, "default token lifetime %s is shorter than 1s", a.defaultTTL)
	}
	if a.defaultTTL > a.maxTTL {
		return nil, apierr.New(apierr.BadRequest, "default token lifetime %s exceeds the maximum %s", a.defaultTTL, a.maxTTL)
	}
	for i, k := range opts.Keys {
		switch {
		case k.Name == "":
			return nil, apierr.New(apierr.BadRequest, "key %d has no name", i+1)
		case strings.Contains(k.Name, ":"):
			return nil, apierr.New(apierr.BadRequest, "key name %s contains ':'", quote(k.Name))
		case checkText(k.Name) != nil:
			return nil, apierr.New(apierr.BadRequest, "key name %s %v", quote(k.Name), checkText(k.Name))
		case k.Secret == "":
			return nil, apierr.New(apierr.BadRequest, "key %s has no secret", quote(k.Name))
		case len(k.Capability) == 0:
			return nil, apierr.New(apierr.BadRequest, "key %s has no capabilities", quote(k.Name))
		}
		if _, dup := a.keys[k.Name]; dup {
			return nil, apierr.New(apierr.BadRequest, "key name %s is used more than once", quote(k.Name))
		}
		if err := k.Capability.Validate(); err != nil {
			return nil, apierr.Wrap(err, apierr.BadRequest, "key %s: %s", quote(k.Name), apierr.From(err).Message)
		}
		a.keys[k.Name] = &keyEntry{
			name:       k.Name,
			secret:     []byte(k.Secret),
			secretHash: sha256.Sum256([]byte(k.Secret)),
			capability: k.Capability.normalized(),
		}
	}
	if _, err := rand.Read(a.dummyHash[:]); err != nil {
		return nil, apierr.Wrap(err, apierr.Internal, "reading random bytes")
	}
	return a, nil
}

// Credentials are credentials as presented by any protocol. At most one of
// the forms is set: Key, the pair KeyName/KeySecret, or Token.
type Credentials struct {
	// Key is a key as "name:secret".
	Key string
	// KeyName and KeySecret are a key already split, for example an MQTT
	// username and password, STOMP login and passcode, SASL PLAIN or HTTP
	// basic authentication.
	KeyName, KeySecret string
	// Token is a JWT.
	Token string
}

// Empty reports whether no credentials are set.
func (c Credentials) Empty() bool {
	return c.Key == "" && c.KeyName == "" && c.KeySecret == "" && c.Token == ""
}

// Authenticate verifies credentials and returns who they identify.
//
// Without credentials the result is a Dev identity in dev mode and an
// Anonymous identity otherwise. A single credential in the Key slot, or in
// one of KeyName and KeySecret with the other empty, is taken as a token if
// it has the form of a JWT and as "name:secret" if it contains ':'.
//
// Errors: more than one form set is BadRequest; an unknown key or wrong
// secret is InvalidCredentials (the same message for both); an expired token
// is TokenExpired; any other problem with a token is TokenInvalid.
func (a *Authenticator) Authenticate(c Credentials) (*Identity, error) {
	if a == nil {
		return nil, apierr.New(apierr.Internal, "authenticator not configured")
	}
	forms := 0
	if c.Key != "" {
		forms++
	}
	if c.KeyName != "" || c.KeySecret != "" {
		forms++
	}
	if c.Token != "" {
		forms++
	}
	switch {
	case forms == 0:
		if a.dev {
			return &Identity{Dev: true}, nil
		}
		return &Identity{Anonymous: true, anonymous: a.anonymous}, nil
	case forms > 1:
		return nil, apierr.New(apierr.BadRequest,
			"more than one form of credentials given; use one of a key, a key name and secret, or a token")
	case c.Token != "":
		return a.verifyToken(c.Token)
	case c.Key != "":
		return a.bare(c.Key)
	case c.KeyName == "":
		return a.bare(c.KeySecret)
	case c.KeySecret == "":
		return a.bare(c.KeyName)
	default:
		return a.verifyKey(c.KeyName, c.KeySecret)
	}
}

// bare authenticates a single credential that may be a key or a token.
// Tokens never contain ':' and keys always do.
func (a *Authenticator) bare(s string) (*Identity, error) {
	if name, secret, ok := strings.Cut(s, ":"); ok {
		return a.verifyKey(name, secret)
	}
	if strings.Count(s, ".") == 2 {
		return a.verifyToken(s)
	}
	return nil, apierr.New(apierr.InvalidCredentials, "malformed credentials: expected a key as name:secret or a token")
}

// verifyKey checks a key name and secret in constant time.
func (a *Authenticator) verifyKey(name, secret string) (*Identity, error) {
	got := sha256.Sum256([]byte(secret))
	k, known := a.keys[name]
	want := a.dummyHash
	if known {
		want = k.secretHash
	}
	match := subtle.ConstantTimeCompare(got[:], want[:]) == 1
	if !known || !match {
		return nil, apierr.New(apierr.InvalidCredentials, "invalid credentials: unknown key or wrong secret")
	}
	return &Identity{
		KeyName:    k.name,
		Capability: k.capability.normalized(),
		method:     methodKey,
	}, nil
}
