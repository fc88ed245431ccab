package discovery

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// fixed is a Resolver with a set list of instances.
type fixed map[string][]Instance

func (f fixed) Instances(_ context.Context, s string) ([]Instance, error) { return f[s], nil }

type backend struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newBackend(t *testing.T, h http.HandlerFunc) *backend {
	b := &backend{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func ok(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	_, _ = w.Write(body)
}

// deadAddr is an address nothing listens on: connections are refused.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func newClient(t *testing.T, r Resolver, clock func() time.Time) (*http.Client, *Balancer, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	b, err := NewBalancer(r, BalancerOptions{Services: []string{"dispatch"}, Metrics: reg, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: b, Timeout: 5 * time.Second}, b, reg
}

func post(t *testing.T, c *http.Client, url, body string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	return res, err
}

// Requests spread over every instance, and the logical host never leaves
// the process: hosts that are not balanced services pass through.
func TestBalancerSpreadsLoad(t *testing.T) {
	a, b := newBackend(t, ok), newBackend(t, ok)
	c, _, _ := newClient(t, fixed{"dispatch": {{URL: a.srv.URL}, {URL: b.srv.URL}}}, nil)
	for range 200 {
		if _, err := post(t, c, "http://dispatch/x", "hi"); err != nil {
			t.Fatal(err)
		}
	}
	if a.hits.Load() < 40 || b.hits.Load() < 40 {
		t.Fatalf("hits a=%d b=%d, want both used", a.hits.Load(), b.hits.Load())
	}
	other := newBackend(t, ok)
	if _, err := post(t, c, other.srv.URL+"/y", "hi"); err != nil || other.hits.Load() != 1 {
		t.Fatalf("pass-through: err %v, hits %d", err, other.hits.Load())
	}
}

// Of two instances, the one with calls in flight gets fewer new ones.
func TestBalancerPrefersLessLoaded(t *testing.T) {
	release, held := make(chan struct{}), make(chan struct{}, 1)
	slow := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case held <- struct{}{}:
		default:
		}
		<-release
		ok(w, r)
	})
	fast := newBackend(t, ok)
	c, _, _ := newClient(t, fixed{"dispatch": {{URL: slow.srv.URL}, {URL: fast.srv.URL}}}, nil)
	var wg sync.WaitGroup
	defer func() { close(release); wg.Wait() }()
	// Pin a call on slow: calls land wherever p2c sends them, so send one
	// at a time until one is held there. Each waits until it is either held
	// or done (it went to fast), so no call is left in flight to fast, or
	// still unsent, to tie the loads or land on slow once counting begins.
	for i := 0; ; i++ {
		if i == 1000 {
			t.Fatal("no call ever reached the slow instance")
		}
		done := make(chan struct{})
		wg.Go(func() {
			defer close(done)
			_, _ = post(t, c, "http://dispatch/hold", "")
		})
		select {
		case <-done:
			continue
		case <-held:
		}
		break
	}
	before := slow.hits.Load()
	for range 100 {
		if _, err := post(t, c, "http://dispatch/x", ""); err != nil {
			t.Fatal(err)
		}
	}
	if got := slow.hits.Load() - before; got != 0 {
		t.Fatalf("%d of 100 calls went to the instance with calls in flight, want 0 (two choices, two instances)", got)
	}
}

// A dead instance refuses the connection: the request goes to another at
// once (it never reached the first, so even a POST may), and the dead one
// is ejected so later requests skip it until its ejection ends.
func TestBalancerFailsOverFromRefusingInstance(t *testing.T) {
	live := newBackend(t, ok)
	dead := deadAddr(t)
	clock := testenv.NewClock(time.Now())
	c, b, _ := newClient(t, fixed{"dispatch": {{URL: dead}, {URL: live.srv.URL}}}, clock.Now)
	for i := range 50 {
		res, err := post(t, c, "http://dispatch/rides", "body")
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if got := live.hits.Load(); got != 50 {
		t.Fatalf("live instance served %d of 50", got)
	}
	if got := testutil.ToFloat64(b.picks.WithLabelValues("dispatch", "refused")); got != 1 {
		t.Fatalf("refused connections = %v, want 1: the dead instance stays ejected", got)
	}
	clock.Advance(ejectFor + time.Millisecond)
	if _, err := post(t, c, "http://dispatch/rides", "body"); err != nil {
		t.Fatal(err)
	}
	// Whether the probe after the ejection picked it or not, it can be
	// refused at most once more, and the request still succeeds.
	if got := testutil.ToFloat64(b.picks.WithLabelValues("dispatch", "refused")); got > 2 {
		t.Fatalf("refused = %v after the ejection ended", got)
	}
}

// An instance answering 503 again and again is ejected after ejectAfter
// failures in a row; the failed requests themselves are returned as they
// are (a retry is the resilience layer's call).
func TestBalancerEjectsFailingInstance(t *testing.T) {
	sick := newBackend(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	well := newBackend(t, ok)
	clock := testenv.NewClock(time.Now())
	c, b, _ := newClient(t, fixed{"dispatch": {{URL: sick.srv.URL}, {URL: well.srv.URL}}}, clock.Now)
	// Force traffic to sick by making the other look loaded beyond even
	// the rank of an instance whose last call failed.
	b.endpoint(well.srv.URL).inflight.Add(1 << 30)
	for range ejectAfter {
		res, err := post(t, c, "http://dispatch/x", "")
		if err != nil || res.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("got %v %v, want the 503 passed back", res, err)
		}
	}
	if got := testutil.ToFloat64(b.ejections.WithLabelValues("dispatch")); got != 1 {
		t.Fatalf("ejections = %v, want 1", got)
	}
	b.endpoint(well.srv.URL).inflight.Add(-(1 << 30))
	hits := sick.hits.Load()
	for range 20 {
		if res, err := post(t, c, "http://dispatch/x", ""); err != nil || res.StatusCode != 200 {
			t.Fatalf("after ejection: %v %v", res, err)
		}
	}
	if sick.hits.Load() != hits {
		t.Fatal("the ejected instance still got requests")
	}
}

// No instance registered: a clear error, no request anywhere.
func TestBalancerWithNoInstance(t *testing.T) {
	c, _, _ := newClient(t, fixed{}, nil)
	_, err := post(t, c, "http://dispatch/x", "")
	if err == nil || !strings.Contains(err.Error(), "no instance of dispatch is registered") {
		t.Fatalf("err = %v", err)
	}
}
