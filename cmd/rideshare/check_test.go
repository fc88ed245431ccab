package main

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/check"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// TestCheck audits a real platform: after a completed ride, a declined
// card and a cancellation every invariant holds, with the counts to show
// it; then the platform's own databases are edited behind its back, as a
// bug would, and the check names each broken invariant and the ride.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	p := startPlatform(t, dir, fastRides...)
	ctx := context.Background()

	// The audit is an admin endpoint like the others.
	rider := p.newRider("check-rider@example.com")
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {rider.token, http.StatusForbidden}} {
		req, _ := http.NewRequest("GET", p.state.Services["rides"]+platform.AuditPath, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		res, err := p.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Fatalf("/admin/audit with token %.10q: %d, want %d", tc.token, res.StatusCode, tc.want)
		}
	}

	// A completed ride; meanwhile, with the only driver busy, one that the
	// rider cancels while it searches; and one whose card declines.
	driver := p.newDriver("check-driver@example.com", nearFerry)
	completed := rider.request("check-1", trip(ferryBuilding, twinPeaks))["id"].(string)
	driver.awaitOffer(completed)
	driver.step(completed, "accept")
	cancelled := rider.request("check-2", trip(ferryBuilding, missionDolo))["id"].(string)
	rider.await(cancelled, "searching")
	if r := rider.do("POST", "/v1/rides/"+cancelled+"/cancel", nil); r.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	for _, s := range []string{"arrive", "start", "complete"} {
		driver.step(completed, s)
	}
	declined := rider.request("check-3", map[string]any{"pickup": ferryBuilding, "dropoff": twinPeaks, "payment_method": "card_declined"})["id"].(string)
	rider.await(declined, "payment_declined")

	rep := p.awaitCheck(ctx, 30*time.Second)
	src := p.checkSource()
	pc := rep.Payments
	if rep.Rides.Total != 3 || pc.CapturedOnce != 1 || pc.Voided != 1 || pc.Declined != 1 || pc.Settling != 0 ||
		!rep.Ledger.Balanced || rep.Ledger.Entries == 0 {
		t.Fatalf("counts: %+v", rep)
	}
	var services []string
	for _, o := range rep.Outboxes {
		services = append(services, o.Service)
	}
	if got := strings.Join(services, ","); got != "dispatch,identity,notifications,payments,pricing,rides,users" {
		t.Errorf("outboxes of %s, want every service with a database", got)
	}
	t.Logf("clean: %d rides, %d captured once, %d voided, %d declined; ledger %d entries, debits %d = credits %d",
		rep.Rides.Total, pc.CapturedOnce, pc.Voided, pc.Declined, rep.Ledger.Entries, rep.Ledger.Debits, rep.Ledger.Credits)

	// Behind the platform's back: the completed ride's payment says
	// voided, and the cancelled ride goes back to waiting for a driver
	// an hour ago.
	edit := func(file, query string, args ...any) {
		t.Helper()
		db, err := sqldb.Open(ctx, filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.InTx(ctx, func(tx *sqldb.Tx) error {
			res, err := tx.ExecContext(ctx, query, args...)
			if n, _ := res.RowsAffected(); err == nil && n != 1 {
				t.Fatalf("%s: %s changed %d rows", file, query, n)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	edit("payments.db", `UPDATE payments SET status = 'voided' WHERE ride_id = $1`, completed)
	edit("rides.db", `UPDATE rides SET status = 'driver_assigned', updated_at = $1 WHERE id = $2`,
		sqldb.Micros(time.Now().Add(-time.Hour)), cancelled)

	rep, err := check.Run(ctx, src, check.Options{})
	if err != nil {
		t.Fatal(err)
	}
	found := map[check.Invariant][]string{}
	for _, v := range rep.Violations {
		found[v.Invariant] = append(found[v.Invariant], v.Message)
	}
	for inv, about := range map[check.Invariant]string{check.Captures: completed, check.Ledger: "", check.Sagas: cancelled} {
		if len(found[inv]) == 0 || !strings.Contains(strings.Join(found[inv], "\n"), about) {
			t.Errorf("no %s violation about %q in %v", inv, about, rep.Violations)
		}
	}
	if rep.OK() || rep.Rides.Stuck != 1 {
		t.Fatalf("after the edits: stuck %d, violations %v", rep.Rides.Stuck, rep.Violations)
	}
	for _, v := range rep.Violations {
		t.Logf("reported: [%s] %s", v.Invariant, v.Message)
	}
}

// checkSource is what `rideshare check` reads on this platform: every
// process's /admin/audit, with the operator's admin token.
func (p *runningPlatform) checkSource() *check.Admin {
	src := &check.Admin{Processes: map[string]string{"gateway": p.state.GatewayURL}, Token: p.adminToken(), HTTP: p.client}
	for name, u := range p.stateNow().Services {
		src.Processes[name] = u
	}
	return src
}
