package pricing

import "github.com/rideshare-platform/rideshare/internal/geo"

// defaultFareRules are the rules the pricing database is seeded with
// (migrations/00001_pricing.sql; TestDefaultFareRules holds the two
// together). They price the estimates made where pricing's database cannot
// be read: by the gateway, when pricing itself is down. A rule an operator
// later changes in the database is not seen there; the estimate is marked
// degraded and cannot be booked, so the rider pays pricing's own fare.
var defaultFareRules = map[string]FareRule{
	geo.SanFrancisco.Name: {Area: geo.SanFrancisco.Name, Currency: "USD", BaseFare: 250, PerKm: 120, PerMinute: 30, Minimum: 700},
}

// Fallback is the estimate pricing answers for pickup → dropoff when
// dispatch's route is missing: the straight-line route, no surge, marked
// degraded. It needs neither a database nor dispatch, so a caller that
// cannot reach pricing at all answers the fare pricing would have. The
// points are checked as Estimate checks them (400 for a non-coordinate, 422
// outside the service area). The quote is unsigned and has no expiry: it
// cannot be booked.
func Fallback(pickup, dropoff geo.Point) (Quote, error) {
	rule, err := rulebook{areas: serviceAreas, rules: defaultFareRules}.trip(pickup, dropoff)
	if err != nil {
		return Quote{}, err
	}
	return rule.fallback(pickup, dropoff), nil
}

// fallback prices pickup → dropoff under r without dispatch: the one place
// the degraded fare is made, by pricing's estimate and by Fallback.
func (r FareRule) fallback(pickup, dropoff geo.Point) Quote {
	route := fallbackRoute(pickup, dropoff)
	return Quote{
		Pickup: pickup, Dropoff: dropoff, Currency: r.Currency, Route: route, Surge: NoSurge, Degraded: true,
		Fare: r.Fare(route.Meters, route.Seconds, NoSurge),
	}
}
