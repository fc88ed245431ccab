package payments

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"

	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// processor runs the write operations, each idempotent by key and safe
// against a crash at any point. An operation takes three steps and never
// holds a transaction across the network:
//
//  1. begin (one transaction): find the idempotency key and replay its
//     response, refuse it (reused for another request, or still running),
//     or record it together with the intent on the payment (Payment.Pending),
//     leased to this attempt;
//  2. call the network with a key derived from the payment, so a repeated
//     call gets the same answer and moves no money twice;
//  3. finish (one transaction): the payment's new state, its ledger
//     transaction, its event (through the outbox) and the key's response.
//
// A crash between 1 and 3 leaves the key pending. Once its lease runs out,
// a retry with the same key (or the recovery worker) repeats 2 and does 3;
// step 3 applies only while the payment is still pending for that very
// request, so it happens exactly once however many attempts race.
type processor struct {
	store   *store
	outbox  *outbox.Outbox
	network Network
	metrics *metrics
	log     *slog.Logger
	now     func() time.Time

	// callTimeout bounds one network call when the caller set no shorter
	// deadline (the recovery worker has none).
	callTimeout time.Duration
	// lease is how long an attempt owns a pending key: longer than any
	// attempt can run (call plus record), so a live attempt is never
	// taken over, yet a dead one is resumed soon after.
	lease time.Duration

	// afterNetwork, when set, runs after the network answered and before
	// the answer is recorded. Tests make it fail to play the process dying
	// at the worst moment: money moved, nothing recorded.
	afterNetwork func(op string) error
}

// recordTimeout bounds step 3, which runs even when the caller has stopped
// waiting: the money has moved, so the record must be written now rather
// than by a later retry.
const recordTimeout = 5 * time.Second

func newProcessor(db *sqldb.DB, ob *outbox.Outbox, n Network, m *metrics, log *slog.Logger, latency time.Duration) *processor {
	if log == nil {
		log = slog.Default()
	}
	call := 10*time.Second + latency
	return &processor{
		store: &store{db: db}, outbox: ob, network: n, metrics: m, log: log,
		now:         func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
		callTimeout: call,
		lease:       call + recordTimeout + 5*time.Second,
	}
}

// write is one idempotent write request.
type write struct {
	op  string
	req keyedRequest
	// start checks the request against the stored state and records the
	// intent (Payment.Pending, named by requestID), in tx. It runs only for
	// a new key. It returns the payment's id.
	start func(ctx context.Context, tx *sqldb.Tx, requestID string, now time.Time) (string, error)
}

// run performs w once per idempotency key.
func (pr *processor) run(ctx context.Context, w write) (*paymentsv1.Payment, error) {
	rec, replay, err := pr.begin(ctx, w)
	switch {
	case err != nil:
		pr.metrics.count(w.op, resultOf(err))
		return nil, err
	case replay != nil:
		pr.metrics.count(w.op, resultReplayed)
		return replay, nil
	}
	out, result, err := pr.complete(ctx, rec)
	if err != nil {
		result = resultError
	}
	pr.metrics.count(w.op, result)
	return out, err
}

// resultOf classifies a refusal for the metrics: the caller's fault or
// state it must respect, versus a fault of ours.
func resultOf(err error) string {
	switch apperr.KindOf(err) {
	case apperr.Invalid, apperr.NotFound, apperr.Conflict, apperr.Unprocessable, apperr.Forbidden:
		return resultRejected
	}
	return resultError
}

// begin is step 1. It returns the leased key of an operation to complete,
// or the stored response of a finished one.
func (pr *processor) begin(ctx context.Context, w write) (keyRecord, *paymentsv1.Payment, error) {
	hash, err := requestHash(w.req)
	if err != nil {
		return keyRecord{}, nil, fmt.Errorf("payments: hash request: %w", err)
	}
	scope, key := scopeOf(w.req.GetCaller()), w.req.GetIdempotencyKey()
	for attempt := 0; ; attempt++ {
		var rec keyRecord
		var replay *paymentsv1.Payment
		err := pr.store.db.InTx(ctx, func(tx *sqldb.Tx) error {
			now := pr.now()
			found, ok, err := pr.store.key(ctx, tx, scope, w.op, key)
			if err != nil {
				return err
			}
			if ok {
				switch {
				case found.Hash != hash:
					return apperr.E(apperr.Unprocessable, "idempotency_key_reused", "idempotency_key %q was already used for a different %s request", key, w.op)
				case found.Response != nil:
					replay, err = decodeResponse(found.Response)
					return err
				case found.LockedUntil.After(now):
					return apperr.E(apperr.Conflict, "request_in_progress", "a %s with this idempotency_key is still in progress; retry later", w.op)
				}
				// The attempt that recorded it died or failed without an
				// answer: this one takes over and finishes it.
				taken, err := pr.store.lease(ctx, tx, found.ID, found.LockedUntil, now.Add(pr.lease))
				if err != nil {
					return err
				}
				if !taken {
					return apperr.E(apperr.Conflict, "request_in_progress", "a %s with this idempotency_key is still in progress; retry later", w.op)
				}
				rec = found
				return nil
			}
			rec = keyRecord{ID: newID(), Scope: scope, Op: w.op, Key: key, Hash: hash, LockedUntil: now.Add(pr.lease), CreatedAt: now}
			if rec.PaymentID, err = w.start(ctx, tx, rec.ID, now); err != nil {
				return err
			}
			return pr.store.insertKey(ctx, tx, rec)
		})
		// Two first attempts with one key racing (PostgreSQL runs them in
		// parallel) meet on a unique index, or the loser, having seen no key,
		// then sees the winner's committed payment and refuses it as a
		// conflict. Either way it looks again, once: now it finds the key and
		// answers as a retry (the first response, or "in progress").
		if err != nil && attempt == 0 && (sqldb.IsUniqueViolation(err) || apperr.Is(err, apperr.Conflict)) {
			continue
		}
		return rec, replay, err
	}
}

// netResult is the network's answer to a pending operation.
type netResult struct {
	auth Authorization // for an authorization
	ref  string        // the network's reference of the movement
}

// complete does steps 2 and 3 for a leased pending key.
func (pr *processor) complete(ctx context.Context, rec keyRecord) (*paymentsv1.Payment, string, error) {
	p, err := pr.store.payment(ctx, pr.store.db.Reader(), rec.PaymentID)
	if err != nil {
		return nil, "", err
	}
	if p.Pending.RequestID != rec.ID {
		// Another attempt finished it between our lease and now.
		return pr.recorded(ctx, pr.store.db.Reader(), rec.ID)
	}
	res, err := pr.call(ctx, p)
	if err != nil {
		pr.releaseAfter(ctx, rec, err)
		return nil, "", networkError(err)
	}
	if pr.afterNetwork != nil {
		if err := pr.afterNetwork(rec.Op); err != nil {
			return nil, "", err
		}
	}

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	var out *paymentsv1.Payment
	var result string
	err = pr.store.db.InTx(rctx, func(tx *sqldb.Tx) error {
		cur, err := pr.store.payment(rctx, tx, p.ID)
		if err != nil {
			return err
		}
		if cur.Pending.RequestID != rec.ID {
			out, result, err = pr.recorded(rctx, tx, rec.ID)
			return err
		}
		next, ps, ev := cur.settle(res, pr.now())
		if err := pr.store.save(rctx, tx, next); err != nil {
			return err
		}
		if ps != nil {
			if err := pr.store.post(rctx, tx, next.ID, res.ref, *ps, next.UpdatedAt); err != nil {
				return err
			}
		}
		if err := pr.outbox.Append(rctx, tx, ev); err != nil {
			return err
		}
		out = next.toProto()
		body, err := proto.Marshal(out)
		if err != nil {
			return err
		}
		result = resultOK
		switch {
		case next.Status == Declined:
			result = resultDeclined
		case rec.Op == opAuthorize:
			result = resultApproved
		}
		return pr.store.completeKey(rctx, tx, rec.ID, body)
	})
	if err != nil {
		pr.log.Error("payments: recording a network answer failed; a retry or the recovery worker will finish it",
			"op", rec.Op, "payment_id", p.ID, "request_id", rec.ID, "err", err)
		return nil, "", err
	}
	if result == resultDeclined {
		pr.metrics.declines.WithLabelValues(out.GetDeclineReason()).Inc()
	}
	return out, result, nil
}

// recorded is the response another attempt stored for request id.
func (pr *processor) recorded(ctx context.Context, q querier, id string) (*paymentsv1.Payment, string, error) {
	k, err := pr.store.keyByID(ctx, q, id)
	if err != nil {
		return nil, "", err
	}
	if k.Response == nil {
		return nil, "", fmt.Errorf("payments: request %s is pending but its payment %s is not", id, k.PaymentID)
	}
	out, err := decodeResponse(k.Response)
	return out, resultReplayed, err
}

// call is step 2.
func (pr *processor) call(ctx context.Context, p Payment) (res netResult, err error) {
	ctx, cancel := context.WithTimeout(ctx, pr.callTimeout)
	defer cancel()
	start := time.Now()
	defer func() { pr.metrics.network.WithLabelValues(p.Pending.Op).Observe(time.Since(start).Seconds()) }()
	key := networkKey(p)
	switch p.Pending.Op {
	case opAuthorize:
		res.auth, err = pr.network.Authorize(ctx, key, Hold{RiderID: p.RiderID, PaymentMethod: p.PaymentMethod, Currency: p.Currency, Amount: p.Authorized})
		res.ref = res.auth.Ref
	case opCapture:
		res.ref, err = pr.network.Capture(ctx, key, p.AuthRef, p.Pending.Amount)
	case opVoid:
		res.ref, err = pr.network.Void(ctx, key, p.AuthRef)
	case opRefund:
		res.ref, err = pr.network.Refund(ctx, key, p.AuthRef, p.Pending.Amount)
	default:
		err = fmt.Errorf("payments: payment %s has no pending operation", p.ID)
	}
	return res, err
}

// networkKey is the network's idempotency key for p's pending operation.
// It names the payment, not the caller's key: whatever keys callers use,
// the network sees one authorization, one capture or void per payment, and
// one key per refund.
func networkKey(p Payment) string {
	if p.Pending.Op == opRefund {
		return opRefund + ":" + p.Pending.RequestID
	}
	return p.Pending.Op + ":" + p.ID
}

// releaseAfter ends the lease of an attempt that got no answer, so the
// caller's retry proceeds at once instead of waiting out the lease.
func (pr *processor) releaseAfter(ctx context.Context, rec keyRecord, cause error) {
	pr.log.Warn("payments: card network call failed; the operation stays pending until retried", "op", rec.Op, "payment_id", rec.PaymentID, "err", cause)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := pr.store.db.InTx(rctx, func(tx *sqldb.Tx) error { return pr.store.release(rctx, tx, rec.ID) }); err != nil {
		pr.log.Warn("payments: releasing an idempotency key failed; it is retried when its lease ends", "request_id", rec.ID, "err", err)
	}
}

// networkError is how a failed network call reaches the caller: "payments
// cannot answer now, retry with the same key", never a decline.
func networkError(err error) error {
	switch {
	case apperr.CodeOf(err) == "network_refused":
		// The network refused what our own books allowed: a bug, not a
		// condition a caller can fix.
		return apperr.Wrap(err, apperr.Internal, "", "the card network refused the operation")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return err
	}
	return apperr.Wrap(err, apperr.Unavailable, "network_unavailable", "the card network did not answer; retry with the same idempotency_key")
}

func decodeResponse(b []byte) (*paymentsv1.Payment, error) {
	var p paymentsv1.Payment
	if err := proto.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("payments: stored response: %w", err)
	}
	return &p, nil
}

// The operations.

func (pr *processor) authorize(ctx context.Context, m *paymentsv1.AuthorizeRequest) (*paymentsv1.Payment, error) {
	return pr.run(ctx, write{op: opAuthorize, req: m, start: func(ctx context.Context, tx *sqldb.Tx, requestID string, now time.Time) (string, error) {
		switch existing, err := pr.store.paymentByRide(ctx, tx, m.GetRideId()); {
		case err == nil:
			return "", apperr.E(apperr.Conflict, "payment_exists", "ride %s already has payment %s", m.GetRideId(), existing.ID)
		case !apperr.Is(err, apperr.NotFound):
			return "", err
		}
		p := Payment{
			ID: newID(), RideID: m.GetRideId(), RiderID: m.GetRiderId(),
			Currency: m.GetAmount().GetCurrency(), Authorized: m.GetAmount().GetAmount(),
			Status: Authorizing, PaymentMethod: m.GetPaymentMethod(),
			Pending:   Pending{Op: opAuthorize, RequestID: requestID, Amount: m.GetAmount().GetAmount()},
			CreatedAt: now, UpdatedAt: now,
		}
		return p.ID, pr.store.insertPayment(ctx, tx, p)
	}})
}

func (pr *processor) capture(ctx context.Context, m *paymentsv1.CaptureRequest) (*paymentsv1.Payment, error) {
	return pr.run(ctx, write{op: opCapture, req: m, start: func(ctx context.Context, tx *sqldb.Tx, requestID string, now time.Time) (string, error) {
		p, err := pr.store.payment(ctx, tx, m.GetPaymentId())
		if err != nil {
			return "", err
		}
		if err := p.checkCapture(m.GetAmount()); err != nil {
			return "", err
		}
		return p.ID, pr.store.startPending(ctx, tx, p, Pending{Op: opCapture, RequestID: requestID, Amount: m.GetAmount().GetAmount()}, now)
	}})
}

func (pr *processor) void(ctx context.Context, m *paymentsv1.VoidRequest) (*paymentsv1.Payment, error) {
	return pr.run(ctx, write{op: opVoid, req: m, start: func(ctx context.Context, tx *sqldb.Tx, requestID string, now time.Time) (string, error) {
		p, err := pr.store.payment(ctx, tx, m.GetPaymentId())
		if err != nil {
			return "", err
		}
		if err := p.checkVoid(); err != nil {
			return "", err
		}
		return p.ID, pr.store.startPending(ctx, tx, p, Pending{Op: opVoid, RequestID: requestID}, now)
	}})
}

func (pr *processor) refund(ctx context.Context, m *paymentsv1.RefundRequest) (*paymentsv1.Payment, error) {
	return pr.run(ctx, write{op: opRefund, req: m, start: func(ctx context.Context, tx *sqldb.Tx, requestID string, now time.Time) (string, error) {
		p, err := pr.store.payment(ctx, tx, m.GetPaymentId())
		if err != nil {
			return "", err
		}
		if err := p.checkRefund(m.GetAmount()); err != nil {
			return "", err
		}
		return p.ID, pr.store.startPending(ctx, tx, p, Pending{Op: opRefund, RequestID: requestID, Amount: m.GetAmount().GetAmount()}, now)
	}})
}

// recoverPending finishes operations left pending by an attempt that died
// or got no answer from the network, once their lease has run out, so that
// a hold placed for a caller that gave up is still recorded (and can then
// be voided) without waiting for that caller to retry.
func (pr *processor) recoverPending(ctx context.Context) (int, error) {
	now := pr.now()
	keys, err := pr.store.stale(ctx, now, 100)
	if err != nil {
		return 0, err
	}
	done := 0
	for _, k := range keys {
		var taken bool
		err := pr.store.db.InTx(ctx, func(tx *sqldb.Tx) (err error) {
			taken, err = pr.store.lease(ctx, tx, k.ID, k.LockedUntil, now.Add(pr.lease))
			return err
		})
		if err != nil {
			return done, err
		}
		if !taken {
			continue // a retry got there first
		}
		out, result, err := pr.complete(ctx, k)
		if err != nil {
			pr.log.Warn("payments: recovering a pending operation failed; will retry", "op", k.Op, "payment_id", k.PaymentID, "err", err)
			continue
		}
		pr.metrics.count(k.Op, result)
		pr.metrics.recovered.Inc()
		pr.log.Info("payments: recovered a pending operation", "op", k.Op, "payment_id", k.PaymentID, "status", out.GetStatus().String())
		done++
	}
	return done, nil
}

// purge forgets finished idempotency keys older than keyRetention.
func (pr *processor) purge(ctx context.Context) (n int64, err error) {
	err = pr.store.db.InTx(ctx, func(tx *sqldb.Tx) error {
		n, err = pr.store.purgeKeys(ctx, tx, pr.now().Add(-keyRetention))
		return err
	})
	return n, err
}

// runRecovery is the background worker: recover every interval, purge old
// keys every hour.
func (pr *processor) runRecovery(ctx context.Context, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var purged time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if _, err := pr.recoverPending(ctx); err != nil && ctx.Err() == nil {
			pr.log.Warn("payments: recovery round failed", "err", err)
		}
		if time.Since(purged) > time.Hour {
			if n, err := pr.purge(ctx); err != nil {
				pr.log.Warn("payments: purging idempotency keys failed", "err", err)
			} else {
				purged = time.Now()
				pr.log.Debug("payments: purged idempotency keys", "count", n)
			}
		}
	}
}
