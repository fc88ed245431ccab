package rides

import (
	"fmt"
	"slices"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/geo"
)

// Status is where a ride stands, spelled as in the public API.
type Status string

// The statuses of DESIGN.md section 3. The last three, with completed and
// cancelled, are terminal.
const (
	StatusRequested       Status = "requested"
	StatusSearching       Status = "searching"
	StatusDriverAssigned  Status = "driver_assigned"
	StatusDriverArrived   Status = "driver_arrived"
	StatusInProgress      Status = "in_progress"
	StatusCompleted       Status = "completed"
	StatusCancelled       Status = "cancelled"
	StatusPaymentDeclined Status = "payment_declined"
	StatusNoDriver        Status = "no_driver"
)

// Statuses lists every status in lifecycle order.
var Statuses = []Status{
	StatusRequested, StatusSearching, StatusDriverAssigned, StatusDriverArrived, StatusInProgress,
	StatusCompleted, StatusCancelled, StatusPaymentDeclined, StatusNoDriver,
}

// Terminal reports whether a ride in s never changes status again.
func (s Status) Terminal() bool {
	switch s {
	case StatusCompleted, StatusCancelled, StatusPaymentDeclined, StatusNoDriver:
		return true
	}
	return false
}

// Money is an amount in minor units of an ISO 4217 currency.
type Money struct {
	Amount   int64
	Currency string
}

// IsZero reports whether m is unset.
func (m Money) IsZero() bool { return m == Money{} }

// policy is the business settings the ride rules depend on.
type policy struct {
	// searchTimeout is how long dispatch looks for a driver per attempt.
	searchTimeout time.Duration
	// cancelGrace is how long after assignment a rider cancels for free.
	cancelGrace time.Duration
	// cancelFee is charged (in the fare's minor units, never more than the
	// hold) for a cancellation after the grace period.
	cancelFee int64
	// holdTimeout is how long after the request the saga keeps trying to
	// place the hold before it ends the ride, so that a rider hears within
	// it, rather than waiting "requested" for as long as payments is down.
	holdTimeout time.Duration
}

// defaultPolicy is what the settings default to. The hold gets 30 s: three
// of the saga's 10 s steps, each with room for two of payments' 5 s
// attempts; a card network that misses all of them is down for this rider.
var defaultPolicy = policy{searchTimeout: 60 * time.Second, cancelGrace: 2 * time.Minute, cancelFee: 500, holdTimeout: 30 * time.Second}

// Ride is the aggregate: one trip request, its progress and the saga steps
// it still owes. Its state is unexported and changes only through the
// methods below, which enforce the state machine; the store loads it, hands
// it to a use case and saves it with its events in one transaction.
type Ride struct {
	id, riderID, driverID  string
	pickup, dropoff        geo.Point
	quoteID, paymentMethod string
	fare                   Money // the upfront fare; zero until quoted
	status                 Status
	reason                 string // why it failed or was cancelled
	paymentID              string // the hold at payments; "" while none
	attempt                uint32 // the current dispatch search; 0 before the first
	excluded               []string
	searchDeadline         time.Time
	assignedAt             time.Time // the cancellation grace is measured from here
	charge                 charge
	plan                   plan
	createdAt, updatedAt   time.Time
	version                int64

	changes []change // status changes not yet saved: each becomes a RideStatusChanged
	dirty   bool     // something must be saved
}

// charge is what the rider pays: nothing, the fare on completion, or a fee
// for a late cancellation.
type charge struct {
	amount     Money     // to capture (or captured); zero when nothing is owed
	capturedAt time.Time // zero until payments confirmed the capture
}

// change is one status transition, announced as RideStatusChanged.
type change struct {
	from, to Status
	driverID string
	reason   string
}

// newRide is a ride just requested. Its saga starts by quoting the fare.
func newRide(id, riderID string, pickup, dropoff geo.Point, quoteID, paymentMethod string, now time.Time) *Ride {
	r := &Ride{
		id: id, riderID: riderID, pickup: pickup, dropoff: dropoff, quoteID: quoteID, paymentMethod: paymentMethod,
		status: StatusRequested, createdAt: now, updatedAt: now, dirty: true,
	}
	r.setSteps(now, []step{stepQuote}, true)
	return r
}

// refuse is the error of an event the current status does not allow. It
// changes nothing.
func (r *Ride) refuse(event string) error {
	return apperr.E(apperr.Conflict, "illegal_transition", "cannot %s a ride that is %s", event, r.status)
}

// notFound is what a driver acting on someone else's ride is told.
func notFound() error { return apperr.E(apperr.NotFound, "", "ride not found") }

// move changes the status and records the change for the outbox.
func (r *Ride) move(to Status, reason string, now time.Time) {
	r.changes = append(r.changes, change{from: r.status, to: to, driverID: r.driverID, reason: reason})
	r.status = to
	if to.Terminal() {
		r.reason = reason // why it ended; a driver giving up is only in the event
	}
	r.touch(now)
}

// touch marks a visible change.
func (r *Ride) touch(now time.Time) {
	r.updatedAt = now
	r.dirty = true
}

// quoted stores the fare from pricing. The fare is upfront: quoted once,
// then held, shown and captured unchanged.
func (r *Ride) quoted(fare Money, now time.Time) error {
	if r.status != StatusRequested || !r.fare.IsZero() {
		return r.refuse("quote")
	}
	if fare.Amount <= 0 || fare.Currency == "" {
		return apperr.E(apperr.Invalid, "", "a fare must be a positive amount with a currency")
	}
	r.fare = fare
	r.touch(now)
	r.advance(now, stepQuote, stepAuthorize)
	return nil
}

// authorized records the hold and starts the search, whose deadline bounds
// how long the rider waits for a driver.
func (r *Ride) authorized(paymentID string, deadline, now time.Time) error {
	if paymentID == "" {
		return apperr.E(apperr.Invalid, "", "an authorization needs a payment id")
	}
	switch {
	case r.status == StatusRequested && !r.fare.IsZero():
		r.paymentID = paymentID
		r.attempt = 1
		r.searchDeadline = deadline
		r.move(StatusSearching, "", now)
		r.advance(now, stepAuthorize, stepSearch)
	case r.status == StatusCancelled && r.plan.head() == stepAuthorize:
		// Cancelled while the hold was being placed: remember the hold so
		// the void queued behind this step releases it.
		r.paymentID = paymentID
		r.advance(now, stepAuthorize)
	default:
		return r.refuse("authorize")
	}
	return nil
}

// declined ends the ride: the provider refused the hold, so nothing is held
// and nothing needs compensating.
func (r *Ride) declined(reason string, now time.Time) error {
	switch {
	case r.status == StatusRequested && !r.fare.IsZero():
		r.move(StatusPaymentDeclined, "payment declined: "+reason, now)
		r.advance(now, stepAuthorize)
	case r.status == StatusCancelled && r.plan.head() == stepAuthorize:
		r.advance(now, stepAuthorize) // no hold: the void behind it has nothing to do
	default:
		return r.refuse("decline")
	}
	return nil
}

// holdDeadline is when a ride waiting for its hold stops waiting; ok is
// false for a ride not waiting for one.
func (r *Ride) holdDeadline(pol policy) (by time.Time, ok bool) {
	if r.status != StatusRequested || r.plan.head() != stepAuthorize {
		return time.Time{}, false
	}
	return r.createdAt.Add(pol.holdTimeout), true
}

// retryHoldBy brings a failed authorization's next try forward to the hold
// deadline when its backoff would pass it: the rider hears at the
// deadline, not a backoff after it.
func (r *Ride) retryHoldBy(pol policy) {
	if by, ok := r.holdDeadline(pol); ok && r.plan.due.After(by) {
		r.plan.due = by
	}
}

// holdTimedOut ends a ride whose hold was not placed by its deadline. An
// authorization may have reached payments all the same, so, as when a
// rider cancels meanwhile, the saga still finishes it to learn of a hold
// and voids what it finds. The ride is cancelled, not payment_declined:
// the rider's card was not refused, and another try may well work.
func (r *Ride) holdTimedOut(pol policy, now time.Time) error {
	switch {
	case r.status == StatusRequested && r.plan.head() == stepAuthorize:
		r.move(StatusCancelled, fmt.Sprintf("payment unavailable: the hold was not placed within %s", pol.holdTimeout), now)
		r.setSteps(now, []step{stepAuthorize, stepVoid}, false)
		// Its last try has just failed: the next waits a backoff, as after
		// any failure.
		r.plan.due = now.Add(backoff(r.plan.tries))
	case r.status == StatusCancelled && r.plan.head() == stepAuthorize:
		// The rider cancelled first: the cancel already owes the same.
	default:
		return r.refuse("time out the hold of")
	}
	return nil
}

// searchStarted records that dispatch took the search; the saga then waits
// for its outcome, with a watchdog in case the outcome never comes.
func (r *Ride) searchStarted(now time.Time) {
	if r.status == StatusSearching {
		r.advance(now, stepSearch, stepAwaitDriver)
		return
	}
	r.advance(now, stepSearch)
}

// assign books driverID for search attempt. It is reached twice for every
// assignment (AcceptRide answers at once, dispatch's DriverAssigned event
// follows), so a repeat is a no-op, and news of an earlier attempt is
// ignored.
func (r *Ride) assign(driverID string, attempt uint32, now time.Time) error {
	if driverID == "" {
		return apperr.E(apperr.Invalid, "", "an assignment needs a driver")
	}
	switch {
	case r.attempt == 0 || attempt == 0:
		return r.refuse("assign a driver to") // never searched
	case attempt != r.attempt:
		return nil // an earlier search's news
	case r.status == StatusSearching:
		r.driverID = driverID
		r.assignedAt = now
		r.move(StatusDriverAssigned, "", now)
		r.dropSteps(now, stepSearch, stepAwaitDriver)
	case r.driverID == driverID:
		return nil // already applied
	case r.status == StatusCancelled || r.status == StatusNoDriver:
		// Dispatch booked a driver for a ride that ended meanwhile: free
		// them, or they would wait for a trip that never comes.
		if !r.plan.has(stepRelease) {
			r.setSteps(now, append(slices.Clone(r.plan.steps), stepRelease), false)
		}
	default:
		return r.refuse("assign another driver to")
	}
	return nil
}

// checkDriver is the rule for trip steps: only the assigned driver.
func (r *Ride) checkDriver(driverID string) error {
	if driverID == "" || driverID != r.driverID {
		return notFound()
	}
	return nil
}

// arrive: the driver is at the pickup.
func (r *Ride) arrive(driverID string, now time.Time) error {
	switch r.status {
	case StatusDriverAssigned:
		if err := r.checkDriver(driverID); err != nil {
			return err
		}
		r.move(StatusDriverArrived, "", now)
		return nil
	case StatusDriverArrived:
		return r.checkDriver(driverID)
	}
	return r.refuse("mark arrived")
}

// start: the rider is on board. From here the saga only goes forward.
func (r *Ride) start(driverID string, now time.Time) error {
	switch r.status {
	case StatusDriverArrived:
		if err := r.checkDriver(driverID); err != nil {
			return err
		}
		r.move(StatusInProgress, "", now)
		return nil
	case StatusInProgress:
		return r.checkDriver(driverID)
	}
	return r.refuse("start")
}

// complete ends the trip; the saga then captures the fare and frees the
// driver.
func (r *Ride) complete(driverID string, now time.Time) error {
	switch r.status {
	case StatusInProgress:
		if err := r.checkDriver(driverID); err != nil {
			return err
		}
		r.charge.amount = r.fare
		r.move(StatusCompleted, "", now)
		r.setSteps(now, append(slices.Clone(r.plan.steps), stepCapture, stepRelease), false)
		return nil
	case StatusCompleted:
		return r.checkDriver(driverID)
	}
	return r.refuse("complete")
}

// searchFailed: dispatch gave up on attempt. Only the current attempt of a
// ride still searching counts; anything else is old news.
func (r *Ride) searchFailed(attempt uint32, reason string, now time.Time) error {
	if r.attempt == 0 {
		return r.refuse("fail the search of")
	}
	if attempt != r.attempt || r.status != StatusSearching {
		return nil
	}
	if reason == "" {
		reason = "search failed"
	}
	r.move(StatusNoDriver, "no driver: "+reason, now)
	r.compensate(now, stepVoid)
	return nil
}

// searchTimedOut is the watchdog: the search deadline passed and dispatch
// never said how it ended, so the ride ends here and the search is called
// off.
func (r *Ride) searchTimedOut(now time.Time) error {
	if r.status != StatusSearching || r.plan.head() != stepAwaitDriver {
		return r.refuse("time out the search of")
	}
	r.move(StatusNoDriver, "no driver: nobody accepted before the search deadline", now)
	r.compensate(now, stepCancelSearch, stepVoid)
	return nil
}

// searchRefused ends a ride whose search dispatch refused outright.
func (r *Ride) searchRefused(reason string, now time.Time) error {
	if r.status != StatusSearching {
		return r.refuse("refuse the search of")
	}
	r.move(StatusNoDriver, "no driver: "+reason, now)
	r.compensate(now, stepCancelSearch, stepVoid)
	return nil
}

// cancelByRider cancels for the rider (or an operator). What it costs and
// which compensations follow depend on how far the ride got; the status is
// terminal at once, the compensations run as saga steps.
func (r *Ride) cancelByRider(pol policy, reason string, now time.Time) error {
	switch r.status {
	case StatusCancelled:
		return nil // cancelling twice returns the ride unchanged
	case StatusRequested:
		var steps []step
		if r.plan.head() == stepAuthorize && r.plan.tries > 0 {
			// An authorization may have reached payments: finish it to
			// learn whether a hold exists, then void that hold.
			steps = []step{stepAuthorize, stepVoid}
		}
		r.move(StatusCancelled, reason, now)
		r.setSteps(now, steps, false)
	case StatusSearching:
		r.move(StatusCancelled, reason, now)
		r.compensate(now, stepCancelSearch, stepVoid)
	case StatusDriverAssigned, StatusDriverArrived:
		r.move(StatusCancelled, reason, now)
		if now.Sub(r.assignedAt) <= pol.cancelGrace || pol.cancelFee <= 0 {
			r.compensate(now, stepRelease, stepVoid)
			return nil
		}
		r.charge.amount = Money{Amount: min(pol.cancelFee, r.fare.Amount), Currency: r.fare.Currency}
		r.compensate(now, stepRelease, stepCapture)
	default:
		return r.refuse("cancel")
	}
	return nil
}

// cancelByDriver is the assigned driver giving the ride up before the trip
// starts: the driver is released and the ride searched again without them.
func (r *Ride) cancelByDriver(driverID, reason string, deadline, now time.Time) error {
	switch r.status {
	case StatusDriverAssigned, StatusDriverArrived:
		if err := r.checkDriver(driverID); err != nil {
			return err
		}
		r.move(StatusSearching, reason, now) // the event names the driver who gave up
		if !slices.Contains(r.excluded, driverID) {
			r.excluded = append(r.excluded, driverID)
		}
		r.driverID = ""
		r.assignedAt = time.Time{}
		r.attempt++
		r.searchDeadline = deadline
		r.setSteps(now, []step{stepRelease, stepSearch}, true)
		return nil
	case StatusCancelled:
		return nil
	}
	return r.refuse("give up")
}

// captured records what payments charged.
func (r *Ride) captured(amount Money, at, now time.Time) {
	r.charge.amount = amount
	r.charge.capturedAt = at
	r.touch(now)
	r.advance(now, stepCapture)
}

// stepDone finishes a step whose result needs no recording (a void, a
// release, a cancelled search).
func (r *Ride) stepDone(s step, now time.Time) { r.advance(now, s) }

// stepRefused applies a permanent refusal of a forward step, where one
// has a defined ending; it reports whether it did. Everything else keeps
// being retried (see saga.go).
func (r *Ride) stepRefused(s step, err error, now time.Time) bool {
	msg := apperr.As(err).Message
	switch {
	case s == stepAuthorize && r.status == StatusRequested && !r.fare.IsZero():
		// A refused authorization holds nothing, like a decline.
		return r.declined("refused: "+msg, now) == nil
	case s == stepAuthorize && r.status == StatusCancelled:
		r.advance(now, stepAuthorize) // nothing held: the void behind it has nothing to do
		return true
	case s == stepSearch && r.status == StatusSearching:
		return r.searchRefused(fmt.Sprintf("dispatch refused the search: %s", msg), now) == nil
	}
	return false
}

// receiptStatus is where the charge stands.
type receiptStatus int

const (
	receiptPending receiptStatus = iota
	receiptCaptured
	receiptNotCharged
)

// receipt says what the rider was charged: amount is what was captured.
func (r *Ride) receipt() (receiptStatus, Money, time.Time) {
	zero := Money{Currency: r.fare.Currency}
	switch {
	case !r.charge.capturedAt.IsZero():
		return receiptCaptured, r.charge.amount, r.charge.capturedAt
	case r.charge.amount.Amount > 0, !r.status.Terminal():
		return receiptPending, zero, time.Time{}
	}
	return receiptNotCharged, zero, time.Time{}
}
