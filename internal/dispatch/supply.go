package dispatch

import (
	"context"
	"sort"
	"time"

	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// counts is a zone's balance: free online drivers against rides searching
// for one with a pickup in the zone.
type counts struct {
	Drivers  int
	Requests int
}

// supplyAt is the balance of the zone holding p.
func (d *dispatcher) supplyAt(ctx context.Context, p geo.Point) (string, counts, error) {
	z := zoneOfCell(fineCell(p))
	open, err := d.store.openRequests(ctx, z.String())
	if err != nil {
		return "", counts{}, err
	}
	return z.String(), counts{Drivers: d.fleet.availableIn(z), Requests: open[z.String()]}, nil
}

// announced is what the supply worker last published for a zone.
type announced struct {
	counts
	at time.Time
}

// runSupply is the supply worker: every supplyEvery, it announces the zones
// whose counts changed, so a zone is announced at most once per interval
// however many pings move its drivers.
func (d *dispatcher) runSupply(ctx context.Context) error {
	last := map[string]announced{}
	t := time.NewTicker(d.cfg.supplyEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := d.announceSupply(ctx, last); err != nil && ctx.Err() == nil {
			d.log.WarnContext(ctx, "announcing supply", "err", err)
		}
	}
}

// announceSupply publishes SupplyChanged for every zone whose counts differ
// from last (the worker's memory of what it published), or that has not
// been announced for supplyRepeat; a zone that emptied is announced once
// with zero counts. last is updated only once the events are committed.
func (d *dispatcher) announceSupply(ctx context.Context, last map[string]announced) error {
	now := d.clock()
	current := map[string]counts{}
	for z, n := range d.fleet.availableByZone() {
		c := current[z.String()]
		c.Drivers = n
		current[z.String()] = c
	}
	open, err := d.store.openRequests(ctx, "")
	if err != nil {
		return err
	}
	for z, n := range open {
		c := current[z]
		c.Requests = n
		current[z] = c
	}
	for z := range last {
		if _, ok := current[z]; !ok {
			current[z] = counts{}
		}
	}
	zones := make([]string, 0, len(current))
	for z, c := range current {
		prev, seen := last[z]
		if !seen || prev.counts != c || now.Sub(prev.at) >= d.cfg.supplyRepeat {
			zones = append(zones, z)
		}
	}
	if len(zones) == 0 {
		return nil
	}
	sort.Strings(zones)
	events := make([]outbox.Event, 0, len(zones))
	for _, z := range zones {
		c := current[z]
		events = append(events, outbox.Event{
			Type: "supply.changed", Key: z,
			Payload: &dispatchv1.SupplyChanged{Zone: z, AvailableDrivers: int32(c.Drivers), OpenRequests: int32(c.Requests)},
		})
	}
	if err := d.store.db.InTx(ctx, func(tx *sqldb.Tx) error { return d.outbox.Append(ctx, tx, events...) }); err != nil {
		return err
	}
	for _, z := range zones {
		if c := current[z]; c == (counts{}) {
			delete(last, z) // announced empty once; nothing more to say
		} else {
			last[z] = announced{counts: c, at: now}
		}
	}
	return nil
}
