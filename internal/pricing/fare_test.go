package pricing

import (
	"testing"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// sf is the default rule the migration installs for geo.SanFrancisco.
var sf = FareRule{Area: "san-francisco", Currency: "USD", BaseFare: 250, PerKm: 120, PerMinute: 30, Minimum: 700}

func TestFare(t *testing.T) {
	// Rules without base or minimum isolate the rounding.
	perKm := FareRule{Currency: "USD", PerKm: 120}
	perHundred := FareRule{Currency: "USD", PerKm: 100}
	cases := []struct {
		name            string
		rule            FareRule
		meters, seconds int64
		surge           Surge
		want            int64
	}{
		{"empty trip pays the minimum", sf, 0, 0, NoSurge, 700},
		{"10 km in 20 min", sf, 10_000, 1200, NoSurge, 250 + 1200 + 600},
		{"10 km in 20 min at 1.5", sf, 10_000, 1200, 15, 3075},
		{"10 km in 20 min at the 3.0 cap", sf, 10_000, 1200, 30, 6150},
		{"per metre and per second, pro rata", sf, 3_200, 570, NoSurge, 250 + 384 + 285},
		{"one rounding at the end: 919 × 1.3 = 1194.7", sf, 3_200, 570, 13, 1195},
		{"short trip surged still below the minimum", sf, 1_000, 180, 15, 700}, // 460 × 1.5 = 690
		{"short trip surged above the minimum", sf, 1_000, 180, 20, 920},       // 460 × 2.0
		{"minimum applies after surge, not before", sf, 1_000, 180, 16, 736},   // 460 × 1.6
		{"below half a cent rounds down", perKm, 4, 0, NoSurge, 0},             // 0.48
		{"above half a cent rounds up", perKm, 5, 0, NoSurge, 1},               // 0.6
		{"exactly half a cent rounds up", perHundred, 5, 0, NoSurge, 1},        // 0.5
		{"rounding after surge, not before", perKm, 4, 0, 30, 1},               // 0.48 × 3 = 1.44
		{"a surge below 1.0 is treated as none", sf, 10_000, 1200, 5, 2050},
		{"negative route parts count as zero", sf, -5_000, -60, NoSurge, 700},
		// The largest route the contract can carry does not overflow:
		// (250 + 120 × 2,000,000 km + 30 × 33,333,333⅓ min) × 3.
		{"the longest route stays exact", sf, 2_000_000_000, 2_000_000_000, 30, (250 + 240_000_000 + 1_000_000_000) * 3},
	}
	for _, c := range cases {
		if got := c.rule.Fare(c.meters, c.seconds, c.surge); got != c.want {
			t.Errorf("%s: Fare(%d m, %d s, ×%.1f) = %d, want %d", c.name, c.meters, c.seconds, c.surge.Float(), got, c.want)
		}
	}
}

func TestFareRuleValidate(t *testing.T) {
	bad := []FareRule{
		{Area: "x", Currency: "usd", BaseFare: 1},
		{Area: "x", Currency: "US", BaseFare: 1},
		{Area: "x", Currency: "USD", BaseFare: -1},
		{Area: "x", Currency: "USD", Minimum: -1},
	}
	for _, r := range bad {
		if r.validate() == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	if err := sf.validate(); err != nil {
		t.Errorf("default rule refused: %v", err)
	}
}

func TestFallbackRoute(t *testing.T) {
	// 0.1° of latitude is 11,119.5 m on the great circle: the fallback
	// drives 1.3 times that, 14,455 m, at 25 km/h: 2081.5 s, rounded to 2082.
	a := geo.Point{Lat: 37.70, Lng: -122.45}
	b := geo.Point{Lat: 37.80, Lng: -122.45}
	r := fallbackRoute(a, b)
	if r.Meters != 14_455 || r.Seconds != 2_082 {
		t.Fatalf("fallback route = %+v, want 14455 m and 2082 s", r)
	}
	if r := fallbackRoute(a, a); r != (Route{}) {
		t.Fatalf("fallback for a point to itself = %+v, want zero", r)
	}
}

func TestRulebookLocate(t *testing.T) {
	if _, err := newRulebook(serviceAreas, map[string]FareRule{}); err == nil {
		t.Fatal("an area without a fare rule was accepted")
	}
	book, err := newRulebook(serviceAreas, map[string]FareRule{sf.Area: sf})
	if err != nil {
		t.Fatal(err)
	}
	area, rule, err := book.locate("pickup", geo.SanFrancisco.Center())
	if err != nil || area.Name != geo.SanFrancisco.Name || rule != sf {
		t.Fatalf("locate(center) = %v, %+v, %v", area.Name, rule, err)
	}
}
