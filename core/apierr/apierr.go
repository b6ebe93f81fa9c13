// Package apierr defines Switchboard's stable error codes.
//
// Every error a client can see carries a numeric code that never changes
// meaning, the HTTP status that best describes it, and a human-readable
// message. Protocol adapters translate an *Error into their own error form
// (a REST JSON body, an MQTT reason code, a STOMP ERROR frame, an AMQP reply
// code) but always keep the code so clients and operators can rely on it.
package apierr

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is a stable, documented error code. The first three digits are the
// closest HTTP status; the last two distinguish causes.
type Code int

// Stable error codes. Never renumber or reuse one; add new ones instead.
const (
	BadRequest          Code = 40000 // malformed request
	InvalidJSON         Code = 40001 // body is not valid JSON or has fields of the wrong type
	InvalidChannelName  Code = 40010 // channel name empty, too long, not UTF-8 or with control characters
	InvalidQualifier    Code = 40011 // bad [?param=value] channel qualifier
	InvalidPosition     Code = 40012 // position (channel serial) string cannot be decoded
	InvalidParameter    Code = 40013 // bad query or request parameter
	MessageTooLarge     Code = 40009 // message exceeds the namespace's maximum size
	RequestTooLarge     Code = 41300 // request body exceeds the server limit
	Unauthorized        Code = 40100 // no credentials given where they are required
	InvalidCredentials  Code = 40101 // unknown key or wrong secret
	TokenInvalid        Code = 40140 // token malformed, forged or signed by an unknown key
	TokenExpired        Code = 40142 // token expired
	OperationNotAllowed Code = 40160 // credentials lack the capability for this operation
	Forbidden           Code = 40300 // operation refused for another reason
	NotFound            Code = 40400 // no such resource
	MethodNotAllowed    Code = 40500 // HTTP method not allowed on this resource
	Conflict            Code = 40900 // request conflicts with current state
	ConnectionExpired   Code = 41001 // connection state to resume is unknown or expired; channels resume from their own serials
	RateLimited         Code = 42910 // too many requests
	Internal            Code = 50000 // unexpected server error
	StorageFailure      Code = 50010 // the durable store refused the write (for example: disk full)
	Unavailable         Code = 50300 // server is shutting down or not ready
	Timeout             Code = 50400 // operation did not complete in time
)

// Error is an error with a stable code, an HTTP status and a message that is
// safe to show to the client.
type Error struct {
	Code       Code
	StatusCode int
	Message    string
	// Err is the underlying cause, kept for logs and errors.Is/As; it is
	// never shown to clients.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s (code %d): %v", e.Message, e.Code, e.Err)
	}
	return fmt.Sprintf("%s (code %d)", e.Message, e.Code)
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, apierr.New(apierr.NotFound, "")) style checks work.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// New returns an error with the given code and message. The HTTP status is
// derived from the code.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, StatusCode: code.Status(), Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an error with the given code and message that keeps cause for
// logs. The cause is never shown to clients.
func Wrap(cause error, code Code, format string, args ...any) *Error {
	e := New(code, format, args...)
	e.Err = cause
	return e
}

// Status returns the HTTP status code for c.
func (c Code) Status() int {
	s := int(c) / 100
	if http.StatusText(s) == "" {
		return http.StatusInternalServerError
	}
	return s
}

// From converts any error into an *Error. Errors that are not already an
// *Error become Internal errors whose message does not leak the cause.
func From(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Wrap(err, Internal, "internal error")
}

// CodeOf returns the code of err, or 0 when err is nil.
func CodeOf(err error) Code {
	if err == nil {
		return 0
	}
	return From(err).Code
}
