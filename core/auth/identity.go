package auth

import (
	"time"

	"github.com/switchboardhq/switchboard/core/apierr"
)

// method records how an identity was authenticated.
type method uint8

const (
	methodNone  method = iota // anonymous, dev, or built by hand
	methodKey                 // a key name and secret
	methodToken               // a token
)

// Identity is who a connection or request is, after authentication.
//
// Identities returned by [Authenticator.Authenticate] must not be modified;
// they may be shared between goroutines.
type Identity struct {
	// KeyName is the key the credentials belong to; "" for anonymous and
	// dev identities.
	KeyName string
	// ClientID is the client identifier fixed by a token, "*" when the
	// token lets the client choose, or "" when none was given (the caller
	// may assign one).
	ClientID string
	// Capability is the effective capability. For a token it is the
	// token's capability intersected with the key's current capability.
	// It is nil for anonymous and dev identities.
	Capability Capability
	// ExpiresAt is when a token expires; zero for key authentication.
	ExpiresAt time.Time
	// Anonymous is set for requests without credentials when dev mode is
	// off; what they may do is decided per channel by the anonymous rules.
	Anonymous bool
	// Dev is set in dev (open) mode for requests without credentials:
	// everything is allowed.
	Dev bool

	method    method
	anonymous func(channel string) []Operation
}

// Token reports whether the identity was authenticated with a token.
func (id *Identity) Token() bool { return id != nil && id.method == methodToken }

// Can reports whether the identity may perform op on the resource called
// name. Name must be a bare channel or queue name, without a qualifier.
// A nil identity can do nothing.
func (id *Identity) Can(name string, op Operation) bool {
	switch {
	case id == nil || !op.Valid():
		return false
	case id.Dev:
		return true
	case id.Anonymous:
		if id.anonymous == nil {
			return false
		}
		return setOf(id.anonymous(name))&op.bit() != 0
	default:
		return id.Capability.Allows(name, op)
	}
}

// Check returns nil if the identity may perform op on name. Otherwise it
// returns an Unauthorized error ("credentials required") for anonymous and
// nil identities and an OperationNotAllowed error naming the operation and
// the resource for authenticated ones.
func (id *Identity) Check(name string, op Operation) error {
	if id.Can(name, op) {
		return nil
	}
	if id == nil || id.Anonymous {
		return apierr.New(apierr.Unauthorized, "credentials required for operation %s on %s",
			quote(string(op)), quote(name))
	}
	return apierr.New(apierr.OperationNotAllowed, "operation %s not allowed on %s", quote(string(op)), quote(name))
}
