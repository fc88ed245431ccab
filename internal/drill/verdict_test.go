package drill

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/check"
	"github.com/rideshare-platform/rideshare/internal/load"
	"github.com/rideshare-platform/rideshare/internal/payments"
	"github.com/rideshare-platform/rideshare/internal/rides"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// at is t0 plus s seconds.
func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// callsEvery makes n calls to route, one every step from `from`, each
// taking took and answering status.
func callsEvery(route string, from time.Time, step time.Duration, n int, took time.Duration, status int) []call {
	out := make([]call, n)
	for i := range out {
		out[i] = call{At: from.Add(time.Duration(i) * step), Took: took, Route: route, Status: status, Failed: status >= 400 || status == 0}
	}
	return out
}

func join(parts ...[]call) []call {
	var out []call
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// The phases of the verdict tests: 10 s before, 10 s of fault, 10 s after.
var (
	before = span{at(0), at(10)}
	during = span{at(10), at(20)}
	after  = span{at(20), at(30)}
)

func TestFastRequestFinding(t *testing.T) {
	for _, c := range []struct {
		name  string
		calls []call
		ok    bool
		got   string
	}{
		{"answered at once", callsEvery(routeRequestRide, at(10), 100*time.Millisecond, 100, 30*time.Millisecond, 202), true, "30ms"},
		{"waited on payments", join(
			callsEvery(routeRequestRide, at(10), 100*time.Millisecond, 95, 30*time.Millisecond, 202),
			callsEvery(routeRequestRide, at(15), 100*time.Millisecond, 5, 5*time.Second, 202)), false, "5s"},
		{"none during the fault", callsEvery(routeRequestRide, at(0), 100*time.Millisecond, 10, time.Millisecond, 202), false, "no ride"},
	} {
		f := fastRequestFinding(c.calls, during, "payments slow")
		if f.OK != c.ok || !strings.Contains(f.Got, c.got) {
			t.Errorf("%s: %v, want ok=%v and %q in it", c.name, f, c.ok, c.got)
		}
	}
}

func TestUnaffectedFindings(t *testing.T) {
	base := callsEvery(routeEstimate, at(0), 100*time.Millisecond, 100, 40*time.Millisecond, 200)
	post := callsEvery(routeEstimate, at(20), 100*time.Millisecond, 100, 60*time.Millisecond, 200)
	for _, c := range []struct {
		name string
		took time.Duration
		ok   bool
	}{
		// The bound is max(2×60ms, 60ms+250ms) = 310ms, from the worse of
		// before (40) and after (60).
		{"same as before", 45 * time.Millisecond, true},
		{"noisy but within the margin", 310 * time.Millisecond, true},
		{"waiting on the fault", 311 * time.Millisecond, false},
	} {
		calls := join(base, callsEvery(routeEstimate, at(10), 100*time.Millisecond, 100, c.took, 200), post)
		fs := unaffectedFindings(calls, before, during, after, "payments slow", routeEstimate)
		if len(fs) != 1 || fs[0].OK != c.ok {
			t.Errorf("%s: %v, want ok=%v", c.name, fs, c.ok)
		}
	}
	fs := unaffectedFindings(base, before, during, after, "payments slow", routeEstimate)
	if fs[0].OK {
		t.Errorf("a route with no call during the fault passed: %v", fs[0])
	}
}

func TestUnaffectedMargin(t *testing.T) {
	for _, c := range []struct{ base, want time.Duration }{
		{0, 250 * time.Millisecond},
		{20 * time.Millisecond, 270 * time.Millisecond},
		{250 * time.Millisecond, 500 * time.Millisecond},
		{400 * time.Millisecond, 800 * time.Millisecond},
	} {
		if got := unaffectedMargin(c.base); got != c.want {
			t.Errorf("unaffectedMargin(%s) = %s, want %s", c.base, got, c.want)
		}
	}
}

func TestEndedFinding(t *testing.T) {
	ride := func(s rides.Status) rides.RideFacts { return rides.RideFacts{ID: string(s), Status: s} }
	for _, c := range []struct {
		name string
		rs   []rides.RideFacts
		ok   bool
	}{
		{"completed and cancelled", []rides.RideFacts{ride(rides.StatusCompleted), ride(rides.StatusCancelled), ride(rides.StatusCompleted)}, true},
		{"one still searching", []rides.RideFacts{ride(rides.StatusCompleted), ride(rides.StatusSearching)}, false},
		{"one declined", []rides.RideFacts{ride(rides.StatusPaymentDeclined)}, false},
		{"none", nil, false},
	} {
		f := endedFinding(c.rs, "requested while payments was slow", rides.StatusCompleted, rides.StatusCancelled)
		if f.OK != c.ok {
			t.Errorf("%s: %v, want ok=%v", c.name, f, c.ok)
		}
	}
}

func TestPaymentsDownFindings(t *testing.T) {
	healthy := func() *breakerWatch {
		return &breakerWatch{states: []string{"closed", "open", "half-open", "open", "half-open", "closed"}, openedAt: 1500 * time.Millisecond, closedAt: 6 * time.Second}
	}
	for _, c := range []struct {
		name      string
		w         *breakerWatch
		calls     paymentsCalls
		succeeded float64
		want      []bool // opened, shed, closed
	}{
		{"breaker opened, shed, closed", healthy(), paymentsCalls{calls: 200, refused: 170, reached: 60}, 12, []bool{true, true, true}},
		{"retries multiplied the calls", healthy(), paymentsCalls{calls: 200, reached: 600}, 12, []bool{true, false, true}},
		{"never opened", &breakerWatch{states: []string{"closed"}, openedAt: -1, closedAt: 0}, paymentsCalls{calls: 50, reached: 150}, 3, []bool{false, false, true}},
		{"stuck open", &breakerWatch{states: []string{"closed", "open"}, openedAt: time.Second, closedAt: -1}, paymentsCalls{calls: 200, refused: 190, reached: 30}, 0, []bool{true, true, false}},
		{"closed but nothing got through", healthy(), paymentsCalls{calls: 200, refused: 170, reached: 60}, 0, []bool{true, true, false}},
		{"no calls at all", healthy(), paymentsCalls{}, 1, []bool{true, false, true}},
	} {
		fs := paymentsDownFindings(c.w, c.calls, c.succeeded)
		for i, f := range fs {
			if f.OK != c.want[i] {
				t.Errorf("%s: finding %d %v, want ok=%v", c.name, i, f, c.want[i])
			}
		}
	}
}

func estimateCalls(from time.Time, n int, degraded bool, surge float64, status int) []call {
	cs := callsEvery(routeEstimate, from, 100*time.Millisecond, n, 20*time.Millisecond, status)
	for i := range cs {
		if status == 200 {
			cs[i].Degraded, cs[i].Surge = degraded, surge
		}
	}
	return cs
}

func TestPricingDownFindings(t *testing.T) {
	normalAfter := estimateCalls(at(25), 10, false, 1.2, 200)
	for _, c := range []struct {
		name  string
		calls []call
		want  []bool // answered, degraded, surge, fast, back
	}{
		{"fallback estimates", join(
			estimateCalls(at(10), 5, false, 1.4, 200), // the fault's first second: pricing still answered some
			estimateCalls(at(11), 80, true, 1.0, 200),
			estimateCalls(at(20), 20, true, 1.0, 200), normalAfter), []bool{true, true, true, true, true}},
		{"errors instead of a fallback", join(estimateCalls(at(11), 60, false, 0, 503), estimateCalls(at(17), 20, true, 1, 200), normalAfter),
			[]bool{false, true, true, true, true}},
		{"surge kept", join(estimateCalls(at(11), 80, true, 1.5, 200), normalAfter), []bool{true, true, false, true, true}},
		{"priced by pricing though it is down", join(estimateCalls(at(11), 80, false, 1, 200), normalAfter), []bool{true, false, true, true, true}},
		{"degraded forever", estimateCalls(at(11), 180, true, 1, 200), []bool{true, true, true, true, false}},
	} {
		fs := pricingDownFindings(c.calls, during, after)
		if len(fs) != len(c.want) {
			t.Fatalf("%s: %d findings, want %d", c.name, len(fs), len(c.want))
		}
		for i, f := range fs {
			if f.OK != c.want[i] {
				t.Errorf("%s: finding %d %v, want ok=%v", c.name, i, f, c.want[i])
			}
		}
	}
}

func TestFailoverFindings(t *testing.T) {
	const ttl = 3 * time.Second
	for _, c := range []struct {
		name   string
		fo     *failover
		served float64
		want   []bool
	}{
		{"left within the TTL, back and serving", &failover{left: 2900 * time.Millisecond, back: 4 * time.Second, successor: "http://127.0.0.1:5"}, 12, []bool{true, true}},
		{"left late", &failover{left: 6 * time.Second, back: 4 * time.Second}, 3, []bool{false, true}},
		{"never left", &failover{left: -1, back: -1}, -1, []bool{false, false}},
		{"back but idle", &failover{left: 2 * time.Second, back: 4 * time.Second}, 0, []bool{true, false}},
	} {
		fs := failoverFindings("dispatch-2", c.fo, c.served, ttl)
		for i, f := range fs {
			if f.OK != c.want[i] {
				t.Errorf("%s: finding %d %v, want ok=%v", c.name, i, f, c.want[i])
			}
		}
	}
}

func TestErrorShareFinding(t *testing.T) {
	for _, c := range []struct {
		name           string
		before, during routeStats
		ok             bool
	}{
		{"no errors", routeStats{Calls: 1000}, routeStats{Calls: 1000}, true},
		{"a few more than before", routeStats{Calls: 1000, Failed: 5}, routeStats{Calls: 1000, Failed: 14}, true},
		{"many more", routeStats{Calls: 1000, Failed: 5}, routeStats{Calls: 1000, Failed: 40}, false},
		{"nothing measured", routeStats{Calls: 1000}, routeStats{}, false},
	} {
		if f := errorShareFinding(c.before, c.during, "dispatch-2 was down"); f.OK != c.ok {
			t.Errorf("%s: %v, want ok=%v", c.name, f, c.ok)
		}
	}
}

func TestOutageFindings(t *testing.T) {
	for _, c := range []struct {
		name string
		w    *outboxWatch
		want []bool
	}{
		{"held then drained", &outboxWatch{baseline: 1, peak: 140, atEnd: 140, drained: 1200 * time.Millisecond}, []bool{true, true}},
		{"nothing held: events lost or the broker never stopped", &outboxWatch{baseline: 1, peak: 1, drained: 0}, []bool{false, true}},
		{"never drained", &outboxWatch{baseline: 0, peak: 80, atEnd: 80, drained: -1}, []bool{true, false}},
		{"drained too slowly", &outboxWatch{baseline: 0, peak: 80, atEnd: 80, drained: 45 * time.Second}, []bool{true, false}},
	} {
		fs := outageFindings(c.w)
		for i, f := range fs {
			if f.OK != c.want[i] {
				t.Errorf("%s: finding %d %v, want ok=%v", c.name, i, f, c.want[i])
			}
		}
	}
}

func TestAcceptedFinding(t *testing.T) {
	ok := stats(callsEvery(routeRequestRide, at(10), time.Second, 5, time.Millisecond, 202), during, routeRequestRide)
	if f := acceptedFinding(ok, "while the broker was stopped"); !f.OK {
		t.Errorf("all accepted: %v", f)
	}
	mixed := stats(join(callsEvery(routeRequestRide, at(10), time.Second, 5, time.Millisecond, 202),
		callsEvery(routeRequestRide, at(15), time.Second, 2, time.Millisecond, 503)), during, routeRequestRide)
	if f := acceptedFinding(mixed, "while the broker was stopped"); f.OK || !strings.Contains(f.Got, "503: 2") {
		t.Errorf("two refused: %v", f)
	}
}

func TestDuplicateFindings(t *testing.T) {
	sent := Redelivery{Events: 40, ByStream: map[string]int{"RIDES": 30, "DISPATCH": 10}, Deliveries: 55}
	for _, c := range []struct {
		name       string
		sent       Redelivery
		recognised float64
		took       time.Duration
		dropped    float64
		want       []bool
	}{
		{"every copy recognised", sent, 55, 2 * time.Second, 0, []bool{true, true, true}},
		{"some applied again", sent, 41, -1, 0, []bool{true, false, true}},
		{"dropped", sent, 55, time.Second, 3, []bool{true, true, false}},
		{"nothing to republish", Redelivery{ByStream: map[string]int{}}, 0, 0, 0, []bool{false, false, true}},
	} {
		fs := duplicateFindings(c.sent, c.recognised, c.took, c.dropped)
		for i, f := range fs {
			if f.OK != c.want[i] {
				t.Errorf("%s: finding %d %v, want ok=%v", c.name, i, f, c.want[i])
			}
		}
	}
}

func TestDeclinedFindings(t *testing.T) {
	declined := &load.Report{Rides: load.Rides{Requested: 4, Terminal: map[string]int64{load.StatusPaymentDeclined: 4}}}
	good := &load.Report{Rides: load.Rides{Requested: 10, Terminal: map[string]int64{load.StatusCompleted: 10}}}
	facts := []rides.RideFacts{
		{ID: "r1", Status: rides.StatusPaymentDeclined}, {ID: "r2", Status: rides.StatusPaymentDeclined},
		{ID: "r3", Status: rides.StatusCompleted},
	}
	clean := map[string]payments.PaymentFacts{"r1": {RideID: "r1", Status: payments.Declined}}
	charged := map[string]payments.PaymentFacts{"r1": {RideID: "r1", Status: payments.Captured, Captured: 900, Captures: 1}}
	oneNoDriver := &load.Report{Rides: load.Rides{Requested: 10, Terminal: map[string]int64{load.StatusCompleted: 9, load.StatusNoDriver: 1}}}
	halfDeclined := &load.Report{Rides: load.Rides{Requested: 4, Terminal: map[string]int64{load.StatusPaymentDeclined: 2, load.StatusCompleted: 2}}}
	for _, c := range []struct {
		name           string
		declined, good *load.Report
		pays           map[string]payments.PaymentFacts
		want           []bool
	}{
		{"clean", declined, good, clean, []bool{true, true, true}},
		{"a declined ride charged", declined, good, charged, []bool{true, false, true}},
		{"a good ride failed", declined, oneNoDriver, clean, []bool{true, true, false}},
		{"a declined card went through", halfDeclined, good, clean, []bool{false, true, true}},
	} {
		fs := declinedFindings(c.declined, c.good, facts, c.pays)
		for i, f := range fs {
			if f.OK != c.want[i] {
				t.Errorf("%s: finding %d %v, want ok=%v", c.name, i, f, c.want[i])
			}
		}
	}
}

func TestNoDriverFindings(t *testing.T) {
	const search = 60 * time.Second
	ride := func(id string, waited time.Duration) rides.RideFacts {
		return rides.RideFacts{ID: id, Status: rides.StatusNoDriver, CreatedAt: t0, UpdatedAt: t0.Add(waited)}
	}
	rs := []rides.RideFacts{ride("a", 61*time.Second), ride("b", 62*time.Second), ride("c", 61*time.Second)}
	for _, c := range []struct {
		name string
		rs   []rides.RideFacts
		pays map[string]payments.PaymentFacts
		want []bool
	}{
		{"voided", rs, map[string]payments.PaymentFacts{"a": {Status: payments.Voided}, "b": {Status: payments.Voided}}, []bool{true, true}},
		{"a hold left", rs, map[string]payments.PaymentFacts{"a": {Status: payments.Voided}, "b": {Status: payments.Authorized}}, []bool{false, true}},
		{"charged", rs, map[string]payments.PaymentFacts{"a": {Status: payments.Captured, Captured: 100, Captures: 1}}, []bool{false, true}},
		{"gave up late", append(rs[:2:2], ride("d", 2*time.Minute)), map[string]payments.PaymentFacts{}, []bool{true, false}},
		{"none ended no_driver", nil, nil, []bool{false, false}},
	} {
		fs := noDriverFindings(c.rs, c.pays, search)
		for i, f := range fs {
			if f.OK != c.want[i] {
				t.Errorf("%s: finding %d %v, want ok=%v", c.name, i, f, c.want[i])
			}
		}
	}
}

func TestOverloadFindings(t *testing.T) {
	w := span{at(0), at(10)}
	mk := func(n int, status int, took time.Duration) []estimateCall {
		out := make([]estimateCall, n)
		for i := range out {
			out[i] = estimateCall{sent: at(float64(i) * 10 / float64(n)), took: took, status: status}
		}
		return out
	}
	cat := func(parts ...[]estimateCall) []estimateCall {
		var out []estimateCall
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, c := range []struct {
		name  string
		calls []estimateCall
		shed  refusals
		want  []bool // capacity, goodput, fast refusals, other failures
	}{
		// Capacity 100/s, offered 200/s for 10 s.
		{"shed cleanly", cat(mk(950, 200, 50*time.Millisecond), mk(1050, 503, 2*time.Millisecond)), refusals{1050, 1050}, []bool{true, true, true, true}},
		{"goodput collapsed", cat(mk(500, 200, 3*time.Second), mk(1500, 0, 10*time.Second)), refusals{}, []bool{true, false, true, false}},
		{"refusals queued in the gateway", cat(mk(900, 200, 50*time.Millisecond), mk(1100, 503, 4*time.Second)), refusals{1100, 300}, []bool{true, true, false, true}},
		// The drill's own client is slow to see fast refusals: the
		// gateway's timing is what counts.
		{"slow client, fast gateway", cat(mk(900, 200, 50*time.Millisecond), mk(1100, 503, 4*time.Second)), refusals{1100, 1095}, []bool{true, true, true, true}},
		{"kept up", mk(2000, 200, 20*time.Millisecond), refusals{}, []bool{true, true, true, true}},
	} {
		fs := overloadFindings(100, 200, c.calls, w, 0, c.shed)
		for i, f := range fs {
			if f.OK != c.want[i] {
				t.Errorf("%s: finding %d %v, want ok=%v", c.name, i, f, c.want[i])
			}
		}
	}
	if fs := overloadFindings(5, 10, nil, w, 0, refusals{}); fs[0].OK {
		t.Errorf("a capacity of 5/s passed: %v", fs[0])
	}
}

func TestSettleFinding(t *testing.T) {
	ok := check.Report{Violations: []check.Violation{}, Ledger: check.LedgerCounts{Balanced: true}}
	if f := settleFinding(ok, nil, 2*time.Second, time.Minute); !f.OK || !strings.Contains(f.Got, "settled after 2s") {
		t.Errorf("a clean audit: %v", f)
	}
	bad := check.Report{Violations: []check.Violation{
		{Invariant: check.Captures, Message: "ride r1 was captured 2 times"},
		{Invariant: check.AtRest, Message: "ride r2 is still searching"},
		{Invariant: check.AtRest, Message: "ride r3 is still searching"},
		{Invariant: check.AtRest, Message: "ride r4 is still searching"},
	}}
	if f := settleFinding(bad, nil, time.Minute, time.Minute); f.OK || !strings.Contains(f.Got, "4 violations") ||
		!strings.Contains(f.Got, "captured 2 times") || !strings.Contains(f.Got, "and 1 more") {
		t.Errorf("violations: %v", f)
	}
	if f := settleFinding(check.Report{}, errors.New("rides at http://x does not answer"), time.Minute, time.Minute); f.OK || !strings.Contains(f.Got, "does not answer") {
		t.Errorf("an audit that failed: %v", f)
	}
}

func TestLoadFindings(t *testing.T) {
	clean := &load.Report{Rides: load.Rides{Offered: 20, Requested: 20, Terminal: map[string]int64{"completed": 20}}}
	for i, f := range loadFindings(clean) {
		if !f.OK {
			t.Errorf("clean load: finding %d %v", i, f)
		}
	}
	lost := &load.Report{Rides: load.Rides{Offered: 20, Dropped: 1, Failed: 2, Requested: 17,
		Terminal: map[string]int64{"completed": 15}, NotTerminal: map[string]int64{"searching": 2}}}
	fs := loadFindings(lost)
	if fs[0].OK || fs[0].Got != "2 of 19" || fs[1].OK || !strings.Contains(fs[1].Got, "searching 2") {
		t.Errorf("refused and lost rides: %v", fs)
	}
}

func TestPickVictim(t *testing.T) {
	replicated := map[string]string{"gateway": "g", "rides": "r", "dispatch-1": "d1", "dispatch-2": "d2", "dispatch-3": "d3", "payments-1": "p1", "payments-2": "p2"}
	single := map[string]string{"gateway": "g", "rides": "r", "dispatch": "d", "payments": "p"}
	paymentsOnly := map[string]string{"gateway": "g", "dispatch": "d", "payments-1": "p1", "payments-2": "p2"}
	for _, c := range []struct {
		name          string
		procs         map[string]string
		want          string
		victim, svc   string
		errorContains string
	}{
		{"dispatch by default", replicated, "", "dispatch-2", "dispatch", ""},
		{"another service asked for", replicated, "payments", "payments-2", "payments", ""},
		{"an instance asked for", replicated, "dispatch-3", "dispatch-3", "dispatch", ""},
		{"the first replicated service", paymentsOnly, "", "payments-2", "payments", ""},
		{"none replicated", single, "", "", "", "--replicas dispatch=3"},
		{"a single instance asked for", single, "payments", "", "", "--replicas payments=3"},
		{"unknown", single, "billing", "", "", "no service or instance"},
	} {
		victim, svc, err := pickVictim(c.procs, c.want)
		switch {
		case c.errorContains != "":
			if err == nil || !strings.Contains(err.Error(), c.errorContains) {
				t.Errorf("%s: %v, want an error saying %q", c.name, err, c.errorContains)
			}
		case err != nil || victim != c.victim || svc != c.svc:
			t.Errorf("%s: %s of %s (%v), want %s of %s", c.name, victim, svc, err, c.victim, c.svc)
		}
	}
}

func TestQuantileAndStats(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 3}, {0.99, 5}, {1, 5}, {0, 1}} {
		if got := quantile(ds, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	calls := []call{
		{At: at(1), Took: 10 * time.Millisecond, Route: routeEstimate, Status: 200},
		{At: at(2), Took: 30 * time.Millisecond, Route: routeEstimate, Status: 503, Failed: true},
		{At: at(3), Took: 5 * time.Second, Route: routeEstimate, Failed: true}, // no answer: no latency
		{At: at(12), Took: time.Millisecond, Route: routeEstimate, Status: 200},
		{At: at(4), Took: time.Millisecond, Route: routeRide, Status: 200},
	}
	st := stats(calls, before, routeEstimate)
	if st.Calls != 3 || st.Failed != 2 || st.Max != 30*time.Millisecond || st.Statuses[0] != 1 {
		t.Errorf("stats = %+v", st)
	}
}
