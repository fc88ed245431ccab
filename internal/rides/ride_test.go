package rides

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/geo"
)

var (
	t0   = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	fare = Money{Amount: 1850, Currency: "USD"}
)

// rideIn builds a ride in status s the only way there is: through the
// domain methods, from a new ride.
func rideIn(t *testing.T, s Status) *Ride {
	t.Helper()
	r := newRide("ride-1", "rider-1", geo.Point{Lat: 37.77, Lng: -122.42}, geo.Point{Lat: 37.80, Lng: -122.41}, "", "", t0)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("building a %s ride: %v", s, err)
		}
	}
	quote := func() { must(r.quoted(fare, t0)) }
	search := func() {
		quote()
		must(r.authorized("pay-1", t0.Add(time.Minute), t0))
		r.searchStarted(t0)
	}
	assign := func() { search(); must(r.assign("d1", 1, t0)) }
	switch s {
	case StatusRequested:
		quote()
	case StatusSearching:
		search()
	case StatusDriverAssigned:
		assign()
	case StatusDriverArrived:
		assign()
		must(r.arrive("d1", t0))
	case StatusInProgress:
		assign()
		must(r.arrive("d1", t0))
		must(r.start("d1", t0))
	case StatusCompleted:
		assign()
		must(r.arrive("d1", t0))
		must(r.start("d1", t0))
		must(r.complete("d1", t0))
	case StatusCancelled:
		search()
		must(r.cancelByRider(defaultPolicy, "rider cancelled", t0))
	case StatusPaymentDeclined:
		quote()
		must(r.declined("insufficient_funds", t0))
	case StatusNoDriver:
		search()
		must(r.searchFailed(1, "deadline", t0))
	}
	if r.status != s {
		t.Fatalf("built a %s ride, want %s", r.status, s)
	}
	r.changes = nil
	return r
}

func snapshot(r *Ride) string { return fmt.Sprintf("%#v", *r) }

// TestTransitions covers every (status, event) pair: a legal event moves the
// ride and records exactly that change; a repeat or stale news ("=") is
// accepted and changes no status; anything else is refused with
// illegal_transition and leaves the ride exactly as it was.
func TestTransitions(t *testing.T) {
	t1 := t0.Add(10 * time.Second)
	events := []struct {
		name  string
		apply func(r *Ride) error
	}{
		{"quote", func(r *Ride) error { return r.quoted(fare, t1) }},
		{"authorize", func(r *Ride) error { return r.authorized("pay-1", t1.Add(time.Minute), t1) }},
		{"decline", func(r *Ride) error { return r.declined("insufficient_funds", t1) }},
		{"assign", func(r *Ride) error { return r.assign("d1", r.attempt, t1) }},
		{"arrive", func(r *Ride) error { return r.arrive("d1", t1) }},
		{"start", func(r *Ride) error { return r.start("d1", t1) }},
		{"complete", func(r *Ride) error { return r.complete("d1", t1) }},
		{"search_failed", func(r *Ride) error { return r.searchFailed(r.attempt, "deadline", t1) }},
		{"search_timeout", func(r *Ride) error { return r.searchTimedOut(t1) }},
		{"rider_cancel", func(r *Ride) error { return r.cancelByRider(defaultPolicy, "rider cancelled", t1) }},
		{"driver_cancel", func(r *Ride) error { return r.cancelByDriver("d1", "gave up", t1.Add(time.Minute), t1) }},
		{"hold_timeout", func(r *Ride) error { return r.holdTimedOut(defaultPolicy, t1) }},
	}
	// One row per status, one column per event above: the status the event
	// leads to, "=" for accepted without a status change, "x" for refused.
	table := map[Status]string{
		StatusRequested:       "x  searching  payment_declined  x  x  x  x  x  x  cancelled  x  cancelled",
		StatusSearching:       "x  x  x  driver_assigned  x  x  x  no_driver  no_driver  cancelled  x  x",
		StatusDriverAssigned:  "x  x  x  =  driver_arrived  x  x  =  x  cancelled  searching  x",
		StatusDriverArrived:   "x  x  x  =  =  in_progress  x  =  x  cancelled  searching  x",
		StatusInProgress:      "x  x  x  =  x  =  completed  =  x  x  x  x",
		StatusCompleted:       "x  x  x  =  x  x  =  =  x  x  x  x",
		StatusCancelled:       "x  x  x  =  x  x  x  =  x  =  =  x",
		StatusPaymentDeclined: "x  x  x  x  x  x  x  x  x  x  x  x",
		StatusNoDriver:        "x  x  x  =  x  x  x  =  x  x  x  x",
	}
	if len(table) != len(Statuses) {
		t.Fatalf("the table covers %d statuses, want all %d", len(table), len(Statuses))
	}
	for _, from := range Statuses {
		want := strings.Fields(table[from])
		if len(want) != len(events) {
			t.Fatalf("%s: %d columns, want %d", from, len(want), len(events))
		}
		for i, ev := range events {
			t.Run(string(from)+"/"+ev.name, func(t *testing.T) {
				r := rideIn(t, from)
				before := snapshot(r)
				err := ev.apply(r)
				switch want[i] {
				case "x":
					if apperr.KindOf(err) != apperr.Conflict || apperr.CodeOf(err) != "illegal_transition" {
						t.Fatalf("got %v, want Conflict illegal_transition", err)
					}
					if after := snapshot(r); after != before {
						t.Fatalf("a refused event changed the ride:\nbefore %s\nafter  %s", before, after)
					}
				case "=":
					if err != nil {
						t.Fatalf("got %v, want it accepted", err)
					}
					if r.status != from || len(r.changes) != 0 {
						t.Fatalf("status %s with %d changes, want %s unchanged", r.status, len(r.changes), from)
					}
				default:
					to := Status(want[i])
					if err != nil {
						t.Fatalf("got %v, want a move to %s", err, to)
					}
					if r.status != to || len(r.changes) != 1 || r.changes[0].from != from || r.changes[0].to != to {
						t.Fatalf("status %s, changes %+v; want one change %s -> %s", r.status, r.changes, from, to)
					}
					if !r.updatedAt.Equal(t1) {
						t.Fatalf("updated_at %s, want %s", r.updatedAt, t1)
					}
				}
			})
		}
	}
}

// TestTripStepsOnlyForTheAssignedDriver: another driver is told the ride
// does not exist, whatever its status.
func TestTripStepsOnlyForTheAssignedDriver(t *testing.T) {
	for _, c := range []struct {
		from Status
		step func(*Ride) error
	}{
		{StatusDriverAssigned, func(r *Ride) error { return r.arrive("d2", t0) }},
		{StatusDriverArrived, func(r *Ride) error { return r.arrive("d2", t0) }},
		{StatusDriverArrived, func(r *Ride) error { return r.start("d2", t0) }},
		{StatusInProgress, func(r *Ride) error { return r.complete("d2", t0) }},
		{StatusDriverAssigned, func(r *Ride) error { return r.cancelByDriver("d2", "", t0, t0) }},
	} {
		r := rideIn(t, c.from)
		before := snapshot(r)
		if err := c.step(r); !apperr.Is(err, apperr.NotFound) {
			t.Errorf("%s: another driver got %v, want NotFound", c.from, err)
		}
		if snapshot(r) != before {
			t.Errorf("%s: the refused step changed the ride", c.from)
		}
	}
}

// TestSagaPlans checks which steps each transition leaves the saga owing.
func TestSagaPlans(t *testing.T) {
	cases := []struct {
		name string
		ride func(t *testing.T) *Ride
		want []step
	}{
		{"new", func(t *testing.T) *Ride { return newRide("r", "u", geo.Point{}, geo.Point{}, "", "", t0) }, []step{stepQuote}},
		{"quoted", func(t *testing.T) *Ride { return rideIn(t, StatusRequested) }, []step{stepAuthorize}},
		{"searching", func(t *testing.T) *Ride { return rideIn(t, StatusSearching) }, []step{stepAwaitDriver}},
		{"assigned", func(t *testing.T) *Ride { return rideIn(t, StatusDriverAssigned) }, nil},
		{"completed", func(t *testing.T) *Ride { return rideIn(t, StatusCompleted) }, []step{stepCapture, stepRelease}},
		{"declined", func(t *testing.T) *Ride { return rideIn(t, StatusPaymentDeclined) }, nil},
		{"no driver", func(t *testing.T) *Ride { return rideIn(t, StatusNoDriver) }, []step{stepVoid}},
		{"cancelled while searching", func(t *testing.T) *Ride { return rideIn(t, StatusCancelled) }, []step{stepCancelSearch, stepVoid}},
		{"search timed out", func(t *testing.T) *Ride {
			r := rideIn(t, StatusSearching)
			if err := r.searchTimedOut(t0.Add(2 * time.Minute)); err != nil {
				t.Fatal(err)
			}
			return r
		}, []step{stepCancelSearch, stepVoid}},
		{"driver gave up", func(t *testing.T) *Ride {
			r := rideIn(t, StatusDriverArrived)
			if err := r.cancelByDriver("d1", "flat tyre", t0.Add(time.Minute), t0); err != nil {
				t.Fatal(err)
			}
			return r
		}, []step{stepRelease, stepSearch}},
		{"rider cancels after the driver gave up", func(t *testing.T) *Ride {
			r := rideIn(t, StatusDriverAssigned)
			if err := r.cancelByDriver("d1", "", t0.Add(time.Minute), t0); err != nil {
				t.Fatal(err)
			}
			if err := r.cancelByRider(defaultPolicy, "", t0); err != nil {
				t.Fatal(err)
			}
			return r
		}, []step{stepRelease, stepCancelSearch, stepVoid}},
		{"assigned after the ride was cancelled", func(t *testing.T) *Ride {
			r := rideIn(t, StatusCancelled)
			for range 2 { // a redelivery queues nothing more
				if err := r.assign("d7", 1, t0); err != nil {
					t.Fatal(err)
				}
			}
			return r
		}, []step{stepCancelSearch, stepVoid, stepRelease}},
	}
	for _, c := range cases {
		r := c.ride(t)
		if !slices.Equal(r.plan.steps, c.want) {
			t.Errorf("%s: plan %v, want %v", c.name, r.plan.steps, c.want)
		}
	}
}

// TestDriverGivesUp: the ride searches again, a new attempt without that
// driver, and the change names the driver who left.
func TestDriverGivesUp(t *testing.T) {
	r := rideIn(t, StatusDriverAssigned)
	deadline := t0.Add(3 * time.Minute)
	if err := r.cancelByDriver("d1", "driver gave the ride up", deadline, t0); err != nil {
		t.Fatal(err)
	}
	if r.status != StatusSearching || r.driverID != "" || r.attempt != 2 || !slices.Equal(r.excluded, []string{"d1"}) || !r.searchDeadline.Equal(deadline) {
		t.Fatalf("after giving up: %s driver %q attempt %d excluded %v deadline %s", r.status, r.driverID, r.attempt, r.excluded, r.searchDeadline)
	}
	if c := r.changes[0]; c.driverID != "d1" || c.from != StatusDriverAssigned || c.to != StatusSearching {
		t.Fatalf("change %+v, want d1 named in driver_assigned -> searching", c)
	}
	// News of the first attempt no longer counts.
	if err := r.assign("d1", 1, t0); err != nil || r.status != StatusSearching {
		t.Fatalf("a stale assignment: %v, status %s", err, r.status)
	}
	if err := r.searchFailed(1, "deadline", t0); err != nil || r.status != StatusSearching {
		t.Fatalf("a stale failure: %v, status %s", err, r.status)
	}
	if err := r.assign("d2", 2, t0); err != nil || r.driverID != "d2" {
		t.Fatalf("the second attempt's driver: %v, driver %q", err, r.driverID)
	}
}

// TestCancellationFee: free within the grace period measured from the
// assignment, a fee after it, never more than the hold.
func TestCancellationFee(t *testing.T) {
	cases := []struct {
		name   string
		status Status
		after  time.Duration
		fare   int64
		pol    policy
		charge int64
		plan   []step
	}{
		{"within grace", StatusDriverAssigned, time.Minute, 1850, defaultPolicy, 0, []step{stepRelease, stepVoid}},
		{"at the end of grace", StatusDriverAssigned, 2 * time.Minute, 1850, defaultPolicy, 0, []step{stepRelease, stepVoid}},
		{"after grace", StatusDriverAssigned, 2*time.Minute + time.Microsecond, 1850, defaultPolicy, 500, []step{stepRelease, stepCapture}},
		{"after grace, driver arrived", StatusDriverArrived, 10 * time.Minute, 1850, defaultPolicy, 500, []step{stepRelease, stepCapture}},
		{"fee above the hold", StatusDriverAssigned, 5 * time.Minute, 300, defaultPolicy, 300, []step{stepRelease, stepCapture}},
		{"no fee configured", StatusDriverAssigned, 5 * time.Minute, 1850, policy{cancelGrace: time.Minute}, 0, []step{stepRelease, stepVoid}},
	}
	for _, c := range cases {
		r := newRide("r", "u", geo.Point{}, geo.Point{}, "", "", t0)
		must := func(err error) {
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		must(r.quoted(Money{Amount: c.fare, Currency: "USD"}, t0))
		must(r.authorized("pay", t0.Add(time.Minute), t0))
		assignedAt := t0.Add(10 * time.Minute) // the search took a while: grace starts at the assignment
		must(r.assign("d1", 1, assignedAt))
		if c.status == StatusDriverArrived {
			must(r.arrive("d1", assignedAt.Add(time.Minute)))
		}
		must(r.cancelByRider(c.pol, "rider cancelled", assignedAt.Add(c.after)))
		if r.status != StatusCancelled || r.charge.amount.Amount != c.charge || !slices.Equal(r.plan.steps, c.plan) {
			t.Errorf("%s: %s, charge %d, plan %v; want cancelled, %d, %v", c.name, r.status, r.charge.amount.Amount, r.plan.steps, c.charge, c.plan)
		}
		if c.charge > 0 && r.charge.amount.Currency != "USD" {
			t.Errorf("%s: fee in %q, want the fare's currency", c.name, r.charge.amount.Currency)
		}
	}
}

// TestCancelWhileAuthorizing: a cancel before any authorization was sent
// owes nothing; once one may have reached payments, the saga finishes it to
// learn of a hold, then voids what it finds.
func TestCancelWhileAuthorizing(t *testing.T) {
	r := rideIn(t, StatusRequested)
	if err := r.cancelByRider(defaultPolicy, "", t0); err != nil || len(r.plan.steps) != 0 {
		t.Fatalf("cancel before authorizing: %v, plan %v", err, r.plan.steps)
	}

	r = rideIn(t, StatusRequested)
	r.plan.tries = 1 // a worker claimed the authorization
	if err := r.cancelByRider(defaultPolicy, "", t0); err != nil || !slices.Equal(r.plan.steps, []step{stepAuthorize, stepVoid}) {
		t.Fatalf("cancel while authorizing: %v, plan %v", err, r.plan.steps)
	}
	held := *r
	held.plan.steps = slices.Clone(r.plan.steps)
	if err := held.authorized("pay-9", t0, t0); err != nil || held.paymentID != "pay-9" || held.status != StatusCancelled || !slices.Equal(held.plan.steps, []step{stepVoid}) {
		t.Fatalf("the late hold: %v, payment %q, %s, plan %v", err, held.paymentID, held.status, held.plan.steps)
	}
	if err := r.declined("insufficient_funds", t0); err != nil || r.paymentID != "" || r.status != StatusCancelled {
		t.Fatalf("the late decline: %v, payment %q, %s", err, r.paymentID, r.status)
	}
}

// TestWatchdogDue: while dispatch searches, the saga's only step is the
// watchdog, due a little after the search deadline.
func TestWatchdogDue(t *testing.T) {
	r := rideIn(t, StatusSearching)
	if want := t0.Add(time.Minute + searchSlack); r.plan.head() != stepAwaitDriver || !r.plan.due.Equal(want) {
		t.Fatalf("plan %v due %s, want the watchdog due %s", r.plan.steps, r.plan.due, want)
	}
}

// TestReceipt derives what the rider was charged.
func TestReceipt(t *testing.T) {
	cases := []struct {
		ride   *Ride
		status receiptStatus
		amount int64
	}{
		{rideIn(t, StatusSearching), receiptPending, 0},
		{rideIn(t, StatusCompleted), receiptPending, 0},
		{rideIn(t, StatusNoDriver), receiptNotCharged, 0},
		{rideIn(t, StatusCancelled), receiptNotCharged, 0},
		{func() *Ride {
			r := rideIn(t, StatusCompleted)
			r.captured(fare, t0.Add(time.Hour), t0.Add(time.Hour))
			return r
		}(), receiptCaptured, 1850},
	}
	for _, c := range cases {
		st, amount, at := c.ride.receipt()
		if st != c.status || amount.Amount != c.amount || amount.Currency != "USD" || (st == receiptCaptured) == at.IsZero() {
			t.Errorf("%s ride: receipt %v %+v at %s; want %v %d USD", c.ride.status, st, amount, at, c.status, c.amount)
		}
	}
}

// TestBackoff: exponential from half a second, capped at 30 s, jittered.
func TestBackoff(t *testing.T) {
	for tries := 1; tries <= 40; tries++ {
		full := backoffCap
		if tries < 20 {
			full = min(backoffBase<<(tries-1), backoffCap)
		}
		for range 50 {
			d := backoff(tries)
			if d < full/2 || d > full || d > backoffCap {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", tries, d, full/2, full)
			}
		}
	}
	if backoff(1) > time.Second || backoff(30) < backoffCap/2 {
		t.Fatal("backoff does not grow from the base to the cap")
	}
}

func TestPlanEncoding(t *testing.T) {
	for _, steps := range [][]step{nil, {stepQuote}, {stepRelease, stepCancelSearch, stepVoid}} {
		p := plan{steps: steps}
		if got := decodeSteps(p.encode()); !slices.Equal(got, steps) {
			t.Errorf("%v round-tripped to %v", steps, got)
		}
	}
}
