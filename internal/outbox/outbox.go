// Package outbox makes "change state and announce it" one atomic act. Append
// writes events into the service's own database in the caller's transaction;
// the relay publishes them to JetStream with the event id as Nats-Msg-Id and
// marks them sent, resuming after any crash; consumers apply each event once by
// recording its id in the same transaction as its effect.
package outbox

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are the outbox and processed-event tables; every service that
// publishes or consumes applies them, recorded under MigrationTable.
func Migrations() fs.FS { return sqldb.Sub(migrations, "migrations") }

// MigrationTable records the outbox schema's version, apart from the
// service's own.
const MigrationTable = "outbox_migrations"

// Event is one domain event to announce.
type Event struct {
	// Type is the name within the source, e.g. "ride.requested"; the full
	// type and NATS subject become "<source>.ride.requested".
	Type string
	// Key is the aggregate the event is about (a ride id, an account id).
	Key string
	// Payload is the event body.
	Payload proto.Message
	// Version is the payload's schema version; 0 means 1.
	Version uint32
}

// Outbox appends a service's events and relays them.
type Outbox struct {
	db      *sqldb.DB
	source  string
	log     *slog.Logger
	wake    chan struct{}
	metrics *metrics

	// beforeMark, when set, runs after the broker acknowledged a batch and
	// before it is marked sent: tests use it to crash the relay exactly there.
	beforeMark func() error
}

// Options configure an Outbox.
type Options struct {
	Logger  *slog.Logger
	Metrics prometheus.Registerer
}

// New is the outbox of source (the owning service's name) in db.
func New(db *sqldb.DB, source string, o Options) *Outbox {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	ob := &Outbox{db: db, source: source, log: log, wake: make(chan struct{}, 1)}
	ob.metrics = newMetrics(ob, o.Metrics)
	return ob
}

// Append writes events in tx. They reach the broker only if tx commits, and
// then the relay is woken at once rather than at its next poll.
func (o *Outbox) Append(ctx context.Context, tx *sqldb.Tx, events ...Event) error {
	now := time.Now()
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	for _, ev := range events {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("outbox: event id: %w", err)
		}
		payload, err := anypb.New(ev.Payload)
		if err != nil {
			return fmt.Errorf("outbox: %s payload: %w", ev.Type, err)
		}
		version := ev.Version
		if version == 0 {
			version = 1
		}
		env := &eventsv1.Envelope{
			Id:            id.String(),
			Type:          o.source + "." + ev.Type,
			Source:        o.source,
			Key:           ev.Key,
			Time:          timestamppb.New(now),
			Traceparent:   carrier.Get("traceparent"),
			SchemaVersion: version,
			Payload:       payload,
		}
		data, err := proto.Marshal(env)
		if err != nil {
			return fmt.Errorf("outbox: %s: %w", env.Type, err)
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO outbox (id, subject, envelope, created_at) VALUES ($1, $2, $3, $4)`,
			env.Id, env.Type, data, sqldb.Micros(now)); err != nil {
			return fmt.Errorf("outbox: append %s: %w", env.Type, err)
		}
	}
	tx.OnCommit(o.notify)
	return nil
}

func (o *Outbox) notify() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Backlog is the number of events not yet acknowledged by the broker.
func (o *Outbox) Backlog(ctx context.Context) (int, error) {
	var n int
	err := o.db.Reader().QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE sent_at IS NULL`).Scan(&n)
	return n, err
}
