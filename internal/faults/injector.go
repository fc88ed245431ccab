package faults

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"log/slog"
	mathrand "math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// Clock tells the time; tests pass a clock they move by hand (such as
// testenv.Clock) to expire faults without waiting.
type Clock interface {
	Now() time.Time
}

// Options configure an Injector; every field may be left zero.
type Options struct {
	// Clock decides when a fault set "for" a while expires; nil is the
	// system clock. Latency and hangs are always real waits: their point
	// is to make real requests slow.
	Clock Clock
	// Rand decides which requests an error rate fails; nil is a randomly
	// seeded source. Tests pass a seeded one.
	Rand mathrand.Source
	// Logger records faults being set and cleared; nil discards.
	Logger *slog.Logger
	// Metrics, if set, receives rideshare_faults_injected_total{kind} and
	// the rideshare_faults_active gauge.
	Metrics prometheus.Registerer
}

// Injector holds the faults in force in one process and applies them to the
// requests its middleware sees. It is safe for concurrent use and starts
// with no faults.
type Injector struct {
	clock    Clock
	log      *slog.Logger
	injected *prometheus.CounterVec
	errw     *connect.ErrorWriter

	randMu sync.Mutex // *rand.Rand is not safe for concurrent use
	rnd    *mathrand.Rand

	// mu serialises changes; readers load the snapshot without locking,
	// so a request pays one atomic load while no fault is set.
	mu     sync.Mutex
	faults atomic.Pointer[[]Fault] // longest route first; replaced, never modified
}

// Kinds of injected fault, the values of the kind label.
const (
	KindLatency = "latency"
	KindError   = "error"
	KindHang    = "hang"
)

// New builds an Injector with no faults set.
func New(opts Options) *Injector {
	i := &Injector{clock: opts.Clock, log: opts.Logger, errw: connect.NewErrorWriter()}
	if i.clock == nil {
		i.clock = systemClock{}
	}
	if i.log == nil {
		i.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	src := opts.Rand
	if src == nil {
		var seed [16]byte
		_, _ = rand.Read(seed[:])
		src = mathrand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:]))
	}
	i.rnd = mathrand.New(src)
	i.injected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rideshare_faults_injected_total",
		Help: "Faults injected into requests on purpose (admin fault switch), by kind: latency, error, hang.",
	}, []string{"kind"})
	for _, k := range []string{KindLatency, KindError, KindHang} {
		i.injected.WithLabelValues(k) // every kind reads 0 before its first use
	}
	if opts.Metrics != nil {
		active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rideshare_faults_active",
			Help: "Faults set with the admin fault switch and in force now.",
		}, func() float64 { return float64(len(i.Active())) })
		for _, c := range []prometheus.Collector{i.injected, active} {
			if err := opts.Metrics.Register(c); err != nil {
				// Faults still work; only their metrics are missing.
				i.log.Warn("fault metrics not registered", "err", err)
			}
		}
	}
	return i
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Set puts f in force, replacing any fault on the same route, and returns
// it as stored (status defaulted, set and expiry times stamped).
func (i *Injector) Set(f Fault) (Fault, error) {
	if err := f.Validate(); err != nil {
		return Fault{}, err
	}
	if f.ErrorRate > 0 && f.Status == 0 {
		f.Status = DefaultStatus
	}
	now := i.clock.Now()
	f.SetAt, f.ExpiresAt = now, time.Time{}
	if f.For > 0 {
		f.ExpiresAt = now.Add(f.For)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	next := []Fault{f}
	for _, old := range i.prune(now) {
		if old.Route != f.Route {
			next = append(next, old)
		}
	}
	// The longest matching prefix wins, so a fault on one method overrides
	// one on the whole service for that method.
	sort.SliceStable(next, func(a, b int) bool { return len(next[a].Route) > len(next[b].Route) })
	i.faults.Store(&next)
	attrs := []any{"fault", f.String(), "route", f.Route}
	if !f.ExpiresAt.IsZero() {
		attrs = append(attrs, "expires_at", f.ExpiresAt)
	}
	i.log.Warn("fault set", attrs...)
	return f, nil
}

// Clear removes the fault on exactly route ("" is the every-route fault)
// and reports whether there was one.
func (i *Injector) Clear(route string) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	var next []Fault
	found := false
	for _, f := range i.prune(i.clock.Now()) {
		if f.Route == route {
			found = true
			continue
		}
		next = append(next, f)
	}
	i.faults.Store(&next)
	if found {
		i.log.Info("fault cleared", "route", route)
	}
	return found
}

// ClearAll removes every fault and returns how many were in force.
func (i *Injector) ClearAll() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	n := len(i.prune(i.clock.Now()))
	i.faults.Store(&[]Fault{})
	if n > 0 {
		i.log.Info("faults cleared", "count", n)
	}
	return n
}

// Active returns the faults in force now, ordered by route.
func (i *Injector) Active() []Fault {
	i.mu.Lock()
	defer i.mu.Unlock()
	live := i.prune(i.clock.Now())
	out := append([]Fault(nil), live...)
	sort.Slice(out, func(a, b int) bool { return out[a].Route < out[b].Route })
	return out
}

// prune drops expired faults from the snapshot, logging each, and returns
// the faults still in force. Callers hold mu.
func (i *Injector) prune(now time.Time) []Fault {
	cur := i.faults.Load()
	if cur == nil {
		return nil
	}
	live := make([]Fault, 0, len(*cur))
	for _, f := range *cur {
		if f.activeAt(now) {
			live = append(live, f)
		} else {
			i.log.Info("fault expired", "fault", f.String(), "route", f.Route)
		}
	}
	if len(live) != len(*cur) {
		i.faults.Store(&live)
	}
	return live
}

// match is the fault that applies to a request path: the one with the
// longest route prefix of path that has not expired.
func (i *Injector) match(path string) (Fault, bool) {
	cur := i.faults.Load()
	if cur == nil || len(*cur) == 0 {
		return Fault{}, false
	}
	now := i.clock.Now()
	for _, f := range *cur {
		if strings.HasPrefix(path, f.Route) && f.activeAt(now) {
			return f, true
		}
	}
	return Fault{}, false
}

// exempt are the infrastructure paths a fault never touches, even if the
// middleware is applied to a whole mux: probes must tell the truth about the
// process, and the admin switch must stay reachable to clear a hang.
func exempt(path string) bool {
	switch path {
	case "/healthz", "/readyz", "/metrics", "/admin":
		return true
	}
	return strings.HasPrefix(path, "/admin/")
}

// Middleware applies the fault in force for each request's path before next
// serves it. Wrap the service's RPC (or public) handler with it.
func (i *Injector) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if exempt(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		f, ok := i.match(r.URL.Path)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		ctx := r.Context()
		if f.Hang {
			i.injected.WithLabelValues(KindHang).Inc()
			<-ctx.Done()
			i.writeError(w, r, ctx.Err())
			return
		}
		if f.Latency > 0 {
			i.injected.WithLabelValues(KindLatency).Inc()
			if err := wait(ctx, f.Latency); err != nil {
				// The caller gave up: the callee stops work too.
				i.writeError(w, r, err)
				return
			}
		}
		if f.ErrorRate > 0 && i.roll() < f.ErrorRate {
			i.injected.WithLabelValues(KindError).Inc()
			i.writeError(w, r, f.err())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// wait sleeps for d or until ctx ends, whichever is first.
func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// roll is a uniform number in [0, 1): an error rate of 1 always fails,
// 0 never does.
func (i *Injector) roll() float64 {
	i.randMu.Lock()
	defer i.randMu.Unlock()
	return i.rnd.Float64()
}

// writeError answers in the protocol of the request: an RPC error for
// Connect, gRPC and gRPC-Web callers, problem+json for everyone else. A
// context error (the caller gave up during a hang or a wait) is written too,
// as Timeout or Unavailable, in case the deadline was this server's own.
func (i *Injector) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if isRPC(r) {
		_ = i.errw.Write(w, r, apperr.ToConnect(err))
		return
	}
	apperr.WriteProblem(w, r, err, 0)
}
