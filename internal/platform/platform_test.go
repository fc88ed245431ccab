package platform

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/resilience"
	"github.com/rideshare-platform/rideshare/internal/telemetry"
)

// downPayments records what reaches it and is always unavailable.
type downPayments struct {
	paymentsv1connect.UnimplementedPaymentsServiceHandler
	mu        sync.Mutex
	ids       []string
	deadlines []time.Duration
}

func (p *downPayments) Authorize(ctx context.Context, _ *connect.Request[paymentsv1.AuthorizeRequest]) (*connect.Response[paymentsv1.AuthorizeResponse], error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ids = append(p.ids, telemetry.RequestID(ctx))
	if dl, ok := ctx.Deadline(); ok {
		p.deadlines = append(p.deadlines, time.Until(dl))
	}
	return nil, apperr.E(apperr.Unavailable, "", "card network unreachable")
}

// TestClientOptionsApplyThePolicies checks the order of the client
// interceptors: the default deadline bounds every attempt, each retry
// carries the caller's request id, and a breaker's refusal reaches the
// caller in the error vocabulary.
func TestClientOptionsApplyThePolicies(t *testing.T) {
	pay := &downPayments{}
	var d Deps
	mux := http.NewServeMux()
	mux.Handle(paymentsv1connect.NewPaymentsServiceHandler(pay, d.HandlerOptions()...))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	table, err := resilience.New(resilience.Options{Settings: map[string]string{
		"resilience.payments.timeout":           "1m", // longer than the default deadline, which must win
		"resilience.payments.backoff":           "1ms",
		"resilience.payments.max_backoff":       "1ms",
		"resilience.payments.breaker_min_calls": "3",
	}})
	if err != nil {
		t.Fatal(err)
	}
	d.Resilience = table
	c := paymentsv1connect.NewPaymentsServiceClient(srv.Client(), srv.URL, d.ClientOptions()...)
	ctx := telemetry.WithRequestID(context.Background(), "req-1")
	keyed := connect.NewRequest(&paymentsv1.AuthorizeRequest{IdempotencyKey: "ride/r1/authorize"})

	_, err = c.Authorize(ctx, keyed)
	if !apperr.Is(err, apperr.Unavailable) || len(pay.ids) != 3 {
		t.Fatalf("%v after %d attempts; want Unavailable after 3", err, len(pay.ids))
	}
	for i, id := range pay.ids {
		if id != "req-1" {
			t.Errorf("attempt %d carried request id %q", i+1, id)
		}
		if pay.deadlines[i] > DefaultCallTimeout {
			t.Errorf("attempt %d was given %s, more than the default deadline", i+1, pay.deadlines[i])
		}
	}

	// Three failed attempts opened payments' breaker.
	_, err = c.Authorize(ctx, keyed)
	if e := apperr.As(err); e.Kind != apperr.Unavailable || e.Code != resilience.CodeCircuitOpen || len(pay.ids) != 3 {
		t.Fatalf("open breaker: %v (%s), %d attempts", err, e.Code, len(pay.ids))
	}

	// A Deps built by hand (tests) has no policies: one attempt.
	bare := paymentsv1connect.NewPaymentsServiceClient(srv.Client(), srv.URL, Deps{}.ClientOptions()...)
	if _, err := bare.Authorize(ctx, keyed); !apperr.Is(err, apperr.Unavailable) || len(pay.ids) != 4 {
		t.Fatalf("without policies: %v, %d attempts in all", err, len(pay.ids))
	}
}
