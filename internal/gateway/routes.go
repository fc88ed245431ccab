package gateway

import (
	"context"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
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
	handle  func(w http.ResponseWriter, r *http.Request, c *authv1.Caller) error
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

// routes is the public API of DESIGN.md section 7 (the OAuth endpoints are
// forwarded to identity, and infrastructure endpoints are the server's).
func (g *Gateway) routes() []route {
	return []route{
		{method: "POST", path: "/v1/accounts", handle: g.signup},
		{method: "GET", path: "/v1/me", roles: anyUser, handle: g.me},
		{method: "POST", path: "/v1/fares/estimate", roles: riders, handle: g.estimate},
		{method: "POST", path: "/v1/rides", roles: riders, handle: g.requestRide},
		{method: "GET", path: "/v1/rides", roles: ridersDriver, handle: g.listRides},
		{method: "GET", path: "/v1/rides/{id}", roles: rideViewers, handle: g.getRide},
		{method: "POST", path: "/v1/rides/{id}/cancel", roles: ridersDriver, handle: g.cancelRide},
		{method: "GET", path: "/v1/rides/{id}/events", roles: ridersDriver, timeout: streamTimeout, handle: g.rideEvents},
		{method: "POST", path: "/v1/rides/{id}/accept", roles: drivers, handle: g.tripStep(accept)},
		{method: "POST", path: "/v1/rides/{id}/arrive", roles: drivers, handle: g.tripStep(arrive)},
		{method: "POST", path: "/v1/rides/{id}/start", roles: drivers, handle: g.tripStep(start)},
		{method: "POST", path: "/v1/rides/{id}/complete", roles: drivers, handle: g.tripStep(complete)},
		{method: "GET", path: "/v1/rides/{id}/receipt", roles: receiptViews, handle: g.receipt},
		{method: "PUT", path: "/v1/drivers/me/availability", roles: drivers, handle: g.availability},
		{method: "POST", path: "/v1/drivers/me/location", roles: drivers, handle: g.location},
		{method: "GET", path: "/v1/drivers/me/offers", roles: drivers, handle: g.offers},
	}
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
			w.Header().Set("Allow", allow)
			apperr.WriteProblem(w, r, apperr.E(apperr.Invalid, "method_not_allowed", "%s is not allowed here; use %s", r.Method, allow), 0)
		})
	}
	identity := g.forwarder(g.peers["identity"])
	mux.Handle("/oauth2/", identity)
	mux.Handle("/.well-known/", identity)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apperr.WriteProblem(w, r, apperr.E(apperr.NotFound, "", "no such endpoint: %s", r.URL.Path), 0)
	})
	return mux
}

// endpoint wraps a route with its deadline, authentication, role check and
// error mapping, so that handlers hold only their own logic.
func (g *Gateway) endpoint(rt route) http.Handler {
	timeout := rt.timeout
	if timeout == 0 {
		timeout = defaultTimeout
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		r = r.WithContext(ctx)
		var caller *authv1.Caller
		if rt.roles != nil {
			c, err := g.auth.caller(r)
			if err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="rideshare"`)
				g.fail(w, r, err)
				return
			}
			if !slices.Contains(rt.roles, c.Role) {
				g.fail(w, r, apperr.E(apperr.Forbidden, "", "this endpoint is not for a %s", roleName(c.Role)))
				return
			}
			caller = c
		}
		if err := rt.handle(w, r, caller); err != nil {
			g.fail(w, r, err)
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
