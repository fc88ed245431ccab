package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Resolver lists a service's instances. The registry's Watcher is one; a
// test or a fixed set-up can be another.
type Resolver interface {
	Instances(ctx context.Context, service string) ([]Instance, error)
}

// Balancer is an http.RoundTripper that sends a request for a service's
// logical address ("http://payments/...") to one of its instances, chosen
// by the power of two choices: of two instances picked at random, the one
// with fewer calls in flight. Requests to any other host pass through.
//
// An instance that keeps failing is ejected for a while: at once when it
// refuses connections (it is down), after ejectAfter failures in a row
// (connection reset, 502/503/504) otherwise. A request that could not be
// connected is sent to another instance at once, whatever its method: it
// never reached the first. Retries of requests that did reach an instance
// stay the resilience layer's decision (idempotent calls only); they land
// elsewhere because an instance that just failed ranks last.
//
// Why not a library: gRPC's balancers need gRPC's own transport and
// resolver plumbing, and Connect runs over plain net/http. This is the
// small piece of that which net/http lacks.
type Balancer struct {
	resolver Resolver
	services map[string]bool
	next     http.RoundTripper
	now      func() time.Time

	mu        sync.Mutex
	endpoints map[string]*endpoint // by instance URL

	ejections *prometheus.CounterVec
	picks     *prometheus.CounterVec
}

// Balancing tunables: an instance failing ejectAfter times in a row is
// ejected for ejectFor, doubling with each ejection in a row up to
// maxEjectFor; a connection refused ejects it at once.
const (
	ejectAfter  = 3
	ejectFor    = 2 * time.Second
	maxEjectFor = 30 * time.Second
	// maxConnectTries bounds how many instances one request may try to
	// connect to.
	maxConnectTries = 3
)

type endpoint struct {
	inflight atomic.Int64

	mu           sync.Mutex
	failures     int // in a row
	lastFailed   bool
	ejections    int // in a row
	ejectedUntil time.Time
}

// BalancerOptions configure a Balancer.
type BalancerOptions struct {
	// Services are the logical hosts to balance; all others pass through.
	Services []string
	// Next sends the rewritten request; nil means http.DefaultTransport.
	Next http.RoundTripper
	// Metrics receives the ejection and pick counters; nil registers none.
	Metrics prometheus.Registerer
	Now     func() time.Time
}

// NewBalancer balances the named services over r's instances.
func NewBalancer(r Resolver, o BalancerOptions) (*Balancer, error) {
	b := &Balancer{
		resolver: r, services: map[string]bool{}, next: o.Next, now: o.Now,
		endpoints: map[string]*endpoint{},
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_discovery_ejections_total",
			Help: "Instances taken out of rotation after failing, by service.",
		}, []string{"service"}),
		picks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_discovery_requests_total",
			Help: "Requests sent to a discovered instance, by service and outcome (ok, failed, refused).",
		}, []string{"service", "outcome"}),
	}
	if b.next == nil {
		b.next = http.DefaultTransport
	}
	if b.now == nil {
		b.now = time.Now
	}
	for _, s := range o.Services {
		b.services[s] = true
	}
	if o.Metrics != nil {
		for _, c := range []prometheus.Collector{b.ejections, b.picks} {
			if err := o.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("discovery: metrics: %w", err)
			}
		}
	}
	return b, nil
}

// NoInstanceError is a request for a service with no instance registered.
type NoInstanceError struct{ Service string }

func (e *NoInstanceError) Error() string {
	return fmt.Sprintf("no instance of %s is registered", e.Service)
}

// RoundTrip sends req to an instance of its service.
func (b *Balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	service := req.URL.Host
	if !b.services[service] {
		return b.next.RoundTrip(req)
	}
	insts, err := b.resolver.Instances(req.Context(), service)
	if err != nil {
		return nil, err
	}
	if len(insts) == 0 {
		return nil, &NoInstanceError{Service: service}
	}
	tried := map[string]bool{}
	for {
		inst, ep := b.pick(insts, tried)
		tried[inst.URL] = true
		out, err := rewrite(req, inst.URL, len(tried) > 1)
		if err != nil {
			return nil, err
		}
		ep.inflight.Add(1)
		res, err := b.next.RoundTrip(out)
		if err != nil {
			ep.inflight.Add(-1)
			if refused(err) {
				b.picks.WithLabelValues(service, "refused").Inc()
				b.eject(service, ep)
				if len(tried) < min(len(insts), maxConnectTries) && req.Context().Err() == nil {
					continue // it never reached the instance: any request may go elsewhere
				}
			} else {
				b.picks.WithLabelValues(service, "failed").Inc()
				b.fail(service, ep)
			}
			return nil, err
		}
		switch res.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			b.picks.WithLabelValues(service, "failed").Inc()
			b.fail(service, ep)
		default:
			b.picks.WithLabelValues(service, "ok").Inc()
			ep.succeed()
		}
		res.Body = &doneBody{ReadCloser: res.Body, done: func() { ep.inflight.Add(-1) }}
		return res, nil
	}
}

// pick chooses among the instances not yet tried, preferring those not
// ejected (all of them, when every one is: better a likely failure than a
// certain one), by the power of two choices.
func (b *Balancer) pick(insts []Instance, tried map[string]bool) (Instance, *endpoint) {
	now := b.now()
	type cand struct {
		inst Instance
		ep   *endpoint
	}
	var healthy, all []cand
	for _, in := range insts {
		if tried[in.URL] {
			continue
		}
		c := cand{in, b.endpoint(in.URL)}
		all = append(all, c)
		if !c.ep.ejected(now) {
			healthy = append(healthy, c)
		}
	}
	pool := healthy
	if len(pool) == 0 {
		pool = all
	}
	if len(pool) == 0 { // every instance tried: the caller stops before this
		in := insts[0]
		return in, b.endpoint(in.URL)
	}
	c := pool[rand.IntN(len(pool))]
	if len(pool) > 1 {
		i := rand.IntN(len(pool) - 1)
		if pool[i].inst.URL == c.inst.URL {
			i = len(pool) - 1
		}
		if o := pool[i]; o.ep.load() < c.ep.load() {
			c = o
		}
	}
	return c.inst, c.ep
}

func (b *Balancer) endpoint(u string) *endpoint {
	b.mu.Lock()
	defer b.mu.Unlock()
	ep := b.endpoints[u]
	if ep == nil {
		if len(b.endpoints) >= maxEndpoints {
			// Replicas come back on new addresses: forget the idle ones
			// rather than every address a platform ever had. An instance
			// still live starts over with a clean record.
			maps.DeleteFunc(b.endpoints, func(_ string, e *endpoint) bool { return e.inflight.Load() == 0 })
		}
		ep = &endpoint{}
		b.endpoints[u] = ep
	}
	return ep
}

// maxEndpoints bounds the per-instance records a balancer keeps.
const maxEndpoints = 1024

// load ranks an endpoint for the two choices: calls in flight, and last
// of all one whose last call failed.
func (e *endpoint) load() int64 {
	e.mu.Lock()
	failed := e.lastFailed
	e.mu.Unlock()
	n := e.inflight.Load()
	if failed {
		n += 1 << 20
	}
	return n
}

func (e *endpoint) ejected(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return now.Before(e.ejectedUntil)
}

func (e *endpoint) succeed() {
	e.mu.Lock()
	e.failures, e.lastFailed, e.ejections = 0, false, 0
	e.mu.Unlock()
}

func (b *Balancer) fail(service string, e *endpoint) {
	e.mu.Lock()
	e.failures++
	e.lastFailed = true
	eject := e.failures >= ejectAfter
	e.mu.Unlock()
	if eject {
		b.eject(service, e)
	}
}

// eject takes e out of rotation: for ejectFor, doubling with each
// ejection in a row.
func (b *Balancer) eject(service string, e *endpoint) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastFailed = true
	t := b.now()
	if t.Before(e.ejectedUntil) {
		return // already out; do not count it twice
	}
	d := ejectFor << min(e.ejections, 4)
	e.ejectedUntil = t.Add(min(d, maxEjectFor))
	e.ejections++
	e.failures = 0
	b.ejections.WithLabelValues(service).Inc()
}

// rewrite addresses a copy of req to the instance at base. A second try
// needs a fresh body, which Connect's unary requests (and any request made
// from a byte slice) can give.
func rewrite(req *http.Request, base string, again bool) (*http.Request, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("discovery: instance address %q: %w", base, err)
	}
	out := req.Clone(req.Context())
	out.URL.Scheme, out.URL.Host = u.Scheme, u.Host
	out.Host = ""
	if again && req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return nil, errors.New("discovery: the request cannot be sent again (no GetBody)")
		}
		if out.Body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// refused reports a request that failed before anything was sent: the
// connection could not be made.
func refused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// doneBody reports when the caller is done with a response.
type doneBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (d *doneBody) Close() error {
	err := d.ReadCloser.Close()
	d.once.Do(d.done)
	return err
}

// Snapshot is the balancer's view, for the admin endpoint: every instance
// of the balanced services with its calls in flight and ejection.
func (b *Balancer) Snapshot(ctx context.Context) map[string][]InstanceState {
	out := map[string][]InstanceState{}
	now := b.now()
	for s := range b.services {
		insts, err := b.resolver.Instances(ctx, s)
		if err != nil {
			continue
		}
		for _, in := range insts {
			ep := b.endpoint(in.URL)
			st := InstanceState{Instance: in, InFlight: ep.inflight.Load()}
			ep.mu.Lock()
			if now.Before(ep.ejectedUntil) {
				st.EjectedFor = ep.ejectedUntil.Sub(now).Round(time.Millisecond).String()
			}
			ep.mu.Unlock()
			out[s] = append(out[s], st)
		}
		sort.Slice(out[s], func(i, j int) bool { return out[s][i].URL < out[s][j].URL })
	}
	return out
}

// InstanceState is one instance as a caller sees it.
type InstanceState struct {
	Instance
	InFlight   int64  `json:"in_flight"`
	EjectedFor string `json:"ejected_for,omitempty"`
}
