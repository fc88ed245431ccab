package drill

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/rideshare-platform/rideshare/internal/faults"
	"github.com/rideshare-platform/rideshare/internal/load"
	"github.com/rideshare-platform/rideshare/internal/payments"
	"github.com/rideshare-platform/rideshare/internal/rides"
)

// The drills of the saga's failure paths: a card declined, no driver.

// declinedCard is the test card the simulated card network always
// declines.
const declinedCard = "card_declined"

func declinedCards(ctx context.Context, r *run) error {
	o := r.o
	// A third as many riders with the declined card, at half the rate:
	// a third of the rides during the window are declined.
	cfg := r.loadConfig(o.Window)
	cfg.Accounts = o.Accounts + "-declined"
	cfg.Riders, cfg.Drivers, cfg.Rate = max(3, o.Riders/3), 0, o.Rate/2
	cfg.PaymentMethod = declinedCard
	var (
		declined    *loadRun
		declinedRep *load.Report
		declinedErr error
	)
	rep, _, err := r.underFault(ctx, r.loadConfig(0), act{
		inject: func(ctx context.Context) error {
			r.say("declined-card riders: signing in %d riders who pay with %q; their rides arrive at %.2f/s for %s",
				cfg.Riders, declinedCard, cfg.Rate, cfg.Duration)
			declined = r.startLoad(ctx, cfg)
			if _, err := declined.started(ctx); err != nil {
				return fmt.Errorf("the declined-card riders did not start: %w", err)
			}
			r.say("declined-card riders: rides arriving")
			return nil
		},
		after: func(ctx context.Context) {
			declinedRep, declinedErr = declined.wait(ctx)
		},
	})
	if err != nil {
		return err
	}
	if declinedErr != nil {
		return fmt.Errorf("the declined-card riders' load: %w", declinedErr)
	}
	r.say("declined-card riders: done: %d rides requested, %s", declinedRep.Rides.Requested, terminalSummary(declinedRep.Rides))
	during, err := r.ridesIn(ctx, span{r.window().From, r.window().To.Add(time.Second)})
	if err != nil {
		return err
	}
	ids := map[string]bool{}
	for _, f := range during {
		if f.Status == rides.StatusPaymentDeclined {
			ids[f.ID] = true
		}
	}
	pays, err := r.paymentsOf(ctx, ids)
	if err != nil {
		return err
	}
	r.find(declinedFindings(declinedRep, rep, during, pays)...)
	r.find(prefixed("declined-card riders: ", loadFindings(declinedRep))...)
	r.find(prefixed("good-card riders: ", loadFindings(rep))...)
	r.settle(ctx)
	return nil
}

// prefixed puts who in front of each finding's subject.
func prefixed(who string, fs []Finding) []Finding {
	for i := range fs {
		fs[i].What = who + fs[i].What
	}
	return fs
}

// declinedFindings judge the two kinds of riders: each declined-card ride
// ended payment_declined with nothing held or captured, and every other
// rider's ride completed as usual.
func declinedFindings(declined, good *load.Report, during []rides.RideFacts, pays map[string]payments.PaymentFacts) []Finding {
	var n, charged, held int
	for _, f := range during {
		if f.Status != rides.StatusPaymentDeclined {
			continue
		}
		n++
		p, ok := pays[f.ID]
		switch {
		case !ok:
		case p.Captured > 0 || p.Captures > 0:
			charged++
		case p.Status == payments.Authorized || p.Status == payments.Authorizing:
			held++
		}
	}
	money := Finding{What: "declined rides charged or left holding money", Want: "none"}
	if n == 0 {
		money.Got = "no declined ride found"
	} else {
		money.Got = fmt.Sprintf("%d charged, %d holding, of %d declined rides", charged, held, n)
		money.OK = charged == 0 && held == 0
	}
	return []Finding{
		allEnded("rides paid with the declined card", declined.Rides, load.StatusPaymentDeclined),
		money,
		allEnded("rides paid with a good card meanwhile", good.Rides, load.StatusCompleted),
	}
}

// allEnded finds whether every ride of a load run ended as status.
func allEnded(what string, rd load.Rides, status string) Finding {
	f := Finding{What: what + ", by how they ended", Want: "every one " + status}
	if rd.Requested == 0 {
		f.Got = "no ride requested"
		return f
	}
	f.Got = fmt.Sprintf("%d: %s", rd.Requested, terminalSummary(rd))
	f.OK = rd.Terminal[status] == rd.Requested
	return f
}

// offersRoute is the drivers' route for reading their offers.
const offersRoute = "/v1/drivers/me/offers"

func noDrivers(ctx context.Context, r *run) error {
	o := r.o
	dispatch, err := r.instances(ctx, "dispatch")
	if err != nil {
		return err
	}
	online := 0.0
	for _, name := range dispatch {
		if m, err := r.p.Admin.Metrics(ctx, name); err == nil {
			// Each replica counts every driver it knows of: the largest count.
			online = max(online, m.Max("rideshare_dispatch_online_drivers"))
		}
	}
	// Dispatch offers a ride to the nearest free driver wherever they are,
	// so with any driver online a ride finds one. Then the drill keeps
	// the offers from reaching them: each offer goes unanswered, expires,
	// passes to the next driver, until the search gives up, which is what
	// a ride with nobody around goes through.
	bound := o.Window + o.SearchTimeout + 30*time.Second
	if online > 0 {
		r.say("%.0f drivers are online: the gateway will fail every %s so none sees an offer", online, offersRoute)
		if err := r.setFault(ctx, "gateway", faults.Fault{Route: offersRoute, ErrorRate: 1, For: bound + time.Minute}); err != nil {
			return err
		}
	} else {
		r.say("no driver is online")
	}
	r.say("rides wait for a driver until their search gives up (rides.search_timeout, taken as %s): the drill waits up to %s",
		o.SearchTimeout, roundDur(bound))
	cfg := r.loadConfig(o.Window)
	cfg.Drivers = 0
	cfg.Drain = o.SearchTimeout + 30*time.Second
	lr, err := r.begin(ctx, cfg)
	if err != nil {
		return err
	}
	r.faultFrom(r.res.Start)
	rep, err := lr.wait(ctx)
	if err != nil {
		return err
	}
	r.faultTo(r.res.Start.Add(o.Window))
	r.loaded(rep)
	if online > 0 {
		if err := r.clearFault(ctx, "gateway", offersRoute); err != nil {
			return err
		}
	}
	during, err := r.ridesIn(ctx, span{r.window().From, r.window().To.Add(time.Second)})
	if err != nil {
		return err
	}
	ids := map[string]bool{}
	for _, f := range during {
		ids[f.ID] = true
	}
	pays, err := r.paymentsOf(ctx, ids)
	if err != nil {
		return err
	}
	r.find(endedFinding(during, "requested with no driver to take them", rides.StatusNoDriver))
	r.find(noDriverFindings(during, pays, o.SearchTimeout)...)
	r.find(loadFindings(rep)...)
	r.settle(ctx)
	return nil
}

// searchSlack is how much longer than the search timeout a ride may take
// to end no_driver: the saga's watchdog runs on its own timer, after the
// hold is placed.
const searchSlack = 15 * time.Second

// noDriverFindings judge the compensation: every hold voided, nothing
// captured, and each ride told no_driver when its search ran out.
func noDriverFindings(rs []rides.RideFacts, pays map[string]payments.PaymentFacts, searchTimeout time.Duration) []Finding {
	by := map[payments.Status]int{}
	var none, charged, n int
	var longest time.Duration
	for _, f := range rs {
		if f.Status != rides.StatusNoDriver {
			continue
		}
		n++
		longest = max(longest, f.UpdatedAt.Sub(f.CreatedAt))
		p, ok := pays[f.ID]
		switch {
		case !ok:
			none++
		case p.Captured > 0 || p.Captures > 0:
			charged++
		default:
			by[p.Status]++
		}
	}
	holds := Finding{What: "holds of the rides that ended no_driver", Want: "every one voided (or never placed), nothing captured"}
	wait := Finding{What: "longest a ride waited before it ended no_driver",
		Want: fmt.Sprintf("≤ %s (the search timeout %s, and slack)", roundDur(searchTimeout+searchSlack), roundDur(searchTimeout))}
	if n == 0 {
		holds.Got, wait.Got = "no ride ended no_driver", "no ride ended no_driver"
		return []Finding{holds, wait}
	}
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(by)) {
		parts = append(parts, fmt.Sprintf("%d %s", by[s], s))
	}
	if none > 0 {
		parts = append(parts, fmt.Sprintf("%d never placed", none))
	}
	if charged > 0 {
		parts = append(parts, fmt.Sprintf("%d captured", charged))
	}
	holds.Got = fmt.Sprintf("of %d: %s", n, strings.Join(parts, ", "))
	holds.OK = charged == 0 && by[payments.Voided]+none == n
	wait.Got = roundDur(longest)
	wait.OK = longest <= searchTimeout+searchSlack
	return []Finding{holds, wait}
}
