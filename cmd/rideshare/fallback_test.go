package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/pricing"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestFallback breaks pricing and users on purpose, as an operator's
// `rideshare fault` would, and checks the two routes that have a degraded
// answer keep answering: estimates without surge and without a quote,
// marked degraded; the caller's own profile as the gateway last saw it,
// marked stale. Cleared, the platform answers normally again.
func TestFallback(t *testing.T) {
	dir := t.TempDir()
	p := startPlatform(t, dir)
	rider := p.newRider("fallback@example.com")
	trip := map[string]any{"pickup": ferryBuilding, "dropoff": twinPeaks}
	fault := func(args ...string) {
		t.Helper()
		var out testenv.Buffer
		if code := run(t.Context(), append(append([]string{"fault"}, args...), "--data", dir), os.Getenv, nil, &out, &out); code != 0 {
			t.Fatalf("rideshare fault %v: exit %d\n%s", args, code, out.String())
		}
	}

	profile := rider.do("GET", "/v1/me", nil)
	if profile.status != http.StatusOK || profile.header.Get("Warning") != "" {
		t.Fatalf("GET /v1/me: %d %q %s", profile.status, profile.header.Get("Warning"), profile.body)
	}
	if e := rider.do("POST", "/v1/fares/estimate", trip); e.status != http.StatusOK || e.json(t)["degraded"] != false || e.json(t)["quote_id"] == nil {
		t.Fatalf("estimate with every service up: %d %s", e.status, e.body)
	}

	// Every route of both fails (no --route), for longer than the test.
	fault("pricing", "--error-rate", "1", "--for", "2m")
	fault("users", "--error-rate", "1", "--for", "2m")
	want, err := pricing.Fallback(geo.Point{Lat: ferryBuilding["lat"], Lng: ferryBuilding["lng"]}, geo.Point{Lat: twinPeaks["lat"], Lng: twinPeaks["lng"]})
	if err != nil {
		t.Fatal(err)
	}
	const estimates = 30
	degraded, start := 0, time.Now()
	for range estimates {
		r := rider.do("POST", "/v1/fares/estimate", trip)
		if r.status != http.StatusOK {
			t.Fatalf("estimate with pricing down: %d %s, want 200 degraded", r.status, r.body)
		}
		e := r.json(t)
		fare, _ := e["fare"].(map[string]any)
		if e["degraded"] != true || e["surge"] != 1.0 || fare["amount"] != float64(want.Fare) || e["quote_id"] != nil || e["expires_at"] != nil {
			t.Fatalf("estimate with pricing down: %s, want degraded at ×1.0, %d %s, no quote", r.body, want.Fare, want.Currency)
		}
		degraded++
	}
	t.Logf("pricing down: %d of %d estimates answered 200 degraded (×1.0, %d %s, %d m) in %s",
		degraded, estimates, want.Fare, want.Currency, want.Route.Meters, time.Since(start).Round(time.Millisecond))
	// The caller's mistakes are still theirs while pricing is down.
	if r := rider.do("POST", "/v1/fares/estimate", map[string]any{"pickup": ferryBuilding, "dropoff": map[string]float64{"lat": 40.7128, "lng": -74.0060}}); r.status != http.StatusUnprocessableEntity {
		t.Errorf("a dropoff in New York with pricing down: %d %s, want 422", r.status, r.body)
	}

	stale := rider.do("GET", "/v1/me", nil)
	if stale.status != http.StatusOK || !bytes.Equal(stale.body, profile.body) {
		t.Fatalf("GET /v1/me with users down: %d %s, want the profile seen before: %s", stale.status, stale.body, profile.body)
	}
	if w := stale.header.Get("Warning"); !strings.HasPrefix(w, "110 ") {
		t.Fatalf("a profile from the gateway's copy is marked Warning %q, want 110", w)
	}
	t.Logf("users down: GET /v1/me answered the copy, Warning %q, Age %s s", stale.header.Get("Warning"), stale.header.Get("Age"))
	t.Logf("gateway metrics: %s; fallbacks logged by reason: %v", fallbackMetrics(p), fallbackReasons(t, dir))

	fault("pricing", "--clear")
	fault("users", "--clear")
	cleared := time.Now()
	testenv.Eventually(t, 20*time.Second, func() bool {
		e := rider.do("POST", "/v1/fares/estimate", trip)
		me := rider.do("GET", "/v1/me", nil)
		return e.status == http.StatusOK && e.json(t)["degraded"] == false && e.json(t)["quote_id"] != nil &&
			me.status == http.StatusOK && me.header.Get("Warning") == ""
	}, "after the faults were cleared, answers stayed degraded")
	// Breakers opened during the outage close after their probes.
	t.Logf("faults cleared: normal answers again after %s", time.Since(cleared).Round(time.Millisecond))
}

// fallbackMetrics is the gateway's rideshare_gateway_fallbacks_total series.
func fallbackMetrics(p *runningPlatform) string {
	m := p.do("GET", "/metrics", "", nil)
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(m.body))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "rideshare_gateway_fallbacks_total{") {
			lines = append(lines, sc.Text())
		}
	}
	return strings.Join(lines, "; ")
}

// fallbackReasons counts the gateway's fallback warnings by reason (the
// error code that made it fall back: fault_injected, circuit_open, ...).
func fallbackReasons(t *testing.T, dir string) map[string]int {
	b, err := os.ReadFile(filepath.Join(dir, "logs", "gateway.log"))
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]int{}
	for _, line := range bytes.Split(b, []byte("\n")) {
		var rec struct{ Msg, Level, Route, Reason string }
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "answering in degraded form" && rec.Level == "WARN" {
			reasons[rec.Route+" "+rec.Reason]++
		}
	}
	return reasons
}
