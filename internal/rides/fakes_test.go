package rides

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	geov1 "github.com/rideshare-platform/rideshare/api/geo/v1"
	moneyv1 "github.com/rideshare-platform/rideshare/api/money/v1"
	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	pricingv1 "github.com/rideshare-platform/rideshare/api/pricing/v1"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// newFakeClock is the injected clock: it moves only when a test says, so
// timeouts, grace periods and backoff are tested without sleeping.
func newFakeClock() *testenv.Clock {
	return testenv.NewClock(time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC))
}

// faults are errors a fake returns, per method, before the call has any
// effect; the fake works normally once they are used up.
type faults map[string][]error

func (f faults) pop(method string) error {
	q := f[method]
	if len(q) == 0 {
		return nil
	}
	f[method] = q[1:]
	return q[0]
}

func unavailable(n int) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = apperr.E(apperr.Unavailable, "", "down for the test")
	}
	return out
}

// fakePricing quotes a fixed fare.
type fakePricing struct {
	mu       sync.Mutex
	fare     Money
	calls    int
	quoteIDs []string
	fail     faults
}

func newFakePricing() *fakePricing {
	return &fakePricing{fare: Money{Amount: 1850, Currency: "USD"}, fail: faults{}}
}

func (f *fakePricing) Estimate(ctx context.Context, req *pricingv1.EstimateRequest) (*pricingv1.Estimate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if err := f.fail.pop("estimate"); err != nil {
		return nil, err
	}
	f.quoteIDs = append(f.quoteIDs, req.GetQuoteId())
	return &pricingv1.Estimate{Fare: &moneyv1.Money{Amount: f.fare.Amount, Currency: f.fare.Currency}}, nil
}

// fakePayments is a payments service with Stripe-like idempotency keys: a
// repeated key answers the first result and moves no money. It counts
// calls and, separately, effects (holds placed, captures, voids), which is
// what "exactly once" is about.
type fakePayments struct {
	mu       sync.Mutex
	decline  map[string]string // rider → decline reason
	fail     faults
	after    func(method, rideID string) // runs after an effect, before answering: a crash hook
	calls    map[string]int
	results  map[string]*paymentsv1.Payment // by idempotency key
	payments map[string]*paymentsv1.Payment // by payment id
	holds    map[string]int                 // per ride
	captures map[string]int
	voids    map[string]int
	captured map[string]int64 // per ride: amount charged
}

func newFakePayments() *fakePayments {
	return &fakePayments{
		decline: map[string]string{}, fail: faults{}, calls: map[string]int{}, results: map[string]*paymentsv1.Payment{},
		payments: map[string]*paymentsv1.Payment{}, holds: map[string]int{}, captures: map[string]int{},
		voids: map[string]int{}, captured: map[string]int64{},
	}
}

func (f *fakePayments) hook(method, rideID string) {
	if f.after != nil {
		f.after(method, rideID)
	}
}

func (f *fakePayments) Authorize(ctx context.Context, req *paymentsv1.AuthorizeRequest) (*paymentsv1.Payment, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, effect, err := f.authorize(req)
	if effect {
		f.hook("authorize", req.GetRideId())
	}
	return p, err
}

func (f *fakePayments) authorize(req *paymentsv1.AuthorizeRequest) (*paymentsv1.Payment, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["authorize"]++
	if err := f.fail.pop("authorize"); err != nil {
		return nil, false, err
	}
	if req.GetIdempotencyKey() != req.GetRideId()+":authorize" || req.GetCaller().GetRole() != authv1.Role_ROLE_SERVICE {
		return nil, false, apperr.E(apperr.Invalid, "", "unexpected key %q or caller", req.GetIdempotencyKey())
	}
	if p, ok := f.results[req.GetIdempotencyKey()]; ok {
		return proto.Clone(p).(*paymentsv1.Payment), false, nil
	}
	if req.GetAmount().GetAmount() <= 0 {
		return nil, false, apperr.E(apperr.Invalid, "", "amount must be positive")
	}
	p := &paymentsv1.Payment{Id: "pay-" + req.GetRideId(), RideId: req.GetRideId(), RiderId: req.GetRiderId(), Authorized: req.GetAmount()}
	reason, declined := f.decline[req.GetRiderId()]
	if declined || req.GetPaymentMethod() == "pm_card_declined" {
		p.Status = paymentsv1.PaymentStatus_PAYMENT_STATUS_DECLINED
		p.DeclineReason = reason
		f.results[req.GetIdempotencyKey()] = p
		return proto.Clone(p).(*paymentsv1.Payment), false, nil
	}
	p.Status = paymentsv1.PaymentStatus_PAYMENT_STATUS_AUTHORIZED
	f.results[req.GetIdempotencyKey()] = p
	f.payments[p.Id] = p
	f.holds[req.GetRideId()]++
	return proto.Clone(p).(*paymentsv1.Payment), true, nil
}

func (f *fakePayments) Capture(ctx context.Context, req *paymentsv1.CaptureRequest) (*paymentsv1.Payment, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, ride, err := f.capture(req)
	if ride != "" {
		f.hook("capture", ride)
	}
	return p, err
}

func (f *fakePayments) capture(req *paymentsv1.CaptureRequest) (*paymentsv1.Payment, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["capture"]++
	if err := f.fail.pop("capture"); err != nil {
		return nil, "", err
	}
	if p, ok := f.results[req.GetIdempotencyKey()]; ok {
		return proto.Clone(p).(*paymentsv1.Payment), "", nil
	}
	p, ok := f.payments[req.GetPaymentId()]
	switch {
	case !ok:
		return nil, "", apperr.E(apperr.NotFound, "", "payment not found")
	case req.GetIdempotencyKey() != p.GetRideId()+":capture":
		return nil, "", apperr.E(apperr.Invalid, "", "unexpected key %q", req.GetIdempotencyKey())
	case p.Status != paymentsv1.PaymentStatus_PAYMENT_STATUS_AUTHORIZED:
		return nil, "", apperr.E(apperr.Conflict, "", "payment is %s", p.Status)
	case req.GetAmount().GetAmount() <= 0 || req.GetAmount().GetAmount() > p.GetAuthorized().GetAmount():
		return nil, "", apperr.E(apperr.Invalid, "", "capture of %d exceeds the hold", req.GetAmount().GetAmount())
	}
	p.Status = paymentsv1.PaymentStatus_PAYMENT_STATUS_CAPTURED
	p.Captured = req.GetAmount()
	p.CapturedAt = timestamppb.New(time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC))
	f.results[req.GetIdempotencyKey()] = proto.Clone(p).(*paymentsv1.Payment)
	f.captures[p.RideId]++
	f.captured[p.RideId] += req.GetAmount().GetAmount()
	return proto.Clone(p).(*paymentsv1.Payment), p.RideId, nil
}

func (f *fakePayments) Void(ctx context.Context, req *paymentsv1.VoidRequest) (*paymentsv1.Payment, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, ride, err := f.void(req)
	if ride != "" {
		f.hook("void", ride)
	}
	return p, err
}

func (f *fakePayments) void(req *paymentsv1.VoidRequest) (*paymentsv1.Payment, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["void"]++
	if err := f.fail.pop("void"); err != nil {
		return nil, "", err
	}
	if p, ok := f.results[req.GetIdempotencyKey()]; ok {
		return proto.Clone(p).(*paymentsv1.Payment), "", nil
	}
	p, ok := f.payments[req.GetPaymentId()]
	switch {
	case !ok:
		return nil, "", apperr.E(apperr.NotFound, "", "payment not found")
	case req.GetIdempotencyKey() != p.GetRideId()+":void":
		return nil, "", apperr.E(apperr.Invalid, "", "unexpected key %q", req.GetIdempotencyKey())
	case p.Status != paymentsv1.PaymentStatus_PAYMENT_STATUS_AUTHORIZED:
		return nil, "", apperr.E(apperr.Conflict, "", "payment is %s", p.Status)
	}
	p.Status = paymentsv1.PaymentStatus_PAYMENT_STATUS_VOIDED
	f.results[req.GetIdempotencyKey()] = proto.Clone(p).(*paymentsv1.Payment)
	f.voids[p.RideId]++
	return proto.Clone(p).(*paymentsv1.Payment), p.RideId, nil
}

// counts reads the effects on one ride.
func (f *fakePayments) counts(rideID string) (holds, captures, voids int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.holds[rideID], f.captures[rideID], f.voids[rideID]
}

func (f *fakePayments) callCount(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// fakeDispatch books drivers: StartSearch is idempotent per (ride,
// attempt), RespondToOffer books the driver a test offered the ride to.
type fakeDispatch struct {
	mu       sync.Mutex
	fail     faults
	after    func(method, rideID string)
	calls    map[string]int
	searches map[string][]*dispatchv1.StartSearchRequest // per ride, one per attempt started
	cancels  map[string]int
	releases map[string]int
	offers   map[string]string // ride → the driver it is offered to
	booked   map[string]string // ride → booked driver
}

func newFakeDispatch() *fakeDispatch {
	return &fakeDispatch{
		fail: faults{}, calls: map[string]int{}, searches: map[string][]*dispatchv1.StartSearchRequest{},
		cancels: map[string]int{}, releases: map[string]int{}, offers: map[string]string{}, booked: map[string]string{},
	}
}

func (f *fakeDispatch) StartSearch(ctx context.Context, req *dispatchv1.StartSearchRequest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	f.calls["start_search"]++
	if err := f.fail.pop("start_search"); err != nil {
		f.mu.Unlock()
		return err
	}
	started := slices.ContainsFunc(f.searches[req.GetRideId()], func(s *dispatchv1.StartSearchRequest) bool {
		return s.GetAttempt() == req.GetAttempt()
	})
	if !started {
		f.searches[req.GetRideId()] = append(f.searches[req.GetRideId()], proto.Clone(req).(*dispatchv1.StartSearchRequest))
	}
	f.mu.Unlock()
	if f.after != nil {
		f.after("start_search", req.GetRideId())
	}
	return nil
}

func (f *fakeDispatch) CancelSearch(ctx context.Context, req *dispatchv1.CancelSearchRequest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["cancel_search"]++
	if err := f.fail.pop("cancel_search"); err != nil {
		return err
	}
	f.cancels[req.GetRideId()]++
	delete(f.booked, req.GetRideId())
	return nil
}

func (f *fakeDispatch) ReleaseDriver(ctx context.Context, req *dispatchv1.ReleaseDriverRequest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["release"]++
	if err := f.fail.pop("release"); err != nil {
		return err
	}
	f.releases[req.GetRideId()]++
	delete(f.booked, req.GetRideId())
	return nil
}

func (f *fakeDispatch) RespondToOffer(_ context.Context, req *dispatchv1.RespondToOfferRequest) (*dispatchv1.RespondToOfferResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["respond"]++
	if err := f.fail.pop("respond"); err != nil {
		return nil, err
	}
	driver := req.GetCaller().GetUserId()
	if req.GetCaller().GetRole() != authv1.Role_ROLE_DRIVER || f.offers[req.GetRideId()] != driver || !req.GetAccept() {
		return nil, apperr.E(apperr.Conflict, "offer_expired", "no open offer")
	}
	if b, ok := f.booked[req.GetRideId()]; ok && b != driver {
		return nil, apperr.E(apperr.Conflict, "offer_expired", "taken")
	}
	f.booked[req.GetRideId()] = driver
	return &dispatchv1.RespondToOfferResponse{Assigned: true, EtaSeconds: 240}, nil
}

func (f *fakeDispatch) offer(rideID, driverID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offers[rideID] = driverID
}

func (f *fakeDispatch) searchesOf(rideID string) []*dispatchv1.StartSearchRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.searches[rideID])
}

func (f *fakeDispatch) countsOf(rideID string) (cancels, releases int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cancels[rideID], f.releases[rideID]
}

// harness is the rides service over a real SQLite database, with fake peers
// and a fake clock.
type harness struct {
	t        *testing.T
	ctx      context.Context
	db       *sqldb.DB
	clock    *testenv.Clock
	pricing  *fakePricing
	payments *fakePayments
	dispatch *fakeDispatch
	metrics  *metrics
	store    *store
	saga     *saga
	srv      *server
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return build(t, testenv.DB(t, Service.Migrations), newFakeClock(), newFakePricing(), newFakePayments(), newFakeDispatch())
}

// build wires the service around db; the crash test builds it twice over
// one database file, as a restarted process would.
func build(t *testing.T, db *sqldb.DB, clock *testenv.Clock, pr *fakePricing, pay *fakePayments, disp *fakeDispatch) *harness {
	m := newMetrics(nil)
	st := &store{db: db, outbox: outbox.New(db, "rides", outbox.Options{}), metrics: m}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sg := newSaga(st, pr, pay, disp, defaultPolicy, clock.Now, log, m)
	srv := &server{store: st, dispatch: disp, policy: defaultPolicy, area: geo.SanFrancisco, now: clock.Now}
	return &harness{t: t, ctx: context.Background(), db: db, clock: clock, pricing: pr, payments: pay, dispatch: disp,
		metrics: m, store: st, saga: sg, srv: srv}
}

var (
	pickup  = &geov1.Point{Lat: 37.7749, Lng: -122.4194}
	dropoff = &geov1.Point{Lat: 37.8024, Lng: -122.4058}
	admin   = &authv1.Caller{UserId: "ops", Role: authv1.Role_ROLE_ADMIN}
)

func rider(id string) *authv1.Caller { return &authv1.Caller{UserId: id, Role: authv1.Role_ROLE_RIDER} }
func driver(id string) *authv1.Caller {
	return &authv1.Caller{UserId: id, Role: authv1.Role_ROLE_DRIVER}
}

// request asks for a ride for riderID with a fresh key.
func (h *harness) request(riderID string) *ridesv1.Ride {
	h.t.Helper()
	return h.requestWith(&ridesv1.RequestRideRequest{Caller: rider(riderID), IdempotencyKey: "key-" + randomID(), Pickup: pickup, Dropoff: dropoff})
}

func (h *harness) requestWith(req *ridesv1.RequestRideRequest) *ridesv1.Ride {
	h.t.Helper()
	res, err := h.srv.RequestRide(h.ctx, connect.NewRequest(req))
	if err != nil {
		h.t.Fatalf("RequestRide: %v", err)
	}
	return res.Msg.GetRide()
}

// drive runs every due saga step.
func (h *harness) drive() {
	h.t.Helper()
	if err := h.saga.runDue(h.ctx); err != nil {
		h.t.Fatalf("saga: %v", err)
	}
}

func (h *harness) ride(id string) *Ride {
	h.t.Helper()
	r, err := h.store.get(h.ctx, id)
	if err != nil {
		h.t.Fatalf("get %s: %v", id, err)
	}
	return r
}

func (h *harness) wantStatus(id string, want Status) *Ride {
	h.t.Helper()
	r := h.ride(id)
	if r.status != want {
		h.t.Fatalf("ride %s is %s (%s), want %s; plan %v, last error %q", id, r.status, r.reason, want, r.plan.steps, r.plan.lastError)
	}
	return r
}

// event delivers a dispatch event the way the consumer does: in a
// transaction that also holds its applied-mark.
func (h *harness) event(typ string, msg proto.Message) error {
	payload, err := anypb.New(msg)
	if err != nil {
		h.t.Fatal(err)
	}
	env := &eventsv1.Envelope{Id: randomID(), Type: typ, Source: "dispatch", Payload: payload}
	return h.db.InTx(h.ctx, func(tx *sqldb.Tx) error { return h.saga.onSearchOutcome(h.ctx, tx, env) })
}

// searching requests a ride and drives it to searching with dispatch
// looking.
func (h *harness) searching(riderID string) string {
	h.t.Helper()
	id := h.request(riderID).GetId()
	h.drive()
	h.wantStatus(id, StatusSearching)
	if len(h.dispatch.searchesOf(id)) != 1 {
		h.t.Fatalf("dispatch has %d searches for the ride, want 1", len(h.dispatch.searchesOf(id)))
	}
	return id
}

// accept has driverID accept ride id through AcceptRide.
func (h *harness) accept(id, driverID string) (*ridesv1.Ride, error) {
	h.dispatch.offer(id, driverID)
	res, err := h.srv.AcceptRide(h.ctx, connect.NewRequest(&ridesv1.AcceptRideRequest{Caller: driver(driverID), RideId: id}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetRide(), nil
}

// assigned drives a new ride to driver_assigned with driverID.
func (h *harness) assigned(riderID, driverID string) string {
	h.t.Helper()
	id := h.searching(riderID)
	if _, err := h.accept(id, driverID); err != nil {
		h.t.Fatalf("accept: %v", err)
	}
	h.wantStatus(id, StatusDriverAssigned)
	return id
}

func (h *harness) arrive(id, driverID string) error {
	_, err := h.srv.ArriveRide(h.ctx, connect.NewRequest(&ridesv1.ArriveRideRequest{Caller: driver(driverID), RideId: id}))
	return err
}

func (h *harness) start(id, driverID string) error {
	_, err := h.srv.StartRide(h.ctx, connect.NewRequest(&ridesv1.StartRideRequest{Caller: driver(driverID), RideId: id}))
	return err
}

func (h *harness) complete(id, driverID string) error {
	_, err := h.srv.CompleteRide(h.ctx, connect.NewRequest(&ridesv1.CompleteRideRequest{Caller: driver(driverID), RideId: id}))
	return err
}

// trip runs the driver's steps from assigned to completed.
func (h *harness) trip(id, driverID string) {
	h.t.Helper()
	for _, f := range []func(string, string) error{h.arrive, h.start, h.complete} {
		if err := f(id, driverID); err != nil {
			h.t.Fatalf("trip of %s: %v", id, err)
		}
	}
}

func (h *harness) cancel(id string, c *authv1.Caller) (*ridesv1.Ride, error) {
	res, err := h.srv.CancelRide(h.ctx, connect.NewRequest(&ridesv1.CancelRideRequest{Caller: c, RideId: id}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetRide(), nil
}

func (h *harness) receipt(id string, c *authv1.Caller) (*ridesv1.Receipt, error) {
	res, err := h.srv.GetReceipt(h.ctx, connect.NewRequest(&ridesv1.GetReceiptRequest{Caller: c, RideId: id}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetReceipt(), nil
}

// statusEvents lists the RideStatusChanged events of a ride in the outbox,
// as "from>to".
func (h *harness) statusEvents(id string) []string {
	h.t.Helper()
	rows, err := h.db.Reader().QueryContext(h.ctx, `SELECT envelope FROM outbox WHERE subject = 'rides.ride.status_changed' ORDER BY id`)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			h.t.Fatal(err)
		}
		env := &eventsv1.Envelope{}
		ev := &ridesv1.RideStatusChanged{}
		if err := proto.Unmarshal(b, env); err != nil {
			h.t.Fatal(err)
		}
		if err := env.GetPayload().UnmarshalTo(ev); err != nil {
			h.t.Fatal(err)
		}
		if ev.GetRideId() == id {
			out = append(out, statusName(ev.GetFrom())+">"+statusName(ev.GetTo()))
		}
	}
	return out
}

func statusName(s ridesv1.RideStatus) string {
	for k, v := range statusProtos {
		if v == s {
			return string(k)
		}
	}
	return s.String()
}

func randomID() string { return uuid.NewString() }
