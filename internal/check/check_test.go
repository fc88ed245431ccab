package check

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/payments"
	"github.com/rideshare-platform/rideshare/internal/rides"
)

var now = time.Date(2026, 11, 3, 20, 40, 0, 0, time.UTC)

// fakeSource serves fixed facts in pages of pageSize, as a service pages
// its tables, so that the join across pages is exercised.
type fakeSource struct {
	rides    []rides.RideFacts
	payments []payments.PaymentFacts
	ledger   payments.LedgerAudit
	outboxes []Outbox
	pageSize int
	err      error
}

func (s *fakeSource) Rides(_ context.Context, after string) (RidesPage, error) {
	if s.err != nil {
		return RidesPage{}, s.err
	}
	items, next := pageOf(s.rides, after, s.pageSize, func(f rides.RideFacts) string { return f.ID })
	return RidesPage{Now: now, AuditPage: rides.AuditPage{Rides: items, Next: next}}, nil
}

func (s *fakeSource) Payments(_ context.Context, after string) (PaymentsPage, error) {
	items, next := pageOf(s.payments, after, s.pageSize, func(p payments.PaymentFacts) string { return p.RideID })
	page := PaymentsPage{Now: now, AuditPage: payments.AuditPage{Payments: items, Next: next}}
	if after == "" {
		l := s.ledger
		page.Ledger = &l
	}
	return page, nil
}

func (s *fakeSource) Outboxes(context.Context) ([]Outbox, error) { return s.outboxes, nil }

// pageOf is the page after the cursor, in key order.
func pageOf[T any](all []T, after string, size int, key func(T) string) ([]T, string) {
	sorted := slices.Clone(all)
	slices.SortFunc(sorted, func(a, b T) int { return strings.Compare(key(a), key(b)) })
	var out []T
	for _, it := range sorted {
		if key(it) > after {
			out = append(out, it)
		}
	}
	if len(out) > size {
		out = out[:size]
		return out, key(out[len(out)-1])
	}
	return out, ""
}

// cleanPlatform is a platform where every invariant holds, with a ride in
// every situation the check must accept.
func cleanPlatform() *fakeSource {
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	ride := func(id string, st rides.Status, fare, charge int64, payment string) rides.RideFacts {
		f := rides.RideFacts{ID: id, Status: st, Fare: fare, Currency: "USD", Charge: charge, PaymentID: payment,
			CreatedAt: ago(time.Hour), UpdatedAt: ago(50 * time.Minute)}
		if charge > 0 {
			f.CapturedAt = ago(50 * time.Minute)
		}
		return f
	}
	pay := func(ride, id string, st payments.Status, authorized, captured, captures int64) payments.PaymentFacts {
		return payments.PaymentFacts{RideID: ride, ID: id, Status: st, Currency: "USD", Authorized: authorized,
			Captured: captured, Captures: captures, CreatedAt: ago(time.Hour)}
	}
	searching := rides.RideFacts{ID: "r08-searching", Status: rides.StatusSearching, Fare: 900, Currency: "USD", PaymentID: "p08",
		Steps: []string{"await_driver"}, DueAt: now.Add(time.Minute), Scheduled: true, UpdatedAt: ago(10 * time.Minute)}
	settling := ride("r09-settling", rides.StatusCancelled, 700, 0, "p09")
	settling.Steps, settling.PaymentPending, settling.UpdatedAt = []string{"void"}, true, ago(time.Second)
	return &fakeSource{
		rides: []rides.RideFacts{
			ride("r01-completed", rides.StatusCompleted, 1250, 1250, "p01"),
			ride("r02-cancelled", rides.StatusCancelled, 1000, 0, "p02"),
			ride("r03-fee", rides.StatusCancelled, 1000, 500, "p03"),
			ride("r04-declined", rides.StatusPaymentDeclined, 800, 0, ""),
			ride("r05-nodriver", rides.StatusNoDriver, 600, 0, "p05"),
			ride("r06-early-cancel", rides.StatusCancelled, 0, 0, ""),
			{ID: "r07-trip", Status: rides.StatusInProgress, Fare: 1100, Currency: "USD", PaymentID: "p07", UpdatedAt: ago(time.Minute)},
			searching,
			settling,
		},
		payments: []payments.PaymentFacts{
			pay("r01-completed", "p01", payments.Captured, 1250, 1250, 1),
			pay("r02-cancelled", "p02", payments.Voided, 1000, 0, 0),
			pay("r03-fee", "p03", payments.Captured, 1000, 500, 1),
			pay("r04-declined", "p04", payments.Declined, 800, 0, 0),
			pay("r05-nodriver", "p05", payments.Voided, 600, 0, 0),
			pay("r07-trip", "p07", payments.Authorized, 1100, 0, 0),
			pay("r08-searching", "p08", payments.Authorized, 900, 0, 0),
			pay("r09-settling", "p09", payments.Authorized, 700, 0, 0),
			// A ride requested after rides was read: not yet on its pages.
			{RideID: "r99-new", ID: "p99", Status: payments.Authorized, Currency: "USD", Authorized: 300, CreatedAt: now},
		},
		ledger:   payments.LedgerAudit{Transactions: 12, Entries: 30, Debits: 9000, Credits: 9000, Balanced: true},
		outboxes: []Outbox{{Service: "rides", Unsent: 2, OldestAge: time.Second}, {Service: "payments"}},
		pageSize: 2,
	}
}

func TestCleanPlatformIsOK(t *testing.T) {
	rep, err := Run(context.Background(), cleanPlatform(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("violations on a clean platform: %v", rep.Violations)
	}
	want := PaymentCounts{CapturedOnce: 1, FeesCaptured: 1, Voided: 2, Declined: 1, NeverHeld: 1, Settling: 1}
	if rep.Payments != want {
		t.Errorf("payments %+v, want %+v", rep.Payments, want)
	}
	if rep.Payments.Released() != 4 {
		t.Errorf("released %d, want 4", rep.Payments.Released())
	}
	r := rep.Rides
	if r.Total != 9 || r.InFlight != 2 || r.Owing != 1 || r.Stuck != 0 || r.ByStatus[rides.StatusCancelled] != 4 {
		t.Errorf("rides %+v", r)
	}
	if !rep.Ledger.Balanced || rep.Ledger.Entries != 30 {
		t.Errorf("ledger %+v", rep.Ledger)
	}
	if len(rep.Outboxes) != 2 || rep.Outboxes[0].Service != "payments" {
		t.Errorf("outboxes %+v, want both, sorted", rep.Outboxes)
	}
}

// TestEachInvariant breaks one thing at a time in a clean platform and
// expects exactly that to be reported.
func TestEachInvariant(t *testing.T) {
	long := func(f *rides.RideFacts) { f.UpdatedAt = now.Add(-10 * time.Minute) }
	for _, tc := range []struct {
		name  string
		opts  Options
		spoil func(s *fakeSource)
		want  Invariant
		says  []string
	}{
		{"a trip nobody finishes", Options{}, func(s *fakeSource) { long(ride(s, "r07-trip")) },
			Sagas, []string{"r07-trip", "in_progress for 10m0s", "waits for the driver"}},
		{"a step that keeps failing", Options{}, func(s *fakeSource) {
			f := ride(s, "r07-trip")
			f.Status, f.Steps, f.Tries, f.LastError, f.DueAt = rides.StatusRequested, []string{"authorize"}, 7, "payments: unavailable", now.Add(time.Second)
			long(f)
		}, Sagas, []string{"r07-trip", "next step is authorize", "failed 7 times", "payments: unavailable"}},
		{"a step never run", Options{}, func(s *fakeSource) {
			f := ride(s, "r07-trip")
			f.Status, f.Steps, f.DueAt = rides.StatusRequested, []string{"quote"}, now.Add(-9*time.Minute)
			long(f)
		}, Sagas, []string{"next step is quote", "due 9m0s ago and never run"}},
		{"a compensation owed for long", Options{}, func(s *fakeSource) { long(ride(s, "r09-settling")) },
			Sagas, []string{"r09-settling", "ended cancelled 10m0s ago", "still owes void"}},
		{"a shorter threshold", Options{StuckAfter: 30 * time.Second}, func(*fakeSource) {},
			Sagas, []string{"r07-trip", "in_progress for 1m0s"}},
		{"completed, never captured", Options{}, func(s *fakeSource) {
			p := payment(s, "r01-completed")
			p.Status, p.Captured, p.Captures = payments.Voided, 0, 0
		}, Captures, []string{"r01-completed", "owing its fare of 1250 USD", "never captured (it is voided)"}},
		{"completed, captured twice", Options{}, func(s *fakeSource) { payment(s, "r01-completed").Captures = 2 },
			Captures, []string{"r01-completed was captured 2 times"}},
		{"completed, its payment voided after the capture", Options{}, func(s *fakeSource) { payment(s, "r01-completed").Status = payments.Voided },
			Captures, []string{"r01-completed was captured, but its payment p01 says it is voided"}},
		{"completed, captured the wrong amount", Options{}, func(s *fakeSource) { payment(s, "r01-completed").Captured = 1000 },
			Captures, []string{"captured 1000 USD, but its fare is 1250 USD"}},
		{"completed, no payment", Options{}, func(s *fakeSource) { dropPayment(s, "r01-completed") },
			Captures, []string{"r01-completed", "payments has no payment for it"}},
		{"completed, capture not recorded", Options{}, func(s *fakeSource) { ride(s, "r01-completed").CapturedAt = time.Time{} },
			Captures, []string{"finished without recording it"}},
		{"a late cancellation charged the fare", Options{}, func(s *fakeSource) { payment(s, "r03-fee").Captured = 1000 },
			Captures, []string{"r03-fee", "its cancellation fee is 500 USD"}},
		{"captured before the trip ended", Options{}, func(s *fakeSource) {
			p := payment(s, "r07-trip")
			p.Status, p.Captured, p.Captures = payments.Captured, 1100, 1
		}, Captures, []string{"r07-trip is still in_progress", "already captured"}},
		{"a hold left open", Options{}, func(s *fakeSource) { payment(s, "r02-cancelled").Status = payments.Authorized },
			Holds, []string{"r02-cancelled ended cancelled", "still authorized for 1000 USD"}},
		{"a void that never finished", Options{}, func(s *fakeSource) { payment(s, "r05-nodriver").Pending = "void" },
			Holds, []string{"r05-nodriver", "a void of its payment p05 never finished"}},
		{"a free cancellation charged", Options{}, func(s *fakeSource) {
			p := payment(s, "r02-cancelled")
			p.Status, p.Captured, p.Captures = payments.Captured, 1000, 1
		}, Holds, []string{"owing nothing", "captured 1000 USD"}},
		{"a hold payments lost", Options{}, func(s *fakeSource) { dropPayment(s, "r05-nodriver") },
			Holds, []string{"r05-nodriver", "holding payment p05, which payments does not have"}},
		{"a hold for a ride rides never had", Options{}, func(s *fakeSource) {
			s.payments = append(s.payments, payments.PaymentFacts{RideID: "r00-ghost", ID: "p00", Status: payments.Authorized,
				Currency: "USD", Authorized: 400, CreatedAt: now.Add(-time.Hour)})
		}, Holds, []string{"p00 holds 400 USD for ride r00-ghost, which rides does not know"}},
		{"the ledger does not balance", Options{}, func(s *fakeSource) {
			s.ledger.Credits, s.ledger.Balanced = 8990, false
			s.ledger.Unbalanced, s.ledger.UnbalancedCount = []string{"t7"}, 1
		}, Ledger, []string{"debits 9000, credits 8990", "1 transactions are unbalanced (t7)"}},
		{"a payment disagrees with the ledger", Options{}, func(s *fakeSource) {
			s.ledger.Violations, s.ledger.ViolationCount = []string{"payment p01: captured 1250, ledger says 0"}, 1
		}, Ledger, []string{"payment p01: captured 1250, ledger says 0"}},
		{"an outbox that does not drain", Options{}, func(s *fakeSource) { s.outboxes[0].OldestAge = time.Minute },
			Outboxes, []string{"rides: 2 events wait in the outbox, the oldest for 1m0s"}},
		{"not at rest", Options{Settled: true}, func(*fakeSource) {},
			AtRest, []string{"r07-trip is still in_progress", "r09-settling ended cancelled but its saga still owes void", "rides: 2 events still wait"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := cleanPlatform()
			tc.spoil(src)
			rep, err := Run(context.Background(), src, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() {
				t.Fatal("reported OK")
			}
			var all []string
			for _, v := range rep.Violations {
				if v.Invariant != tc.want {
					t.Errorf("unexpected %s violation: %s", v.Invariant, v)
				}
				all = append(all, v.Message)
			}
			text := strings.Join(all, "\n")
			for _, s := range tc.says {
				if !strings.Contains(text, s) {
					t.Errorf("no violation says %q:\n%s", s, text)
				}
			}
		})
	}
}

// TestViolationsInOrder: a report lists violations in the invariants'
// order, whatever order they were found in (the ledger is read first).
func TestViolationsInOrder(t *testing.T) {
	src := cleanPlatform()
	ride(src, "r07-trip").UpdatedAt = now.Add(-time.Hour)
	src.ledger.Violations, src.ledger.ViolationCount = []string{"payment p01: captured 1250, ledger says 0"}, 1
	rep, err := Run(context.Background(), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rides.Stuck != 1 || len(rep.Violations) != 2 || rep.Violations[0].Subject != "r07-trip" ||
		rep.Violations[1].Invariant != Ledger || rep.Violations[1].Subject != "p01" {
		t.Fatalf("stuck %d, violations %+v", rep.Rides.Stuck, rep.Violations)
	}
}

func TestSourceErrorIsNotAVerdict(t *testing.T) {
	src := cleanPlatform()
	src.err = errors.New("rides at http://127.0.0.1:1 does not answer")
	if _, err := Run(context.Background(), src, Options{}); err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Fatalf("err %v", err)
	}
}

func ride(s *fakeSource, id string) *rides.RideFacts {
	for i := range s.rides {
		if s.rides[i].ID == id {
			return &s.rides[i]
		}
	}
	panic("no ride " + id)
}

func payment(s *fakeSource, rideID string) *payments.PaymentFacts {
	for i := range s.payments {
		if s.payments[i].RideID == rideID {
			return &s.payments[i]
		}
	}
	panic("no payment for " + rideID)
}

func dropPayment(s *fakeSource, rideID string) {
	s.payments = slices.DeleteFunc(s.payments, func(p payments.PaymentFacts) bool { return p.RideID == rideID })
}
