package resilience

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestShedderRefusesWhatCannotBeServedInTime: with its one slot taken, the
// server queues a few requests, each only as long as its caller will wait,
// refuses the rest at once, and serves normally again once it can.
func TestShedderRefusesWhatCannotBeServedInTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		// A fixed limit of one: queueing begins at once, refusal of
		// newcomers at three queued.
		s, err := NewShedder(ShedOptions{MinLimit: 1, MaxLimit: 1, InitialLimit: 1, MaxQueueWait: 100 * time.Millisecond, RetryAfter: time.Second}, reg)
		if err != nil {
			t.Fatal(err)
		}
		release, streamDone := make(chan struct{}), make(chan struct{})
		h := s.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/slow":
				<-release
			case "/stream": // server-sent events: flush, then stay open
				w.Header().Set("Content-Type", "text/event-stream")
				http.NewResponseController(w).Flush()
				<-streamDone
			}
			w.WriteHeader(http.StatusOK)
		}))
		serve := func(r *http.Request) *httptest.ResponseRecorder {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			return rec
		}
		get := func(path string) *httptest.ResponseRecorder { return serve(httptest.NewRequest("GET", path, nil)) }

		if rec := get("/fast"); rec.Code != http.StatusOK {
			t.Fatalf("idle server: %d", rec.Code)
		}

		var wg sync.WaitGroup
		wg.Go(func() {
			if rec := get("/slow"); rec.Code != http.StatusOK {
				t.Errorf("the request holding the slot: %d", rec.Code)
			}
		})
		synctest.Wait()

		// An RPC whose caller waits 30 ms: refused after 30 ms, as an RPC
		// error with the platform's code.
		rpc := httptest.NewRequest("POST", "/rideshare.pricing.v1.PricingService/GetSurge", strings.NewReader("{}"))
		rpc.Header.Set("Content-Type", "application/json")
		rpc.Header.Set("Connect-Protocol-Version", "1")
		rpc.Header.Set("Connect-Timeout-Ms", "30")
		start := time.Now()
		rec := serve(rpc)
		var connectErr struct{ Code string }
		_ = json.Unmarshal(rec.Body.Bytes(), &connectErr)
		if rec.Code != http.StatusServiceUnavailable || connectErr.Code != "unavailable" ||
			rec.Header().Get("Rideshare-Error-Code") != CodeOverloaded || rec.Header().Get("Retry-After") != "1" {
			t.Fatalf("RPC: %d %v %s", rec.Code, rec.Header(), rec.Body)
		}
		if took := time.Since(start); took != 30*time.Millisecond {
			t.Fatalf("RPC refused after %s, want its caller's 30 ms", took)
		}

		// Three public requests queue (each for at most 100 ms); a fourth
		// is refused at once.
		queued := make(chan int, 3)
		for range 3 {
			wg.Go(func() { queued <- get("/fast").Code })
		}
		synctest.Wait()
		if s.Queued() != 3 {
			t.Fatalf("%d queued, want 3", s.Queued())
		}
		start = time.Now()
		rec = get("/fast")
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Content-Type") != "application/problem+json" ||
			rec.Header().Get("Retry-After") != "1" || !strings.Contains(rec.Body.String(), `"code":"overloaded"`) {
			t.Fatalf("public request over a full queue: %d %v %s", rec.Code, rec.Header(), rec.Body)
		}
		if took := time.Since(start); took != 0 {
			t.Fatalf("refused after %s, want at once", took)
		}
		// The queued ones waited their 100 ms and were refused: the slot
		// never came free.
		for range 3 {
			if code := <-queued; code != http.StatusServiceUnavailable {
				t.Fatalf("queued past the wait bound: %d", code)
			}
		}
		if took := time.Since(start); took != 100*time.Millisecond {
			t.Fatalf("queued requests refused after %s, want 100 ms", took)
		}

		close(release)
		wg.Wait()
		if rec := get("/fast"); rec.Code != http.StatusOK {
			t.Fatalf("after the load: %d", rec.Code)
		}

		// A stream gives its slot back once it starts streaming.
		wg.Go(func() { get("/stream") })
		synctest.Wait()
		if rec := get("/fast"); rec.Code != http.StatusOK || s.Inflight() != 0 {
			t.Fatalf("beside an open stream: %d, %d in flight", rec.Code, s.Inflight())
		}
		close(streamDone)
		wg.Wait()

		if n := testutil.ToFloat64(s.rejected); n != 5 {
			t.Fatalf("rideshare_shed_rejected_total = %v, want 5", n)
		}
		if n, err := testutil.GatherAndCount(reg, "rideshare_shed_inflight", "rideshare_shed_limit", "rideshare_shed_queued", "rideshare_shed_rejected_total"); err != nil || n != 4 {
			t.Fatalf("shed metrics: %d series, %v", n, err)
		}
	})
}

// TestShedderLeavesStreamsAlone: streaming RPCs are never held at the door.
func TestShedderLeavesStreamsAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, err := NewShedder(ShedOptions{MinLimit: 1, MaxLimit: 1, InitialLimit: 1, MaxQueueWait: time.Hour}, nil)
		if err != nil {
			t.Fatal(err)
		}
		release := make(chan struct{})
		h := s.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				<-release
			}
		}))
		var wg sync.WaitGroup
		wg.Go(func() { h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/slow", nil)) })
		synctest.Wait()
		for _, ct := range []string{"application/connect+proto", "application/grpc"} {
			r := httptest.NewRequest("POST", "/rideshare.notifications.v1.NotificationsService/Subscribe", nil)
			r.Header.Set("Content-Type", ct)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != http.StatusOK {
				t.Errorf("%s while the slot is taken: %d", ct, rec.Code)
			}
		}
		close(release)
		wg.Wait()
	})
}

func TestShedSettings(t *testing.T) {
	o, err := ParseShedOptions(map[string]string{"shed.max_queue_wait": "50ms", "shed.min_limit": "4", "payments.latency": "1s"})
	if err != nil || o.MaxQueueWait != 50*time.Millisecond || o.MinLimit != 4 || o.MaxLimit != DefaultShed.MaxLimit {
		t.Fatalf("%+v %v", o, err)
	}
	if o, err := ParseShedOptions(map[string]string{"shed.off": "true"}); err != nil || !o.Off {
		t.Fatalf("off: %+v %v", o, err)
	}
	for _, bad := range []map[string]string{
		{"shed.max_wait": "1s"}, {"shed.min_limit": "0"}, {"shed.min_limit": "100", "shed.initial_limit": "10"},
		{"shed.max_queue_wait": "-1s"}, {"shed.off": "maybe"},
	} {
		if _, err := ParseShedOptions(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
