package resilience

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// BenchmarkRPCHop compares one RPC hop with and without the policies: over
// loopback (what a call between two processes costs) and in process (where
// the policies' own cost is not hidden by the network's). Each run reports
// the process's CPU per call (getrusage: client, server and policies) and
// the median call latency; the run with policies also reports both against
// the bare run measured just before it (cpu-x-bare, p50-delta-µs).
//
//	go test -run '^$' -bench BenchmarkRPCHop -benchtime 3000x -count 6 ./internal/resilience
func BenchmarkRPCHop(b *testing.B) {
	mux := http.NewServeMux()
	mux.Handle(paymentsv1connect.NewPaymentsServiceHandler(benchPayments{}, connect.WithInterceptors(apperr.Interceptor())))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	table, err := New(Options{Metrics: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	for _, hop := range []struct {
		name   string
		client *http.Client
		base   string
	}{
		{"loopback", srv.Client(), srv.URL},
		{"inprocess", &http.Client{Transport: inProcess{mux}}, "http://peer.test"},
	} {
		for _, call := range []struct {
			name string
			req  *paymentsv1.AuthorizeRequest
		}{
			{"write", &paymentsv1.AuthorizeRequest{RideId: "r1"}},
			{"keyed", &paymentsv1.AuthorizeRequest{RideId: "r1", IdempotencyKey: "k"}}, // through the retry policy
		} {
			var bare callFigures
			for _, withPolicies := range []bool{false, true} {
				ics := []connect.Interceptor{apperr.Interceptor()}
				name := hop.name + "/bare/" + call.name
				if withPolicies {
					ics = append(ics, table.Interceptor())
					name = hop.name + "/policies/" + call.name
				}
				c := paymentsv1connect.NewPaymentsServiceClient(hop.client, hop.base, connect.WithInterceptors(ics...))
				b.Run(name, func(b *testing.B) {
					// Every call in the platform has a deadline (the default
					// one at least), which the peer is sent either way.
					ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
					defer cancel()
					f := measureCalls(b, func() error {
						_, err := c.Authorize(ctx, connect.NewRequest(call.req))
						return err
					})
					if !withPolicies {
						bare = f
						return
					}
					b.ReportMetric(f.cpu/bare.cpu, "cpu-x-bare")
					b.ReportMetric(f.p50-bare.p50, "p50-delta-µs")
				})
			}
		}
	}
}

// callFigures are one run's CPU per call and median latency, in µs.
type callFigures struct{ cpu, p50 float64 }

// measureCalls makes b.N calls one after another, timing each, and reports
// the process's CPU per call and the median latency.
func measureCalls(b *testing.B, call func() error) callFigures {
	b.ReportAllocs()
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	cpu0 := testenv.ProcessCPU()
	for range b.N {
		start := time.Now()
		if err := call(); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	cpu := testenv.ProcessCPU() - cpu0
	b.StopTimer()
	slices.Sort(took)
	f := callFigures{cpu: float64(cpu.Microseconds()) / float64(b.N), p50: float64(took[len(took)/2].Nanoseconds()) / 1e3}
	b.ReportMetric(f.cpu, "cpu-µs/op")
	b.ReportMetric(f.p50, "p50-µs")
	return f
}

// benchPayments answers every authorization at once and records nothing,
// so a long run measures the hop, not a growing record.
type benchPayments struct {
	paymentsv1connect.UnimplementedPaymentsServiceHandler
}

func (benchPayments) Authorize(context.Context, *connect.Request[paymentsv1.AuthorizeRequest]) (*connect.Response[paymentsv1.AuthorizeResponse], error) {
	return connect.NewResponse(&paymentsv1.AuthorizeResponse{Payment: &paymentsv1.Payment{Id: "p1"}}), nil
}

// BenchmarkPolicies is the policies' own cost per call, around an RPC that
// returns at once.
func BenchmarkPolicies(b *testing.B) {
	table, err := New(Options{Metrics: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	res := connect.NewResponse(&paymentsv1.AuthorizeResponse{})
	next := connect.UnaryFunc(func(context.Context, connect.AnyRequest) (connect.AnyResponse, error) { return res, nil })
	call := table.Interceptor().WrapUnary(next)
	for _, c := range []struct {
		name string
		req  connect.AnyRequest
	}{
		{"write", clientRequest(&paymentsv1.AuthorizeRequest{RideId: "r1"})},
		{"keyed", clientRequest(&paymentsv1.AuthorizeRequest{RideId: "r1", IdempotencyKey: "k"})},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			cpu0 := testenv.ProcessCPU()
			for b.Loop() {
				if _, err := call(ctx, c.req); err != nil {
					b.Fatal(err)
				}
			}
			// CPU time leaves out the time other processes held the core.
			b.ReportMetric(float64((testenv.ProcessCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// clientRequest is an Authorize request as the generated client sends it.
func clientRequest(msg *paymentsv1.AuthorizeRequest) connect.AnyRequest {
	return specRequest{connect.NewRequest(msg), connect.Spec{
		IsClient: true, Procedure: paymentsv1connect.PaymentsServiceAuthorizeProcedure,
	}}
}
