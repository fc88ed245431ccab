package discovery

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

func urls(insts []Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.URL
	}
	return out
}

// An instance that registers is seen by a watcher; one that stops cleanly
// is gone at once; one that dies (stops heartbeating) is gone after the
// TTL, measured on the watcher's clock.
func TestRegistryLifecycle(t *testing.T) {
	_, js := testenv.Connect(t, testenv.Broker(t))
	// Expiry below runs on the watcher's clock; the real TTL only paces
	// heartbeats, and each heartbeat to the broker must finish within a
	// third of it, which a busy machine can miss when that is 100 ms.
	const ttl = time.Second
	open := func(ctx context.Context) (jetstream.KeyValue, error) { return OpenBucket(ctx, js, ttl, 1) }
	log := slog.New(slog.DiscardHandler)

	clock := testenv.NewClock(time.Now())
	w := NewWatcher(ttl, clock.Now)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() { _ = w.Run(ctx, open, log) })

	register := func(id, url string) context.CancelFunc {
		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = Register(rctx, open, Instance{Service: "dispatch", ID: id, URL: url}, ttl, log)
		}()
		return func() { stop(); <-done }
	}
	instances := func() []string {
		insts, err := w.Instances(t.Context(), "dispatch")
		if err != nil {
			t.Fatal(err)
		}
		return urls(insts)
	}

	stopA := register("a", "http://127.0.0.1:1")
	stopB := register("b", "http://127.0.0.1:2")
	defer stopB()
	testenv.Eventually(t, 10*time.Second, func() bool { return len(instances()) == 2 }, "two instances registered: %v", instances())

	stopA() // a clean stop deregisters
	testenv.Eventually(t, 10*time.Second, func() bool {
		got := instances()
		return len(got) == 1 && got[0] == "http://127.0.0.1:2"
	}, "a deregistered: %v", instances())

	// c registers once and then dies: no heartbeat, no deregistration.
	kv, err := open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), "dispatch.c", []byte(`{"service":"dispatch","id":"c","url":"http://127.0.0.1:3"}`)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return len(instances()) == 2 }, "c seen: %v", instances())
	// One TTL later on the watcher's clock, b has heartbeaten since and c
	// has not: c is gone.
	clock.Advance(ttl + time.Millisecond)
	testenv.Eventually(t, 10*time.Second, func() bool {
		got := instances()
		return len(got) == 1 && got[0] == "http://127.0.0.1:2"
	}, "c expired, b kept: %v", instances())
}

// When every instance of a service is past its TTL, the watcher still
// offers them: better a call that may fail than none at all while the
// registry itself is what broke.
func TestWatcherFallsBackToStaleInstances(t *testing.T) {
	clock := testenv.NewClock(time.Now())
	w := NewWatcher(time.Second, clock.Now)
	w.Observe(Instance{Service: "payments", ID: "x", URL: "http://127.0.0.1:9"})
	clock.Advance(2 * time.Second)
	got, err := w.Instances(t.Context(), "payments")
	if err != nil || len(got) != 1 {
		t.Fatalf("Instances = %v, %v; want the stale one", got, err)
	}
	clock.Advance(10 * time.Second)
	w.Prune()
	if got, _ := w.Instances(t.Context(), "payments"); len(got) != 0 {
		t.Fatalf("after prune: %v, want none", got)
	}
}

// Until the registry's first snapshot arrives, a caller waits (bounded by
// its context) rather than being told a service has no instances.
func TestWatcherWaitsForFirstSnapshot(t *testing.T) {
	w := NewWatcher(time.Second, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := w.Instances(ctx, "payments"); err == nil {
		t.Fatal("Instances before any snapshot succeeded")
	}
}
