package resilience

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/failsafe-go/failsafe-go/adaptivelimiter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// CodeOverloaded is the error code of a request shed by a server.
const CodeOverloaded = "overloaded"

// ShedOptions configure a server's load shedding.
type ShedOptions struct {
	// Off serves every request however long it must queue.
	Off bool
	// MinLimit, MaxLimit and InitialLimit bound the adaptive concurrency
	// limit. The limit falls when latency rises with concurrency (work is
	// queueing inside the process: CPU, the one SQLite writer) and rises
	// again while latency holds.
	MinLimit, MaxLimit, InitialLimit uint
	// MaxQueueWait bounds how long a request waits for a slot when the
	// limit is reached; a caller's deadline (Connect-Timeout-Ms,
	// grpc-timeout), when sooner, bounds it instead: work older than its
	// caller will wait is worth nothing, so it is refused, not queued.
	MaxQueueWait time.Duration
	// RetryAfter is what a refusal tells the client to wait.
	RetryAfter time.Duration
}

// DefaultShed keeps queues short: on two cores, 16 requests in flight
// already keep both busy, so the limit starts at 64 and never drops below
// 16; a request waits at most 250 ms for a slot.
var DefaultShed = ShedOptions{
	MinLimit: 16, MaxLimit: 1024, InitialLimit: 64,
	MaxQueueWait: 250 * time.Millisecond, RetryAfter: time.Second,
}

// shedKeys are the settings shed.<key> that configure a process's shedder.
var shedKeys = map[string]func(o *ShedOptions, v string) error{
	"off": func(o *ShedOptions, v string) (err error) {
		o.Off, err = strconv.ParseBool(v)
		return err
	},
	"min_limit":      shedUint(func(o *ShedOptions) *uint { return &o.MinLimit }),
	"max_limit":      shedUint(func(o *ShedOptions) *uint { return &o.MaxLimit }),
	"initial_limit":  shedUint(func(o *ShedOptions) *uint { return &o.InitialLimit }),
	"max_queue_wait": shedDuration(func(o *ShedOptions) *time.Duration { return &o.MaxQueueWait }),
	"retry_after":    shedDuration(func(o *ShedOptions) *time.Duration { return &o.RetryAfter }),
}

// ParseShedOptions reads the shed.* settings over DefaultShed.
func ParseShedOptions(settings map[string]string) (ShedOptions, error) {
	o := DefaultShed
	for k, v := range settings {
		key, ok := strings.CutPrefix(k, "shed.")
		if !ok {
			continue
		}
		set := shedKeys[key]
		if set == nil {
			return o, fmt.Errorf("setting %s: unknown; shed.* takes off, min_limit, max_limit, initial_limit, max_queue_wait, retry_after", k)
		}
		if err := set(&o, strings.TrimSpace(v)); err != nil {
			return o, fmt.Errorf("setting %s=%q: %w", k, v, err)
		}
	}
	if o.Off {
		return o, nil
	}
	return o, o.validate()
}

func (o ShedOptions) validate() error {
	switch {
	case o.MinLimit < 1 || o.MinLimit > o.InitialLimit || o.InitialLimit > o.MaxLimit:
		return fmt.Errorf("shed limits: want 1 <= min_limit <= initial_limit <= max_limit, got %d, %d, %d", o.MinLimit, o.InitialLimit, o.MaxLimit)
	case o.MaxQueueWait < 0 || o.RetryAfter < 0:
		return fmt.Errorf("shed durations must not be negative")
	}
	return nil
}

// Shedder refuses requests fast, with 503 and Retry-After, when the server
// cannot serve them in time, instead of letting them queue: its in-flight
// requests have reached failsafe-go's adaptive concurrency limit and a
// request cannot get a slot within its caller's deadline (or MaxQueueWait),
// or the queue is already several times the limit.
type Shedder struct {
	opts     ShedOptions
	limiter  adaptivelimiter.AdaptiveLimiter[any]
	rejected prometheus.Counter
	// refusing times a refusal from the request's arrival in the handler
	// to the answer: what "reject fast" promises, measured where the
	// server can vouch for it (a client's figure adds its own scheduling).
	refusing prometheus.Histogram
	rpc      *connect.ErrorWriter
}

// NewShedder builds a shedder and registers its metrics with reg (if not
// nil). With o.Off it returns nil, whose Wrap is the identity.
func NewShedder(o ShedOptions, reg prometheus.Registerer) (*Shedder, error) {
	if o.Off {
		return nil, nil
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	s := &Shedder{
		opts: o,
		limiter: adaptivelimiter.NewBuilder[any]().
			WithLimits(o.MinLimit, o.MaxLimit, o.InitialLimit).
			// Queue up to twice the limit, then refuse more and more of
			// the newcomers until every one is refused at three times it.
			WithQueueing(2, 3).
			WithMaxWaitTime(o.MaxQueueWait).
			Build(),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rideshare_shed_rejected_total",
			Help: "Requests refused with 503 because the server could not serve them in time.",
		}),
		refusing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rideshare_shed_refusal_seconds",
			Help:    "Time from a request's arrival to its refusal by load shedding.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5},
		}),
		// Connect-Protocol-Version tells an RPC from a public JSON request,
		// which shares its content type; every Connect client sends it.
		rpc: connect.NewErrorWriter(connect.WithRequireConnectProtocolHeader()),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{
			s.rejected, s.refusing,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "rideshare_shed_inflight", Help: "Requests holding a load-shedding slot now.",
			}, func() float64 { return float64(s.limiter.Inflight()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "rideshare_shed_limit", Help: "The adaptive concurrency limit now.",
			}, func() float64 { return float64(s.limiter.Limit()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "rideshare_shed_queued", Help: "Requests waiting for a load-shedding slot now.",
			}, func() float64 { return float64(s.limiter.Queued()) }),
		} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// Limit, Inflight and Queued report the limiter now.
func (s *Shedder) Limit() int    { return s.limiter.Limit() }
func (s *Shedder) Inflight() int { return s.limiter.Inflight() }
func (s *Shedder) Queued() int   { return s.limiter.Queued() }

// Wrap sheds next's requests. Streams are not limited: Connect streaming and
// gRPC requests (whose content type cannot tell a unary call from a stream)
// pass straight through, and a response that starts streaming (a flush,
// such as server-sent events) gives its slot back at once, so that
// long-lived streams neither hold slots nor teach the limiter that requests
// take minutes.
func (s *Shedder) Wrap(next http.Handler) http.Handler {
	if s == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct := r.Header.Get("Content-Type")
		if strings.HasPrefix(ct, "application/connect+") || strings.HasPrefix(ct, "application/grpc") {
			next.ServeHTTP(w, r)
			return
		}
		arrived := time.Now()
		wait := s.opts.MaxQueueWait
		if d, ok := callerWait(r); ok {
			wait = min(wait, d)
		}
		if wait < 0 {
			wait = 0
		}
		permit, err := s.limiter.AcquirePermitWithMaxWait(r.Context(), wait)
		if err != nil {
			if r.Context().Err() != nil {
				return // the caller is gone: nobody to answer
			}
			s.refuse(w, r)
			s.refusing.Observe(time.Since(arrived).Seconds())
			return
		}
		sw := &slotWriter{ResponseWriter: w, permit: permit}
		defer sw.release(true)
		next.ServeHTTP(sw, r)
	})
}

func (s *Shedder) refuse(w http.ResponseWriter, r *http.Request) {
	s.rejected.Inc()
	err := apperr.E(apperr.Unavailable, CodeOverloaded, "the server is overloaded; retry later")
	if s.rpc.IsSupported(r) {
		if s.opts.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((s.opts.RetryAfter+time.Second-1)/time.Second)))
		}
		_ = s.rpc.Write(w, r, apperr.ToConnect(err))
		return
	}
	apperr.WriteProblem(w, r, err, s.opts.RetryAfter)
}

// callerWait is how long the caller will wait for an answer, from the
// deadline a Connect RPC carries. (gRPC requests, which carry theirs in
// grpc-timeout, are not limited at all: see Wrap.)
func callerWait(r *http.Request) (time.Duration, bool) {
	v := r.Header.Get("Connect-Timeout-Ms")
	if v == "" {
		return 0, false
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

// slotWriter holds a request's slot until the handler returns or starts
// streaming.
type slotWriter struct {
	http.ResponseWriter
	permit adaptivelimiter.Permit
	once   sync.Once
}

// release gives the slot back: recorded (its latency teaches the limiter)
// when the request completed, dropped when it turned into a stream.
func (w *slotWriter) release(record bool) {
	w.once.Do(func() {
		if record {
			w.permit.Record()
		} else {
			w.permit.Drop()
		}
	})
}

// Flush marks the response as a stream and flushes it.
func (w *slotWriter) Flush() {
	w.release(false)
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach deadlines and the rest.
func (w *slotWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func shedUint(f func(*ShedOptions) *uint) func(*ShedOptions, string) error {
	return func(o *ShedOptions, v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return fmt.Errorf("want a non-negative integer")
		}
		*f(o) = uint(n)
		return nil
	}
}

func shedDuration(f func(*ShedOptions) *time.Duration) func(*ShedOptions, string) error {
	return func(o *ShedOptions, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("want a Go duration such as 250ms")
		}
		*f(o) = d
		return nil
	}
}
