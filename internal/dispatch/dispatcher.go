package dispatch

import (
	"context"
	"log/slog"
	"time"

	dispatchv1 "github.com/rideshare-platform/rideshare/api/dispatch/v1"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// dispatcher is the dispatch domain: the fleet in memory, searches and
// offers in the database, and the rules that move rides between drivers.
type dispatcher struct {
	store  *store
	outbox *outbox.Outbox
	fleet  *fleet
	// cast shares fleet changes with the other replicas; nil without a
	// broker, when this process is the only replica.
	cast    *broadcaster
	router  Router
	now     func() time.Time
	cfg     config
	metrics *metrics
	log     *slog.Logger
	// wake nudges the timer worker when a new due time may be earlier than
	// the one it sleeps towards.
	wake chan struct{}
}

// config holds the service's settings (see settings in service.go).
type config struct {
	// offerTTL is how long a driver has to answer an offer.
	offerTTL time.Duration
	// searchTimeout is the deadline of a StartSearch that gives none.
	searchTimeout time.Duration
	// retryEvery is how often a search with no free driver looks again.
	retryEvery time.Duration
	// flushEvery is how often positions are written to the database.
	flushEvery time.Duration
	// refreshEvery is how often the fleet is re-read from the database:
	// the safety net behind the broadcast, for what a replica missed.
	refreshEvery time.Duration
	// castWindow is how long a replica gathers fleet changes before
	// broadcasting them in one message.
	castWindow time.Duration
	// supplyEvery is how often zones are checked for SupplyChanged; a zone
	// is announced at most once per interval.
	supplyEvery time.Duration
	// supplyRepeat re-announces a zone whose counts did not change, so that
	// pricing, which lets old counts fade, keeps a standing surge.
	supplyRepeat time.Duration
}

var defaultConfig = config{
	offerTTL:      15 * time.Second,
	searchTimeout: 2 * time.Minute,
	retryEvery:    2 * time.Second,
	flushEvery:    5 * time.Second,
	refreshEvery:  5 * time.Second,
	castWindow:    defaultCastWindow,
	supplyEvery:   3 * time.Second,
	supplyRepeat:  time.Minute,
}

// clock returns the dispatcher's time, truncated to what the database
// keeps so that stored and in-memory times compare equal.
func (d *dispatcher) clock() time.Time { return d.now().UTC().Truncate(time.Microsecond) }

// nudge wakes the timer worker; after a commit, via tx.OnCommit.
func (d *dispatcher) nudge() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// declined announces an offer that ended unaccepted.
func (d *dispatcher) declined(ctx context.Context, tx *sqldb.Tx, o *offer, reason string) error {
	tx.OnCommit(func() { d.metrics.offers.WithLabelValues(reason).Inc() })
	return d.outbox.Append(ctx, tx, outbox.Event{
		Type: "offer.declined", Key: o.RideID,
		Payload: &dispatchv1.OfferDeclined{RideId: o.RideID, DriverId: o.DriverID, Reason: reason},
	})
}
