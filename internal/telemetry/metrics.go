package telemetry

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry is a process's metric registry with the Go runtime and process
// collectors. The service and instance labels come from the scraper's target
// (Prometheus job and instance), not from every series.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// HTTPMetrics counts requests and observes latency per route. The route is
// the ServeMux pattern (or the RPC procedure), never the raw path, so ids in
// URLs cannot blow up the label space.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
}

// NewHTTPMetrics registers the HTTP server metrics with reg.
func NewHTTPMetrics(reg prometheus.Registerer) *HTTPMetrics {
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_http_requests_total",
			Help: "HTTP requests served, by route, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rideshare_http_request_duration_seconds",
			Help:    "HTTP request latency by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rideshare_http_requests_in_flight",
			Help: "HTTP requests being served now.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.inflight)
	return m
}

// Wrap instruments next.
func (m *HTTPMetrics) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inflight.Inc()
		rec := NewRecorder(w)
		defer func() {
			m.inflight.Dec()
			route := routeOf(r, rec.Status)
			m.requests.WithLabelValues(route, r.Method, strconv.Itoa(rec.Status)).Inc()
			m.duration.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(rec, r)
	})
}

// routeOf names the route: ServeMux fills r.Pattern as it routes. RPC
// handlers are mounted on a per-service prefix, so their procedure (the path)
// is used; unmatched paths collapse into one label.
func routeOf(r *http.Request, status int) string {
	p := r.Pattern
	switch {
	case p == "" || status == http.StatusNotFound && strings.HasSuffix(p, "/"):
		return "unmatched"
	case strings.HasSuffix(p, "/") && strings.Count(p, "/") == 2 && strings.Contains(p, "."):
		return r.URL.Path // /pkg.Service/ prefix: the procedure is the route
	}
	return p
}

// Recorder remembers the status a handler wrote, for metrics and logs.
type Recorder struct {
	http.ResponseWriter
	// Status is the response status (200 until the handler writes).
	Status      int
	wroteHeader bool
}

// NewRecorder wraps w.
func NewRecorder(w http.ResponseWriter) *Recorder {
	if r, ok := w.(*Recorder); ok {
		return r
	}
	return &Recorder{ResponseWriter: w, Status: http.StatusOK}
}

// WriteHeader records the first status written.
func (s *Recorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.Status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *Recorder) Write(b []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and deadlines (streams).
func (s *Recorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush keeps streaming responses streaming through the recorder.
func (s *Recorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Interceptor carries the request id across RPC hops: clients send it,
// handlers put it back in their context for logs.
func Interceptor() connect.Interceptor { return idInterceptor{} }

type idInterceptor struct{}

func (idInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			if id := RequestID(ctx); id != "" {
				req.Header().Set(RequestIDHeader, id)
			}
		} else if id := req.Header().Get(RequestIDHeader); id != "" && RequestID(ctx) == "" && acceptableID.MatchString(id) {
			ctx = WithRequestID(ctx, id)
		}
		return next(ctx, req)
	}
}

func (idInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if id := RequestID(ctx); id != "" {
			conn.RequestHeader().Set(RequestIDHeader, id)
		}
		return conn
	}
}

func (idInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if id := conn.RequestHeader().Get(RequestIDHeader); id != "" && RequestID(ctx) == "" && acceptableID.MatchString(id) {
			ctx = WithRequestID(ctx, id)
		}
		return next(ctx, conn)
	}
}
