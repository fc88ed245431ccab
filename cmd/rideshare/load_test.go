package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/load"
)

// TestLoadAgainstPlatform runs a short load run against the whole platform
// (its own riders and fast simulated drivers, `up` with no fleet) and
// checks the report is what a person would act on: rides completed and
// every requested ride settled, no request the platform failed, latency
// percentiles for each route the phones used, a timeline with a second per
// second of the run.
func TestLoadAgainstPlatform(t *testing.T) {
	p := startPlatform(t, t.TempDir())
	// A rider takes one ride at a time, some seconds each, and an arrival
	// that finds every rider busy is dropped: one rider per arrival keeps
	// how long rides take on a busy machine out of the counts below. The
	// drain only bounds the wait; the run ends when the last ride does.
	const duration, riders = 6 * time.Second, 12
	var progress bytes.Buffer
	rep, err := load.Run(context.Background(), load.Config{
		Gateway: p.state.GatewayURL, Riders: riders, Drivers: 8, Duration: duration, Rate: 2, Drain: time.Minute,
		Password: p.state.FleetPassword, Seed: 11,
		TimeScale: 300, AcceptDelay: [2]time.Duration{time.Millisecond, 5 * time.Millisecond},
		PollEvery: 200 * time.Millisecond, PingEvery: 500 * time.Millisecond,
		Progress: &progress,
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("progress:\n%s\nreport:\n%s", progress.String(), text.String())

	rides := rep.Rides
	if rep.Warmup.RidersReady != riders || rep.Warmup.DriversOnline != 8 {
		t.Errorf("warm-up %+v: want every rider signed in and every driver online", rep.Warmup)
	}
	if rides.Offered != 12 || rides.Dropped != 0 || rides.Failed != 0 || rides.Requested != 12 {
		t.Errorf("rides %+v: want 12 offered (2/s for 6s) and all requested", rides)
	}
	if rides.Terminal[load.StatusCompleted] == 0 || len(rides.NotTerminal) != 0 {
		t.Errorf("rides %+v: want rides completed and every ride settled within the drain", rides)
	}
	for _, e := range rep.ErrorsByRoute {
		// A driver may lose an offer race (409) or read a ride given to
		// another (404); a 5xx, a rate limit or no answer is the platform's
		// failure, and a rider's request never should fail.
		rider := !strings.Contains(e.Route, "/drivers/") && !strings.Contains(e.Route, "/accept") &&
			!strings.Contains(e.Route, "/arrive") && !strings.Contains(e.Route, "/start") && !strings.Contains(e.Route, "/complete")
		if rider || !strings.HasPrefix(e.Class, "HTTP 4") || e.Class == "HTTP 429" {
			t.Errorf("unexpected errors: %d × %s on %s", e.Count, e.Class, e.Route)
		}
	}
	for _, name := range []string{"POST /v1/fares/estimate", "POST /v1/rides", "GET /v1/rides/{id}",
		"GET /v1/drivers/me/offers", "POST /v1/drivers/me/location", "POST /v1/rides/{id}/complete"} {
		var found bool
		for _, r := range rep.Routes {
			if r.Route == name {
				found = true
				if l := r.Latency; l.Count == 0 || l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.Max {
					t.Errorf("%s: latency %+v, want ordered percentiles", name, l)
				}
			}
		}
		if !found {
			t.Errorf("no latency for %s", name)
		}
	}
	if n := len(rep.Timeline); n < int(duration/time.Second) {
		t.Errorf("timeline has %d seconds, want at least %d", n, int(duration/time.Second))
	}
}
