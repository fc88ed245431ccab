package outbox_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	"github.com/rideshare-platform/rideshare/internal/broker"
	. "github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// appliedSchema is the consumer side's own table: how many times each event's
// effect was applied.
var appliedSchema = fstest.MapFS{"00001_applied.sql": {Data: []byte(`
-- +goose Up
CREATE TABLE applied (event_id TEXT PRIMARY KEY, times BIGINT NOT NULL);
-- +goose Down
DROP TABLE applied;
`)}}

func appendAccounts(t *testing.T, ctx context.Context, db *sqldb.DB, ob *Outbox, n int) {
	t.Helper()
	for i := range n {
		err := db.InTx(ctx, func(tx *sqldb.Tx) error {
			return ob.Append(ctx, tx, Event{Type: "account.created", Key: "acc", Payload: &identityv1.AccountCreated{
				AccountId: "acc", Email: "a@example.com", Role: authv1.Role_ROLE_RIDER, Name: string(rune('A' + i)),
			}})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// errCodeWrongLastMsgID is the broker's refusal of a publish whose expected
// last message id is not the stream's.
const errCodeWrongLastMsgID jetstream.ErrorCode = 10070

// unsent lists the outbox's unsent events: the ids they are published
// under, and their subjects.
func unsent(t *testing.T, ctx context.Context, db *sqldb.DB) []struct{ id, subject string } {
	t.Helper()
	rows, err := db.Reader().QueryContext(ctx, `SELECT id, subject FROM outbox WHERE sent_at IS NULL ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []struct{ id, subject string }
	for rows.Next() {
		var m struct{ id, subject string }
		if err := rows.Scan(&m.id, &m.subject); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRelayCrashBetweenPublishAndMark kills the relay after the broker
// acknowledged a batch but before it was marked sent, waits until the broker
// has forgotten the message ids, and relays again: the stream now holds every
// event twice, and the consumer still applies each exactly once.
func TestRelayCrashBetweenPublishAndMark(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := testenv.Broker(t)
	_, js := testenv.Connect(t, srv)
	cfg := broker.StreamConfig("identity", 1)
	cfg.Duplicates = 200 * time.Millisecond // short, so the test outlives it
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	producerDB := testenv.DB(t, nil)
	ob := New(producerDB, "identity", Options{})
	const events = 10
	appendAccounts(t, ctx, producerDB, ob, events)

	errCrash := errors.New("relay killed")
	ob.CrashBeforeMark(errCrash)
	if _, err := ob.RelayOnce(ctx, js); !errors.Is(err, errCrash) {
		t.Fatalf("first relay: got %v, want the crash", err)
	}
	if n, _ := ob.Backlog(ctx); n != events {
		t.Fatalf("after the crash: backlog %d, want %d (published but not marked)", n, events)
	}
	// The only way to get past the broker's deduplication is to wait out
	// its window: that is the point of this test.
	time.Sleep(2 * cfg.Duplicates)
	// The broker forgets an id only when its purge timer runs, which a busy
	// machine can delay past any fixed wait, and an id still remembered
	// would be dropped as a duplicate and leave the stream short. A probe
	// under an event's id that expects a last message id no message has is
	// answered as a duplicate while the id is remembered, and refused
	// (stored nowhere) once it is forgotten.
	relayed := unsent(t, ctx, producerDB)
	testenv.Eventually(t, 10*time.Second, func() bool {
		for _, m := range relayed {
			_, err := js.Publish(ctx, m.subject, nil, jetstream.WithMsgID(m.id), jetstream.WithExpectLastMsgID("no-such-message"))
			var apiErr *jetstream.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeWrongLastMsgID {
				return false
			}
		}
		return true
	}, "the broker still remembers the ids of the %d relayed events", len(relayed))

	ob.CrashBeforeMark(nil)
	rctx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan struct{})
	go func() { defer close(relayDone); _ = ob.Relay(rctx, js) }()
	testenv.Eventually(t, 10*time.Second, func() bool { n, _ := ob.Backlog(ctx); return n == 0 }, "the relay did not drain the outbox")
	stopRelay()
	<-relayDone

	stream, err := js.Stream(ctx, cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2*events {
		t.Fatalf("stream holds %d messages, want %d: every event delivered twice", info.State.Msgs, 2*events)
	}

	consumerDB := testenv.DB(t, appliedSchema)
	var deliveries atomic.Int64
	c := NewConsumer(consumerDB, js, nil, nil)
	cctx, stopConsumer := context.WithCancel(ctx)
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		_ = c.Run(cctx, Subscription{
			Name: "test-accounts", Owner: "identity", Types: []string{"identity.account.created"},
			Handle: func(ctx context.Context, tx *sqldb.Tx, env *eventsv1.Envelope) error {
				deliveries.Add(1)
				_, err := tx.ExecContext(ctx, `INSERT INTO applied (event_id, times) VALUES ($1, 1)
					ON CONFLICT (event_id) DO UPDATE SET times = applied.times + 1`, env.Id)
				return err
			},
		})
	}()
	testenv.Eventually(t, 10*time.Second, func() bool {
		cons, err := js.Consumer(ctx, cfg.Name, "test-accounts")
		if err != nil {
			return false
		}
		ci, err := cons.Info(ctx)
		return err == nil && ci.AckFloor.Stream == 2*events && ci.NumAckPending == 0
	}, "the consumer did not acknowledge all %d deliveries", 2*events)
	stopConsumer()
	<-consumerDone

	var distinct, total int64
	if err := consumerDB.Reader().QueryRowContext(ctx, `SELECT count(*), coalesce(sum(times), 0) FROM applied`).Scan(&distinct, &total); err != nil {
		t.Fatal(err)
	}
	if distinct != events || total != events {
		t.Fatalf("applied %d distinct events %d times in all; want each of %d exactly once", distinct, total, events)
	}
	if got := deliveries.Load(); got != events {
		t.Fatalf("handler ran %d times; duplicates must be recognised before it runs (want %d)", got, events)
	}
	t.Logf("%d events, %d deliveries, each applied once", events, 2*events)
}

// TestRelayWaitsOutBrokerOutage: events written while the broker is down
// stay in the outbox and reach the stream once it is back.
func TestRelayWaitsOutBrokerOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := testenv.Broker(t)
	url := broker.URL(srv)
	_, js := testenv.Connect(t, srv)
	if err := broker.EnsureStreams(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	db := testenv.DB(t, nil)
	ob := New(db, "identity", Options{})
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = ob.Relay(rctx, js) }()
	defer func() { stop(); <-done }()

	store := srv.StoreDir()
	srv.Shutdown()
	srv.WaitForShutdown()
	appendAccounts(t, ctx, db, ob, 5)
	if n, _ := ob.Backlog(ctx); n != 5 {
		t.Fatalf("backlog %d while the broker is down, want 5", n)
	}

	restarted, err := broker.RunEmbedded(broker.EmbeddedOptions{Addr: url[len("nats://"):], StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { restarted.Shutdown(); restarted.WaitForShutdown() }()
	testenv.Eventually(t, 15*time.Second, func() bool { n, _ := ob.Backlog(ctx); return n == 0 }, "the outbox did not drain after the broker came back")
	s, err := js.Stream(ctx, broker.StreamName("identity"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 5 {
		t.Fatalf("stream holds %d messages, want 5", info.State.Msgs)
	}
}
