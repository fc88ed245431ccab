package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// BenchmarkStack is what the server's stack (request ids, metrics, access
// log, body limit, load shedding, timeouts) adds to every request every
// process serves: a trivial handler behind Serve against the same handler
// behind a bare http.Server, measured in the same run over loopback from
// parallel clients. cpu-µs/op is the whole process's (client included);
// stack-cpu-µs/op is the difference.
//
//	go test -run '^$' -bench BenchmarkStack -benchtime 20000x -count 6 ./internal/server
func BenchmarkStack(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	bare := serveBench(b, func(ctx context.Context, ln net.Listener) error {
		srv := &http.Server{Handler: h}
		go func() { <-ctx.Done(); srv.Close() }()
		return srv.Serve(ln)
	})
	stack := serveBench(b, func(ctx context.Context, ln net.Listener) error {
		return Serve(ctx, ln, Config{Handler: h, Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	})
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 1024, 1024
	client := &http.Client{Transport: t}
	var bareCPU float64
	for _, target := range []struct{ name, base string }{{"bare", bare}, {"stack", stack}} {
		b.Run(target.name, func(b *testing.B) {
			b.SetParallelism(8)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := testenv.ProcessCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res, err := client.Post(target.base+"/v1/x", "application/json", strings.NewReader(`{"lat":37.7793,"lng":-122.4193}`))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusNoContent {
						b.Errorf("status %d", res.StatusCode)
						return
					}
				}
			})
			cpu := float64((testenv.ProcessCPU() - cpu0).Microseconds()) / float64(b.N)
			b.StopTimer()
			b.ReportMetric(cpu, "cpu-µs/op")
			if target.name == "bare" {
				bareCPU = cpu
			} else {
				b.ReportMetric(cpu-bareCPU, "stack-cpu-µs/op")
			}
		})
	}
}

// serveBench runs serve on a loopback port until the benchmark ends.
func serveBench(b *testing.B, serve func(ctx context.Context, ln net.Listener) error) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = serve(ctx, ln) }()
	b.Cleanup(func() { cancel(); <-done })
	return "http://" + ln.Addr().String()
}
