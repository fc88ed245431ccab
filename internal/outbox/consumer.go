package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/broker"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// Handler applies one event inside tx. Returning an error rolls back the
// effect and the applied-mark together, and the event is redelivered later;
// an apperr.Invalid error means the event can never apply and is dropped.
type Handler func(ctx context.Context, tx *sqldb.Tx, env *eventsv1.Envelope) error

// Subscription describes one durable consumer.
type Subscription struct {
	// Name is the durable consumer name, unique per purpose:
	// "<service>-<what>", e.g. "users-accounts".
	Name string
	// Owner is the service whose stream is read.
	Owner string
	// Types are the full event types (subjects) to receive.
	Types []string
	// Handle applies an event.
	Handle Handler
}

// redeliveryBackoff spaces out retries of an event whose handler failed, so a
// dependency that is down is not hammered by its own backlog.
var redeliveryBackoff = []time.Duration{
	100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second, 5 * time.Second, 15 * time.Second,
}

// Consumer applies events to one database exactly once per event id.
type Consumer struct {
	db      *sqldb.DB
	js      jetstream.JetStream
	log     *slog.Logger
	applied *prometheus.CounterVec
}

// NewConsumer applies events into db. reg may be nil.
func NewConsumer(db *sqldb.DB, js jetstream.JetStream, log *slog.Logger, reg prometheus.Registerer) *Consumer {
	if log == nil {
		log = slog.Default()
	}
	c := &Consumer{db: db, js: js, log: log,
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_events_consumed_total",
			Help: "Events received by a consumer, by result: applied, duplicate (already applied), retry, dropped.",
		}, []string{"consumer", "result"}),
	}
	if reg != nil {
		reg.MustRegister(c.applied)
	}
	return c
}

// Run consumes s until ctx ends.
func (c *Consumer) Run(ctx context.Context, s Subscription) error {
	cons, err := c.js.CreateOrUpdateConsumer(ctx, broker.StreamName(s.Owner), jetstream.ConsumerConfig{
		Durable:        s.Name,
		FilterSubjects: s.Types,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        30 * time.Second,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		MaxAckPending:  1024,
	})
	if err != nil {
		return fmt.Errorf("outbox: consumer %s: %w", s.Name, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) { c.handle(ctx, s, msg) },
		jetstream.PullMaxMessages(64),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			c.log.Debug("consumer pull", "consumer", s.Name, "err", err)
		}))
	if err != nil {
		return fmt.Errorf("outbox: consume %s: %w", s.Name, err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

func (c *Consumer) handle(ctx context.Context, s Subscription, msg jetstream.Msg) {
	env := &eventsv1.Envelope{}
	if err := proto.Unmarshal(msg.Data(), env); err != nil || env.Id == "" {
		c.log.Error("dropping malformed event", "consumer", s.Name, "subject", msg.Subject(), "err", err)
		c.applied.WithLabelValues(s.Name, "dropped").Inc()
		_ = msg.Term()
		return
	}
	ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": env.Traceparent})
	duplicate, err := c.apply(ctx, s, env)
	switch {
	case err == nil && duplicate:
		c.applied.WithLabelValues(s.Name, "duplicate").Inc()
		_ = msg.Ack()
	case err == nil:
		c.applied.WithLabelValues(s.Name, "applied").Inc()
		_ = msg.Ack()
	case apperr.Is(err, apperr.Invalid):
		c.log.Error("dropping event that can never apply", "consumer", s.Name, "event", env.Id, "type", env.Type, "err", err)
		c.applied.WithLabelValues(s.Name, "dropped").Inc()
		_ = msg.Term()
	default:
		delay := redeliveryBackoff[len(redeliveryBackoff)-1]
		if md, mErr := msg.Metadata(); mErr == nil && int(md.NumDelivered) <= len(redeliveryBackoff) {
			delay = redeliveryBackoff[md.NumDelivered-1]
		}
		c.log.Warn("event not applied; will retry", "consumer", s.Name, "event", env.Id, "type", env.Type, "err", err, "retry_in", delay)
		c.applied.WithLabelValues(s.Name, "retry").Inc()
		_ = msg.NakWithDelay(delay)
	}
}

// apply records the event id and runs the handler in one transaction, so
// either both happen or neither does.
func (c *Consumer) apply(ctx context.Context, s Subscription, env *eventsv1.Envelope) (duplicate bool, err error) {
	err = c.db.InTx(ctx, func(tx *sqldb.Tx) error {
		res, err := tx.ExecContext(ctx,
			`INSERT INTO processed_events (consumer, event_id, applied_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			s.Name, env.Id, sqldb.Micros(time.Now()))
		if err != nil {
			return fmt.Errorf("outbox: record %s: %w", env.Id, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			duplicate = true
			return nil
		}
		return s.Handle(ctx, tx, env)
	})
	return duplicate, err
}
