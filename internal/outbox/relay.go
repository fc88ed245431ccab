package outbox

import (
	"context"
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

// relayBatch publishes up to batchSize unsent events, asynchronously so the
// acknowledgements overlap, and marks the acknowledged ones sent.
func (o *Outbox) relayBatch(ctx context.Context, js jetstream.JetStream) (int, error) {
	rows, err := o.db.Reader().QueryContext(ctx,
		`SELECT id, subject, envelope FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1`, batchSize)
	if err != nil {
		return 0, fmt.Errorf("outbox: read: %w", err)
	}
	var batch []pending
	for rows.Next() {
		var p pending
		if err := rows.Scan(&p.id, &p.subject, &p.envelope); err != nil {
			rows.Close()
			return 0, fmt.Errorf("outbox: scan: %w", err)
		}
		batch = append(batch, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(batch) == 0 {
		return 0, err
	}

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
	acked := make([]string, 0, len(futures))
	var failed error
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
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if len(acked) > 0 {
		if o.beforeMark != nil {
			if err := o.beforeMark(); err != nil {
				return 0, err
			}
		}
		if err := o.markSent(ctx, acked); err != nil {
			return 0, err
		}
		o.metrics.published.Add(float64(len(acked)))
	}
	if failed == nil && len(futures) < len(batch) {
		failed = errors.New("outbox: broker refused to publish")
	}
	return len(acked), failed
}

func (o *Outbox) markSent(ctx context.Context, ids []string) error {
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
	return o.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("outbox: mark sent: %w", err)
		}
		return nil
	})
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
