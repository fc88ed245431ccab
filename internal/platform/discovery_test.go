package platform

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
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
			// The registry's first snapshot can take longer than one count's
			// second on a busy machine: a count that times out is asked
			// again, not a failure.
			var last string
			count := func() int {
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				n, err := d.Replicas(cctx)
				if err != nil {
					last = err.Error()
					return -1
				}
				last = strconv.Itoa(n)
				return n
			}
			waitFor := func(want int, what string) {
				t.Helper()
				testenv.Eventually(t, 10*time.Second, func() bool { return count() == want }, "%s: the last count was %s, want %d", what, testenv.Later(func() string { return last }), want)
			}
			// Alone, it counts itself (unregistered, before its own
			// registration shows, and after).
			waitFor(1, "alone")

			other, leave := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- discovery.Register(other, open, discovery.Instance{Service: svc.Name, ID: "other", URL: "http://127.0.0.1:1"}, discovery.DefaultTTL, log)
			}()
			waitFor(2, "another replica joined")
			leave()
			<-done
			waitFor(1, "the other replica left")
		})
	}
}
