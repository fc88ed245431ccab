package apperr

import (
	"context"
	"errors"

	"connectrpc.com/connect"
)

// codeHeader carries the stable code across an RPC hop; the Kind travels as
// the RPC code itself (the table gives each kind its own).
const codeHeader = "Rideshare-Error-Code"

// ToConnect turns err into an RPC error that the client side restores
// exactly. The outermost classification wins: a handler that wraps a
// downstream failure as, say, Unavailable is heard as Unavailable, whatever
// the downstream said. Internal causes stay on this side of the wire.
func ToConnect(err error) error {
	if err == nil {
		return nil
	}
	e := As(err)
	ce := connect.NewError(kindInfo[e.Kind].rpc, errors.New(e.Message))
	ce.Meta().Set(codeHeader, e.Code)
	return ce
}

func fromConnect(ce *connect.Error) *Error {
	kind := Internal
	for k, info := range kindInfo {
		if info.rpc == ce.Code() {
			kind = Kind(k)
			break
		}
	}
	if ce.Code() == connect.CodeCanceled {
		kind = Unavailable
	}
	code := ce.Meta().Get(codeHeader)
	msg := ce.Message()
	if code == "" {
		code = kindInfo[kind].code
	}
	if msg == "" {
		msg = kind.String()
	}
	return &Error{Kind: kind, Code: code, Message: msg, Err: ce}
}

// Interceptor maps errors at both ends of every RPC: a handler's *Error
// becomes an RPC error carrying its code, and a client sees an *Error again,
// so no handler or caller converts errors by hand.
func Interceptor() connect.Interceptor { return interceptor{} }

type interceptor struct{}

func (interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		if err == nil {
			return res, nil
		}
		if req.Spec().IsClient {
			return nil, As(err)
		}
		return nil, ToConnect(err)
	}
}

func (interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return ToConnect(next(ctx, conn))
	}
}
