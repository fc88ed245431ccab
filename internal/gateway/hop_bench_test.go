package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/api/dispatch/v1/dispatchv1connect"
	ridesv1 "github.com/rideshare-platform/rideshare/api/rides/v1"
	"github.com/rideshare-platform/rideshare/api/rides/v1/ridesv1connect"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// BenchmarkGatewayHop is what the gateway adds to a request, against what a
// bare pooled httputil.ReverseProxy hop adds, both in front of the same
// trivial backend and measured in the same run, over loopback TCP:
//
//   - direct:  client → backend (the public request answered at once)
//   - proxy:   client → ReverseProxy (with a BufferPool) → backend
//   - gateway: client → the gateway process's whole HTTP stack, as
//     platform.Run builds it (timeouts, request ids, metrics, access log,
//     load shedding, fault switch, token check, rate limit, JSON) → an RPC
//     with the gateway's client interceptors (deadline, request id, error
//     mapping, service token, resilience policies) → backend
//
// for the two hottest routes: a driver's location ping and a rider's ride
// request. CPU is the whole process's (getrusage), per request; the hop's
// own share is that minus the direct run's, so hop-cpu-x-proxy compares
// what each hop adds. rate-x-proxy compares requests answered per second.
//
//	go test -run '^$' -bench BenchmarkGatewayHop -benchtime 5000x -count 6 ./internal/gateway
func BenchmarkGatewayHop(b *testing.B) {
	be := newBenchBackend(b)
	gw := be.startGateway(b)
	client := benchClient()
	proxy := httptest.NewServer(bareProxy(be.srv.URL))
	b.Cleanup(proxy.Close)

	for _, rt := range []struct {
		name, path string
		status     int
		body       string
		header     func(i int64) (string, string)
	}{
		{"location", "/v1/drivers/me/location", http.StatusNoContent, `{"lat":37.7793,"lng":-122.4193}`, nil},
		{"ride-request", "/v1/rides", http.StatusAccepted,
			`{"pickup":{"lat":37.7793,"lng":-122.4193},"dropoff":{"lat":37.7599,"lng":-122.4148}}`,
			func(i int64) (string, string) { return "Idempotency-Key", fmt.Sprintf("bench-%d", i) }},
	} {
		tokens := be.drivers
		if rt.name == "ride-request" {
			tokens = be.riders
		}
		var direct, bare hopFigures
		for _, target := range []struct {
			name string
			base string
		}{{"direct", be.srv.URL}, {"proxy", proxy.URL}, {"gateway", gw}} {
			b.Run(rt.name+"/"+target.name, func(b *testing.B) {
				var seq atomic.Int64
				f := measureHop(b, func() error {
					i := seq.Add(1)
					req, err := http.NewRequest("POST", target.base+rt.path, strings.NewReader(rt.body))
					if err != nil {
						return err
					}
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Authorization", "Bearer "+tokens[i%int64(len(tokens))])
					if rt.header != nil {
						req.Header.Set(rt.header(i))
					}
					res, err := client.Do(req)
					if err != nil {
						return err
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != rt.status {
						return fmt.Errorf("%s: status %d, want %d", target.name, res.StatusCode, rt.status)
					}
					return nil
				})
				switch target.name {
				case "direct":
					direct = f
				case "proxy":
					bare = f
					b.ReportMetric(f.cpu-direct.cpu, "hop-cpu-µs/op")
				case "gateway":
					hop, bareHop := f.cpu-direct.cpu, bare.cpu-direct.cpu
					b.ReportMetric(hop, "hop-cpu-µs/op")
					b.ReportMetric(hop/bareHop, "hop-cpu-x-proxy")
					b.ReportMetric(f.rate/bare.rate, "rate-x-proxy")
				}
			})
		}
	}
}

// hopFigures are one run's CPU per request (µs, the whole process) and
// requests per second.
type hopFigures struct{ cpu, rate float64 }

// hopParallelism is goroutines per GOMAXPROCS sending requests: enough to
// keep two cores busy while requests wait on the network.
const hopParallelism = 8

// measureHop runs do b.N times from parallel clients and reports the
// process's CPU per request and the request rate.
func measureHop(b *testing.B, do func() error) hopFigures {
	b.SetParallelism(hopParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, start := testenv.ProcessCPU(), time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := do(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed, cpu := time.Since(start), testenv.ProcessCPU()-cpu0
	b.StopTimer()
	f := hopFigures{cpu: float64(cpu.Microseconds()) / float64(b.N), rate: float64(b.N) / elapsed.Seconds()}
	b.ReportMetric(f.cpu, "cpu-µs/op")
	b.ReportMetric(f.rate, "req/s")
	return f
}

// benchClient is a client with a connection per sending goroutine, so that
// no run pays for new connections.
func benchClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 1024, 1024
	return &http.Client{Transport: t, Timeout: 10 * time.Second}
}

// bareProxy is the baseline hop: a ReverseProxy with pooled copy buffers
// and a pooled transport, nothing else.
func bareProxy(target string) http.Handler {
	u, _ := url.Parse(target)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 1024, 1024
	return &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() },
		Transport:  t,
		BufferPool: &bufferPool{},
	}
}

// benchBackend is the trivial backend: the identity endpoints the gateway
// needs to start (keys, a service token), dispatch's UpdateLocation and
// rides' RequestRide answering at once, and the public routes answering
// at once for the direct and proxy runs.
type benchBackend struct {
	srv             *httptest.Server
	key             *ecdsa.PrivateKey
	issuer          string
	drivers, riders []string
}

// benchUsers is how many distinct drivers and riders send requests: the
// gateway meets many tokens, not one.
const benchUsers = 256

func newBenchBackend(b *testing.B) *benchBackend {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	be := &benchBackend{key: key, issuer: "http://gateway.bench"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth2/jwks", func(w http.ResponseWriter, _ *http.Request) {
		pt, _ := key.PublicKey.ECDH()
		p := pt.Bytes()
		enc := base64.RawURLEncoding.EncodeToString
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{
			{"kty": "EC", "crv": "P-256", "x": enc(p[1:33]), "y": enc(p[33:]), "kid": "bench", "alg": "ES256", "use": "sig"}}})
	})
	mux.HandleFunc("POST /oauth2/token", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": be.token(b, "client:service-gateway", "service", "rideshare-internal"),
			"token_type": "Bearer", "expires_in": 300})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.Handle(dispatchv1connect.NewDispatchServiceHandler(benchDispatch{}))
	mux.Handle(ridesv1connect.NewRidesServiceHandler(benchRides{}))
	mux.HandleFunc("POST /v1/drivers/me/location", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	rideJSON := []byte(`{"id":"0190a000-0000-7000-8000-000000000000","status":"requested","rider_id":"rider-1","pickup":{"lat":37.7793,"lng":-122.4193},"dropoff":{"lat":37.7599,"lng":-122.4148},"created_at":"2026-11-01T12:00:00Z","updated_at":"2026-11-01T12:00:00Z"}` + "\n")
	mux.HandleFunc("POST /v1/rides", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", "/v1/rides/0190a000-0000-7000-8000-000000000000")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(rideJSON)
	})
	be.srv = httptest.NewUnstartedServer(mux)
	be.srv.Config.Protocols = new(http.Protocols)
	be.srv.Config.Protocols.SetHTTP1(true)
	be.srv.Config.Protocols.SetUnencryptedHTTP2(true)
	be.srv.Start()
	b.Cleanup(be.srv.Close)
	for i := range benchUsers {
		be.drivers = append(be.drivers, be.token(b, fmt.Sprintf("driver-%d", i), "driver", "rideshare"))
		be.riders = append(be.riders, be.token(b, fmt.Sprintf("rider-%d", i), "rider", "rideshare"))
	}
	return be
}

// token is an access token as identity issues them.
func (be *benchBackend) token(b *testing.B, sub, role, aud string) string {
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": be.issuer, "sub": sub, "aud": aud, "role": role, "jti": "j-" + sub,
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(),
	})
	t.Header["kid"] = "bench"
	s, err := t.SignedString(be.key)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// startGateway runs the gateway as `rideshare serve gateway` does, with
// every peer at the backend, and returns its base URL once it is ready.
func (be *benchBackend) startGateway(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	// platform.Run takes its socket as fd:N, as `up` hands it over; it
	// owns (and closes) the descriptor it is given, so it gets a copy.
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		b.Fatal(err)
	}
	fd, err := syscall.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	peers := map[string]string{}
	for _, name := range calls {
		peers[name] = be.srv.URL
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- platform.Run(ctx, Service, platform.Config{
			Listen: fmt.Sprintf("fd:%d", fd), PublicURL: be.issuer, Peers: peers,
			Secrets: map[string]string{platform.ServiceSecretName: "bench-secret"},
			// Charged to each user's bucket as always, never refused: the
			// benchmark measures the work, not the limit.
			Settings: map[string]string{"gateway.rate": "1000000/s", "gateway.burst": "1000000"},
			Stderr:   io.Discard,
		})
	}()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("gateway: %v", err)
		}
	})
	base := "http://" + addr
	testenv.Eventually(b, 10*time.Second, func() bool {
		res, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, "the gateway did not become ready")
	return base
}

// benchDispatch takes every location ping at once.
type benchDispatch struct {
	dispatchv1connect.UnimplementedDispatchServiceHandler
}

func (benchDispatch) UpdateLocation(context.Context, *connect.Request[dispatchv1.UpdateLocationRequest]) (*connect.Response[dispatchv1.UpdateLocationResponse], error) {
	return connect.NewResponse(&dispatchv1.UpdateLocationResponse{}), nil
}

// benchRides accepts every ride request at once.
type benchRides struct {
	ridesv1connect.UnimplementedRidesServiceHandler
}

func (benchRides) RequestRide(_ context.Context, req *connect.Request[ridesv1.RequestRideRequest]) (*connect.Response[ridesv1.RequestRideResponse], error) {
	now := timestamppb.Now()
	return connect.NewResponse(&ridesv1.RequestRideResponse{Ride: &ridesv1.Ride{
		Id: "0190a000-0000-7000-8000-000000000000", Status: ridesv1.RideStatus_RIDE_STATUS_REQUESTED,
		RiderId: req.Msg.GetCaller().GetUserId(), Pickup: req.Msg.GetPickup(), Dropoff: req.Msg.GetDropoff(),
		CreatedAt: now, UpdatedAt: now,
	}}), nil
}
