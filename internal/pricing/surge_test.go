package pricing

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	usersv1 "github.com/rideshare-platform/rideshare/api/users/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

func TestSurgeBalance(t *testing.T) {
	p := DefaultSurgePolicy
	now := time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)
	cases := []struct {
		drivers, requests int64
		want              Surge
	}{
		{0, 0, 10},   // an empty zone
		{5, 0, 10},   // drivers, nobody asking
		{10, 5, 10},  // more drivers than requests
		{5, 5, 10},   // balanced: still no surge
		{3, 4, 12},   // 1 + 0.5 × (1.333 − 1) = 1.1667
		{4, 6, 13},   // 1.25, half up
		{2, 4, 15},   // twice the demand
		{1, 4, 25},   // 1 + 0.5 × 3
		{1, 5, 30},   // reaches the cap
		{1, 100, 30}, // capped
		{0, 3, 30},   // demand and no drivers at all: the cap
	}
	for _, c := range cases {
		got := p.Multiplier(Supply{AvailableDrivers: c.drivers, OpenRequests: c.requests, ObservedAt: now}, now)
		if got != c.want {
			t.Errorf("%d drivers, %d requests: ×%.1f, want ×%.1f", c.drivers, c.requests, got.Float(), c.want.Float())
		}
	}
	lowCap := p
	lowCap.Cap = 20
	if got := lowCap.Multiplier(Supply{AvailableDrivers: 1, OpenRequests: 9, ObservedAt: now}, now); got != 20 {
		t.Errorf("cap 2.0: ×%.1f", got.Float())
	}
}

func TestSurgeDecaysWhenStale(t *testing.T) {
	p := DefaultSurgePolicy // full for 3 min, then down to 1.0 over 2 min
	seen := time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)
	s := Supply{AvailableDrivers: 1, OpenRequests: 5, ObservedAt: seen} // ×3.0
	cases := []struct {
		age  time.Duration
		want Surge
	}{
		{0, 30},
		{3 * time.Minute, 30},
		{4 * time.Minute, 20}, // halfway down from 3.0 to 1.0
		{4*time.Minute + 30*time.Second, 15},
		{5 * time.Minute, 10},
		{time.Hour, 10},
		{-time.Minute, 30}, // dispatch's clock slightly ahead: trusted
	}
	for _, c := range cases {
		if got := p.Multiplier(s, seen.Add(c.age)); got != c.want {
			t.Errorf("after %s: ×%.1f, want ×%.1f", c.age, got.Float(), c.want.Float())
		}
	}
	if got := p.Multiplier(Supply{OpenRequests: 9}, seen); got != NoSurge {
		t.Errorf("a zone never reported surges ×%.1f", got.Float())
	}
}

func supplyEvent(t *testing.T, id, zone string, drivers, requests int32, at time.Time) *eventsv1.Envelope {
	t.Helper()
	payload, err := anypb.New(&dispatchv1.SupplyChanged{Zone: zone, AvailableDrivers: drivers, OpenRequests: requests})
	if err != nil {
		t.Fatal(err)
	}
	return &eventsv1.Envelope{Id: id, Type: "dispatch.supply.changed", Source: "dispatch", Key: zone,
		Time: timestamppb.New(at), SchemaVersion: 1, Payload: payload}
}

// TestSurgeFromSupplyEvents applies a sequence of dispatch events through the
// consumer handler, each in the transaction the consumer gives it, and reads
// the surge after each.
func TestSurgeFromSupplyEvents(t *testing.T) {
	ctx := context.Background()
	h, db, clk, _ := newTestHandler(t)
	t0 := clk.Now()
	apply := func(env *eventsv1.Envelope) {
		t.Helper()
		if err := db.InTx(ctx, func(tx *sqldb.Tx) error { return h.onSupplyChanged(ctx, tx, env) }); err != nil {
			t.Fatalf("applying %s: %v", env.Id, err)
		}
	}
	surge := func(zone string) Surge {
		t.Helper()
		s, err := h.store.supply(ctx, zone)
		if err != nil {
			t.Fatal(err)
		}
		return h.surge.Multiplier(s, clk.Now())
	}
	steps := []struct {
		env  *eventsv1.Envelope
		zone string
		want Surge
	}{
		{supplyEvent(t, "e1", "z1", 2, 4, t0), "z1", 15},
		{supplyEvent(t, "e2", "z1", 1, 5, t0.Add(10*time.Second)), "z1", 30},
		// Late and out of order: older than e2, so it changes nothing.
		{supplyEvent(t, "e3", "z1", 10, 0, t0.Add(5*time.Second)), "z1", 30},
		// Another zone is independent.
		{supplyEvent(t, "e4", "z2", 8, 2, t0.Add(11*time.Second)), "z2", 10},
		{supplyEvent(t, "e5", "z1", 4, 4, t0.Add(20*time.Second)), "z1", 10},
		// e2 delivered again (the consumer dedupes ids; even if it did not,
		// the older counts could not move the zone back).
		{supplyEvent(t, "e2", "z1", 1, 5, t0.Add(10*time.Second)), "z1", 10},
	}
	for i, s := range steps {
		apply(s.env)
		if got := surge(s.zone); got != s.want {
			t.Fatalf("after step %d (%s): %s at ×%.1f, want ×%.1f", i+1, s.env.Id, s.zone, got.Float(), s.want.Float())
		}
	}
	if got := surge("z2"); got != NoSurge {
		t.Fatalf("z2 at ×%.1f", got.Float())
	}
	// Six minutes without news: z1's state is stale and surges no more.
	apply(supplyEvent(t, "e6", "z1", 1, 5, t0.Add(30*time.Second)))
	if got := surge("z1"); got != 30 {
		t.Fatalf("z1 at ×%.1f, want 3.0", got.Float())
	}
	clk.Advance(6 * time.Minute)
	if got := surge("z1"); got != NoSurge {
		t.Fatalf("stale z1 at ×%.1f, want 1.0", got.Float())
	}
}

func TestSupplyEventRefusals(t *testing.T) {
	ctx := context.Background()
	h, db, clk, _ := newTestHandler(t)
	wrongPayload, _ := anypb.New(&usersv1.ProfileCreated{UserId: "u"})
	newer := supplyEvent(t, "v2", "z1", 1, 5, clk.Now())
	newer.SchemaVersion = 2
	cases := []struct {
		name    string
		env     *eventsv1.Envelope
		dropped bool // Invalid: can never apply; otherwise retried later
	}{
		{"no zone", supplyEvent(t, "a", "", 1, 1, clk.Now()), true},
		{"negative drivers", supplyEvent(t, "b", "z1", -1, 1, clk.Now()), true},
		{"negative requests", supplyEvent(t, "c", "z1", 1, -1, clk.Now()), true},
		{"wrong payload", &eventsv1.Envelope{Id: "d", Type: "dispatch.supply.changed", Payload: wrongPayload}, true},
		{"unknown schema version is parked, not misread", newer, false},
	}
	for _, c := range cases {
		err := db.InTx(ctx, func(tx *sqldb.Tx) error { return h.onSupplyChanged(ctx, tx, c.env) })
		if err == nil || apperr.Is(err, apperr.Invalid) != c.dropped {
			t.Errorf("%s: %v (want dropped=%v)", c.name, err, c.dropped)
		}
	}
	var n int
	if err := db.Reader().QueryRowContext(ctx, `SELECT count(*) FROM surge_zones`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("refused events left %d zones (%v)", n, err)
	}
}
