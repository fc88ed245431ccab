// Package geo is the platform's shared geometry: validated points, great-
// circle distance, and the service area a ride must start and end in.
package geo

import (
	"math"

	geov1 "github.com/rideshare-platform/rideshare/api/geo/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// Point is a WGS84 coordinate in degrees.
type Point struct{ Lat, Lng float64 }

// FromProto converts p; nil becomes the zero Point, which Validate refuses
// only if it is outside the area (0,0 is a valid coordinate).
func FromProto(p *geov1.Point) Point { return Point{Lat: p.GetLat(), Lng: p.GetLng()} }

// Proto converts p.
func (p Point) Proto() *geov1.Point { return &geov1.Point{Lat: p.Lat, Lng: p.Lng} }

// Valid reports whether p is a coordinate at all.
func (p Point) Valid() bool {
	return !math.IsNaN(p.Lat) && !math.IsNaN(p.Lng) && p.Lat >= -90 && p.Lat <= 90 && p.Lng >= -180 && p.Lng <= 180
}

const earthRadiusMeters = 6_371_000

// Distance is the great-circle distance between a and b in meters.
func Distance(a, b Point) float64 {
	const rad = math.Pi / 180
	dLat := (b.Lat - a.Lat) * rad
	dLng := (b.Lng - a.Lng) * rad
	h := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(a.Lat*rad)*math.Cos(b.Lat*rad)*math.Sin(dLng/2)*math.Sin(dLng/2)
	return 2 * earthRadiusMeters * math.Asin(math.Min(1, math.Sqrt(h)))
}

// Area is a rectangular service area.
type Area struct {
	Name     string
	Min, Max Point
}

// Contains reports whether p lies in a.
func (a Area) Contains(p Point) bool {
	return p.Lat >= a.Min.Lat && p.Lat <= a.Max.Lat && p.Lng >= a.Min.Lng && p.Lng <= a.Max.Lng
}

// Center is the middle of a.
func (a Area) Center() Point {
	return Point{Lat: (a.Min.Lat + a.Max.Lat) / 2, Lng: (a.Min.Lng + a.Max.Lng) / 2}
}

// SanFrancisco is the demo city: the peninsula from Ocean Beach to the Bay
// and from Hunters Point to the Golden Gate.
var SanFrancisco = Area{Name: "san-francisco", Min: Point{Lat: 37.7080, Lng: -122.5150}, Max: Point{Lat: 37.8120, Lng: -122.3550}}

// Check validates a point a caller sent: not a coordinate is Invalid (400),
// a coordinate outside the area is Unprocessable (422, outside_service_area).
// field names the point in messages ("pickup").
func Check(field string, p Point, area Area) error {
	if !p.Valid() {
		return apperr.E(apperr.Invalid, "", "%s must have lat in [-90, 90] and lng in [-180, 180]", field)
	}
	if !area.Contains(p) {
		return apperr.E(apperr.Unprocessable, "outside_service_area", "%s is outside the %s service area", field, area.Name)
	}
	return nil
}
