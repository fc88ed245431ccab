// Package apperr is rideshare's one error vocabulary. Domain code returns
// these errors; the edges (the HTTP gateway and the RPC interceptors) map them
// to problem+json and RPC codes through the single table in this package, so a
// NotFound raised deep inside the rides service reaches a rider as the same
// 404 with the same stable code, whichever hops it crossed.
package apperr

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"connectrpc.com/connect"
)

// Kind classifies an error by what the caller can do about it.
type Kind uint8

// The kinds, each with one HTTP status and one RPC code (see table).
const (
	Internal Kind = iota
	Invalid
	NotFound
	Conflict
	Unprocessable
	Unauthenticated
	Forbidden
	TooLarge
	RateLimited
	Unavailable
	Timeout
	Unimplemented
)

// kindInfo is the one mapping from a Kind to the edges. The RPC codes are
// distinct per kind so that a Kind survives a round trip through an RPC.
var kindInfo = [...]struct {
	name   string
	status int
	rpc    connect.Code
	code   string // default stable code when none is given
}{
	Internal:        {"internal", http.StatusInternalServerError, connect.CodeInternal, "internal"},
	Invalid:         {"invalid", http.StatusBadRequest, connect.CodeInvalidArgument, "invalid_argument"},
	NotFound:        {"not found", http.StatusNotFound, connect.CodeNotFound, "not_found"},
	Conflict:        {"conflict", http.StatusConflict, connect.CodeAborted, "conflict"},
	Unprocessable:   {"unprocessable", http.StatusUnprocessableEntity, connect.CodeFailedPrecondition, "unprocessable"},
	Unauthenticated: {"unauthenticated", http.StatusUnauthorized, connect.CodeUnauthenticated, "unauthenticated"},
	Forbidden:       {"forbidden", http.StatusForbidden, connect.CodePermissionDenied, "forbidden"},
	TooLarge:        {"too large", http.StatusRequestEntityTooLarge, connect.CodeOutOfRange, "body_too_large"},
	RateLimited:     {"rate limited", http.StatusTooManyRequests, connect.CodeResourceExhausted, "rate_limited"},
	Unavailable:     {"unavailable", http.StatusServiceUnavailable, connect.CodeUnavailable, "unavailable"},
	Timeout:         {"timeout", http.StatusGatewayTimeout, connect.CodeDeadlineExceeded, "timeout"},
	Unimplemented:   {"unimplemented", http.StatusNotImplemented, connect.CodeUnimplemented, "not_implemented"},
}

func (k Kind) String() string {
	if int(k) < len(kindInfo) {
		return kindInfo[k].name
	}
	return fmt.Sprintf("kind(%d)", k)
}

// HTTPStatus is the status a public response carries for this kind.
func (k Kind) HTTPStatus() int { return kindInfo[k].status }

// Error is a classified error with a stable machine-readable code and a
// message safe to show to the caller. Err, if set, is the cause: it is logged,
// never shown.
type Error struct {
	Kind    Kind
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// E builds an error of kind with a stable code and a caller-facing message.
// An empty code takes the kind's default.
func E(kind Kind, code, format string, args ...any) *Error {
	if code == "" {
		code = kindInfo[kind].code
	}
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap classifies cause, keeping it for logs while showing only message.
func Wrap(cause error, kind Kind, code, message string) *Error {
	e := E(kind, code, "%s", message)
	e.Err = cause
	return e
}

// As finds the classified error in err's chain. Context errors count as
// Timeout (deadline) or Unavailable (cancelled) so a caller that gave up is
// never reported as an internal fault; everything else is Internal.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return Wrap(err, Timeout, "", "the request ran out of time")
	case errors.Is(err, context.Canceled):
		return Wrap(err, Unavailable, "canceled", "the request was canceled")
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return fromConnect(ce)
	}
	return Wrap(err, Internal, "", "internal error")
}

// KindOf is As(err).Kind, and Internal for a nil-safe caller.
func KindOf(err error) Kind { return As(err).Kind }

// CodeOf is the stable code of err.
func CodeOf(err error) string { return As(err).Code }

// Is reports whether err is classified as kind.
func Is(err error, kind Kind) bool { return err != nil && As(err).Kind == kind }
