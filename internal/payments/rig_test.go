package payments

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	moneyv1 "github.com/rideshare-platform/rideshare/api/money/v1"
	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// rig is a payments service on a real database with the simulated network
// behind a fake that counts and breaks calls, and a clock the test moves.
type rig struct {
	t     testing.TB
	db    *sqldb.DB
	h     *handler
	pr    *processor
	net   *fakeNetwork
	card  *CardNetwork
	clock *testenv.Clock
}

var saga = &authv1.Caller{UserId: "rides", Role: authv1.Role_ROLE_SERVICE}

// newRig builds the service on a fresh SQLite database.
func newRig(t testing.TB) *rig {
	return rigOn(t, testenv.DB(t, Service.Migrations))
}

// rigOn builds the service on db, which must be migrated.
func rigOn(t testing.TB, db *sqldb.DB) *rig {
	card := NewCardNetwork(db, 0, 0)
	fn := &fakeNetwork{inner: card, calls: map[string]int{}}
	clk := testenv.NewClock(time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC))
	log := slog.New(slog.DiscardHandler)
	pr := newProcessor(db, outbox.New(db, "payments", outbox.Options{Logger: log}), fn, newMetrics(prometheus.NewRegistry()), log, 0)
	pr.now = clk.Now
	return &rig{t: t, db: db, h: &handler{pr: pr, log: log}, pr: pr, net: fn, card: card, clock: clk}
}

// restart is the process coming back after a crash: a new processor on the
// same database and network, without the crash hook.
func (r *rig) restart() {
	log := slog.New(slog.DiscardHandler)
	pr := newProcessor(r.db, r.pr.outbox, r.net, newMetrics(nil), log, 0)
	pr.now = r.clock.Now
	r.pr, r.h = pr, &handler{pr: pr, log: log}
}

// fakeNetwork wraps a Network: it counts calls by operation and can fail
// calls before they reach the network (the network is down) or after (it
// acted, but the answer was lost on the way back).
type fakeNetwork struct {
	inner Network

	mu         sync.Mutex
	calls      map[string]int
	failBefore int
	failAfter  int
}

var errNetworkDown = errors.New("connection refused")

func (f *fakeNetwork) before(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if f.failBefore > 0 {
		f.failBefore--
		return errNetworkDown
	}
	return nil
}

func (f *fakeNetwork) after(err error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil && f.failAfter > 0 {
		f.failAfter--
		return errors.New("read: connection reset by peer")
	}
	return err
}

func (f *fakeNetwork) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeNetwork) fail(before, after int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failBefore, f.failAfter = before, after
}

func (f *fakeNetwork) Authorize(ctx context.Context, key string, h Hold) (Authorization, error) {
	if err := f.before(opAuthorize); err != nil {
		return Authorization{}, err
	}
	a, err := f.inner.Authorize(ctx, key, h)
	return a, f.after(err)
}

func (f *fakeNetwork) Capture(ctx context.Context, key, authRef string, amount int64) (string, error) {
	if err := f.before(opCapture); err != nil {
		return "", err
	}
	ref, err := f.inner.Capture(ctx, key, authRef, amount)
	return ref, f.after(err)
}

func (f *fakeNetwork) Void(ctx context.Context, key, authRef string) (string, error) {
	if err := f.before(opVoid); err != nil {
		return "", err
	}
	ref, err := f.inner.Void(ctx, key, authRef)
	return ref, f.after(err)
}

func (f *fakeNetwork) Refund(ctx context.Context, key, authRef string, amount int64) (string, error) {
	if err := f.before(opRefund); err != nil {
		return "", err
	}
	ref, err := f.inner.Refund(ctx, key, authRef, amount)
	return ref, f.after(err)
}

func usd(n int64) *moneyv1.Money { return &moneyv1.Money{Amount: n, Currency: "USD"} }

func (r *rig) authorize(key, ride string, amount int64, method string) (*paymentsv1.Payment, error) {
	res, err := r.h.Authorize(context.Background(), connect.NewRequest(&paymentsv1.AuthorizeRequest{
		Caller: saga, IdempotencyKey: key, RideId: ride, RiderId: "rider-" + ride, Amount: usd(amount), PaymentMethod: method,
	}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetPayment(), nil
}

func (r *rig) capture(key, paymentID string, amount int64) (*paymentsv1.Payment, error) {
	res, err := r.h.Capture(context.Background(), connect.NewRequest(&paymentsv1.CaptureRequest{
		Caller: saga, IdempotencyKey: key, PaymentId: paymentID, Amount: usd(amount),
	}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetPayment(), nil
}

func (r *rig) void(key, paymentID string) (*paymentsv1.Payment, error) {
	res, err := r.h.Void(context.Background(), connect.NewRequest(&paymentsv1.VoidRequest{
		Caller: saga, IdempotencyKey: key, PaymentId: paymentID,
	}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetPayment(), nil
}

func (r *rig) refund(key, paymentID string, amount int64) (*paymentsv1.Payment, error) {
	res, err := r.h.Refund(context.Background(), connect.NewRequest(&paymentsv1.RefundRequest{
		Caller: saga, IdempotencyKey: key, PaymentId: paymentID, Amount: usd(amount),
	}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetPayment(), nil
}

// must fails the test when the call it wraps fails: must(t)(r.capture(…)).
func must(t testing.TB) func(*paymentsv1.Payment, error) *paymentsv1.Payment {
	return func(p *paymentsv1.Payment, err error) *paymentsv1.Payment {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
}

// ledgerOK fails the test unless the ledger checks out.
func (r *rig) ledgerOK() LedgerReport {
	r.t.Helper()
	rep, err := r.pr.store.checkLedger(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	if !rep.OK() {
		r.t.Fatalf("ledger check failed: debits %d credits %d unbalanced %v violations %v", rep.Debits, rep.Credits, rep.Unbalanced, rep.Violations)
	}
	return rep
}

// count runs a count(*) query.
func (r *rig) count(query string, args ...any) int {
	r.t.Helper()
	var n int
	if err := r.db.Reader().QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		r.t.Fatal(err)
	}
	return n
}

// events counts outbox events of a type, e.g. "payment.captured".
func (r *rig) events(typ string) int {
	return r.count(`SELECT count(*) FROM outbox WHERE subject = $1`, "payments."+typ)
}

// ledgerTxs counts ledger transactions of a kind for a payment.
func (r *rig) ledgerTxs(paymentID, kind string) int {
	return r.count(`SELECT count(*) FROM ledger_transactions WHERE payment_id = $1 AND kind = $2`, paymentID, kind)
}

// networkOps counts what the card network did, by operation.
func (r *rig) networkOps(op string) int {
	return r.count(`SELECT count(*) FROM cardnet_operations WHERE operation = $1`, op)
}
