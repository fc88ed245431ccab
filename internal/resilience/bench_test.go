package resilience

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// BenchmarkRPCHop compares one RPC hop with and without the policies: over
// loopback (what a call between two processes costs) and in process (where
// the policies' own cost is not hidden by the network's).
func BenchmarkRPCHop(b *testing.B) {
	mux := http.NewServeMux()
	mux.Handle(paymentsv1connect.NewPaymentsServiceHandler(fakePayments{p: &peer{}}, connect.WithInterceptors(apperr.Interceptor())))
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
		for _, withPolicies := range []bool{false, true} {
			ics := []connect.Interceptor{apperr.Interceptor()}
			name := hop.name + "/bare"
			if withPolicies {
				ics = append(ics, table.Interceptor())
				name = hop.name + "/policies"
			}
			c := paymentsv1connect.NewPaymentsServiceClient(hop.client, hop.base, connect.WithInterceptors(ics...))
			for _, call := range []struct {
				name string
				req  *paymentsv1.AuthorizeRequest
			}{
				{"write", &paymentsv1.AuthorizeRequest{RideId: "r1"}},
				{"keyed", &paymentsv1.AuthorizeRequest{RideId: "r1", IdempotencyKey: "k"}}, // through the retry policy
			} {
				b.Run(name+"/"+call.name, func(b *testing.B) {
					b.ReportAllocs()
					// Every call in the platform has a deadline (the default
					// one at least), which the peer is sent either way.
					ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
					defer cancel()
					for b.Loop() {
						if _, err := c.Authorize(ctx, connect.NewRequest(call.req)); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
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
			for b.Loop() {
				if _, err := call(ctx, c.req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// clientRequest is an Authorize request as the generated client sends it.
func clientRequest(msg *paymentsv1.AuthorizeRequest) connect.AnyRequest {
	return specRequest{connect.NewRequest(msg), connect.Spec{
		IsClient: true, Procedure: paymentsv1connect.PaymentsServiceAuthorizeProcedure,
	}}
}
