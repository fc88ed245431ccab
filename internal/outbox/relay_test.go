package outbox_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	"github.com/rideshare-platform/rideshare/internal/broker"
	. "github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestTwoRelaysPublishEachEventOnce runs two relays, as two replicas of a
// service would, on one PostgreSQL outbox while events are appended through
// both, and counts every publish on the wire (a plain NATS subscriber sees
// each one, whatever the stream's duplicate detection drops): each event is
// published exactly once and none is left unsent.
func TestTwoRelaysPublishEachEventOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := testenv.PostgresDSN(t)
	srv := testenv.Broker(t)
	nc, js := testenv.Connect(t, srv)
	if _, err := js.CreateOrUpdateStream(ctx, broker.StreamConfig("identity", 1)); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	published := map[string]int{}
	sub, err := nc.Subscribe("identity.>", func(m *nats.Msg) {
		mu.Lock()
		published[m.Header.Get(jetstream.MsgIDHeader)]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// Two replicas: each its own pool and its own outbox on the one database.
	var obs [2]*Outbox
	var dbs [2]*sqldb.DB
	for i := range obs {
		db, err := sqldb.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := db.Migrate(ctx, Migrations(), MigrationTable); err != nil {
			t.Fatal(err)
		}
		dbs[i], obs[i] = db, New(db, "identity", Options{})
	}
	rctx, stopRelays := context.WithCancel(ctx)
	var relays sync.WaitGroup
	for _, ob := range obs {
		relays.Add(1)
		go func() { defer relays.Done(); _ = ob.Relay(rctx, js) }()
	}
	defer func() { stopRelays(); relays.Wait() }()

	// Writers on both replicas at once; each commit wakes its replica's
	// relay, so both relays keep reading the outbox while it fills.
	const writers, perWriter = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, ob := dbs[w%2], obs[w%2]
			for i := range perWriter {
				err := db.InTx(ctx, func(tx *sqldb.Tx) error {
					return ob.Append(ctx, tx, Event{Type: "account.created", Key: "acc", Payload: &identityv1.AccountCreated{
						AccountId: "acc", Email: "a@example.com", Role: authv1.Role_ROLE_RIDER, Name: string(rune('A' + i%26)),
					}})
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	const events = writers * perWriter
	testenv.Eventually(t, 30*time.Second, func() bool {
		n, err := obs[0].Backlog(ctx)
		return err == nil && n == 0
	}, "the relays did not drain the outbox")
	testenv.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(published) == events
	}, "not every event reached the broker")
	// Everything is marked sent, so no relay publishes anything more; a
	// round trip flushes any message still on its way to the subscriber.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	twice := 0
	for _, n := range published {
		if n != 1 {
			twice++
		}
	}
	if twice > 0 {
		t.Fatalf("%d of %d events were published more than once by the two relays", twice, events)
	}
	var rows int
	if err := dbs[0].Reader().QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL`).Scan(&rows); err != nil || rows != events {
		t.Fatalf("%d events marked sent (%v), want %d", rows, err, events)
	}
	t.Logf("%d events appended through two replicas, each published once", events)
}
