package fleet

import (
	"math"
	"math/rand/v2"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// Speeds of a simulated car before the time scale is applied. A driver
// cruising for fares goes slower than one on a trip, which is what keeps
// the idle fleet spread out instead of piling up at the area's edges.
const (
	tripSpeed = 30 / 3.6 // m/s: 30 km/h, city driving
	roamSpeed = 15 / 3.6 // m/s: 15 km/h, cruising for fares
)

// metersPerDegree is the length of one degree of latitude; a degree of
// longitude is this times cos(latitude). Good to a fraction of a percent at
// city scale, which is all a simulated car needs.
const metersPerDegree = 111_320

// car is a simulated car's position and heading in its area. It is plain
// geometry, with no clock and no network: the driver decides how far it
// goes and when.
type car struct {
	area    geo.Area
	pos     geo.Point
	heading float64 // radians clockwise from north
	rng     *rand.Rand
}

// newCar parks a car at a random point of area, facing a random way.
func newCar(area geo.Area, rng *rand.Rand) *car {
	return &car{area: area, pos: randomPoint(area, rng), heading: rng.Float64() * 2 * math.Pi, rng: rng}
}

// inner is area shrunk by a margin, so a wandering car turns back before
// it reaches the edge rather than scraping along it.
func inner(a geo.Area) geo.Area {
	dLat := (a.Max.Lat - a.Min.Lat) * 0.05
	dLng := (a.Max.Lng - a.Min.Lng) * 0.05
	return geo.Area{Name: a.Name, Min: geo.Point{Lat: a.Min.Lat + dLat, Lng: a.Min.Lng + dLng}, Max: geo.Point{Lat: a.Max.Lat - dLat, Lng: a.Max.Lng - dLng}}
}

// randomPoint is uniform over the inner part of area.
func randomPoint(area geo.Area, rng *rand.Rand) geo.Point {
	in := inner(area)
	return geo.Point{
		Lat: in.Min.Lat + rng.Float64()*(in.Max.Lat-in.Min.Lat),
		Lng: in.Min.Lng + rng.Float64()*(in.Max.Lng-in.Min.Lng),
	}
}

// wander drives the car meters along a gently turning heading. A step
// that would leave the inner area turns the car back toward the middle,
// and the result is clamped to the area, so the car never leaves it.
func (c *car) wander(meters float64) {
	if meters <= 0 {
		return
	}
	// About 17° of drift per step: a street grid's turns, smoothed.
	c.heading += c.rng.NormFloat64() * 0.3
	next := offset(c.pos, c.heading, meters)
	if !inner(c.area).Contains(next) {
		c.heading = bearing(c.pos, c.area.Center()) + c.rng.NormFloat64()*0.5
		next = offset(c.pos, c.heading, meters)
	}
	c.pos = clamp(next, c.area)
}

// toward drives the car meters along the straight line to dest, stopping
// there, and reports whether it has arrived.
func (c *car) toward(dest geo.Point, meters float64) bool {
	left := geo.Distance(c.pos, dest)
	if left <= meters {
		c.pos = dest
		return true
	}
	if meters <= 0 {
		return false
	}
	c.heading = bearing(c.pos, dest)
	f := meters / left
	c.pos = geo.Point{Lat: c.pos.Lat + (dest.Lat-c.pos.Lat)*f, Lng: c.pos.Lng + (dest.Lng-c.pos.Lng)*f}
	return false
}

// offset is the point meters from p along heading (flat-earth, fine for the
// few hundred meters a step covers).
func offset(p geo.Point, heading, meters float64) geo.Point {
	north := meters * math.Cos(heading)
	east := meters * math.Sin(heading)
	return geo.Point{
		Lat: p.Lat + north/metersPerDegree,
		Lng: p.Lng + east/(metersPerDegree*math.Cos(p.Lat*math.Pi/180)),
	}
}

// bearing is the heading from a to b, radians clockwise from north.
func bearing(a, b geo.Point) float64 {
	north := b.Lat - a.Lat
	east := (b.Lng - a.Lng) * math.Cos(a.Lat*math.Pi/180)
	return math.Atan2(east, north)
}

func clamp(p geo.Point, a geo.Area) geo.Point {
	return geo.Point{Lat: min(max(p.Lat, a.Min.Lat), a.Max.Lat), Lng: min(max(p.Lng, a.Min.Lng), a.Max.Lng)}
}
