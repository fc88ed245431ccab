package gateway

import (
	"context"
	_ "embed"
	"net/http"
	"net/http/httputil"
	"net/url"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/auth"
	"github.com/rideshare-platform/rideshare/internal/platform"
)

// route is one public endpoint. The table below is the single source of
// truth for paths, methods and who may call them: the mux, the role checks
// and the tests are all derived from it.
type route struct {
	method, path string
	// roles may call the route; nil means no token is needed.
	roles []authv1.Role
	// timeout bounds the whole request, downstream calls included.
	timeout time.Duration
	// statuses are the codes the route answers with, success first; the
	// OpenAPI document must list the same (a test holds them together).
	statuses []int
	// limit names the route's rate-limit policy; empty means the per-user
	// policy for routes that take a token and the per-address one for the
	// rest.
	limit  string
	handle func(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error
}

var (
	anyUser      = []authv1.Role{authv1.Role_ROLE_RIDER, authv1.Role_ROLE_DRIVER, authv1.Role_ROLE_ADMIN}
	riders       = []authv1.Role{authv1.Role_ROLE_RIDER}
	drivers      = []authv1.Role{authv1.Role_ROLE_DRIVER}
	ridersDriver = []authv1.Role{authv1.Role_ROLE_RIDER, authv1.Role_ROLE_DRIVER}
	rideViewers  = []authv1.Role{authv1.Role_ROLE_RIDER, authv1.Role_ROLE_DRIVER, authv1.Role_ROLE_ADMIN}
	receiptViews = []authv1.Role{authv1.Role_ROLE_RIDER, authv1.Role_ROLE_ADMIN}
)

const defaultTimeout = 10 * time.Second

var tripStepStatuses = []int{200, 401, 403, 404, 409}

//go:embed openapi.json
var openAPI []byte

// serveOpenAPI serves the API's OpenAPI 3.1 document.
func serveOpenAPI(w http.ResponseWriter, _ *http.Request, _ *authv1.Caller) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(openAPI)
	return err
}

// routes is the public API of DESIGN.md section 7 (the OAuth endpoints are
// forwarded to identity, and infrastructure endpoints are the server's).
func (g *Gateway) routes() []route {
	rts := []route{
		{method: "GET", path: "/v1/openapi.json", handle: serveOpenAPI, statuses: []int{200}},
		{method: "POST", path: "/v1/accounts", limit: policySignup, handle: g.signup, statuses: []int{201, 400, 409, 413}},
		{method: "GET", path: "/v1/me", roles: anyUser, handle: g.me, statuses: []int{200, 401, 403, 404}},
		{method: "POST", path: "/v1/fares/estimate", roles: riders, handle: g.estimate, statuses: []int{200, 400, 401, 403, 413, 422}},
		{method: "POST", path: "/v1/rides", roles: riders, handle: g.requestRide, statuses: []int{202, 400, 401, 403, 409, 413, 422}},
		{method: "GET", path: "/v1/rides", roles: ridersDriver, handle: g.listRides, statuses: []int{200, 400, 401, 403}},
		{method: "GET", path: "/v1/rides/{id}", roles: rideViewers, handle: g.getRide, statuses: []int{200, 401, 403, 404}},
		{method: "POST", path: "/v1/rides/{id}/cancel", roles: ridersDriver, handle: g.cancelRide, statuses: []int{200, 400, 401, 403, 404, 409, 413}},
		{method: "GET", path: "/v1/rides/{id}/events", roles: ridersDriver, timeout: streamTimeout, handle: g.rideEvents, statuses: []int{200, 401, 403, 404}},
		{method: "POST", path: "/v1/rides/{id}/accept", roles: drivers, handle: g.tripStep(accept), statuses: tripStepStatuses},
		{method: "POST", path: "/v1/rides/{id}/decline", roles: drivers, handle: g.decline, statuses: []int{204, 401, 403, 404, 409}},
		{method: "POST", path: "/v1/rides/{id}/arrive", roles: drivers, handle: g.tripStep(arrive), statuses: tripStepStatuses},
		{method: "POST", path: "/v1/rides/{id}/start", roles: drivers, handle: g.tripStep(start), statuses: tripStepStatuses},
		{method: "POST", path: "/v1/rides/{id}/complete", roles: drivers, handle: g.tripStep(complete), statuses: tripStepStatuses},
		{method: "POST", path: "/v1/rides/{id}/rating", roles: ridersDriver, handle: g.rate, statuses: []int{204, 400, 401, 403, 404, 409, 413}},
		{method: "GET", path: "/v1/rides/{id}/receipt", roles: receiptViews, handle: g.receipt, statuses: []int{200, 401, 403, 404}},
		{method: "PUT", path: "/v1/drivers/me/availability", roles: drivers, handle: g.availability, statuses: []int{200, 400, 401, 403, 413, 422}},
		{method: "POST", path: "/v1/drivers/me/location", roles: drivers, handle: g.location, statuses: []int{204, 400, 401, 403, 413, 422}},
		{method: "GET", path: "/v1/drivers/me/offers", roles: drivers, handle: g.offers, statuses: []int{200, 401, 403}},
	}
	// Every route is rate limited, so every route may answer 429.
	for i := range rts {
		rts[i].statuses = append(slices.Clone(rts[i].statuses), http.StatusTooManyRequests)
	}
	return rts
}

// RouteInfo describes one public route. It is exported so that tests
// outside the package (the attack suite) are generated from the route
// table itself and cover a new route the day it is added; it says nothing
// the published OpenAPI document does not.
type RouteInfo struct {
	Method, Path string
	// Roles may call the route; nil means it takes no token.
	Roles []string
	// Statuses the route answers with, success first.
	Statuses []int
	// Limit is the rate-limit policy: "user", "anon", "signup" or "token".
	Limit string
}

// Routes lists the public routes of the route table (the OAuth endpoints
// forwarded to identity are not in it).
func Routes() []RouteInfo {
	var out []RouteInfo
	for _, rt := range (&Gateway{}).routes() {
		info := RouteInfo{Method: rt.method, Path: rt.path, Statuses: slices.Clone(rt.statuses), Limit: rt.policy()}
		for _, r := range rt.roles {
			info.Roles = append(info.Roles, auth.RoleName(r))
		}
		out = append(out, info)
	}
	return out
}

// policy is the rate-limit policy the route is charged to.
func (rt route) policy() string {
	switch {
	case rt.limit != "":
		return rt.limit
	case rt.roles != nil:
		return policyUser
	}
	return policyAnon
}

// handler mounts the route table, the OAuth forwarding, and problem+json
// answers for unknown paths and wrong methods.
func (g *Gateway) handler() http.Handler {
	mux := http.NewServeMux()
	allowed := map[string][]string{}
	for _, rt := range g.routes() {
		mux.Handle(rt.method+" "+rt.path, g.endpoint(rt))
		allowed[rt.path] = append(allowed[rt.path], rt.method)
	}
	for path, methods := range allowed {
		sort.Strings(methods)
		allow := strings.Join(methods, ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if !g.allowAddr(w, r, policyAnon) {
				return
			}
			w.Header().Set("Allow", allow)
			apperr.WriteProblem(w, r, apperr.E(apperr.Invalid, "method_not_allowed", "%s is not allowed here; use %s", r.Method, allow), 0)
		})
	}
	identity := g.forwarder(g.peers["identity"])
	mux.Handle("POST /oauth2/token", g.limitAddr(policyToken, identity))
	mux.Handle("/oauth2/", g.limitAddr(policyAnon, identity))
	mux.Handle("/.well-known/", g.limitAddr(policyAnon, identity))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !g.allowAddr(w, r, policyAnon) {
			return
		}
		apperr.WriteProblem(w, r, apperr.E(apperr.NotFound, "", "no such endpoint: %s", r.URL.Path), 0)
	})
	return mux
}

// endpoint wraps a route with its deadline, authentication, rate limit,
// role check and error mapping, so that handlers hold only their own logic.
func (g *Gateway) endpoint(rt route) http.Handler {
	timeout := rt.timeout
	if timeout == 0 {
		timeout = defaultTimeout
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer g.recoverPanic(w, r)
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		var caller *authv1.Caller
		if rt.roles != nil {
			c, err := g.auth.Caller(r)
			if err != nil {
				// A refused token is charged to the client's address, so
				// guessing tokens is limited like any anonymous request.
				if !g.allowAddr(w, r, policyAnon) {
					return
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="rideshare"`)
				g.fail(w, r, err)
				return
			}
			if !g.allow(w, r, rt.policy(), "sub:"+c.UserId) {
				return
			}
			if !slices.Contains(rt.roles, c.Role) {
				g.fail(w, r, apperr.E(apperr.Forbidden, "", "this endpoint is not for a %s", auth.RoleName(c.Role)))
				return
			}
			caller = c
			if g.forwardsTokens() {
				tok, _ := auth.BearerToken(r.Header)
				ctx = platform.WithUserToken(ctx, tok)
			}
		} else if !g.allowAddr(w, r, rt.policy()) {
			return
		}
		// One copy of the request, with everything its handler's context
		// needs: each WithContext copies the whole request.
		r = r.WithContext(ctx)
		if err := rt.handle(w, r, caller); err != nil {
			g.fail(w, r, err)
		}
	})
}

// forwardsTokens reports whether the RPCs made for a user carry the user's
// token, for the services to check against the Caller: only the built-in
// issuer's tokens, since services cannot check another issuer's.
func (g *Gateway) forwardsTokens() bool { return g.deps.Setting("gateway.oidc_issuer", "") == "" }

// recoverPanic turns a handler's panic into a logged 500 problem, instead
// of net/http's dropped connection, which a client cannot tell from a
// network fault and may retry.
func (g *Gateway) recoverPanic(w http.ResponseWriter, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	if g.deps.Log != nil {
		g.deps.Log.ErrorContext(r.Context(), "handler panicked", "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
	}
	apperr.WriteProblem(w, r, apperr.E(apperr.Internal, "", "internal error"), 0)
}

// allow charges one request to caller under policy, and answers 429 with
// Retry-After when the caller has none left.
func (g *Gateway) allow(w http.ResponseWriter, r *http.Request, policy, caller string) bool {
	if g.limits == nil {
		return true
	}
	ok, wait := g.limits.take(policy, caller)
	if ok {
		return true
	}
	secs := int((wait + time.Second - 1) / time.Second)
	apperr.WriteProblem(w, r, apperr.E(apperr.RateLimited, "rate_limited", "too many requests; try again in %d s", secs), wait)
	return false
}

// allowAddr is allow keyed by the client's address.
func (g *Gateway) allowAddr(w http.ResponseWriter, r *http.Request, policy string) bool {
	return g.allow(w, r, policy, "addr:"+g.clients.of(r))
}

// limitAddr rate-limits next by client address under policy.
func (g *Gateway) limitAddr(policy string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.allowAddr(w, r, policy) {
			next.ServeHTTP(w, r)
		}
	})
}

// fail writes err as problem+json, logging causes that are the platform's
// fault (the caller only sees the classified message).
func (g *Gateway) fail(w http.ResponseWriter, r *http.Request, err error) {
	if e := apperr.As(err); e.Kind == apperr.Internal || e.Kind == apperr.Unavailable || e.Kind == apperr.Timeout {
		g.deps.Log.WarnContext(r.Context(), "request failed", "path", r.URL.Path, "kind", e.Kind.String(), "err", err)
	}
	apperr.WriteProblem(w, r, err, 0)
}

var proxyBuffers = &bufferPool{}

// forwarder relays requests unchanged to target, pooling its copy buffers
// (without a pool each request allocates 32 KiB).
func (g *Gateway) forwarder(target string) http.Handler {
	u, err := url.Parse(target)
	if err != nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			apperr.WriteProblem(w, r, apperr.E(apperr.Unavailable, "", "identity is not configured"), 0)
		})
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
		},
		Transport:  g.deps.HTTP.Transport,
		BufferPool: proxyBuffers,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			g.fail(w, r, apperr.Wrap(err, apperr.Unavailable, "", "the identity service is unavailable"))
		},
	}
}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
