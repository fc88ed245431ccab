package platform

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare-platform/rideshare/internal/discovery"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestReplicasCount: Deps.Replicas counts the live instances of the
// service in the registry, this one included whether or not it registers,
// and follows another replica joining and leaving.
func TestReplicasCount(t *testing.T) {
	srv := testenv.Broker(t)
	nc, js := testenv.Connect(t, srv)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	open := func(ctx context.Context) (jetstream.KeyValue, error) {
		return discovery.OpenBucket(ctx, js, discovery.DefaultTTL, 1)
	}
	for _, c := range []struct {
		name   string
		listen string // a wildcard address does not register
	}{{"registered", "127.0.0.1:0"}, {"unregistered", "0.0.0.0:0"}} {
		t.Run(c.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", c.listen)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			svc := Service{Name: "gateway-" + c.name, Calls: []string{"users"}}
			d := &Deps{Config: Config{Peers: map[string]string{}}, NATS: nc, JS: js, HTTP: NewHTTPClient(), Log: log, Metrics: prometheus.NewRegistry()}
			workers, _, err := useDiscovery(ctx, d, svc, ln)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range workers {
				go func() { _ = w.Run(ctx) }()
			}
			count := func() int {
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				n, err := d.Replicas(cctx)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			// Alone, it counts itself (unregistered, before its own
			// registration shows, and after).
			testenv.Eventually(t, 5*time.Second, func() bool { return count() == 1 }, "alone: %d replicas", count())

			other, leave := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- discovery.Register(other, open, discovery.Instance{Service: svc.Name, ID: "other", URL: "http://127.0.0.1:1"}, discovery.DefaultTTL, log)
			}()
			testenv.Eventually(t, 5*time.Second, func() bool { return count() == 2 }, "another replica joined: %d replicas", count())
			leave()
			<-done
			testenv.Eventually(t, 5*time.Second, func() bool { return count() == 1 }, "the other replica left: %d replicas", count())
		})
	}
}
