package fleet

import (
	"math/rand/v2"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

func TestWanderStaysInTheArea(t *testing.T) {
	tiny := geo.Area{Name: "tiny", Min: geo.Point{Lat: 37.7800, Lng: -122.4200}, Max: geo.Point{Lat: 37.7802, Lng: -122.4198}}
	for _, tc := range []struct {
		name   string
		area   geo.Area
		meters float64
	}{
		{"city, city-block steps", geo.SanFrancisco, 50},
		{"city, steps a tenth of its width", geo.SanFrancisco, 1500},
		{"20 m patch, steps larger than the patch", tiny, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCar(tc.area, rand.New(rand.NewPCG(1, 2)))
			start := c.pos
			for i := range 5000 {
				c.wander(tc.meters)
				if !tc.area.Contains(c.pos) {
					t.Fatalf("step %d: %v is outside %v", i, c.pos, tc.area)
				}
			}
			if c.pos == start {
				t.Error("the car never moved")
			}
		})
	}
}

func TestTowardClosesInAndStopsAtTheDestination(t *testing.T) {
	c := &car{area: geo.SanFrancisco, pos: geo.Point{Lat: 37.72, Lng: -122.50}, rng: rand.New(rand.NewPCG(1, 1))}
	dest := geo.Point{Lat: 37.80, Lng: -122.37}
	total := geo.Distance(c.pos, dest)
	left := total
	steps := 0
	for !c.toward(dest, 250) {
		steps++
		now := geo.Distance(c.pos, dest)
		if now >= left || left-now > 251 {
			t.Fatalf("step %d: %.1f m → %.1f m left; want 250 m closer", steps, left, now)
		}
		left = now
		if steps > 1000 {
			t.Fatal("never arrived")
		}
	}
	if c.pos != dest {
		t.Errorf("arrived at %v, not %v", c.pos, dest)
	}
	if want := int(total / 250); steps < want-1 || steps > want+1 {
		t.Errorf("%d steps of 250 m for %.0f m", steps, total)
	}
	if c.toward(dest, 0) != true || c.pos != dest {
		t.Error("a car at its destination should stay there and report arrival")
	}
}
