package dispatch

import (
	"context"
	"math"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// Router estimates driving distance (meters) and time (seconds) between two
// points. The built-in Estimator needs nothing; a client of a routing engine
// such as OSRM can take its place behind the same method.
type Router interface {
	Route(ctx context.Context, from, to geo.Point) (meters, seconds int, err error)
}

// Estimator is the built-in Router: the great-circle distance stretched by a
// detour factor (streets are not straight lines; about 1.3 in a street grid
// like San Francisco's), driven at an average city speed.
type Estimator struct {
	// DetourFactor multiplies the straight-line distance.
	DetourFactor float64
	// SpeedKMH is the average speed, stops and lights included.
	SpeedKMH float64
}

// DefaultEstimator is the estimator unless settings say otherwise.
var DefaultEstimator = Estimator{DetourFactor: 1.3, SpeedKMH: 25}

// Route never fails.
func (e Estimator) Route(_ context.Context, from, to geo.Point) (meters, seconds int, err error) {
	m := geo.Distance(from, to) * e.DetourFactor
	return int(math.Round(m)), int(math.Ceil(m / (e.SpeedKMH / 3.6))), nil
}
