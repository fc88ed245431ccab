package load

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/rideshare-platform/rideshare/internal/gateway"
)

// Histogram range: 1 µs to 10 minutes at 3 significant digits. Every
// request carries a client timeout far below the top, and a value above it
// is clamped rather than lost, so it still counts and still shows as max.
const (
	histMin     = 1
	histMax     = int64(10 * time.Minute / time.Microsecond)
	histDigits  = 3
	otherSuffix = " (other)"
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

func record(h *hdrhistogram.Histogram, d time.Duration) {
	us := min(max(d.Microseconds(), histMin), histMax)
	_ = h.RecordValue(us) // in range by construction
}

// routeTable names a request by the route it hits, from the gateway's own
// route table, so a ride id never becomes a route of its own.
type routeTable struct{ mux *http.ServeMux }

// extraRoutes are answered in front of the route table: the OAuth
// endpoints forwarded to identity and the infrastructure endpoints.
var extraRoutes = []string{
	"POST /oauth2/token", "GET /oauth2/jwks", "GET /.well-known/openid-configuration",
	"GET /healthz", "GET /readyz", "GET /metrics",
}

func newRouteTable() routeTable {
	mux := http.NewServeMux()
	nop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, rt := range gateway.Routes() {
		mux.Handle(rt.Method+" "+rt.Path, nop)
	}
	for _, p := range extraRoutes {
		mux.Handle(p, nop)
	}
	return routeTable{mux: mux}
}

// name is the request's route template, e.g. "GET /v1/rides/{id}"; a
// request the table does not know is "METHOD (other)".
func (t routeTable) name(r *http.Request) string {
	if _, pattern := t.mux.Handler(r); pattern != "" {
		return pattern
	}
	return r.Method + otherSuffix
}

// errorClass names a failed request: "HTTP 429 rate_limited" for an
// answer (with its problem code, when it had one), or what went wrong when
// there was none.
func errorClass(status int, err error, code string) string {
	if err == nil {
		if code != "" {
			return "HTTP " + strconv.Itoa(status) + " " + code
		}
		return "HTTP " + strconv.Itoa(status)
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	}
	return "network error"
}

// stats is everything a run counts, behind one lock: per-route latency,
// errors, the per-second timeline and the rides. The lock is held for a
// few map and histogram updates per request, far below the cost of the
// request itself.
type stats struct {
	mu     sync.Mutex
	now    func() time.Time
	on     bool
	start  time.Time
	routes map[string]*routeStats
	all    *hdrhistogram.Histogram
	errs   map[errorKey]int64
	rides  Rides

	timeline []Second
	cur      Second // the open second
	curHist  *hdrhistogram.Histogram
}

type routeStats struct {
	hist             *hdrhistogram.Histogram
	requests, errors int64
}

type errorKey struct{ route, class string }

func newStats(now func() time.Time) *stats {
	return &stats{
		now: now, routes: map[string]*routeStats{}, all: newHist(), errs: map[errorKey]int64{},
		curHist: newHist(),
		rides:   Rides{Terminal: map[string]int64{}, NotTerminal: map[string]int64{}},
	}
}

// begin starts the clock of the measured window: from now on requests and
// rides count, and the timeline's second 0 begins.
func (s *stats) begin() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.on, s.start = true, s.now()
	return s.start
}

// end stops counting and closes the last (partial) second.
func (s *stats) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.on {
		return
	}
	s.advanceLocked(s.now())
	s.closeLocked()
	s.on = false
}

// advanceLocked closes every second before now's, including idle ones, so
// the timeline has an entry for each second of the window.
func (s *stats) advanceLocked(now time.Time) {
	at := int(now.Sub(s.start) / time.Second)
	for s.cur.At < at {
		s.closeLocked()
		s.cur = Second{At: s.cur.At + 1}
	}
}

func (s *stats) closeLocked() {
	c := s.cur
	if s.curHist.TotalCount() > 0 {
		c.P50 = durationOf(s.curHist.ValueAtQuantile(50))
		c.P99 = durationOf(s.curHist.ValueAtQuantile(99))
	}
	s.timeline = append(s.timeline, c)
	s.curHist.Reset()
}

// tick closes the seconds that have passed, for a quiet second has no
// request to close it.
func (s *stats) tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.on {
		s.advanceLocked(s.now())
	}
}

// request counts one request to route that took d and ended with status
// (0 with err when no answer came); code is an error answer's problem code.
func (s *stats) request(route string, d time.Duration, status int, err error, code string) {
	failed := err != nil || status >= 400
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.on {
		return
	}
	s.advanceLocked(s.now())
	rs := s.routes[route]
	if rs == nil {
		rs = &routeStats{hist: newHist()}
		s.routes[route] = rs
	}
	rs.requests++
	s.cur.Requests++
	if failed {
		rs.errors++
		s.cur.Errors++
		s.errs[errorKey{route, errorClass(status, err, code)}]++
	}
	// A request that got no answer has no latency worth mixing with the
	// answered ones: a refused connection is fast, a timeout is the
	// client's limit. It counts as an error only.
	if err == nil {
		record(rs.hist, d)
		record(s.all, d)
		record(s.curHist, d)
	}
}

// arrival counts one scheduled ride arrival; dropped means every rider was
// busy with a ride already.
func (s *stats) arrival(dropped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.on {
		return
	}
	s.advanceLocked(s.now())
	s.rides.Offered++
	s.cur.Offered++
	if dropped {
		s.rides.Dropped++
		s.cur.Dropped++
	}
}

// rideFailed counts an arrival whose ride request never got a 202.
func (s *stats) rideFailed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rides.Failed++
}

// rideRequested counts a ride the platform accepted.
func (s *stats) rideRequested() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.on {
		s.advanceLocked(s.now())
	}
	s.rides.Requested++
	s.cur.RidesRequested++
}

// rideEnded counts a requested ride by the last status its rider saw.
func (s *stats) rideEnded(status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.on {
		s.advanceLocked(s.now())
	}
	if !Terminal(status) {
		s.rides.NotTerminal[status]++
		return
	}
	s.rides.Terminal[status]++
	if status == StatusCompleted {
		s.cur.RidesCompleted++
	}
}

// progress is what the live line shows: the last whole second, and the
// totals so far.
type progress struct {
	elapsed   time.Duration
	last      Second
	errors    int64
	p50, p99  time.Duration
	completed int64
}

func (s *stats) progress() progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := progress{elapsed: s.now().Sub(s.start), completed: s.rides.Terminal[StatusCompleted]}
	for _, rs := range s.routes {
		p.errors += rs.errors
	}
	if n := len(s.timeline); n > 0 {
		p.last = s.timeline[n-1]
	}
	if s.all.TotalCount() > 0 {
		p.p50 = durationOf(s.all.ValueAtQuantile(50))
		p.p99 = durationOf(s.all.ValueAtQuantile(99))
	}
	return p
}

// fill copies what the stats counted into r.
func (s *stats) fill(r *Report) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.Latency = latencyOf(s.all)
	r.Routes = r.Routes[:0]
	for name, rs := range s.routes {
		r.Requests += rs.requests
		r.Errors += rs.errors
		r.Routes = append(r.Routes, RouteReport{Route: name, Requests: rs.requests, Errors: rs.errors, Latency: latencyOf(rs.hist)})
	}
	sort.Slice(r.Routes, func(i, j int) bool { return routeLess(r.Routes[i].Route, r.Routes[j].Route) })
	r.ErrorsByRoute = r.ErrorsByRoute[:0]
	for k, n := range s.errs {
		r.ErrorsByRoute = append(r.ErrorsByRoute, ErrorCount{Route: k.route, Class: k.class, Count: n})
	}
	sort.Slice(r.ErrorsByRoute, func(i, j int) bool {
		a, b := r.ErrorsByRoute[i], r.ErrorsByRoute[j]
		if a.Route != b.Route {
			return routeLess(a.Route, b.Route)
		}
		return a.Class < b.Class
	})
	r.Rides = s.rides.clone()
	r.Timeline = append([]Second(nil), s.timeline...)
}

// routeLess orders routes by path, then method, so a route's methods sit
// together in the report.
func routeLess(a, b string) bool {
	ma, pa := splitRoute(a)
	mb, pb := splitRoute(b)
	if pa != pb {
		return pa < pb
	}
	return ma < mb
}

func splitRoute(r string) (method, path string) {
	method, path, _ = strings.Cut(r, " ")
	return method, path
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count: h.TotalCount(),
		Mean:  time.Duration(h.Mean() * float64(time.Microsecond)),
		P50:   durationOf(h.ValueAtQuantile(50)),
		P90:   durationOf(h.ValueAtQuantile(90)),
		P99:   durationOf(h.ValueAtQuantile(99)),
		Max:   durationOf(h.Max()),
	}
}

func durationOf(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// transport is the one http.RoundTripper every simulated rider and driver
// sends through: it times each request from the moment it is sent until
// its body is closed, and charges it to its route template.
type transport struct {
	base   http.RoundTripper
	routes routeTable
	stats  *stats
	now    func() time.Time
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	route := t.routes.name(req)
	began := t.now()
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		// A request the run itself called off (its ride ended, the fleet
		// stopped, Ctrl-C) says nothing about the platform.
		if !errors.Is(err, context.Canceled) {
			t.stats.request(route, t.now().Sub(began), 0, err, "")
		}
		return nil, err
	}
	tb := &timedBody{ReadCloser: resp.Body, failed: resp.StatusCode >= 400}
	tb.done = func() {
		t.stats.request(route, t.now().Sub(began), resp.StatusCode, nil, tb.code())
	}
	resp.Body = tb
	return resp, nil
}

// maxErrorPeek bounds what is kept of an error answer to find its code:
// a problem+json is a few hundred bytes.
const maxErrorPeek = 4 << 10

// timedBody reports when the caller has the whole answer: when it closes
// the body, which every caller in this package does once it read it. Of an
// error answer it keeps the start, for the problem's stable code.
type timedBody struct {
	io.ReadCloser
	once   sync.Once
	done   func()
	failed bool
	peek   []byte
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.failed && len(b.peek) < maxErrorPeek {
		b.peek = append(b.peek, p[:min(n, maxErrorPeek-len(b.peek))]...)
	}
	return n, err
}

func (b *timedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

// code is the error answer's problem code (or OAuth error), if it had one.
func (b *timedBody) code() string {
	if !b.failed || len(b.peek) == 0 {
		return ""
	}
	var p struct {
		Code  string `json:"code"`
		OAuth string `json:"error"`
	}
	if json.Unmarshal(b.peek, &p) != nil {
		return ""
	}
	if p.Code == "" {
		p.Code = p.OAuth
	}
	// A code is a short identifier; anything else is not one to group by.
	if len(p.Code) > 64 || strings.ContainsAny(p.Code, " \t\n") {
		return ""
	}
	return p.Code
}
