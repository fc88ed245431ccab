package rides

import (
	"context"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"

	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestStoreContract runs the rides store's SQL on every engine (SQLite
// always, PostgreSQL when configured): the same text must behave the same.
func TestStoreContract(t *testing.T) {
	for _, e := range testenv.Engines() {
		t.Run(e.Name, func(t *testing.T) {
			ctx := context.Background()
			db := testenv.Migrate(t, e.Open(t), Service.Migrations)
			h := build(t, db, newFakeClock(), newFakePricing(), newFakePayments(), newFakeDispatch())

			// Idempotency keys.
			req := &ridesv1.RequestRideRequest{Caller: rider("alice"), IdempotencyKey: "k", Pickup: pickup, Dropoff: dropoff, QuoteId: "q1"}
			first := h.requestWith(req)
			if again := h.requestWith(req); again.GetId() != first.GetId() {
				t.Fatalf("replay gave ride %s, want %s", again.GetId(), first.GetId())
			}
			req.PaymentMethod = "pm_other"
			if _, err := h.srv.RequestRide(ctx, connect.NewRequest(req)); apperr.CodeOf(err) != "idempotency_key_reused" {
				t.Fatalf("reused key: %v", err)
			}

			// The stored ride reads back exactly.
			r := h.ride(first.GetId())
			if r.pickup.Lat != pickup.Lat || r.pickup.Lng != pickup.Lng || r.dropoff.Lat != dropoff.Lat || r.quoteID != "q1" ||
				!r.createdAt.Equal(h.clock.Now()) || r.plan.head() != stepQuote {
				t.Fatalf("read back %+v", r)
			}

			// A claim is exclusive until its lease ends.
			now := h.clock.Now()
			claimed, err := h.store.claim(ctx, now, 10, time.Minute)
			if err != nil || len(claimed) != 1 || claimed[0].plan.tries != 1 {
				t.Fatalf("claim: %v, %d rides", err, len(claimed))
			}
			if again, err := h.store.claim(ctx, now, 10, time.Minute); err != nil || len(again) != 0 {
				t.Fatalf("second claim while leased: %v, %d rides", err, len(again))
			}
			if due, ok, err := h.store.nextDue(ctx); err != nil || !ok || !due.Equal(now.Add(time.Minute)) {
				t.Fatalf("next due %s %v %v, want the lease's end", due, ok, err)
			}
			h.saga.execute(ctx, claimed[0])
			if r := h.ride(first.GetId()); r.plan.head() != stepAuthorize || r.fare != (Money{Amount: 1850, Currency: "USD"}) {
				t.Fatalf("after the quote: plan %v fare %+v", r.plan.steps, r.fare)
			}

			// A writer holding an old version loses, and update retries it.
			stale := h.ride(first.GetId())
			if _, err := h.store.update(ctx, first.GetId(), func(r *Ride) error { r.touch(h.clock.Now()); return nil }); err != nil {
				t.Fatal(err)
			}
			err = db.InTx(ctx, func(tx *sqldb.Tx) error { stale.touch(h.clock.Now()); return h.store.save(ctx, tx, stale) })
			if !errors.Is(err, errStale) {
				t.Fatalf("saving a stale ride: %v, want errStale", err)
			}

			// The whole saga, through the store.
			h.drive()
			if _, err := h.accept(first.GetId(), "dave"); err != nil {
				t.Fatal(err)
			}
			h.trip(first.GetId(), "dave")
			h.drive()
			if r := h.wantStatus(first.GetId(), StatusCompleted); len(r.plan.steps) != 0 || r.charge.capturedAt.IsZero() {
				t.Fatalf("plan %v captured %s", r.plan.steps, r.charge.capturedAt)
			}
			if _, ok, err := h.store.nextDue(ctx); err != nil || ok {
				t.Fatalf("next due with nothing owed: %v %v", ok, err)
			}

			// Pages, newest first, by rider, driver and for everyone.
			for range 4 {
				h.clock.Advance(time.Second)
				h.request("alice")
			}
			h.request("bob")
			page, err := h.store.list(ctx, listFilter{riderID: "alice"}, nil, 3)
			if err != nil || len(page) != 3 || !page[0].createdAt.After(page[2].createdAt) {
				t.Fatalf("first page: %v, %d rides", err, len(page))
			}
			last := page[2]
			rest, err := h.store.list(ctx, listFilter{riderID: "alice"}, &cursor{createdAt: sqldb.Micros(last.createdAt), id: last.id}, 10)
			if err != nil || len(rest) != 2 || rest[1].id != first.GetId() {
				t.Fatalf("second page: %v, %d rides", err, len(rest))
			}
			if mine, _ := h.store.list(ctx, listFilter{driverID: "dave"}, nil, 10); len(mine) != 1 {
				t.Fatalf("dave's rides: %d", len(mine))
			}
			if all, _ := h.store.list(ctx, listFilter{}, nil, 100); len(all) != 6 {
				t.Fatalf("all rides: %d", len(all))
			}

			rep, err := Audit(ctx, db)
			if err != nil || rep.Total != 6 || rep.ByStatus[StatusCompleted] != 1 || rep.ByStatus[StatusRequested] != 5 ||
				rep.NotTerminal != 5 || rep.CompensationsPending != 0 {
				t.Fatalf("audit %+v %v", rep, err)
			}
			h.clock.Advance(25 * time.Hour)
			if n, err := pruneKeys(ctx, db, h.clock.Now()); err != nil || n != 6 {
				t.Fatalf("pruned %d keys: %v", n, err)
			}
		})
	}
}
