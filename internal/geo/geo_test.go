package geo

import (
	"math"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

func TestDistance(t *testing.T) {
	ferry := Point{37.7955, -122.3937}  // Ferry Building
	twinPk := Point{37.7544, -122.4477} // Twin Peaks
	// Independently: 0.0411° of latitude is 4570 m and 0.0540° of longitude
	// at 37.77°N is 4748 m, so about 6590 m on the flat.
	if d := Distance(ferry, twinPk); math.Abs(d-6590) > 20 {
		t.Errorf("Ferry Building to Twin Peaks = %.0f m, want about 6590 m", d)
	}
	if d := Distance(ferry, ferry); d != 0 {
		t.Errorf("zero distance = %f", d)
	}
}

func TestCheck(t *testing.T) {
	cases := []struct {
		p    Point
		kind apperr.Kind
		code string
	}{
		{SanFrancisco.Center(), 0, ""},
		{Point{91, 0}, apperr.Invalid, "invalid_argument"},
		{Point{0, -181}, apperr.Invalid, "invalid_argument"},
		{Point{math.NaN(), 0}, apperr.Invalid, "invalid_argument"},
		{Point{40.7128, -74.0060}, apperr.Unprocessable, "outside_service_area"}, // New York
	}
	for _, c := range cases {
		err := Check("pickup", c.p, SanFrancisco)
		if c.kind == 0 {
			if err != nil {
				t.Errorf("%v: %v", c.p, err)
			}
			continue
		}
		if e := apperr.As(err); e.Kind != c.kind || e.Code != c.code {
			t.Errorf("%v: got %v, want %s/%s", c.p, err, c.kind, c.code)
		}
	}
}
