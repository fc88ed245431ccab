package geo

import (
	"math"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// FuzzCheck: no point that is not a coordinate (NaN, ±Inf, huge, out of
// range) ever passes Check; every refusal is Invalid (400) or, for a real
// place elsewhere, Unprocessable (422); and the distance between two valid
// points is a finite number no longer than half the Earth's circumference.
func FuzzCheck(f *testing.F) {
	for _, s := range [][4]float64{
		{37.7955, -122.3937, 37.7544, -122.4477},
		{0, 0, 0, 0},
		{90, 180, -90, -180},
		{90.0000001, 0, 0, 180.0000001},
		{math.NaN(), 0, 0, math.NaN()},
		{math.Inf(1), math.Inf(-1), 1e308, -1e308},
		{math.SmallestNonzeroFloat64, -0.0, 40.71, -74.0},
		{SanFrancisco.Min.Lat, SanFrancisco.Min.Lng, SanFrancisco.Max.Lat, SanFrancisco.Max.Lng},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, lat, lng, lat2, lng2 float64) {
		p := Point{Lat: lat, Lng: lng}
		err := Check("pickup", p, SanFrancisco)
		coordinate := !math.IsNaN(lat) && !math.IsNaN(lng) && !math.IsInf(lat, 0) && !math.IsInf(lng, 0) &&
			math.Abs(lat) <= 90 && math.Abs(lng) <= 180
		switch {
		case err == nil:
			if !coordinate || !SanFrancisco.Contains(p) {
				t.Fatalf("Check passed %v", p)
			}
		case !coordinate:
			if apperr.KindOf(err) != apperr.Invalid {
				t.Fatalf("%v is not a coordinate, refused as %v", p, err)
			}
		default:
			if apperr.KindOf(err) != apperr.Unprocessable || apperr.CodeOf(err) != "outside_service_area" {
				t.Fatalf("%v refused as %v", p, err)
			}
		}
		if p.Valid() != coordinate {
			t.Fatalf("Valid(%v) = %v", p, p.Valid())
		}
		q := FromProto(Point{Lat: lat2, Lng: lng2}.Proto())
		if coordinate && q.Valid() {
			d := Distance(p, q)
			if math.IsNaN(d) || d < 0 || d > math.Pi*earthRadiusMeters*1.000001 {
				t.Fatalf("Distance(%v, %v) = %v", p, q, d)
			}
		}
	})
}
