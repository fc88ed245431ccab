package rides

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/broker"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestHappyPathThroughTheWorker runs the real worker loop, woken by commits:
// a ride goes from requested to completed with one hold, one capture of the
// fare, no void, and the driver released.
func TestHappyPathThroughTheWorker(t *testing.T) {
	h := newHarness(t)
	ctx, stop := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	go func() { done <- h.saga.Run(ctx) }()
	defer func() { stop(); <-done }()

	id := h.request("alice").GetId()
	testenv.Eventually(t, 10*time.Second, func() bool {
		return h.ride(id).status == StatusSearching && len(h.dispatch.searchesOf(id)) == 1
	}, "the ride never reached searching with dispatch looking")
	s := h.dispatch.searchesOf(id)[0]
	if s.GetAttempt() != 1 || s.GetFare().GetAmount() != 1850 || s.GetRiderId() != "alice" ||
		!s.GetDeadline().AsTime().Equal(h.clock.Now().Add(defaultPolicy.searchTimeout)) {
		t.Fatalf("StartSearch %v: want attempt 1, the fare, the rider and a deadline search_timeout away", s)
	}

	accepted, err := h.accept(id, "dave")
	if err != nil {
		t.Fatal(err)
	}
	if accepted.GetStatus() != ridesv1.RideStatus_RIDE_STATUS_DRIVER_ASSIGNED || accepted.GetDriverId() != "dave" {
		t.Fatalf("AcceptRide answered %v", accepted)
	}
	// Dispatch's DriverAssigned arrives after AcceptRide already applied it.
	if err := h.event(eventDriverAssigned, &dispatchv1.DriverAssigned{RideId: id, DriverId: "dave", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	h.trip(id, "dave")
	testenv.Eventually(t, 10*time.Second, func() bool {
		r := h.ride(id)
		return r.status == StatusCompleted && len(r.plan.steps) == 0
	}, "the completed ride's capture and release never finished")

	holds, captures, voids := h.payments.counts(id)
	_, releases := h.dispatch.countsOf(id)
	if holds != 1 || captures != 1 || voids != 0 || releases != 1 {
		t.Fatalf("holds %d, captures %d, voids %d, releases %d; want 1, 1, 0, 1", holds, captures, voids, releases)
	}
	rc, err := h.receipt(id, rider("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if rc.GetStatus() != ridesv1.ReceiptStatus_RECEIPT_STATUS_CAPTURED || rc.GetAmount().GetAmount() != 1850 || rc.GetCapturedAt() == nil {
		t.Fatalf("receipt %v, want 1850 captured", rc)
	}
	want := []string{"requested>searching", "searching>driver_assigned", "driver_assigned>driver_arrived",
		"driver_arrived>in_progress", "in_progress>completed"}
	if got := h.statusEvents(id); !slices.Equal(got, want) {
		t.Fatalf("status events %v, want %v", got, want)
	}
	var requested int
	_ = h.db.Reader().QueryRowContext(h.ctx, `SELECT count(*) FROM outbox WHERE subject = 'rides.ride.requested'`).Scan(&requested)
	if requested != 1 {
		t.Fatalf("%d ride.requested events, want 1", requested)
	}
	if got := counter(t, h.metrics.terminal.WithLabelValues("completed")); got != 1 {
		t.Fatalf("terminal metric for completed = %v, want 1", got)
	}
}

// TestDeclined: a declined authorization ends the ride with nothing held,
// nothing searched, nothing charged.
func TestDeclined(t *testing.T) {
	h := newHarness(t)
	h.payments.decline["bob"] = "insufficient_funds"
	id := h.request("bob").GetId()
	h.drive()
	r := h.wantStatus(id, StatusPaymentDeclined)
	if r.reason != "payment declined: insufficient_funds" || len(r.plan.steps) != 0 {
		t.Fatalf("reason %q, plan %v", r.reason, r.plan.steps)
	}
	holds, captures, voids := h.payments.counts(id)
	if holds != 0 || captures != 0 || voids != 0 || len(h.dispatch.searchesOf(id)) != 0 {
		t.Fatalf("holds %d captures %d voids %d searches %d, want none", holds, captures, voids, len(h.dispatch.searchesOf(id)))
	}
	if rc, _ := h.receipt(id, rider("bob")); rc.GetStatus() != ridesv1.ReceiptStatus_RECEIPT_STATUS_NOT_CHARGED {
		t.Fatalf("receipt %v, want not charged", rc)
	}

	// A payments refusal (not a decline, but a permanent error) holds nothing
	// either, and ends the ride the same way.
	h.payments.fail["authorize"] = []error{apperr.E(apperr.Unprocessable, "", "unknown payment method")}
	id = h.request("carol").GetId()
	h.drive()
	if r := h.wantStatus(id, StatusPaymentDeclined); r.reason != "payment declined: refused: unknown payment method" {
		t.Fatalf("reason %q", r.reason)
	}
}

// TestNoDriver: dispatch's SearchFailed ends the ride and the hold is voided
// exactly once, however often the event comes.
func TestNoDriver(t *testing.T) {
	h := newHarness(t)
	id := h.searching("alice")
	for range 2 {
		if err := h.event(eventSearchFailed, &dispatchv1.SearchFailed{RideId: id, Reason: "deadline", Attempt: 1}); err != nil {
			t.Fatal(err)
		}
		h.drive()
	}
	r := h.wantStatus(id, StatusNoDriver)
	if len(r.plan.steps) != 0 || r.reason != "no driver: deadline" {
		t.Fatalf("plan %v reason %q", r.plan.steps, r.reason)
	}
	holds, captures, voids := h.payments.counts(id)
	if holds != 1 || captures != 0 || voids != 1 {
		t.Fatalf("holds %d captures %d voids %d, want 1 0 1", holds, captures, voids)
	}
	if got := h.statusEvents(id); !slices.Equal(got, []string{"requested>searching", "searching>no_driver"}) {
		t.Fatalf("status events %v", got)
	}
}

// TestSearchWatchdog: if dispatch never reports, the saga ends the search
// itself shortly after its deadline, calls the search off and voids.
func TestSearchWatchdog(t *testing.T) {
	h := newHarness(t)
	id := h.searching("alice")
	h.clock.Advance(defaultPolicy.searchTimeout)
	h.drive()
	h.wantStatus(id, StatusSearching) // dispatch still has time to answer
	h.clock.Advance(searchSlack)
	h.drive()
	h.wantStatus(id, StatusNoDriver)
	_, _, voids := h.payments.counts(id)
	cancels, _ := h.dispatch.countsOf(id)
	if voids != 1 || cancels != 1 {
		t.Fatalf("voids %d, cancelled searches %d; want 1 and 1", voids, cancels)
	}
}

// TestCancelBeforeAssignment: the search is called off and the hold voided.
func TestCancelBeforeAssignment(t *testing.T) {
	h := newHarness(t)
	id := h.searching("alice")
	got, err := h.cancel(id, rider("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if got.GetStatus() != ridesv1.RideStatus_RIDE_STATUS_CANCELLED {
		t.Fatalf("CancelRide answered %s, want cancelled at once", got.GetStatus())
	}
	h.drive()
	again, err := h.cancel(id, rider("alice"))
	if err != nil || again.GetStatus() != ridesv1.RideStatus_RIDE_STATUS_CANCELLED {
		t.Fatalf("cancelling twice: %v %v, want the cancelled ride", again, err)
	}
	h.drive()
	holds, captures, voids := h.payments.counts(id)
	cancels, _ := h.dispatch.countsOf(id)
	if holds != 1 || captures != 0 || voids != 1 || cancels != 1 {
		t.Fatalf("holds %d captures %d voids %d cancelled searches %d; want 1 0 1 1", holds, captures, voids, cancels)
	}
	if rc, _ := h.receipt(id, rider("alice")); rc.GetStatus() != ridesv1.ReceiptStatus_RECEIPT_STATUS_NOT_CHARGED {
		t.Fatalf("receipt %v", rc)
	}
	if got := h.statusEvents(id); !slices.Equal(got, []string{"requested>searching", "searching>cancelled"}) {
		t.Fatalf("status events %v", got)
	}
}

// TestCancelAfterAssignment: within the grace period the driver is released
// and the hold voided; after it, the fee (not the fare) is captured.
func TestCancelAfterAssignment(t *testing.T) {
	t.Run("within grace", func(t *testing.T) {
		h := newHarness(t)
		id := h.assigned("alice", "dave")
		h.clock.Advance(time.Minute)
		if _, err := h.cancel(id, rider("alice")); err != nil {
			t.Fatal(err)
		}
		h.drive()
		holds, captures, voids := h.payments.counts(id)
		_, releases := h.dispatch.countsOf(id)
		if holds != 1 || captures != 0 || voids != 1 || releases != 1 {
			t.Fatalf("holds %d captures %d voids %d releases %d; want 1 0 1 1", holds, captures, voids, releases)
		}
		if rc, _ := h.receipt(id, rider("alice")); rc.GetStatus() != ridesv1.ReceiptStatus_RECEIPT_STATUS_NOT_CHARGED {
			t.Fatalf("receipt %v", rc)
		}
	})
	t.Run("after grace", func(t *testing.T) {
		h := newHarness(t)
		id := h.assigned("alice", "dave")
		if err := h.arrive(id, "dave"); err != nil {
			t.Fatal(err)
		}
		h.clock.Advance(defaultPolicy.cancelGrace + time.Second)
		if _, err := h.cancel(id, rider("alice")); err != nil {
			t.Fatal(err)
		}
		rc, _ := h.receipt(id, rider("alice"))
		if rc.GetStatus() != ridesv1.ReceiptStatus_RECEIPT_STATUS_PENDING {
			t.Fatalf("receipt before the fee is captured: %v, want pending", rc)
		}
		h.drive()
		holds, captures, voids := h.payments.counts(id)
		_, releases := h.dispatch.countsOf(id)
		if holds != 1 || captures != 1 || voids != 0 || releases != 1 || h.payments.captured[id] != 500 {
			t.Fatalf("holds %d captures %d (%d) voids %d releases %d; want the 500 fee captured once and the driver released",
				holds, captures, h.payments.captured[id], voids, releases)
		}
		rc, _ = h.receipt(id, rider("alice"))
		if rc.GetStatus() != ridesv1.ReceiptStatus_RECEIPT_STATUS_CAPTURED || rc.GetAmount().GetAmount() != 500 {
			t.Fatalf("receipt %v, want the 500 fee captured", rc)
		}
	})
	t.Run("in progress or over", func(t *testing.T) {
		h := newHarness(t)
		id := h.assigned("alice", "dave")
		_ = h.arrive(id, "dave")
		_ = h.start(id, "dave")
		for _, caller := range []*authv1.Caller{rider("alice"), driver("dave"), admin} {
			if _, err := h.cancel(id, caller); apperr.KindOf(err) != apperr.Conflict {
				t.Fatalf("%v cancelling an in-progress ride: %v, want Conflict", caller, err)
			}
		}
		_ = h.complete(id, "dave")
		if _, err := h.cancel(id, rider("alice")); apperr.KindOf(err) != apperr.Conflict {
			t.Fatalf("cancelling a completed ride: %v, want Conflict", err)
		}
	})
}

// TestDriverCancels: the driver is released and the ride searched again,
// without them, by a new attempt; the driver no longer sees the ride.
func TestDriverCancels(t *testing.T) {
	h := newHarness(t)
	id := h.assigned("alice", "dave")
	got, err := h.cancel(id, driver("dave"))
	if err != nil {
		t.Fatal(err)
	}
	if got.GetStatus() != ridesv1.RideStatus_RIDE_STATUS_SEARCHING || got.GetDriverId() != "" {
		t.Fatalf("after the driver gave up: %v", got)
	}
	h.drive()
	_, releases := h.dispatch.countsOf(id)
	searches := h.dispatch.searchesOf(id)
	if releases != 1 || len(searches) != 2 {
		t.Fatalf("releases %d, searches %d; want 1 and 2", releases, len(searches))
	}
	if s := searches[1]; s.GetAttempt() != 2 || !slices.Equal(s.GetExcludeDriverIds(), []string{"dave"}) {
		t.Fatalf("second search %v: want attempt 2 excluding dave", s)
	}
	if _, err := h.srv.GetRide(h.ctx, connectReq(&ridesv1.GetRideRequest{Caller: driver("dave"), RideId: id})); !apperr.Is(err, apperr.NotFound) {
		t.Fatalf("the driver who left reads the ride: %v, want NotFound", err)
	}
	if _, err := h.accept(id, "erin"); err != nil {
		t.Fatal(err)
	}
	h.trip(id, "erin")
	h.drive()
	holds, captures, voids := h.payments.counts(id)
	if holds != 1 || captures != 1 || voids != 0 {
		t.Fatalf("holds %d captures %d voids %d; want one hold captured", holds, captures, voids)
	}
}

// TestPaymentsDown: a transient failure is retried with backoff, never
// before it is due, and succeeds exactly once.
func TestPaymentsDown(t *testing.T) {
	h := newHarness(t)
	h.payments.fail["authorize"] = unavailable(5)
	id := h.request("alice").GetId()
	for i := range 5 {
		h.drive()
		if n := h.payments.callCount("authorize"); n != i+1 {
			t.Fatalf("after failure %d: %d calls", i+1, n)
		}
		r := h.wantStatus(id, StatusRequested)
		if r.plan.lastError == "" || !r.plan.due.After(h.clock.Now()) {
			t.Fatalf("a failed step must wait: due %s, now %s, error %q", r.plan.due, h.clock.Now(), r.plan.lastError)
		}
		h.drive() // not due yet: nothing happens
		if n := h.payments.callCount("authorize"); n != i+1 {
			t.Fatalf("retried before its backoff: %d calls", n)
		}
		h.clock.Advance(r.plan.due.Sub(h.clock.Now()))
	}
	h.drive()
	h.wantStatus(id, StatusSearching)
	if holds, _, _ := h.payments.counts(id); holds != 1 || h.payments.callCount("authorize") != 6 {
		t.Fatalf("holds %d after %d calls; want 1 after 6", holds, h.payments.callCount("authorize"))
	}
	if got := counter(t, h.metrics.stepRetries.WithLabelValues("authorize")); got != 5 {
		t.Fatalf("retries metric %v, want 5", got)
	}
}

// TestHoldDeadline: while payments is down the saga keeps trying to place
// the hold, each try ending by the hold deadline and none due after it; at
// the deadline the ride is cancelled without one more call, and once
// payments is back the authorization left behind is settled and its hold
// voided.
func TestHoldDeadline(t *testing.T) {
	h := newHarness(t)
	spy := &deadlineSpy{payer: h.payments}
	h.saga.payments = spy
	h.payments.fail["authorize"] = unavailable(1000)
	id := h.request("alice").GetId()
	deadline := h.clock.Now().Add(defaultPolicy.holdTimeout)
	for h.clock.Now().Before(deadline) {
		h.drive()
		r := h.wantStatus(id, StatusRequested)
		if left := deadline.Sub(h.clock.Now()); spy.left() > left {
			t.Fatalf("a try %s before the deadline was given %s", left, spy.left())
		}
		if r.plan.due.After(deadline) || !r.plan.due.After(h.clock.Now()) {
			t.Fatalf("next try due %s, want after now (%s) and by the deadline (%s)", r.plan.due, h.clock.Now(), deadline)
		}
		h.clock.Advance(r.plan.due.Sub(h.clock.Now()))
	}
	calls := h.payments.callCount("authorize")
	h.drive()
	r := h.wantStatus(id, StatusCancelled)
	if n := h.payments.callCount("authorize"); n != calls {
		t.Fatalf("%d more authorizations at the deadline, want none", n-calls)
	}
	if want := "payment unavailable: the hold was not placed within 30s"; r.reason != want {
		t.Fatalf("reason %q, want %q", r.reason, want)
	}
	if !slices.Equal(r.plan.steps, []step{stepAuthorize, stepVoid}) || !r.plan.due.After(h.clock.Now()) {
		t.Fatalf("plan %v due %s: the authorization must be settled, after a backoff", r.plan.steps, r.plan.due)
	}
	if rc, _ := h.receipt(id, rider("alice")); rc.GetStatus() != ridesv1.ReceiptStatus_RECEIPT_STATUS_NOT_CHARGED {
		t.Fatalf("receipt %v, want not charged", rc)
	}
	if got := h.statusEvents(id); !slices.Equal(got, []string{"requested>cancelled"}) {
		t.Fatalf("status events %v", got)
	}

	h.payments.fail["authorize"] = nil
	h.clock.Advance(backoffCap)
	h.drive()
	r = h.wantStatus(id, StatusCancelled)
	holds, captures, voids := h.payments.counts(id)
	if holds != 1 || voids != 1 || captures != 0 || len(r.plan.steps) != 0 || len(h.dispatch.searchesOf(id)) != 0 {
		t.Fatalf("holds %d voids %d captures %d plan %v searches %d; want the late hold voided and no search",
			holds, voids, captures, r.plan.steps, len(h.dispatch.searchesOf(id)))
	}
}

// deadlineSpy records how long the last authorization was given.
type deadlineSpy struct {
	payer
	mu   sync.Mutex
	last time.Duration
}

func (d *deadlineSpy) Authorize(ctx context.Context, req *paymentsv1.AuthorizeRequest) (*paymentsv1.Payment, error) {
	if dl, ok := ctx.Deadline(); ok {
		d.mu.Lock()
		d.last = time.Until(dl)
		d.mu.Unlock()
	}
	return d.payer.Authorize(ctx, req)
}

func (d *deadlineSpy) left() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}

// TestCaptureNeverGivesUp: once the trip started the saga only goes
// forward; the capture is retried, at most ~30 s apart, until payments is
// back, and charges once.
func TestCaptureNeverGivesUp(t *testing.T) {
	h := newHarness(t)
	id := h.assigned("alice", "dave")
	h.payments.fail["capture"] = append(unavailable(15), apperr.E(apperr.Timeout, "", "slow"))
	h.trip(id, "dave")
	h.drive()
	for range 16 {
		rep, err := Audit(h.ctx, h.db)
		if err != nil {
			t.Fatal(err)
		}
		if rep.CapturesPending != 1 || rep.Failing != 1 || rep.CompensationsPending != 1 || rep.Settled() {
			t.Fatalf("audit during the outage: %+v", rep)
		}
		r := h.wantStatus(id, StatusCompleted)
		if wait := r.plan.due.Sub(h.clock.Now()); wait <= 0 || wait > backoffCap {
			t.Fatalf("next capture in %s, want within (0, %s]", wait, backoffCap)
		}
		h.clock.Advance(backoffCap)
		h.drive()
	}
	_, captures, _ := h.payments.counts(id)
	if r := h.ride(id); captures != 1 || len(r.plan.steps) != 0 || r.charge.capturedAt.IsZero() {
		t.Fatalf("captures %d, plan %v, captured at %s", captures, r.plan.steps, r.charge.capturedAt)
	}
	rep, _ := Audit(h.ctx, h.db)
	if !rep.Settled() || rep.Failing != 0 || rep.ByStatus[StatusCompleted] != 1 {
		t.Fatalf("audit after: %+v", rep)
	}
}

// TestCancelWhileAuthorizationInFlight: the rider cancels while the
// authorization is on the wire; the hold it placed is found and voided.
func TestCancelWhileAuthorizationInFlight(t *testing.T) {
	h := newHarness(t)
	id := h.request("alice").GetId()
	h.payments.after = func(method, rideID string) {
		if method == "authorize" {
			if _, err := h.cancel(rideID, rider("alice")); err != nil {
				t.Errorf("cancel: %v", err)
			}
		}
	}
	h.drive()
	r := h.wantStatus(id, StatusCancelled)
	holds, captures, voids := h.payments.counts(id)
	if holds != 1 || voids != 1 || captures != 0 || len(r.plan.steps) != 0 || len(h.dispatch.searchesOf(id)) != 0 {
		t.Fatalf("holds %d voids %d captures %d plan %v searches %d; want the hold voided and no search",
			holds, voids, captures, r.plan.steps, len(h.dispatch.searchesOf(id)))
	}
}

// TestCancelThenAuthorizationRefused: a ride cancelled while its
// authorization was being retried ends once payments refuses it for good:
// nothing was held, so nothing is voided.
func TestCancelThenAuthorizationRefused(t *testing.T) {
	h := newHarness(t)
	h.payments.fail["authorize"] = unavailable(1)
	id := h.request("alice").GetId()
	h.drive()
	if _, err := h.cancel(id, rider("alice")); err != nil {
		t.Fatal(err)
	}
	if r := h.wantStatus(id, StatusCancelled); !slices.Equal(r.plan.steps, []step{stepAuthorize, stepVoid}) {
		t.Fatalf("plan %v: an authorization that may have reached payments must be settled first", r.plan.steps)
	}
	h.payments.fail["authorize"] = []error{apperr.E(apperr.Unprocessable, "", "card expired")}
	h.clock.Advance(time.Minute)
	h.drive()
	r := h.wantStatus(id, StatusCancelled)
	holds, _, voids := h.payments.counts(id)
	if len(r.plan.steps) != 0 || holds != 0 || voids != 0 || h.payments.callCount("void") != 0 {
		t.Fatalf("plan %v holds %d voids %d (calls %d); want settled with nothing to void", r.plan.steps, holds, voids, h.payments.callCount("void"))
	}
}

// TestCancelWhileSearchStarting: the rider cancels while StartSearch is on
// the wire; the late result is ignored and the search called off after it.
func TestCancelWhileSearchStarting(t *testing.T) {
	h := newHarness(t)
	id := h.request("alice").GetId()
	h.dispatch.after = func(method, rideID string) {
		if _, err := h.cancel(rideID, rider("alice")); err != nil {
			t.Errorf("cancel: %v", err)
		}
	}
	h.drive()
	r := h.wantStatus(id, StatusCancelled)
	_, _, voids := h.payments.counts(id)
	cancels, _ := h.dispatch.countsOf(id)
	if voids != 1 || cancels != 1 || len(r.plan.steps) != 0 {
		t.Fatalf("voids %d cancelled searches %d plan %v", voids, cancels, r.plan.steps)
	}
}

// TestLateAndDuplicateEvents: outcomes of an earlier attempt, of a ride that
// moved on, or delivered twice, change nothing.
func TestLateAndDuplicateEvents(t *testing.T) {
	h := newHarness(t)
	id := h.assigned("alice", "dave")
	before := h.statusEvents(id)
	if err := h.event(eventDriverAssigned, &dispatchv1.DriverAssigned{RideId: id, DriverId: "dave", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if err := h.event(eventDriverAssigned, &dispatchv1.DriverAssigned{RideId: id, DriverId: "dave", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if err := h.event(eventSearchFailed, &dispatchv1.SearchFailed{RideId: id, Reason: "deadline", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	// Another driver for the same attempt contradicts dispatch: ignored.
	if err := h.event(eventDriverAssigned, &dispatchv1.DriverAssigned{RideId: id, DriverId: "mallory", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	r := h.wantStatus(id, StatusDriverAssigned)
	if r.driverID != "dave" || !slices.Equal(h.statusEvents(id), before) {
		t.Fatalf("driver %q, events %v; want dave and no new event", r.driverID, h.statusEvents(id))
	}

	// After the driver gave up, the first attempt's news is stale.
	if _, err := h.cancel(id, driver("dave")); err != nil {
		t.Fatal(err)
	}
	h.drive()
	for _, err := range []error{
		h.event(eventDriverAssigned, &dispatchv1.DriverAssigned{RideId: id, DriverId: "dave", Attempt: 1}),
		h.event(eventSearchFailed, &dispatchv1.SearchFailed{RideId: id, Reason: "deadline", Attempt: 1}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	h.wantStatus(id, StatusSearching)
	if err := h.event(eventDriverAssigned, &dispatchv1.DriverAssigned{RideId: id, DriverId: "erin", Attempt: 2}); err != nil {
		t.Fatal(err)
	}
	if r := h.wantStatus(id, StatusDriverAssigned); r.driverID != "erin" {
		t.Fatalf("driver %q, want erin", r.driverID)
	}

	// An event about a ride rides never had can never apply: dropped.
	if err := h.event(eventSearchFailed, &dispatchv1.SearchFailed{RideId: "nope", Attempt: 1}); !apperr.Is(err, apperr.Invalid) {
		t.Fatalf("event for an unknown ride: %v, want Invalid (dropped)", err)
	}

	// A driver booked for a ride cancelled meanwhile is released.
	id2 := h.searching("bob")
	if _, err := h.cancel(id2, rider("bob")); err != nil {
		t.Fatal(err)
	}
	h.drive()
	if err := h.event(eventDriverAssigned, &dispatchv1.DriverAssigned{RideId: id2, DriverId: "frank", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	h.drive()
	if _, releases := h.dispatch.countsOf(id2); releases != 1 {
		t.Fatalf("releases %d of the driver booked for a cancelled ride, want 1", releases)
	}
	h.wantStatus(id2, StatusCancelled)
}

// TestCrashBetweenCallAndRecord kills the worker right after payments acted
// and before the saga recorded it, at each kind of payment step, and starts
// a fresh worker on the same database file: every ride ends terminal, with
// exactly one hold, one capture or void, as payments counts them.
func TestCrashBetweenCallAndRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rides.db")
	clock := newFakeClock()
	pr, pay, disp := newFakePricing(), newFakePayments(), newFakeDispatch()
	open := func() *harness {
		return build(t, testenv.MigratedDB(t, path, Service.Migrations), clock, pr, pay, disp)
	}
	// crashAt runs one process's worker until payments performs method,
	// then kills it (cancels its context) before the answer is recorded,
	// and closes its database as the process's exit would.
	crashAt := func(h *harness, method string) {
		t.Helper()
		ctx, kill := context.WithCancel(context.Background())
		h.ctx = ctx
		crashed := false
		pay.after = func(m, _ string) {
			if m == method && !crashed {
				crashed = true
				kill()
			}
		}
		_ = h.saga.runDue(ctx)
		pay.after = nil
		kill()
		if !crashed {
			t.Fatalf("the worker never reached %s", method)
		}
		h.db.Close()
		clock.Advance(time.Minute) // the dead worker's lease runs out
	}

	// Process 1 takes four requests and dies in the first authorization.
	p := open()
	var ids []string
	for _, who := range []string{"r1", "r2", "r3", "r4"} {
		ids = append(ids, p.request(who).GetId())
	}
	crashAt(p, "authorize")

	// Process 2 resumes: every ride is held once and searching. Then
	// ride 0 completes, 1 finds no driver, 2 is cancelled, 3 is cancelled
	// after the grace period; it dies in the first capture.
	p = open()
	p.drive()
	for _, id := range ids {
		p.wantStatus(id, StatusSearching)
	}
	if _, err := p.accept(ids[0], "d0"); err != nil {
		t.Fatal(err)
	}
	p.trip(ids[0], "d0")
	if err := p.event(eventSearchFailed, &dispatchv1.SearchFailed{RideId: ids[1], Reason: "deadline", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.cancel(ids[2], rider("r3")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.accept(ids[3], "d3"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(5 * time.Minute)
	if _, err := p.cancel(ids[3], rider("r4")); err != nil {
		t.Fatal(err)
	}
	crashAt(p, "capture")

	// Process 3 dies in the first void.
	p = open()
	crashAt(p, "void")

	// Process 4 finishes everything.
	p = open()
	p.drive()
	want := []Status{StatusCompleted, StatusNoDriver, StatusCancelled, StatusCancelled}
	wantCaptures := []int{1, 0, 0, 1}
	for i, id := range ids {
		r := p.wantStatus(id, want[i])
		if len(r.plan.steps) != 0 {
			t.Errorf("ride %d still owes %v", i, r.plan.steps)
		}
		holds, captures, voids := pay.counts(id)
		if holds != 1 || captures != wantCaptures[i] || voids != 1-wantCaptures[i] {
			t.Errorf("ride %d (%s): holds %d captures %d voids %d; want 1 %d %d",
				i, want[i], holds, captures, voids, wantCaptures[i], 1-wantCaptures[i])
		}
	}
	// Each crash made the saga repeat a call payments had already acted on.
	for _, m := range []string{"authorize", "capture", "void"} {
		var effects int
		for _, id := range ids {
			holds, captures, voids := pay.counts(id)
			effects += map[string]int{"authorize": holds, "capture": captures, "void": voids}[m]
		}
		if calls := pay.callCount(m); calls != effects+1 {
			t.Errorf("%s: %d calls for %d effects; want exactly one repeat, after the crash", m, calls, effects)
		}
	}
	rep, err := Audit(p.ctx, p.db)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Settled() || rep.Total != 4 {
		t.Fatalf("audit: %+v", rep)
	}
}

// TestSearchOutcomesOverTheBroker: dispatch's events reach the saga through
// the real outbox relay, JetStream and the idempotent consumer, by the
// subscription rides declares.
func TestSearchOutcomesOverTheBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded broker")
	}
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	srv := testenv.Broker(t)
	_, js := testenv.Connect(t, srv)
	if err := broker.EnsureStreams(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	id := h.searching("alice")

	dispatchDB := testenv.DB(t, nil)
	ob := outbox.New(dispatchDB, "dispatch", outbox.Options{})
	if err := dispatchDB.InTx(ctx, func(tx *sqldb.Tx) error {
		return ob.Append(ctx, tx, outbox.Event{Type: "ride.driver_assigned", Key: id, Payload: &dispatchv1.DriverAssigned{RideId: id, DriverId: "dave", Attempt: 1}})
	}); err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = ob.Relay(rctx, js) }()
	consumer := outbox.NewConsumer(h.db, js, nil, nil)
	go func() { _ = consumer.Run(rctx, h.saga.searchOutcomes()) }()
	testenv.Eventually(t, 15*time.Second, func() bool { return h.ride(id).status == StatusDriverAssigned }, "DriverAssigned never reached the ride")
	if r := h.ride(id); r.driverID != "dave" {
		t.Fatalf("driver %q", r.driverID)
	}
}

func counter(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func connectReq[T any](m *T) *connect.Request[T] { return connect.NewRequest(m) }
