package cairn

import (
	"context"
	"errors"
	"fmt"
)

// Code classifies an error for callers that branch on it. Only the HTTP layer
// maps codes to status codes.
type Code string

// The error codes callers branch on.
const (
	NotFound    Code = "not_found"
	Invalid     Code = "invalid"
	TooLarge    Code = "too_large"
	Conflict    Code = "conflict"
	Unavailable Code = "unavailable" // draining, overloaded, closed, or reset
	Timeout     Code = "timeout"
	Internal    Code = "internal"
)

// Error is an error with a code. Msg is safe to show to API callers.
type Error struct {
	Code Code
	Msg  string
}

// Error returns the code and the message.
func (e *Error) Error() string { return string(e.Code) + ": " + e.Msg }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code Code, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, Timeout for
// context deadlines, Unavailable for cancellations, and Internal otherwise. It
// returns "" for a nil error.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Timeout
	}
	if errors.Is(err, context.Canceled) {
		return Unavailable
	}
	return Internal
}

// ErrorMessage returns the message of the first *Error in err's chain, or a
// generic message for other errors so that internal details do not leak.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Msg
	}
	switch ErrorCode(err) {
	case Timeout:
		return "deadline exceeded"
	case Unavailable:
		return "request canceled"
	}
	return "internal error"
}

// errClosed is returned for calls made after Close began.
var errClosed = &Error{Code: Unavailable, Msg: "runtime is closed"}

// errCommit is returned to the callers of a group whose commit failed:
// their writes were not acknowledged.
var errCommit = &Error{Code: Unavailable, Msg: "commit failed: the write was not acknowledged; retry"}

// errReset is returned to a turn whose object instance was discarded (failed
// commit, panic in another turn, deleteAll) while the turn was released.
var errReset = &Error{Code: Unavailable, Msg: "object was reset while the turn was released; retry"}

// Keep marks a handler's error as one that does not roll back the turn: the
// turn's writes are committed and err still reaches the caller. Use it for
// an answer such as "lock held" from a handler that also did housekeeping
// (expired a lease, removed a waiter) that must stay.
func Keep(err error) error {
	if err == nil {
		return nil
	}
	return &keptError{err}
}

type keptError struct{ err error }

func (k *keptError) Error() string { return k.err.Error() }
func (k *keptError) Unwrap() error { return k.err }

func isKept(err error) bool {
	var k *keptError
	return errors.As(err, &k)
}
