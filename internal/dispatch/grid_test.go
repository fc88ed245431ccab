package dispatch

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// bruteNearest is the obviously right answer Nearest must match.
func bruteNearest(points map[string]geo.Point, p geo.Point, k int, accept func(string) bool) []Neighbor {
	var all []Neighbor
	for id, at := range points {
		if accept != nil && !accept(id) {
			continue
		}
		all = append(all, Neighbor{Entry: Entry{ID: id, At: at}, Meters: geo.Distance(p, at)})
	}
	sort.Slice(all, func(i, j int) bool { return closer(all[i], all[j]) })
	if len(all) > k {
		all = all[:k]
	}
	return all
}

func randomIn(r *rand.Rand, a geo.Area) geo.Point {
	return geo.Point{
		Lat: a.Min.Lat + r.Float64()*(a.Max.Lat-a.Min.Lat),
		Lng: a.Min.Lng + r.Float64()*(a.Max.Lng-a.Min.Lng),
	}
}

// TestNearestMatchesBruteForce compares the grid with a full scan on many
// random fleets and queries: sparse and dense fleets, points that moved or
// left, a filter that rejects some drivers, queries inside and outside the
// fleet's area, and the same at a continental scale where the longitude
// bound matters.
func TestNearestMatchesBruteForce(t *testing.T) {
	// Under 180° of longitude wide: the index does not handle the ±180°
	// meridian.
	wide := geo.Area{Name: "wide", Min: geo.Point{Lat: -70, Lng: -85}, Max: geo.Point{Lat: 70, Lng: 85}}
	north := geo.Area{Name: "north", Min: geo.Point{Lat: 60, Lng: -20}, Max: geo.Point{Lat: 85, Lng: 40}}
	cases := []struct {
		name      string
		area      geo.Area
		latDeg    float64
		lngDeg    float64
		queryArea geo.Area
	}{
		{"city", geo.SanFrancisco, fineLatDeg, fineLngDeg, geo.SanFrancisco},
		{"city, queries around it", geo.SanFrancisco, fineLatDeg, fineLngDeg, geo.Area{Min: geo.Point{Lat: 37.6, Lng: -122.7}, Max: geo.Point{Lat: 37.9, Lng: -122.2}}},
		{"continents", wide, 5, 5, wide},
		{"far north", north, 1, 1, north},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for trial := range 300 {
				g := NewGrid(c.latDeg, c.lngDeg)
				points := map[string]geo.Point{}
				n := []int{0, 1, 3, 20, 200, 2000}[trial%6]
				for i := range n {
					id := fmt.Sprintf("d%d", i)
					p := randomIn(r, c.area)
					g.Put(id, p)
					points[id] = p
				}
				// Some drivers move, some leave: the index must follow.
				for id := range points {
					switch r.IntN(4) {
					case 0:
						p := randomIn(r, c.area)
						g.Put(id, p)
						points[id] = p
					case 1:
						g.Remove(id)
						delete(points, id)
					}
				}
				if g.Len() != len(points) {
					t.Fatalf("trial %d: index holds %d points, want %d", trial, g.Len(), len(points))
				}
				var accept func(string) bool
				if trial%3 == 0 {
					accept = func(id string) bool { return len(id)%2 == 0 || id[len(id)-1] != '7' }
				}
				for range 5 {
					q := randomIn(r, c.queryArea)
					k := 1 + r.IntN(12)
					got := g.Nearest(q, k, accept)
					want := bruteNearest(points, q, k, accept)
					if !sameNeighbors(got, want) {
						t.Fatalf("trial %d: %d points, k=%d, query %v:\n got  %v\n want %v", trial, len(points), k, q, ids(got), ids(want))
					}
				}
			}
		})
	}
}

func sameNeighbors(a, b []Neighbor) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID {
			return false
		}
	}
	return true
}

func ids(ns []Neighbor) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = fmt.Sprintf("%s@%.0fm", n.ID, n.Meters)
	}
	return out
}

func TestGridPutMoveRemove(t *testing.T) {
	g := NewGrid(fineLatDeg, fineLngDeg)
	a := geo.Point{Lat: 37.77, Lng: -122.42}
	b := geo.Point{Lat: 37.80, Lng: -122.40}
	g.Put("x", a)
	g.Put("y", a)
	g.Put("x", b) // moves to another cell
	g.Put("y", geo.Point{Lat: a.Lat + 1e-6, Lng: a.Lng})
	if p, _ := g.Get("x"); p != b {
		t.Fatalf("x at %v, want %v", p, b)
	}
	if p, _ := g.Get("y"); p.Lat != a.Lat+1e-6 {
		t.Fatalf("y not moved within its cell: %v", p)
	}
	g.Remove("x")
	g.Remove("nobody")
	if _, ok := g.Get("x"); ok || g.Len() != 1 {
		t.Fatalf("after removing x: len %d", g.Len())
	}
	if got := g.Nearest(b, 5, nil); len(got) != 1 || got[0].ID != "y" {
		t.Fatalf("nearest after removal: %v", ids(got))
	}
}
