package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/resilience"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestWriteTimeout: an ordinary response that outlives the write timeout
// is cut off, a streaming RPC is not.
func TestWriteTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 6 { // 600 ms of writing, past the 200 ms timeout
			_, _ = io.WriteString(w, "tick\n")
			http.NewResponseController(w).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	})
	go func() { done <- Serve(ctx, ln, Config{Handler: slow, WriteTimeout: 200 * time.Millisecond}) }()
	defer func() { cancel(); <-done }()

	get := func(ct string) (string, error) {
		req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/x", strings.NewReader("{}"))
		req.Header.Set("Content-Type", ct)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}
	if body, err := get("application/connect+proto"); err != nil || strings.Count(body, "tick") != 6 {
		t.Fatalf("streaming RPC: %d ticks, %v; want all 6", strings.Count(body, "tick"), err)
	}
	if body, err := get("application/json"); err == nil && strings.Count(body, "tick") == 6 {
		t.Fatal("an ordinary response outlived the write timeout")
	}
}

// start serves c on a loopback port until the test ends.
func start(t *testing.T, c Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, c) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "http://" + ln.Addr().String()
}

// fakeAuth knows a fixed set of tokens, as the verifier knows signed ones.
type fakeAuth map[string]*authv1.Caller

func (f fakeAuth) Caller(r *http.Request) (*authv1.Caller, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return nil, apperr.E(apperr.Unauthenticated, "", "a bearer access token is required")
	}
	if c := f[token]; c != nil {
		return c, nil
	}
	return nil, apperr.E(apperr.Unauthenticated, "invalid_token", "the access token is invalid or expired")
}

type response struct {
	status int
	header http.Header
	body   string
}

func call(t *testing.T, method, url, token string) response {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{res.StatusCode, res.Header, string(b)}
}

// TestAdminEndpoints: only an admin's token reaches them; without an
// authenticator they do not exist, and never fall through to the service.
func TestAdminEndpoints(t *testing.T) {
	var served atomic.Int64
	service := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) })
	admin := map[string]http.Handler{"/admin/resilience": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "state of "+r.URL.Path)
	})}
	auth := fakeAuth{
		"admin-token": {UserId: "a1", Role: authv1.Role_ROLE_ADMIN},
		"rider-token": {UserId: "r1", Role: authv1.Role_ROLE_RIDER},
	}
	on := start(t, Config{Handler: service, Admin: admin, AdminAuth: auth})
	off := start(t, Config{Handler: service, Admin: admin})

	for _, c := range []struct {
		base, path, token string
		status            int
		body              string
	}{
		{on, "/admin/resilience", "", 401, `"code":"unauthenticated"`},
		{on, "/admin/resilience", "forged", 401, `"code":"invalid_token"`},
		{on, "/admin/resilience", "rider-token", 403, `"code":"forbidden"`},
		{on, "/admin/resilience", "admin-token", 200, "state of /admin/resilience"},
		{on, "/admin/resilience/payments", "admin-token", 200, "state of /admin/resilience/payments"},
		{on, "/admin/nothing", "admin-token", 404, `"code":"not_found"`},
		{off, "/admin/resilience", "admin-token", 404, `"code":"not_found"`},
		{off, "/admin/", "", 404, `"code":"not_found"`},
	} {
		r := call(t, "GET", c.base+c.path, c.token)
		if r.status != c.status || !strings.Contains(r.body, c.body) {
			t.Errorf("%s %s with %q: %d %s; want %d %s", map[string]string{on: "on", off: "off"}[c.base], c.path, c.token, r.status, r.body, c.status, c.body)
		}
		if r.status >= 400 && r.header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: %s, want problem+json", c.path, r.header.Get("Content-Type"))
		}
		if r.status == 401 && r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", c.path)
		}
	}
	if served.Load() != 0 {
		t.Fatalf("the service's handler served %d admin requests", served.Load())
	}
	if err := Serve(context.Background(), nil, Config{Admin: map[string]http.Handler{"/metrics": admin["/admin/resilience"]}, AdminAuth: auth}); err == nil {
		t.Fatal("an admin endpoint outside /admin/ was accepted")
	}
}

// TestLoadShedding: a saturated server refuses the service's requests fast
// with 503 and Retry-After, and still answers probes, metrics and admins.
func TestLoadShedding(t *testing.T) {
	release := make(chan struct{})
	service := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
	})
	reg := prometheus.NewRegistry()
	base := start(t, Config{
		Handler: service, Registry: reg,
		Shed:      resilience.ShedOptions{MinLimit: 1, MaxLimit: 1, InitialLimit: 1, MaxQueueWait: 20 * time.Millisecond, RetryAfter: 2 * time.Second},
		Admin:     map[string]http.Handler{"/admin/resilience": http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})},
		AdminAuth: fakeAuth{"admin-token": {UserId: "a1", Role: authv1.Role_ROLE_ADMIN}},
	})
	if r := call(t, "GET", base+"/fast", ""); r.status != 200 {
		t.Fatalf("idle: %d", r.status)
	}
	slow := make(chan int, 1)
	go func() {
		res, err := http.Get(base + "/slow")
		if err != nil {
			slow <- 0
			return
		}
		res.Body.Close()
		slow <- res.StatusCode
	}()
	testenv.Eventually(t, 5*time.Second, func() bool {
		return gathered(t, reg, "rideshare_shed_inflight") == 1
	}, "the slow request holds the only slot")

	r := call(t, "GET", base+"/fast", "")
	if r.status != 503 || r.header.Get("Retry-After") != "2" || !strings.Contains(r.body, `"code":"overloaded"`) {
		t.Fatalf("saturated: %d %v %s", r.status, r.header, r.body)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := call(t, "GET", base+path, ""); r.status != 200 {
			t.Errorf("%s while saturated: %d", path, r.status)
		}
	}
	if r := call(t, "GET", base+"/admin/resilience", "admin-token"); r.status != 200 {
		t.Errorf("admin while saturated: %d", r.status)
	}
	close(release)
	if status := <-slow; status != 200 {
		t.Fatalf("the slow request: %d", status)
	}
	if r := call(t, "GET", base+"/fast", ""); r.status != 200 {
		t.Fatalf("after the load: %d", r.status)
	}
}

// gathered reads the value of an unlabelled gauge in reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
