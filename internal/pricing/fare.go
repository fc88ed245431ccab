package pricing

import (
	"fmt"
	"regexp"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// FareRule is how trips in one service area are priced, in the currency's
// minor units. Rules are data in the pricing database (table fare_rules),
// loaded when the service starts.
type FareRule struct {
	// Area is the service area the rule prices, a geo.Area name.
	Area string
	// Currency is the ISO 4217 code of every amount in the rule.
	Currency string
	// BaseFare is charged once per trip.
	BaseFare int64
	// PerKm is charged per kilometre of route, pro rata per metre.
	PerKm int64
	// PerMinute is charged per minute of route, pro rata per second.
	PerMinute int64
	// Minimum is the least a trip costs, surge included.
	Minimum int64
}

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

// validate refuses a rule that would price nonsense; a bad row stops the
// service at start rather than quoting it.
func (r FareRule) validate() error {
	if !currencyCode.MatchString(r.Currency) {
		return fmt.Errorf("pricing: fare rule %s: currency %q is not an ISO 4217 code", r.Area, r.Currency)
	}
	if r.BaseFare < 0 || r.PerKm < 0 || r.PerMinute < 0 || r.Minimum < 0 {
		return fmt.Errorf("pricing: fare rule %s: amounts must not be negative", r.Area)
	}
	return nil
}

// Surge is a multiplier in tenths: 10 is 1.0 (no surge), 25 is 2.5. Surge is
// always rounded to 0.1, so tenths keep the fare arithmetic in integers.
type Surge int64

// NoSurge is the multiplier 1.0.
const NoSurge Surge = 10

// Float is the multiplier as the contract carries it.
func (s Surge) Float() float64 { return float64(s) / 10 }

// Fare prices a route of meters and seconds under surge s:
//
//	(base + perKm × km + perMinute × minutes) × surge, at least Minimum
//
// The rounding rule: the fare is computed exactly as a fraction of a minor
// unit and rounded once, at the end, half up to a whole minor unit; the
// minimum applies after surge and rounding. Rounding each term separately
// would drift by up to a cent per term, and rounding before surge would let
// surge multiply the rounding error.
func (r FareRule) Fare(meters, seconds int64, s Surge) int64 {
	meters, seconds = max(meters, 0), max(seconds, 0)
	if s < NoSurge {
		s = NoSurge
	}
	// With a common denominator of 3000 (km are 1000 m, minutes are 60 s,
	// lcm(1000, 60) = 3000) and 10 for the surge tenths, every term is an
	// integer. int64 holds it for any route an int32 can describe.
	const den = 3000 * 10
	num := (r.BaseFare*3000 + r.PerKm*meters*3 + r.PerMinute*seconds*50) * int64(s)
	fare := (num + den/2) / den
	return max(fare, r.Minimum)
}

// Route is a driving route's length and time.
type Route struct {
	Meters  int64
	Seconds int64
}

// Fallback route estimate: the great-circle distance stretched by a detour
// factor typical of a city street grid, driven at a typical city average
// speed. Used only when dispatch's routing does not answer in time.
const (
	detourPercent  = 130    // route = straight line × 1.3
	fallbackKmPerH = 25_000 // metres per hour: 25 km/h
)

// fallbackRoute estimates the route from a to b without a routing engine.
func fallbackRoute(a, b geo.Point) Route {
	m := int64(geo.Distance(a, b)*detourPercent/100 + 0.5)
	return Route{Meters: m, Seconds: (m*3600 + fallbackKmPerH/2) / fallbackKmPerH}
}

// rulebook is the service areas pricing serves and the rule of each.
type rulebook struct {
	areas []geo.Area
	rules map[string]FareRule
}

// newRulebook pairs each area with its rule; an area without one stops the
// service at start, since it could only be priced by guessing.
func newRulebook(areas []geo.Area, rules map[string]FareRule) (rulebook, error) {
	if len(areas) == 0 {
		return rulebook{}, fmt.Errorf("pricing: no service areas")
	}
	for _, a := range areas {
		if _, ok := rules[a.Name]; !ok {
			return rulebook{}, fmt.Errorf("pricing: no fare rule for service area %q (table fare_rules)", a.Name)
		}
	}
	return rulebook{areas: areas, rules: rules}, nil
}

// locate finds the area p lies in and its rule. A point in no area is the
// error geo.Check gives: 400 for a non-coordinate, 422 outside_service_area.
func (b rulebook) locate(field string, p geo.Point) (geo.Area, FareRule, error) {
	for _, a := range b.areas {
		if p.Valid() && a.Contains(p) {
			return a, b.rules[a.Name], nil
		}
	}
	return geo.Area{}, FareRule{}, geo.Check(field, p, b.areas[0])
}
