package dispatch

import (
	"container/heap"
	"math"
	"sort"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// Grid is a spatial index of points by id: the plane cut into cells of a
// fixed size in degrees, each holding the points inside it. Putting a point
// costs a map lookup or two, so the index can follow every location ping;
// a nearest-k query looks at the query's cell, then at rings of cells around
// it, and stops as soon as nothing outside the rings seen can be nearer than
// the k-th point found.
//
// The index assumes an area that does not straddle the ±180° meridian (a
// city). It is not safe for concurrent use: the fleet guards it.
type Grid struct {
	latDeg, lngDeg float64
	cells          map[Cell][]Entry
	where          map[string]slot
	// lo and hi bound every cell ever occupied. They only grow (cheaper
	// than tracking exact bounds on removal), which keeps them a safe stop
	// for a query that finds fewer than k points.
	lo, hi Cell
}

// Cell is a grid cell: Row counts cells of latitude, Col of longitude, both
// from 0°.
type Cell struct{ Row, Col int32 }

// Entry is one indexed point.
type Entry struct {
	ID string
	At geo.Point
}

// Neighbor is a point found by Nearest and its great-circle distance from
// the query.
type Neighbor struct {
	Entry
	Meters float64
}

type slot struct {
	cell Cell
	i    int
}

// NewGrid is an empty index with cells latDeg by lngDeg degrees.
func NewGrid(latDeg, lngDeg float64) *Grid {
	return &Grid{latDeg: latDeg, lngDeg: lngDeg, cells: map[Cell][]Entry{}, where: map[string]slot{}}
}

// CellOf is the cell holding p.
func (g *Grid) CellOf(p geo.Point) Cell {
	return Cell{Row: int32(math.Floor(p.Lat / g.latDeg)), Col: int32(math.Floor(p.Lng / g.lngDeg))}
}

// Len is the number of points indexed.
func (g *Grid) Len() int { return len(g.where) }

// Put indexes id at p, moving it if it was elsewhere.
func (g *Grid) Put(id string, p geo.Point) {
	c := g.CellOf(p)
	if s, ok := g.where[id]; ok {
		if s.cell == c {
			g.cells[c][s.i].At = p
			return
		}
		g.remove(id, s)
	}
	if len(g.where) == 0 {
		g.lo, g.hi = c, c
	} else {
		g.lo = Cell{Row: min(g.lo.Row, c.Row), Col: min(g.lo.Col, c.Col)}
		g.hi = Cell{Row: max(g.hi.Row, c.Row), Col: max(g.hi.Col, c.Col)}
	}
	g.cells[c] = append(g.cells[c], Entry{ID: id, At: p})
	g.where[id] = slot{cell: c, i: len(g.cells[c]) - 1}
}

// Remove drops id from the index; an unknown id is ignored.
func (g *Grid) Remove(id string) {
	if s, ok := g.where[id]; ok {
		g.remove(id, s)
	}
}

func (g *Grid) remove(id string, s slot) {
	es := g.cells[s.cell]
	last := len(es) - 1
	if s.i != last {
		es[s.i] = es[last]
		g.where[es[s.i].ID] = slot{cell: s.cell, i: s.i}
	}
	es[last] = Entry{}
	if last == 0 {
		delete(g.cells, s.cell)
	} else {
		g.cells[s.cell] = es[:last]
	}
	delete(g.where, id)
}

// Get is where id is indexed.
func (g *Grid) Get(id string) (geo.Point, bool) {
	s, ok := g.where[id]
	if !ok {
		return geo.Point{}, false
	}
	return g.cells[s.cell][s.i].At, true
}

// Cell calls fn for every point in c.
func (g *Grid) Cell(c Cell, fn func(Entry)) {
	for _, e := range g.cells[c] {
		fn(e)
	}
}

// Each calls fn for every point, with its cell.
func (g *Grid) Each(fn func(Cell, Entry)) {
	for c, es := range g.cells {
		for _, e := range es {
			fn(c, e)
		}
	}
}

// Nearest returns up to k points nearest to p, nearest first (ties by id),
// among those accept admits; a nil accept admits all. accept runs at most
// once per point looked at.
func (g *Grid) Nearest(p geo.Point, k int, accept func(id string) bool) []Neighbor {
	if k <= 0 || len(g.where) == 0 {
		return nil
	}
	best := &farthestFirst{}
	center := g.CellOf(p)
	for r := int32(0); ; r++ {
		g.ring(center, r, func(e Entry) {
			if accept != nil && !accept(e.ID) {
				return
			}
			n := Neighbor{Entry: e, Meters: geo.Distance(p, e.At)}
			if best.Len() < k {
				heap.Push(best, n)
			} else if closer(n, (*best)[0]) {
				(*best)[0] = n
				heap.Fix(best, 0)
			}
		})
		covered := center.Row-r <= g.lo.Row && center.Row+r >= g.hi.Row && center.Col-r <= g.lo.Col && center.Col+r >= g.hi.Col
		if covered || (best.Len() == k && (*best)[0].Meters <= g.outsideBound(p, center, r)) {
			break
		}
	}
	out := []Neighbor(*best)
	sort.Slice(out, func(i, j int) bool { return closer(out[i], out[j]) })
	return out
}

// ring visits the cells at Chebyshev distance r from c.
func (g *Grid) ring(c Cell, r int32, fn func(Entry)) {
	if r == 0 {
		g.Cell(c, fn)
		return
	}
	for col := c.Col - r; col <= c.Col+r; col++ {
		g.Cell(Cell{Row: c.Row - r, Col: col}, fn)
		g.Cell(Cell{Row: c.Row + r, Col: col}, fn)
	}
	for row := c.Row - r + 1; row <= c.Row+r-1; row++ {
		g.Cell(Cell{Row: row, Col: c.Col - r}, fn)
		g.Cell(Cell{Row: row, Col: c.Col + r}, fn)
	}
}

// outsideBound is a lower bound, in meters, on the great-circle distance
// from p to any point outside the square of cells within r of center. A
// point outside is either beyond the square's latitudes, so at least the
// latitude gap away along a meridian, or within them and beyond its
// longitudes, where the haversine gives h ≥ cos²(φmax)·sin²(Δλ/2) with
// φmax the square's largest |latitude|.
func (g *Grid) outsideBound(p geo.Point, center Cell, r int32) float64 {
	const rad = math.Pi / 180
	const earthRadius = 6_371_000 // as geo.Distance
	latLo := float64(center.Row-r) * g.latDeg
	latHi := float64(center.Row+r+1) * g.latDeg
	lngLo := float64(center.Col-r) * g.lngDeg
	lngHi := float64(center.Col+r+1) * g.lngDeg
	latGap := min(p.Lat-latLo, latHi-p.Lat) * rad * earthRadius
	dLng := min(p.Lng-lngLo, lngHi-p.Lng) * rad
	if dLng >= math.Pi {
		return latGap // the square spans every longitude
	}
	cosMax := math.Cos(min(max(math.Abs(latLo), math.Abs(latHi)), 90) * rad)
	if cosMax <= 1e-12 {
		return 0 // the square reaches a pole, where longitudes meet
	}
	lngGap := 2 * earthRadius * math.Asin(math.Min(1, cosMax*math.Sin(dLng/2)))
	return min(latGap, lngGap)
}

func closer(a, b Neighbor) bool {
	if a.Meters != b.Meters {
		return a.Meters < b.Meters
	}
	return a.ID < b.ID
}

// farthestFirst is a max-heap of the best k so far: the root is the one to
// evict when a closer point turns up.
type farthestFirst []Neighbor

func (h farthestFirst) Len() int           { return len(h) }
func (h farthestFirst) Less(i, j int) bool { return closer(h[j], h[i]) }
func (h farthestFirst) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *farthestFirst) Push(x any)        { *h = append(*h, x.(Neighbor)) }
func (h *farthestFirst) Pop() any {
	old := *h
	n := old[len(old)-1]
	*h = old[:len(old)-1]
	return n
}
