package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

const (
	batchSize = 256
	// pollInterval bounds how late an event is relayed when the in-process
	// wake-up was missed (another replica wrote it, or the relay was down).
	pollInterval = time.Second
	ackTimeout   = 5 * time.Second
	// sentRetention keeps sent rows for inspection and replay drills, then
	// prunes them; processedRetention outlives the streams' one-week MaxAge
	// so any message the broker can still redeliver is still recognised.
	sentRetention      = 24 * time.Hour
	processedRetention = 8 * 24 * time.Hour
	pruneEvery         = 10 * time.Minute
)

// Relay publishes unsent events until ctx ends. It survives broker outages
// by retrying with backoff; events wait in the table meanwhile. Safe to run
// after a crash at any point: an event published but not marked is published
// again under the same Nats-Msg-Id, and consumers apply it once regardless.
func (o *Outbox) Relay(ctx context.Context, js jetstream.JetStream) error {
	backoff := 100 * time.Millisecond
	var lastPrune time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		n, err := o.relayBatch(ctx, js)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			o.metrics.relayErrors.Inc()
			o.log.Warn("outbox relay failed; will retry", "err", err, "retry_in", backoff)
			timer.Reset(backoff)
			backoff = min(backoff*2, 5*time.Second)
		case n == batchSize:
			backoff = 100 * time.Millisecond
			continue // more are waiting
		default:
			backoff = 100 * time.Millisecond
			if time.Since(lastPrune) > pruneEvery {
				if err := o.prune(ctx); err != nil {
					o.log.Warn("outbox prune failed", "err", err)
				}
				lastPrune = time.Now()
			}
			timer.Reset(pollInterval)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-o.wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-timer.C:
		}
	}
}

type pending struct {
	id, subject string
	envelope    []byte
}

// querier is a pool or a transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// relayBatch publishes up to batchSize unsent events, asynchronously so the
// acknowledgements overlap, and marks the acknowledged ones sent.
//
// How replicas share one outbox depends on the engine:
//
//   - PostgreSQL: the batch is claimed with SELECT … FOR UPDATE SKIP LOCKED
//     in a transaction that stays open while the broker acknowledges and
//     then marks the rows sent, so two relays never publish the same row:
//     another relay skips the claimed rows and takes the next ones. A row
//     lock rather than a lease column: it needs no clock, no schema change
//     and no expiry to tune, and a relay that dies mid-batch loses its
//     connection, which ends the transaction and frees its rows at once. The
//     cost is one connection held for up to ackTimeout per relay. Two relays
//     may publish neighbouring batches out of order; events were never
//     ordered across replicas, and consumers do not rely on order.
//   - SQLite: every relay reads the unsent rows without a claim, as before.
//     SQLite locks the whole database for a write, so holding a claim
//     across the broker's round trip would stall every other write of the
//     service, in every process, for that long; and a laptop's replicas
//     publishing the same row now and then costs only work, since the
//     broker drops a repeated Nats-Msg-Id and consumers apply an event once.
func (o *Outbox) relayBatch(ctx context.Context, js jetstream.JetStream) (int, error) {
	if o.db.Dialect != sqldb.Postgres {
		batch, err := readUnsent(ctx, o.db.Reader(), "")
		if err != nil || len(batch) == 0 {
			return 0, err
		}
		acked, failed := o.publish(ctx, js, batch)
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if len(acked) > 0 {
			if err := o.beforeMarking(); err != nil {
				return 0, err
			}
			if err := o.db.InTx(ctx, func(tx *sqldb.Tx) error { return markSent(ctx, tx, acked) }); err != nil {
				return 0, err
			}
			o.metrics.published.Add(float64(len(acked)))
		}
		return len(acked), failed
	}

	var acked []string
	var failed error
	err := o.db.InTx(ctx, func(tx *sqldb.Tx) error {
		batch, err := readUnsent(ctx, tx, " FOR UPDATE SKIP LOCKED")
		if err != nil || len(batch) == 0 {
			return err
		}
		acked, failed = o.publish(ctx, js, batch)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if len(acked) == 0 {
			return nil
		}
		if err := o.beforeMarking(); err != nil {
			return err
		}
		return markSent(ctx, tx, acked)
	})
	if err != nil {
		return 0, err
	}
	o.metrics.published.Add(float64(len(acked)))
	return len(acked), failed
}

// readUnsent reads the oldest unsent events; lock is appended to the query.
func readUnsent(ctx context.Context, q querier, lock string) ([]pending, error) {
	rows, err := q.QueryContext(ctx,
		`SELECT id, subject, envelope FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1`+lock, batchSize)
	if err != nil {
		return nil, fmt.Errorf("outbox: read: %w", err)
	}
	defer rows.Close()
	var batch []pending
	for rows.Next() {
		var p pending
		if err := rows.Scan(&p.id, &p.subject, &p.envelope); err != nil {
			return nil, fmt.Errorf("outbox: scan: %w", err)
		}
		batch = append(batch, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: read: %w", err)
	}
	return batch, nil
}

// publish sends batch and waits for the broker's acknowledgements; acked
// are the ids it stored (or recognised as duplicates).
func (o *Outbox) publish(ctx context.Context, js jetstream.JetStream, batch []pending) (acked []string, failed error) {
	futures := make([]jetstream.PubAckFuture, len(batch))
	for i, p := range batch {
		msg := &nats.Msg{Subject: p.subject, Data: p.envelope, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, p.id)
		f, err := js.PublishMsgAsync(msg)
		if err != nil {
			futures = futures[:i]
			break
		}
		futures[i] = f
	}
	acked = make([]string, 0, len(futures))
	actx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
wait:
	for i, f := range futures {
		select {
		case <-f.Ok():
			acked = append(acked, batch[i].id)
		case err := <-f.Err():
			failed = errors.Join(failed, fmt.Errorf("publish %s: %w", batch[i].subject, err))
		case <-actx.Done():
			// What is left unmarked is published again next round under the
			// same Nats-Msg-Id; nothing is lost by giving up here.
			failed = errors.Join(failed, fmt.Errorf("outbox: broker acknowledgement: %w", actx.Err()))
			break wait
		}
	}
	if failed == nil && len(futures) < len(batch) {
		failed = errors.New("outbox: broker refused to publish")
	}
	return acked, failed
}

// beforeMarking runs the test hook, if any.
func (o *Outbox) beforeMarking() error {
	if o.beforeMark != nil {
		return o.beforeMark()
	}
	return nil
}

// markSent marks ids sent in tx.
func markSent(ctx context.Context, tx *sqldb.Tx, ids []string) error {
	var q strings.Builder
	q.WriteString(`UPDATE outbox SET sent_at = $1 WHERE id IN (`)
	args := make([]any, 0, len(ids)+1)
	args = append(args, sqldb.Micros(time.Now()))
	for i, id := range ids {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteString("$" + strconv.Itoa(i+2))
		args = append(args, id)
	}
	q.WriteByte(')')
	if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
		return fmt.Errorf("outbox: mark sent: %w", err)
	}
	return nil
}

func (o *Outbox) prune(ctx context.Context) error {
	now := time.Now()
	return o.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1`,
			sqldb.Micros(now.Add(-sentRetention))); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM processed_events WHERE applied_at < $1`,
			sqldb.Micros(now.Add(-processedRetention)))
		return err
	})
}
