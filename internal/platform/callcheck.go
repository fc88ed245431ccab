package platform

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/auth"
)

// auditServiceCallRefused is the audit event of a refused RPC: one log
// line with "audit": true, as identity records its security events.
const auditServiceCallRefused = "service_call_refused"

// callCheck decides which RPCs this service serves. A call must carry a
// valid service token (Unauthenticated otherwise) of a service that lists
// this one in its Calls (PermissionDenied otherwise). Then the request's
// Caller must agree with the credentials: a service may speak for itself
// only under its own name, and a call that forwards a user's token may
// speak only for that user. A call for a user without the user's token (a
// service acting on a user's behalf from an event, or the gateway trusting
// another issuer's tokens, which services cannot check) rests on the
// service token alone.
type callCheck struct {
	service string
	callers map[string]bool
	keys    func() (*auth.Verifier, error)
	log     *slog.Logger
	// services and users remember the tokens that passed, until they
	// expire: a caller sends one token for minutes, and checking its
	// signature again on every call would cost every call an ES256
	// verification (see BenchmarkCallCheck).
	services verifiedTokens[string]
	users    verifiedTokens[*authv1.Caller]
}

// verifiedTokens are tokens that passed the check: token → whom it speaks
// for, until when. Only tokens that passed enter, users' tokens only when
// forwarded by a service, and it is bounded: when full, the expired tokens
// go, and if that is not enough, all of them (they are checked again).
type verifiedTokens[T any] struct {
	mu sync.Mutex
	m  map[string]verified[T]
}

type verified[T any] struct {
	who     T
	expires time.Time
}

// maxVerifiedTokens bounds each verifiedTokens: a service token or two per
// calling process, and the users active within a token's lifetime. At
// about 1 KiB a token, the bound is a few MiB.
const maxVerifiedTokens = 4096

func (vt *verifiedTokens[T]) get(tok string, now time.Time) (T, bool) {
	vt.mu.Lock()
	defer vt.mu.Unlock()
	e, ok := vt.m[tok]
	if !ok || !now.Before(e.expires) {
		var zero T
		return zero, false
	}
	return e.who, true
}

func (vt *verifiedTokens[T]) put(tok string, who T, expires, now time.Time) {
	vt.mu.Lock()
	defer vt.mu.Unlock()
	if len(vt.m) >= maxVerifiedTokens {
		maps.DeleteFunc(vt.m, func(_ string, e verified[T]) bool { return !now.Before(e.expires) })
	}
	if vt.m == nil || len(vt.m) >= maxVerifiedTokens {
		vt.m = map[string]verified[T]{}
	}
	vt.m[tok] = verified[T]{who: who, expires: expires}
}

// verifyService is the service tok speaks for.
func (c *callCheck) verifyService(ctx context.Context, v *auth.Verifier, tok string) (string, error) {
	now := time.Now()
	if name, ok := c.services.get(tok, now); ok {
		return name, nil
	}
	name, exp, err := v.VerifyService(ctx, tok)
	if err != nil {
		return "", err
	}
	c.services.put(tok, name, exp, now)
	return name, nil
}

// verifyUser is the user tok speaks for.
func (c *callCheck) verifyUser(ctx context.Context, v *auth.Verifier, tok string) (*authv1.Caller, error) {
	now := time.Now()
	if u, ok := c.users.get(tok, now); ok {
		return u, nil
	}
	u, exp, err := v.VerifyUntil(ctx, tok)
	if err != nil {
		return nil, err
	}
	c.users.put(tok, u, exp, now)
	return u, nil
}

// admission is a call from an allowed service, whose Caller is still to be
// checked against it.
type admission struct {
	check     *callCheck
	procedure string
	remote    string
	service   string // the calling service, from its token
	userToken string // forwarded with the call, checked when a Caller needs it
	verifier  *auth.Verifier
	user      *authv1.Caller // the checked user token's, once checked
}

// admit checks the service token in h.
func (c *callCheck) admit(ctx context.Context, procedure, remote string, h http.Header) (*admission, error) {
	a := &admission{check: c, procedure: procedure, remote: remote, userToken: h.Get(UserTokenHeader)}
	tok, ok := auth.BearerToken(h)
	if !ok {
		return nil, a.refuse(ctx, "no service token", apperr.E(apperr.Unauthenticated, "", "a service token is required"))
	}
	v, err := c.keys()
	if err != nil {
		return nil, a.refuse(ctx, "tokens cannot be checked", apperr.Wrap(err, apperr.Unavailable, "", "service tokens cannot be checked right now"))
	}
	a.verifier = v
	name, err := c.verifyService(ctx, v, tok)
	if err != nil {
		if apperr.Is(err, apperr.Unavailable) {
			return nil, err // identity's keys are not here yet: nobody's fault
		}
		return nil, a.refuse(ctx, "invalid service token", err)
	}
	a.service = name
	if !c.callers[name] {
		return nil, a.refuse(ctx, "service not allowed to call "+c.service,
			apperr.E(apperr.Forbidden, "", "%s does not accept calls from %s", c.service, name))
	}
	return a, nil
}

// checkCaller checks the Caller of request message msg against the call's
// credentials.
func (a *admission) checkCaller(ctx context.Context, msg any) error {
	m, ok := msg.(interface{ GetCaller() *authv1.Caller })
	if !ok {
		return nil
	}
	caller := m.GetCaller()
	switch caller.GetRole() {
	case authv1.Role_ROLE_SERVICE:
		if caller.GetUserId() != a.service {
			return a.refuse(ctx, "caller names another service",
				apperr.E(apperr.Forbidden, "", "the call comes from %s, not from %s", a.service, caller.GetUserId()))
		}
	case authv1.Role_ROLE_RIDER, authv1.Role_ROLE_DRIVER, authv1.Role_ROLE_ADMIN:
		if a.userToken == "" {
			return nil
		}
		if a.user == nil {
			u, err := a.check.verifyUser(ctx, a.verifier, a.userToken)
			if err != nil {
				return a.refuse(ctx, "invalid user token", err)
			}
			a.user = u
		}
		if a.user.GetUserId() != caller.GetUserId() || a.user.GetRole() != caller.GetRole() {
			return a.refuse(ctx, "caller is not the user whose token is forwarded",
				apperr.E(apperr.Forbidden, "", "the caller does not match the forwarded user token"))
		}
	}
	return nil
}

// refuse records a refused call as an audit event and returns err. It
// logs who called and why, never a token.
func (a *admission) refuse(ctx context.Context, reason string, err error) error {
	a.check.log.LogAttrs(ctx, slog.LevelWarn, "audit: service call refused",
		slog.Bool("audit", true), slog.String("event", auditServiceCallRefused),
		slog.String("procedure", a.procedure), slog.String("remote", a.remote),
		slog.String("caller_service", a.service), slog.String("reason", reason))
	return err
}

// handlerInterceptor applies the check to every RPC but the procedures in
// exempt, which authenticate their callers themselves.
func (sa *ServiceAuth) handlerInterceptor(exempt []string) connect.Interceptor {
	ci := checkInterceptor{check: sa.check, exempt: map[string]bool{}}
	for _, p := range exempt {
		ci.exempt[p] = true
	}
	return ci
}

type checkInterceptor struct {
	check  *callCheck
	exempt map[string]bool
}

func (i checkInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient || i.exempt[req.Spec().Procedure] {
			return next(ctx, req)
		}
		a, err := i.check.admit(ctx, req.Spec().Procedure, req.Peer().Addr, req.Header())
		if err != nil {
			return nil, err
		}
		if err := a.checkCaller(ctx, req.Any()); err != nil {
			return nil, err
		}
		if a.userToken != "" {
			ctx = WithUserToken(ctx, a.userToken)
		}
		return next(ctx, req)
	}
}

func (checkInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler checks the service token when the stream opens, and
// the Caller of every message as it arrives.
func (i checkInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if i.exempt[conn.Spec().Procedure] {
			return next(ctx, conn)
		}
		a, err := i.check.admit(ctx, conn.Spec().Procedure, conn.Peer().Addr, conn.RequestHeader())
		if err != nil {
			return err
		}
		if a.userToken != "" {
			ctx = WithUserToken(ctx, a.userToken)
		}
		return next(ctx, &checkedConn{StreamingHandlerConn: conn, ctx: ctx, a: a})
	}
}

// checkedConn checks the Caller of each message it receives.
type checkedConn struct {
	connect.StreamingHandlerConn
	ctx context.Context
	a   *admission
}

func (c *checkedConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	return c.a.checkCaller(c.ctx, msg)
}
