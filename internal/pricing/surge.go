package pricing

import (
	"context"
	"fmt"
	"math"
	"time"

	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	eventsv1 "github.com/rideshare-platform/rideshare/api/events/v1"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// Supply is the last known balance of a zone, as dispatch reported it in
// dispatch.supply.changed.
type Supply struct {
	Zone             string
	AvailableDrivers int64
	OpenRequests     int64
	// ObservedAt is when dispatch saw these counts (the event's time), so a
	// backlog replayed after an outage is as stale as it really is.
	ObservedAt time.Time
}

// SurgePolicy turns supply and demand into a multiplier:
//
//	clamp(1 + K·(open requests / available drivers − Threshold), 1.0, Cap)
//
// rounded half up to 0.1. With the defaults there is no surge while open
// requests ≤ available drivers, 1.5 at twice as many requests as drivers,
// and the cap of 3.0 from five times as many.
type SurgePolicy struct {
	K         float64
	Threshold float64
	Cap       Surge
	// StaleAfter is how long a zone's counts are trusted in full. Dispatch
	// announces changes, not the absence of change, so old counts fade out
	// instead of holding a surge forever: after StaleAfter the multiplier
	// falls linearly to 1.0 over DecayFor.
	StaleAfter time.Duration
	DecayFor   time.Duration
}

// DefaultSurgePolicy is the policy unless settings say otherwise.
var DefaultSurgePolicy = SurgePolicy{K: 0.5, Threshold: 1, Cap: 30, StaleAfter: 3 * time.Minute, DecayFor: 2 * time.Minute}

// Multiplier is the surge in force for s at now.
func (p SurgePolicy) Multiplier(s Supply, now time.Time) Surge {
	full := p.balance(s.AvailableDrivers, s.OpenRequests)
	age := now.Sub(s.ObservedAt)
	switch {
	case s.ObservedAt.IsZero() || age >= p.StaleAfter+p.DecayFor:
		return NoSurge
	case age <= p.StaleAfter:
		return full
	}
	left := float64(p.StaleAfter+p.DecayFor-age) / float64(p.DecayFor)
	return NoSurge + Surge(math.Floor(float64(full-NoSurge)*left+0.5))
}

// balance is the undecayed multiplier for the counts.
func (p SurgePolicy) balance(drivers, requests int64) Surge {
	if requests <= 0 {
		return NoSurge
	}
	if drivers <= 0 {
		return p.Cap // demand and nobody to serve it
	}
	m := 1 + p.K*(float64(requests)/float64(drivers)-p.Threshold)
	tenths := Surge(math.Floor(m*10 + 0.5))
	return min(max(tenths, NoSurge), max(p.Cap, NoSurge))
}

// onSupplyChanged records a zone's new counts with the consumer's tx, so the
// state and the applied event id commit together. Counts older than the
// stored ones are ignored (store.recordSupplyTx), so a redelivered or
// reordered event never moves a zone back in time.
func (h *handler) onSupplyChanged(ctx context.Context, tx *sqldb.Tx, env *eventsv1.Envelope) error {
	if v := env.GetSchemaVersion(); v > 1 {
		// A meaning this code does not know: park it (retry later, once a
		// newer pricing is deployed) rather than misread it.
		return fmt.Errorf("pricing: dispatch.supply.changed schema version %d not understood", v)
	}
	var ev dispatchv1.SupplyChanged
	if err := env.GetPayload().UnmarshalTo(&ev); err != nil {
		return apperr.Wrap(err, apperr.Invalid, "", "malformed dispatch.supply.changed")
	}
	if ev.GetZone() == "" || ev.GetAvailableDrivers() < 0 || ev.GetOpenRequests() < 0 {
		return apperr.E(apperr.Invalid, "", "dispatch.supply.changed needs a zone and non-negative counts")
	}
	at := h.now()
	if env.GetTime() != nil {
		at = env.GetTime().AsTime()
	}
	return h.store.recordSupplyTx(ctx, tx, Supply{
		Zone: ev.GetZone(), AvailableDrivers: int64(ev.GetAvailableDrivers()), OpenRequests: int64(ev.GetOpenRequests()), ObservedAt: at,
	})
}
