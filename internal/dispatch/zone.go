package dispatch

import (
	"fmt"
	"math"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// The matching grid's cells: 0.0025° of latitude by 0.003125° of longitude,
// about 280 m by 275 m at San Francisco's latitude. Small enough that the
// first rings of a nearest-driver query hold a handful of drivers, large
// enough that a moving car changes cell only every few pings.
const (
	fineLatDeg = 0.0025
	fineLngDeg = 0.003125
)

// zoneCells is a zone's side in grid cells: zones are 8×8 blocks of the
// matching grid, 0.02° by 0.025° (about 2.2 km square in San Francisco),
// fixed on the globe from 0°/0°, so a zone id never depends on the city or
// on which drivers are online. Supply, demand and surge are counted per
// zone. The constants are part of the zone ids other services store
// (pricing keeps surge per zone): changing them renames every zone.
const zoneCells = 8

// Zone is a supply zone: a block of zoneCells × zoneCells grid cells.
type Zone struct{ Row, Col int32 }

// ZoneOf is the id of the supply zone holding p, as GetSupply and
// SupplyChanged report it, e.g. "z1888_-4896".
func ZoneOf(p geo.Point) string {
	return zoneOfCell(fineCell(p)).String()
}

// fineCell is the matching grid's cell holding p (Grid.CellOf of the
// fleet's grid).
func fineCell(p geo.Point) Cell {
	return Cell{Row: int32(math.Floor(p.Lat / fineLatDeg)), Col: int32(math.Floor(p.Lng / fineLngDeg))}
}

func zoneOfCell(c Cell) Zone {
	return Zone{Row: floorDiv(c.Row, zoneCells), Col: floorDiv(c.Col, zoneCells)}
}

// String is the zone's opaque id.
func (z Zone) String() string { return fmt.Sprintf("z%d_%d", z.Row, z.Col) }

// cells lists the grid cells of z.
func (z Zone) cells() []Cell {
	out := make([]Cell, 0, zoneCells*zoneCells)
	for r := z.Row * zoneCells; r < (z.Row+1)*zoneCells; r++ {
		for c := z.Col * zoneCells; c < (z.Col+1)*zoneCells; c++ {
			out = append(out, Cell{Row: r, Col: c})
		}
	}
	return out
}

func floorDiv(a, b int32) int32 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
