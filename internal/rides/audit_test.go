package rides

import (
	"testing"
	"time"
)

// TestAuditRides: the per-ride facts page in id order and say what the
// saga owes: a searching ride waits for its watchdog by plan, a completed
// ride whose capture fails owes its payment a step, and once captured it
// shows the charge and when.
func TestAuditRides(t *testing.T) {
	h := newHarness(t)
	searching := h.searching("alice")
	trip := h.assigned("bob", "dave")
	h.payments.fail["capture"] = unavailable(1)
	h.trip(trip, "dave")
	h.drive()
	cancelled := h.searching("carol")
	if _, err := h.cancel(cancelled, rider("carol")); err != nil {
		t.Fatal(err)
	}

	all := map[string]RideFacts{}
	after, pages := "", 0
	for {
		page, err := AuditRides(h.ctx, h.db, after, 2, h.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, f := range page.Rides {
			if f.ID <= after {
				t.Fatalf("ride %s on the page after %s", f.ID, after)
			}
			after = f.ID
			all[f.ID] = f
		}
		if page.Next == "" {
			break
		}
		if page.Next != after {
			t.Fatalf("next %q, want the last ride on the page %q", page.Next, after)
		}
	}
	if len(all) != 3 || pages != 2 {
		t.Fatalf("%d rides in %d pages, want 3 in 2", len(all), pages)
	}

	if f := all[searching]; f.Status != StatusSearching || !f.Scheduled || f.PaymentPending || f.PaymentID == "" ||
		f.Steps[0] != string(stepAwaitDriver) || f.Fare != 1850 || f.Currency != "USD" {
		t.Fatalf("searching ride: %+v", f)
	}
	f := all[trip]
	if f.Status != StatusCompleted || !f.PaymentPending || f.Scheduled || f.Charge != 1850 || !f.CapturedAt.IsZero() ||
		f.Steps[0] != string(stepCapture) || f.LastError == "" || f.Tries != 1 {
		t.Fatalf("completed ride whose capture failed: %+v", f)
	}
	if f := all[cancelled]; f.Status != StatusCancelled || !f.PaymentPending || f.Charge != 0 {
		t.Fatalf("cancelled ride with its void owed: %+v", f)
	}

	h.clock.Advance(backoffCap)
	h.drive()
	page, err := AuditRides(h.ctx, h.db, "", 10, h.clock.Now())
	if err != nil || len(page.Rides) != 3 || page.Next != "" {
		t.Fatalf("one page of 10: %v %+v", err, page)
	}
	for _, f := range page.Rides {
		switch f.ID {
		case trip:
			if f.PaymentPending || len(f.Steps) != 0 || f.CapturedAt.IsZero() || f.Charge != 1850 {
				t.Fatalf("captured ride: %+v", f)
			}
		case cancelled:
			if f.PaymentPending || len(f.Steps) != 0 {
				t.Fatalf("cancelled ride after its void: %+v", f)
			}
		}
	}

	// Past its deadline and slack, the watchdog is due: no longer a plan
	// being waited for.
	h.clock.Advance(defaultPolicy.searchTimeout + searchSlack + time.Second)
	page, _ = AuditRides(h.ctx, h.db, "", 10, h.clock.Now())
	for _, f := range page.Rides {
		if f.ID == searching && f.Scheduled {
			t.Fatalf("a watchdog past due still counts as scheduled: %+v", f)
		}
	}
}
