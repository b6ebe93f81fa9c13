package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboardhq/switchboard/core/apierr"
)

// Token format constants; see the package documentation.
const (
	// TokenAlgorithm is the only accepted signing algorithm.
	TokenAlgorithm = "HS256"
	// CapabilityClaim holds the token's capability as a JSON object.
	CapabilityClaim = "x-switchboard-capability"
	// ClientIDClaim holds the token's client identifier.
	ClientIDClaim = "x-switchboard-clientId"
	// TokenLeeway is the clock skew allowed when checking a token's times.
	TokenLeeway = 5 * time.Second
	// MaxTokenLen is the longest token accepted, in bytes.
	MaxTokenLen = 64 << 10
	// MaxClientIDLen is the longest client identifier, in bytes.
	MaxClientIDLen = 256
)

// tokenClaims are the claims of a Switchboard token.
type tokenClaims struct {
	jwt.RegisteredClaims
	Capability json.RawMessage `json:"x-switchboard-capability,omitempty"`
	ClientID   string          `json:"x-switchboard-clientId,omitempty"`
}

// TokenRequest describes a token to issue.
type TokenRequest struct {
	// Capability is what the token allows; nil means the key's full
	// capability. It must be a subset of the key's capability.
	Capability Capability
	// ClientID optionally fixes the client identifier of the token's
	// holder; "*" lets the client choose.
	ClientID string
	// TTL is the token's lifetime; 0 means the default. More than the
	// maximum is an error.
	TTL time.Duration
}

// IssueToken signs a token (see the package documentation for the format)
// with the secret of the key that authenticated id.
//
// Only key-authenticated identities may issue tokens: an anonymous or dev
// identity gets an Unauthorized error and a token-authenticated one a
// Forbidden error. A requested capability that is not a subset of the key's
// is OperationNotAllowed; a bad capability is BadRequest; a bad client
// identifier or lifetime is InvalidParameter. expiresAt is the token's exp
// claim.
func (a *Authenticator) IssueToken(id *Identity, req TokenRequest) (token string, expiresAt time.Time, err error) {
	if a == nil {
		return "", time.Time{}, apierr.New(apierr.Internal, "authenticator not configured")
	}
	switch {
	case id == nil:
		return "", time.Time{}, apierr.New(apierr.Unauthorized, "credentials required: issuing a token requires a key")
	case id.method == methodToken:
		return "", time.Time{}, apierr.New(apierr.Forbidden, "a token cannot issue tokens: authenticate with a key")
	case id.Dev:
		return "", time.Time{}, apierr.New(apierr.Unauthorized,
			"credentials required: issuing a token requires a key, also in dev mode")
	case id.method != methodKey:
		return "", time.Time{}, apierr.New(apierr.Unauthorized, "credentials required: issuing a token requires a key")
	}
	k, ok := a.keys[id.KeyName]
	if !ok {
		return "", time.Time{}, apierr.New(apierr.InvalidCredentials, "invalid credentials: unknown key or wrong secret")
	}

	capab := k.capability
	if req.Capability != nil {
		if err := req.Capability.Validate(); err != nil {
			return "", time.Time{}, apierr.Wrap(err, apierr.BadRequest, "invalid token capability: %s", apierr.From(err).Message)
		}
		if len(req.Capability) == 0 {
			return "", time.Time{}, apierr.New(apierr.BadRequest, "invalid token capability: it allows nothing")
		}
		if p, op, excess := req.Capability.excess(k.capability); excess {
			return "", time.Time{}, apierr.New(apierr.OperationNotAllowed,
				"requested capability is not a subset of key %s's capability: %s on %s is not allowed",
				quote(k.name), quote(string(op)), quote(p))
		}
		capab = req.Capability.normalized()
	}
	if err := checkClientID(req.ClientID); err != nil {
		return "", time.Time{}, apierr.Wrap(err, apierr.InvalidParameter, "invalid clientId: %v", err)
	}

	ttl := req.TTL
	switch {
	case ttl < 0:
		return "", time.Time{}, apierr.New(apierr.InvalidParameter, "token ttl %s is negative", ttl)
	case ttl == 0:
		ttl = a.defaultTTL
	case ttl < time.Second:
		return "", time.Time{}, apierr.New(apierr.InvalidParameter, "token ttl %s is shorter than 1s", ttl)
	case ttl > a.maxTTL:
		return "", time.Time{}, apierr.New(apierr.InvalidParameter, "token ttl %s exceeds the maximum of %s", ttl, a.maxTTL)
	}
	now := a.now()
	issuedAt := now.Truncate(time.Second)
	expiresAt = now.Add(ttl).Truncate(time.Second)

	capJSON, err := json.Marshal(capab)
	if err != nil {
		return "", time.Time{}, apierr.Wrap(err, apierr.Internal, "encoding token capability")
	}
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			IssuedAt:  jwt.NewNumericDate(issuedAt),
			ExpiresAt: jwt.NewNumericDate(expiresAt),
		},
		Capability: capJSON,
		ClientID:   req.ClientID,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	t.Header["kid"] = k.name
	token, err = t.SignedString(k.secret)
	if err != nil {
		return "", time.Time{}, apierr.Wrap(err, apierr.Internal, "signing token")
	}
	return token, expiresAt, nil
}

// checkClientID validates a client identifier; "" means none.
func checkClientID(s string) error {
	if len(s) > MaxClientIDLen {
		return fmt.Errorf("%d bytes, the maximum is %d", len(s), MaxClientIDLen)
	}
	return checkText(s)
}

// lookupError is why the key lookup of a token failed.
type lookupError string

func (e lookupError) Error() string { return string(e) }

// Reasons the key lookup of a token fails.
const (
	errNoKid      lookupError = "no kid header"
	errUnknownKid lookupError = "unknown kid"
)

// verifyToken verifies a token and returns its identity.
func (a *Authenticator) verifyToken(s string) (*Identity, error) {
	if len(s) > MaxTokenLen {
		return nil, apierr.New(apierr.TokenInvalid, "token invalid: longer than %d bytes", MaxTokenLen)
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{TokenAlgorithm}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(TokenLeeway),
		jwt.WithTimeFunc(a.now),
		jwt.WithStrictDecoding(),
	)
	var claims tokenClaims
	var key *keyEntry
	parsed, err := parser.ParseWithClaims(s, &claims, func(t *jwt.Token) (any, error) {
		kid, ok := t.Header["kid"].(string)
		if !ok || kid == "" {
			return nil, errNoKid
		}
		k, ok := a.keys[kid]
		if !ok {
			return nil, errUnknownKid
		}
		key = k
		return k.secret, nil
	})
	if err != nil {
		return nil, tokenError(parsed, err)
	}
	if key == nil || claims.ExpiresAt == nil {
		// Unreachable with a successful parse; kept so that no input can
		// produce an identity without a verified key and expiry.
		return nil, apierr.Wrap(err, apierr.TokenInvalid, "token invalid")
	}
	exp := claims.ExpiresAt.Time
	if exp.Sub(a.now()) > a.maxTTL+TokenLeeway {
		return nil, apierr.New(apierr.TokenInvalid, "token invalid: expires more than the maximum token lifetime of %s from now", a.maxTTL)
	}
	if len(claims.Capability) == 0 || string(claims.Capability) == "null" {
		return nil, apierr.New(apierr.TokenInvalid, "token invalid: no %s claim", CapabilityClaim)
	}
	capab, err := ParseCapabilityJSON(claims.Capability)
	if err != nil {
		return nil, apierr.Wrap(err, apierr.TokenInvalid, "token invalid: bad %s claim: %s", CapabilityClaim, apierr.From(err).Message)
	}
	if err := checkClientID(claims.ClientID); err != nil {
		return nil, apierr.Wrap(err, apierr.TokenInvalid, "token invalid: bad %s claim: %v", ClientIDClaim, err)
	}
	return &Identity{
		KeyName:    key.name,
		ClientID:   claims.ClientID,
		Capability: intersect(capab, key.capability),
		ExpiresAt:  exp,
		method:     methodToken,
	}, nil
}

// tokenError turns a parse error into a TokenExpired or TokenInvalid error.
func tokenError(t *jwt.Token, err error) error {
	msg := "token invalid"
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return apierr.Wrap(err, apierr.TokenExpired, "token expired")
	case errors.Is(err, jwt.ErrTokenMalformed):
		msg = "token invalid: malformed"
	case t != nil && t.Method != nil && t.Method.Alg() != TokenAlgorithm:
		msg = fmt.Sprintf("token invalid: signing algorithm %s not accepted (want %s)", quote(t.Method.Alg()), TokenAlgorithm)
	case t != nil && t.Method == nil:
		msg = fmt.Sprintf("token invalid: unsupported or missing signing algorithm (want %s)", TokenAlgorithm)
	case errors.Is(err, errNoKid):
		msg = "token invalid: no kid header naming the signing key"
	case errors.Is(err, errUnknownKid):
		msg = "token invalid: signed by an unknown key"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		msg = "token invalid: signature does not match"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		msg = "token invalid: no exp claim"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		msg = "token invalid: issued in the future"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		msg = "token invalid: not valid yet"
	}
	return apierr.Wrap(err, apierr.TokenInvalid, "%s", msg)
}
