package client

import (
	"errors"
	"fmt"
)

// Error is an error the server reported, with its stable code (see the
// server's docs/rest.md#errors).
type Error struct {
	Code       int    `json:"code"`
	StatusCode int    `json:"statusCode"`
	Message    string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (code %d)", e.Message, e.Code)
}

// Codes the SDK acts on.
const (
	codeUnauthorized       = 40100
	codeInvalidCredentials = 40101
	codeTokenInvalid       = 40140
	codeTokenExpired       = 40142
	codeNotAllowed         = 40160
	codeConnectionExpired  = 41001
	codeRateLimited        = 42910
	codeUnavailable        = 50300
)

// CodeOf returns the server error code in err's chain, or 0.
func CodeOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

var (
	// ErrClosed is returned by operations on a closed client.
	ErrClosed = errors.New("client: closed")
	// ErrSuspended fails publishes queued while the connection was down
	// for longer than the connection-state TTL. A publish that had been
	// sent before the connection dropped may still have been accepted:
	// publishing it again with the same message ID is safe.
	ErrSuspended = errors.New("client: connection suspended")
	// ErrQueueFull refuses a publish while too many are waiting for the
	// connection.
	ErrQueueFull = errors.New("client: too many publishes waiting for the connection")
)

// fatal reports whether a connect error means retrying cannot help.
func fatal(err error) bool {
	switch CodeOf(err) {
	case codeUnauthorized, codeInvalidCredentials, codeTokenInvalid, codeNotAllowed:
		return true
	}
	return false
}
