package payments

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

func TestCardNetworkIsIdempotentByKey(t *testing.T) {
	ctx := context.Background()
	db := testenv.DB(t, Service.Migrations)
	n := NewCardNetwork(db, 0, 0.5)
	hold := Hold{RiderID: "r", Currency: "USD", Amount: 1000}
	// With random declines, each key still has exactly one answer, even for
	// a fresh network value on the same database (a restarted process).
	first := map[string]Authorization{}
	for i := range 40 {
		key := fmt.Sprintf("k%d", i)
		a, err := n.Authorize(ctx, key, hold)
		if err != nil {
			t.Fatal(err)
		}
		first[key] = a
	}
	restarted := NewCardNetwork(db, 0, 0.5)
	approved := 0
	for key, want := range first {
		got, err := restarted.Authorize(ctx, key, hold)
		if err != nil || got != want {
			t.Fatalf("key %s answered %+v then %+v (%v)", key, want, got, err)
		}
		if got.Approved {
			approved++
		}
	}
	if approved == 0 || approved == len(first) {
		t.Errorf("decline_rate 0.5 gave %d approvals of %d", approved, len(first))
	}
	if _, err := n.Authorize(ctx, "k0", Hold{RiderID: "r", Currency: "USD", Amount: 999}); apperr.CodeOf(err) != "network_refused" {
		t.Errorf("same key, other hold: %v", err)
	}
}

func TestCardNetworkSettlesAHoldOnce(t *testing.T) {
	ctx := context.Background()
	n := NewCardNetwork(testenv.DB(t, Service.Migrations), 0, 0)
	a, err := n.Authorize(ctx, "auth", Hold{RiderID: "r", Currency: "USD", Amount: 1000})
	if err != nil || !a.Approved {
		t.Fatalf("%+v %v", a, err)
	}
	refusedCode := func(what string, err error) {
		t.Helper()
		if apperr.CodeOf(err) != "network_refused" {
			t.Errorf("%s: %v, want a refusal", what, err)
		}
	}
	_, err = n.Capture(ctx, "cap-big", a.Ref, 1001)
	refusedCode("capture above the hold", err)
	_, err = n.Refund(ctx, "ref-early", a.Ref, 1)
	refusedCode("refund before capture", err)
	c1, err := n.Capture(ctx, "cap", a.Ref, 700)
	if err != nil {
		t.Fatal(err)
	}
	if c2, err := n.Capture(ctx, "cap", a.Ref, 700); err != nil || c2 != c1 {
		t.Fatalf("capture retry: %q %v, want %q", c2, err, c1)
	}
	_, err = n.Capture(ctx, "cap-2", a.Ref, 100)
	refusedCode("second capture", err)
	_, err = n.Void(ctx, "void", a.Ref)
	refusedCode("void after capture", err)
	if _, err := n.Refund(ctx, "ref-1", a.Ref, 500); err != nil {
		t.Fatal(err)
	}
	_, err = n.Refund(ctx, "ref-2", a.Ref, 201)
	refusedCode("refund beyond the capture", err)
	if _, err := n.Refund(ctx, "ref-2b", a.Ref, 200); err != nil {
		t.Fatal(err)
	}

	d, _ := n.Authorize(ctx, "declined", Hold{PaymentMethod: "card_declined", Currency: "USD", Amount: 10})
	_, err = n.Capture(ctx, "cap-d", d.Ref, 10)
	refusedCode("capture of a declined hold", err)
}

func TestCardNetworkLatencyGivesWayToTheDeadline(t *testing.T) {
	n := NewCardNetwork(testenv.DB(t, Service.Migrations), time.Hour, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := n.Authorize(ctx, "k", Hold{Currency: "USD", Amount: 1}); !apperr.Is(err, apperr.Timeout) {
		t.Fatalf("got %v, want the caller's deadline", err)
	}
}
