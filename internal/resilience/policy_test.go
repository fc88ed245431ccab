package resilience

import (
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	pricingv1 "github.com/rideshare-platform/rideshare/api/pricing/v1"
	"github.com/rideshare-platform/rideshare/api/pricing/v1/pricingv1connect"
)

func TestPolicyTable(t *testing.T) {
	ps, err := ParsePolicies(map[string]string{
		"resilience.default.bulkhead":   "32",
		"resilience.default.timeout":    "2s",
		"resilience.payments.timeout":   "7s",
		"resilience.users.max_attempts": "1",
		"payments.decline_rate":         "0.5", // another package's setting: not ours
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		peer     string
		timeout  time.Duration
		bulkhead uint
		attempts int
	}{
		{"payments", 7 * time.Second, 32, 3}, // its own setting beats all; default setting beats the built-in 24
		{"pricing", 2 * time.Second, 32, 3},  // the default setting beats the built-in override
		{"users", 2 * time.Second, 32, 1},
		{"dispatch", 2 * time.Second, 32, 3},
	} {
		p, err := ps.For(c.peer)
		if err != nil || p.Timeout != c.timeout || p.Bulkhead.MaxConcurrent != c.bulkhead || p.Retry.MaxAttempts != c.attempts {
			t.Errorf("%s: %+v %v; want timeout %s, bulkhead %d, %d attempts", c.peer, p, err, c.timeout, c.bulkhead, c.attempts)
		}
	}

	// Without settings, the built-in overrides apply.
	ps, err = ParsePolicies(nil)
	if err != nil {
		t.Fatal(err)
	}
	pay, _ := ps.For("payments")
	pricing, _ := ps.For("pricing")
	other, _ := ps.For("dispatch")
	if other != Defaults || pay.Timeout <= Defaults.Timeout || pay.Bulkhead.MaxConcurrent >= Defaults.Bulkhead.MaxConcurrent || pricing.Timeout >= Defaults.Timeout {
		t.Fatalf("built-in overrides: payments %+v, pricing %+v, dispatch %+v", pay, pricing, other)
	}
}

func TestPolicySettingsRejected(t *testing.T) {
	for _, bad := range []map[string]string{
		{"resilience.payments.timout": "1s"},     // typo
		{"resilience.payments": "1s"},            // no key
		{"resilience.payments.timeout": "soon"},  // not a duration
		{"resilience.payments.timeout": "0s"},    // not positive
		{"resilience.default.max_attempts": "0"}, // no attempt at all
		{"resilience.users.breaker_failure_rate": "2"},
		{"resilience.users.retry_budget": "-0.1"},
		{"resilience.users.bulkhead": "0"},
		{"resilience.users.backoff": "1s", "resilience.users.max_backoff": "100ms"},
	} {
		if _, err := ParsePolicies(bad); err == nil {
			t.Errorf("%v accepted", bad)
		} else if !strings.Contains(err.Error(), "resilience") {
			t.Errorf("%v: %v does not name the setting", bad, err)
		}
		if _, err := New(Options{Settings: bad}); err == nil {
			t.Errorf("New accepted %v", bad)
		}
	}
}

func TestPeerOf(t *testing.T) {
	for proc, want := range map[string]string{
		paymentsv1connect.PaymentsServiceAuthorizeProcedure: "payments",
		pricingv1connect.PricingServiceGetSurgeProcedure:    "pricing",
		"/grpc.health.v1.Health/Check":                      "grpc.health.v1.Health",
	} {
		if got := PeerOf(proc); got != want {
			t.Errorf("PeerOf(%q) = %q, want %q", proc, got, want)
		}
	}
}

// TestIdempotent reads the procedure's declared idempotency level and the
// request's idempotency_key through protobuf reflection.
func TestIdempotent(t *testing.T) {
	for _, c := range []struct {
		name string
		req  connect.AnyRequest
		want bool
	}{
		{"write without key", request(&paymentsv1.AuthorizeRequest{RideId: "r"}, connect.IdempotencyUnknown), false},
		{"write with key", request(&paymentsv1.AuthorizeRequest{IdempotencyKey: "k"}, connect.IdempotencyUnknown), true},
		{"read", request(&paymentsv1.GetPaymentRequest{}, connect.IdempotencyNoSideEffects), true},
		{"idempotent by declaration", request(&pricingv1.GetSurgeRequest{}, connect.IdempotencyIdempotent), true},
		{"no key field", request(&pricingv1.GetSurgeRequest{}, connect.IdempotencyUnknown), false},
	} {
		if got := Idempotent(c.req); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// specRequest is a client request with the spec a generated client would
// give it.
type specRequest struct {
	connect.AnyRequest
	spec connect.Spec
}

func (r specRequest) Spec() connect.Spec { return r.spec }

// request builds one.
func request[T any](msg *T, level connect.IdempotencyLevel) connect.AnyRequest {
	return specRequest{connect.NewRequest(msg), connect.Spec{IsClient: true, IdempotencyLevel: level}}
}
