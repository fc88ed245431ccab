package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/broker"
	. "github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestUnsent: the backlog says how many events wait and since when, and is
// empty once the relay sent them.
func TestUnsent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	db := testenv.DB(t, nil)
	ob := New(db, "identity", Options{})
	if u, err := ob.Unsent(ctx); err != nil || u.Count != 0 || !u.Oldest.IsZero() {
		t.Fatalf("empty outbox: %+v %v", u, err)
	}
	before := time.Now().Add(-time.Millisecond)
	appendAccounts(t, ctx, db, ob, 3)
	u, err := ob.Unsent(ctx)
	if err != nil || u.Count != 3 || u.Oldest.Before(before) || u.Oldest.After(time.Now()) {
		t.Fatalf("three appended: %+v %v (appended after %s)", u, err, before)
	}

	_, js := testenv.Connect(t, testenv.Broker(t))
	if _, err := js.CreateOrUpdateStream(ctx, broker.StreamConfig("identity", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := ob.RelayOnce(ctx, js); err != nil {
		t.Fatal(err)
	}
	if u, err := ob.Unsent(ctx); err != nil || u.Count != 0 || !u.Oldest.IsZero() {
		t.Fatalf("after the relay: %+v %v", u, err)
	}
}
