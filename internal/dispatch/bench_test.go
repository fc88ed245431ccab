package dispatch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/api/dispatch/v1/dispatchv1connect"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// benchFleet is a service with n online drivers spread over the city.
func benchFleet(b *testing.B, n int) (*env, []string) {
	e := newEnv(b)
	e.d.now = time.Now // pings stamped "now" must be newer than the last
	r := rand.New(rand.NewPCG(3, 4))
	ids := make([]string, n)
	start := e.d.clock().Add(-time.Minute)
	for i := range ids {
		ids[i] = fmt.Sprintf("driver-%05d", i)
		e.d.fleet.setOnline(ids[i], true, start)
		e.d.fleet.locate(ids[i], randomIn(r, geo.SanFrancisco), start, true)
	}
	return e, ids
}

// pings are 1024 location updates from drivers picked at random among ids,
// the same in every benchmark.
func pings(ids []string) []*connect.Request[dispatchv1.UpdateLocationRequest] {
	r := rand.New(rand.NewPCG(5, 6))
	reqs := make([]*connect.Request[dispatchv1.UpdateLocationRequest], 1024)
	for i := range reqs {
		reqs[i] = connect.NewRequest(&dispatchv1.UpdateLocationRequest{
			Caller: &authv1.Caller{UserId: ids[r.IntN(len(ids))], Role: authv1.Role_ROLE_DRIVER}, Location: randomIn(r, geo.SanFrancisco).Proto(),
		})
	}
	return reqs
}

// BenchmarkUpdateLocation is a ping through the RPC handler (validation,
// authorization, the fleet and its index), 10k drivers online.
func BenchmarkUpdateLocation(b *testing.B) {
	e, ids := benchFleet(b, 10_000)
	reqs := pings(ids)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := e.h.UpdateLocation(ctx, reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdateLocationBroadcast is BenchmarkUpdateLocation alone and
// with the broadcast to other replicas on (an embedded broker in the same
// process, so its share of the CPU is counted too): what sharing live
// positions costs a ping.
func BenchmarkUpdateLocationBroadcast(b *testing.B) {
	for _, cast := range []bool{false, true} {
		name := map[bool]string{false: "alone", true: "broadcast"}[cast]
		b.Run(name, func(b *testing.B) {
			e, ids := benchFleet(b, 10_000)
			if cast {
				srv := testenv.Broker(b)
				nc, _ := testenv.Connect(b, srv)
				bc, err := newBroadcaster(nc, e.d.fleet, defaultCastWindow, nil, e.d.log)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- bc.run(ctx) }()
				defer func() { cancel(); <-done }()
				e.d.cast = bc
			}
			reqs := pings(ids)
			ctx := context.Background()
			b.ReportAllocs()
			start := time.Now()
			for i := 0; b.Loop(); i++ {
				if _, err := e.h.UpdateLocation(ctx, reqs[i%len(reqs)]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pings/s")
		})
	}
}

// BenchmarkAbsorbBroadcast is the receiving side: decoding a full message
// of fixes from another replica and applying it to a fleet of 10k drivers,
// per fix.
func BenchmarkAbsorbBroadcast(b *testing.B) {
	e, ids := benchFleet(b, 10_000)
	bc, err := newBroadcaster(nil, e.d.fleet, defaultCastWindow, nil, e.d.log)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(9, 10))
	at := time.Now()
	msgs := make([]*nats.Msg, 64)
	fill := func() {
		for i := range msgs {
			facts := make([]fact, castBatch)
			for j := range facts {
				at = at.Add(time.Microsecond) // each newer than the last, so every fix applies
				facts[j] = fact{kind: factFix, driver: ids[r.IntN(len(ids))], at: at, pos: randomIn(r, geo.SanFrancisco)}
			}
			msgs[i] = &nats.Msg{Data: encodeFacts("other", facts)}
		}
	}
	fill()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i > 0 && i%len(msgs) == 0 {
			b.StopTimer()
			fill()
			b.StartTimer()
		}
		bc.receive(msgs[i%len(msgs)])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*castBatch), "ns/fix")
}

// BenchmarkUpdateLocationHTTP is the same ping over HTTP with the
// platform's handler interceptors, as a peer would send it.
func BenchmarkUpdateLocationHTTP(b *testing.B) {
	e, ids := benchFleet(b, 10_000)
	mux := http.NewServeMux()
	mux.Handle(dispatchv1connect.NewDispatchServiceHandler(e.h, platform.Deps{}.HandlerOptions()...))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := dispatchv1connect.NewDispatchServiceClient(srv.Client(), srv.URL)
	r := rand.New(rand.NewPCG(5, 6))
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req := connect.NewRequest(&dispatchv1.UpdateLocationRequest{
			Caller:     &authv1.Caller{UserId: ids[r.IntN(len(ids))], Role: authv1.Role_ROLE_DRIVER},
			Location:   randomIn(r, geo.SanFrancisco).Proto(),
			RecordedAt: timestamppb.Now(),
		})
		if _, err := client.UpdateLocation(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNearestFree is the matching query: the 8 nearest free drivers
// out of 10k, a tenth of them busy.
func BenchmarkNearestFree(b *testing.B) {
	e, ids := benchFleet(b, 10_000)
	for i := 0; i < len(ids); i += 10 {
		e.d.fleet.setBusy(ids[i], true, e.d.clock())
	}
	r := rand.New(rand.NewPCG(7, 8))
	qs := make([]geo.Point, 1024)
	for i := range qs {
		qs[i] = randomIn(r, geo.SanFrancisco)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if got := e.d.fleet.nearestFree(qs[i%len(qs)], candidatesPerRound, nil); len(got) != candidatesPerRound {
			b.Fatalf("%d found", len(got))
		}
	}
}

// BenchmarkNearestBruteForce is the full scan the grid replaces, for
// comparison.
func BenchmarkNearestBruteForce(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	points := map[string]geo.Point{}
	for i := range 10_000 {
		points[fmt.Sprintf("driver-%05d", i)] = randomIn(r, geo.SanFrancisco)
	}
	q := randomIn(r, geo.SanFrancisco)
	for b.Loop() {
		bruteNearest(points, q, candidatesPerRound, nil)
	}
}
