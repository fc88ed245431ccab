package drill

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/rideshare-platform/rideshare/internal/gateway"
)

// Routes the drills judge, as the gateway's route table names them.
const (
	routeRequestRide = "POST /v1/rides"
	routeEstimate    = "POST /v1/fares/estimate"
	routeRide        = "GET /v1/rides/{id}"
)

// call is one request a simulated rider or driver made, as the drill saw
// it: the load reports latency per route over the whole run, a drill
// needs it per phase (before, during and after the fault).
type call struct {
	At     time.Time // sent
	Took   time.Duration
	Route  string
	Status int  // 0: no answer
	Failed bool // no answer, or 4xx/5xx
	// Degraded and Surge are read from a fare estimate's answer.
	Degraded bool
	Surge    float64
}

// recorder is the http.RoundTripper under the load's own: it keeps every
// call, and notices when the load's clock starts.
type recorder struct {
	base  http.RoundTripper
	names *http.ServeMux

	mu    sync.Mutex
	calls []call

	startOnce sync.Once
	started   chan struct{}
	startedAt time.Time
}

func newRecorder(base http.RoundTripper) *recorder {
	mux := http.NewServeMux()
	nop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, rt := range gateway.Routes() {
		mux.Handle(rt.Method+" "+rt.Path, nop)
	}
	return &recorder{base: base, names: mux, started: make(chan struct{})}
}

func (r *recorder) route(req *http.Request) string {
	if _, pattern := r.names.Handler(req); pattern != "" {
		return pattern
	}
	return req.Method + " (other)"
}

// RoundTrip times req until its body is closed. The load's clock starts
// when its warm-up (sign-ins, drivers going online) is over and the first
// ride arrives, and a ride begins with its fare estimate: the first
// estimate marks the start.
func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	route := r.route(req)
	sent := time.Now()
	if route == routeEstimate {
		r.startOnce.Do(func() {
			r.startedAt = sent
			close(r.started)
		})
	}
	res, err := r.base.RoundTrip(req)
	if err != nil {
		r.add(call{At: sent, Took: time.Since(sent), Route: route, Failed: true})
		return nil, err
	}
	b := &watchedBody{ReadCloser: res.Body, estimate: route == routeEstimate && res.StatusCode == http.StatusOK}
	b.done = func() {
		c := call{At: sent, Took: time.Since(sent), Route: route, Status: res.StatusCode, Failed: res.StatusCode >= 400}
		if b.estimate {
			var e struct {
				Degraded bool    `json:"degraded"`
				Surge    float64 `json:"surge"`
			}
			if json.Unmarshal(b.peek, &e) == nil {
				c.Degraded, c.Surge = e.Degraded, e.Surge
			}
		}
		r.add(c)
	}
	res.Body = b
	return res, nil
}

func (r *recorder) add(c call) {
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
}

// snapshot is every call so far, in the order they were sent.
func (r *recorder) snapshot() []call {
	r.mu.Lock()
	out := slices.Clone(r.calls)
	r.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// maxPeek bounds what is kept of an estimate's answer: a few hundred bytes.
const maxPeek = 8 << 10

// watchedBody reports when the caller is done with the answer, keeping
// the start of an estimate's.
type watchedBody struct {
	io.ReadCloser
	estimate bool
	peek     []byte
	once     sync.Once
	done     func()
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.estimate && len(b.peek) < maxPeek {
		b.peek = append(b.peek, p[:min(n, maxPeek-len(b.peek))]...)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

// span is a stretch of time: [From, To).
type span struct{ From, To time.Time }

func (s span) contains(t time.Time) bool { return !t.Before(s.From) && t.Before(s.To) }

// routeStats summarizes the calls to one route sent within a span.
type routeStats struct {
	Calls, Failed int
	P50, P99, Max time.Duration
	// Statuses counts answers by status (0: none).
	Statuses map[int]int
	// Degraded counts degraded estimates; MaxSurge is the highest surge
	// an estimate answered.
	Degraded int
	MaxSurge float64
}

// failedShare is Failed/Calls (0 with no calls).
func (s routeStats) failedShare() float64 {
	if s.Calls == 0 {
		return 0
	}
	return float64(s.Failed) / float64(s.Calls)
}

// stats summarizes calls sent within sp, to route ("" for every route).
func stats(calls []call, sp span, route string) routeStats {
	st := routeStats{Statuses: map[int]int{}}
	var took []time.Duration
	for _, c := range calls {
		if !sp.contains(c.At) || (route != "" && c.Route != route) {
			continue
		}
		st.Calls++
		st.Statuses[c.Status]++
		if c.Failed {
			st.Failed++
		}
		if c.Degraded {
			st.Degraded++
		}
		st.MaxSurge = max(st.MaxSurge, c.Surge)
		// An unanswered call has no latency worth mixing in (a refused
		// connection is fast, a timeout is the client's limit).
		if c.Status != 0 {
			took = append(took, c.Took)
		}
	}
	st.P50, st.P99, st.Max = quantile(took, 0.50), quantile(took, 0.99), quantile(took, 1)
	return st
}

// quantile is the nearest-rank q-quantile of ds (0 for none).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}
