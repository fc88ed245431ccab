package resilience

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	pricingv1 "github.com/rideshare-platform/rideshare/api/pricing/v1"
	"github.com/rideshare-platform/rideshare/api/pricing/v1/pricingv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// peer is a fake dependency whose answers the test controls. It counts the
// calls that reach it and the time each was given.
type peer struct {
	calls atomic.Int64

	mu     sync.Mutex
	answer func(ctx context.Context, n int64) error // nil: success
	given  []time.Duration                          // each call's remaining deadline
}

func (p *peer) set(answer func(ctx context.Context, n int64) error) {
	p.mu.Lock()
	p.answer = answer
	p.mu.Unlock()
}

func (p *peer) serve(ctx context.Context) error {
	n := p.calls.Add(1)
	p.mu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		p.given = append(p.given, time.Until(dl))
	}
	answer := p.answer
	p.mu.Unlock()
	if answer == nil {
		return nil
	}
	return answer(ctx, n)
}

func (p *peer) deadlines() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Duration(nil), p.given...)
}

// Answers a test gives.
func down(context.Context, int64) error { return apperr.E(apperr.Unavailable, "", "down") }

// hang answers only when release closes (or the call's deadline passes).
func hang(release <-chan struct{}) func(ctx context.Context, _ int64) error {
	return func(ctx context.Context, _ int64) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

type fakePayments struct {
	paymentsv1connect.UnimplementedPaymentsServiceHandler
	p *peer
}

func (f fakePayments) Authorize(ctx context.Context, _ *connect.Request[paymentsv1.AuthorizeRequest]) (*connect.Response[paymentsv1.AuthorizeResponse], error) {
	if err := f.p.serve(ctx); err != nil {
		return nil, err
	}
	return connect.NewResponse(&paymentsv1.AuthorizeResponse{Payment: &paymentsv1.Payment{Id: "p1"}}), nil
}

func (f fakePayments) GetPayment(ctx context.Context, _ *connect.Request[paymentsv1.GetPaymentRequest]) (*connect.Response[paymentsv1.GetPaymentResponse], error) {
	if err := f.p.serve(ctx); err != nil {
		return nil, err
	}
	return connect.NewResponse(&paymentsv1.GetPaymentResponse{Payment: &paymentsv1.Payment{Id: "p1"}}), nil
}

type fakePricing struct {
	pricingv1connect.UnimplementedPricingServiceHandler
	p *peer
}

func (f fakePricing) GetSurge(ctx context.Context, _ *connect.Request[pricingv1.GetSurgeRequest]) (*connect.Response[pricingv1.GetSurgeResponse], error) {
	if err := f.p.serve(ctx); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pricingv1.GetSurgeResponse{}), nil
}

// env is a caller with a policy table and clients of two fake peers.
type env struct {
	table             *Table
	reg               *prometheus.Registry
	payments, pricing *peer
	pay               paymentsv1connect.PaymentsServiceClient
	price             pricingv1connect.PricingServiceClient
}

// newEnv serves both fake peers with the platform's handler error mapping
// and builds clients with the policy table (settings as --set gives them).
// Over the network, an httptest server serves them; otherwise a transport
// hands each request to the handler in process, which testing/synctest
// needs (a goroutine waiting on a socket is not durably blocked, so a
// bubble's clock would never move).
func newEnv(t testing.TB, settings map[string]string, network bool) *env {
	t.Helper()
	e := &env{reg: prometheus.NewRegistry(), payments: &peer{}, pricing: &peer{}}
	var err error
	if e.table, err = New(Options{Settings: settings, Peers: []string{"payments", "pricing"}, Metrics: e.reg}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	hopts := connect.WithInterceptors(apperr.Interceptor())
	mux.Handle(paymentsv1connect.NewPaymentsServiceHandler(fakePayments{p: e.payments}, hopts))
	mux.Handle(pricingv1connect.NewPricingServiceHandler(fakePricing{p: e.pricing}, hopts))

	client, base := &http.Client{Transport: inProcess{mux}}, "http://peer.test"
	if network {
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		client, base = srv.Client(), srv.URL
	}
	// The platform's order (see platform.Deps.ClientOptions): error
	// mapping outside, the policies around each attempt.
	copts := connect.WithInterceptors(apperr.Interceptor(), e.table.Interceptor())
	e.pay = paymentsv1connect.NewPaymentsServiceClient(client, base, copts)
	e.price = pricingv1connect.NewPricingServiceClient(client, base, copts)
	return e
}

// The calls the tests make: a write without an idempotency key, the same
// write with one, and reads (NO_SIDE_EFFECTS) of each peer.
func (e *env) write(ctx context.Context) error {
	_, err := e.pay.Authorize(ctx, connect.NewRequest(&paymentsv1.AuthorizeRequest{RideId: "r1"}))
	return err
}

func (e *env) keyedWrite(ctx context.Context) error {
	_, err := e.pay.Authorize(ctx, connect.NewRequest(&paymentsv1.AuthorizeRequest{RideId: "r1", IdempotencyKey: "ride/r1/authorize"}))
	return err
}

func (e *env) read(ctx context.Context) error {
	_, err := e.pay.GetPayment(ctx, connect.NewRequest(&paymentsv1.GetPaymentRequest{Lookup: &paymentsv1.GetPaymentRequest_RideId{RideId: "r1"}}))
	return err
}

func (e *env) surge(ctx context.Context) error {
	_, err := e.price.GetSurge(ctx, connect.NewRequest(&pricingv1.GetSurgeRequest{}))
	return err
}

// inProcess hands a request to a handler as a server would receive it: a
// context of its own, the caller's deadline only in Connect-Timeout-Ms.
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		var err error
		if body, err = io.ReadAll(r.Body); err != nil {
			return nil, err
		}
		r.Body.Close()
	}
	sr := httptest.NewRequestWithContext(context.Background(), r.Method, r.URL.String(), bytes.NewReader(body))
	sr.Header = r.Header.Clone()
	done := make(chan *http.Response, 1)
	go func() {
		rec := httptest.NewRecorder()
		t.h.ServeHTTP(rec, sr)
		done <- rec.Result()
	}()
	select {
	case res := <-done:
		return res, nil
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
}

// fast are settings that keep real-time tests quick: short backoff, and a
// breaker that stays closed unless a test wants it.
func fast(more ...string) map[string]string {
	s := map[string]string{
		"resilience.default.backoff":           "1ms",
		"resilience.default.max_backoff":       "2ms",
		"resilience.default.breaker_min_calls": "1000000",
	}
	for i := 0; i+1 < len(more); i += 2 {
		s[more[i]] = more[i+1]
	}
	return s
}
