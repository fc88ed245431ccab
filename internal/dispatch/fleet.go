package dispatch

import (
	"sync"
	"time"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// fleet is this process's live picture of the drivers: who is online, where
// each one last was, and who is busy (held by an offer or a ride). Positions
// live only here, because pings are far too frequent to write each one; the
// durable facts (who is online, the locks) are in the database, and the
// fleet is rebuilt from it at start. Several replicas converge on one
// picture by broadcasting their changes to each other (broadcast.go) and,
// as the safety net for a lost message, by refreshing from the database
// periodically.
type fleet struct {
	mu      sync.Mutex
	drivers map[string]*driver
	// grid indexes the online drivers whose position is known, busy or not:
	// busy drivers are skipped at query time, since they are freed often.
	grid   *Grid
	online int
}

type driver struct {
	online bool
	// onlineAt is when online last changed, so a stale refresh never undoes
	// a newer change.
	onlineAt time.Time
	pos      geo.Point
	// posAt is the recorded_at of pos; zero while the position is unknown.
	posAt time.Time
	// dirty marks a position not yet written to the database.
	dirty bool
	busy  bool
	// busyAt is when this process last changed busy, so a refresh read
	// before that change does not undo it.
	busyAt time.Time
}

func newFleet() *fleet {
	return &fleet{drivers: map[string]*driver{}, grid: NewGrid(fineLatDeg, fineLngDeg)}
}

func (f *fleet) get(id string) *driver {
	d := f.drivers[id]
	if d == nil {
		d = &driver{}
		f.drivers[id] = d
	}
	return d
}

// reindex puts d in the grid or takes it out. Callers hold mu.
func (f *fleet) reindex(id string, d *driver) {
	if d.online && !d.posAt.IsZero() {
		f.grid.Put(id, d.pos)
	} else {
		f.grid.Remove(id)
	}
}

// setOnline applies an availability change made at at.
func (f *fleet) setOnline(id string, online bool, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setOnlineLocked(id, online, at)
}

func (f *fleet) setOnlineLocked(id string, online bool, at time.Time) {
	d := f.get(id)
	if at.Before(d.onlineAt) {
		return
	}
	if d.online != online {
		if online {
			f.online++
		} else {
			f.online--
		}
	}
	d.online, d.onlineAt = online, at
	f.reindex(id, d)
}

// locate records a position fix taken at at. A fix no newer than the one
// held is ignored, so a retried or reordered ping never moves a driver back.
// persisted says the fix is already in the database.
func (f *fleet) locate(id string, p geo.Point, at time.Time, persisted bool) (applied bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.locateLocked(id, p, at, persisted)
}

func (f *fleet) locateLocked(id string, p geo.Point, at time.Time, persisted bool) bool {
	d := f.get(id)
	if !at.After(d.posAt) {
		return false
	}
	d.pos, d.posAt = p, at
	d.dirty = !persisted
	if d.online {
		f.grid.Put(id, p)
	}
	return true
}

// setBusy records that a lock on the driver was taken or released at at.
func (f *fleet) setBusy(id string, busy bool, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.get(id)
	d.busy, d.busyAt = busy, at
}

// absorb applies facts another replica broadcast (broadcast.go), under one
// lock for the whole message. Each applies only if newer than what is held
// here, and a fix counts as persisted: the replica that took it writes it.
func (f *fleet) absorb(facts []fact) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, x := range facts {
		switch x.kind {
		case factFix:
			f.locateLocked(x.driver, x.pos, x.at, true)
		case factOnline, factOffline:
			f.setOnlineLocked(x.driver, x.kind == factOnline, x.at)
		case factBusy, factFree:
			if d := f.get(x.driver); x.at.After(d.busyAt) {
				d.busy, d.busyAt = x.kind == factBusy, x.at
			}
		}
	}
}

// position is the driver's last known position.
func (f *fleet) position(id string) (geo.Point, time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.drivers[id]
	if d == nil || d.posAt.IsZero() {
		return geo.Point{}, time.Time{}, false
	}
	return d.pos, d.posAt, true
}

// nearestFree is up to k online drivers that are not busy, nearest to p
// first, among those accept admits.
func (f *fleet) nearestFree(p geo.Point, k int, accept func(id string) bool) []Neighbor {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.grid.Nearest(p, k, func(id string) bool {
		return !f.drivers[id].busy && (accept == nil || accept(id))
	})
}

// fix is a position to persist.
type fix struct {
	driverID string
	at       geo.Point
	recorded time.Time
}

// takeDirty returns the positions not yet persisted and marks them clean.
func (f *fleet) takeDirty() []fix {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fix
	for id, d := range f.drivers {
		if d.dirty {
			out = append(out, fix{driverID: id, at: d.pos, recorded: d.posAt})
			d.dirty = false
		}
	}
	return out
}

// markDirty puts back fixes that failed to persist, unless newer ones came.
func (f *fleet) markDirty(fixes []fix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, x := range fixes {
		if d := f.drivers[x.driverID]; d != nil && d.posAt.Equal(x.recorded) {
			d.dirty = true
		}
	}
}

// driverRow is a driver as stored.
type driverRow struct {
	id       string
	online   bool
	onlineAt time.Time
	pos      geo.Point
	posAt    time.Time
}

// merge applies rows and locks read from the database starting at readAt:
// each fact replaces what this process holds only if it is newer, so a
// refresh never undoes a change made here while it was reading.
func (f *fleet) merge(rows []driverRow, locked map[string]bool, readAt time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range rows {
		d := f.get(r.id)
		if !r.onlineAt.Before(d.onlineAt) {
			if d.online != r.online {
				if r.online {
					f.online++
				} else {
					f.online--
				}
			}
			d.online, d.onlineAt = r.online, r.onlineAt
		}
		if !r.posAt.IsZero() && r.posAt.After(d.posAt) {
			d.pos, d.posAt, d.dirty = r.pos, r.posAt, false
		}
		f.reindex(r.id, d)
	}
	if locked == nil {
		return
	}
	for id := range locked {
		if d := f.get(id); d.busyAt.Before(readAt) {
			d.busy = true
		}
	}
	for id, d := range f.drivers {
		if d.busy && !locked[id] && d.busyAt.Before(readAt) {
			d.busy = false
		}
	}
}

// onlineCount is the number of drivers online.
func (f *fleet) onlineCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.online
}

// availableIn counts the free online drivers in zone z.
func (f *fleet) availableIn(z Zone) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range z.cells() {
		f.grid.Cell(c, func(e Entry) {
			if !f.drivers[e.ID].busy {
				n++
			}
		})
	}
	return n
}

// availableByZone counts the free online drivers of every zone that has
// any.
func (f *fleet) availableByZone() map[Zone]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[Zone]int{}
	f.grid.Each(func(c Cell, e Entry) {
		if !f.drivers[e.ID].busy {
			out[zoneOfCell(c)]++
		}
	})
	return out
}
