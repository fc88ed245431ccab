package load

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The terminal ride statuses of the public API (DESIGN.md section 7).
const (
	StatusCompleted       = "completed"
	StatusCancelled       = "cancelled"
	StatusPaymentDeclined = "payment_declined"
	StatusNoDriver        = "no_driver"
)

// terminalOrder is how the report lists terminal states.
var terminalOrder = []string{StatusCompleted, StatusCancelled, StatusPaymentDeclined, StatusNoDriver}

// Terminal reports whether a ride in status s has ended.
func Terminal(s string) bool { return slices.Contains(terminalOrder, s) }

// Report is what a run measured. Durations are nanoseconds in JSON (the
// _ns fields), as vegeta's reports have them, so they round-trip exactly.
type Report struct {
	Gateway string `json:"gateway"`
	// Started is the start of the measured window (after the warm-up);
	// Timeline[i] is the second that began i seconds after it.
	Started  time.Time     `json:"started"`
	Riders   int           `json:"riders"`
	Drivers  int           `json:"drivers"`
	Rate     float64       `json:"rate"` // ride arrivals per second, as scheduled
	Seed     int64         `json:"seed"`
	Duration time.Duration `json:"duration_ns"`
	Drain    time.Duration `json:"drain_ns"`
	// Elapsed is the measured window: the arrivals, then the drain for as
	// long as rides were still running (at most Drain).
	Elapsed time.Duration `json:"elapsed_ns"`
	Warmup  Warmup        `json:"warmup"`
	// Interrupted is set when the caller's context ended the run early.
	Interrupted bool `json:"interrupted,omitempty"`

	// Requests and Errors count every request riders and drivers made in
	// the window; an error is an answer other than 2xx or 3xx, or none.
	Requests          int64   `json:"requests"`
	Errors            int64   `json:"errors"`
	RequestsPerSecond float64 `json:"requests_per_second"` // over Elapsed
	// RidesPerSecond is rides the platform accepted per second of
	// Duration (the achieved arrival rate); CompletedPerSecond is rides
	// completed per second of Elapsed.
	RidesPerSecond     float64 `json:"rides_per_second"`
	CompletedPerSecond float64 `json:"completed_per_second"`

	Latency       Latency       `json:"latency"` // every answered request
	Routes        []RouteReport `json:"routes"`
	ErrorsByRoute []ErrorCount  `json:"errors_by_route"`
	Rides         Rides         `json:"rides"`
	Timeline      []Second      `json:"timeline"`
	Fleet         FleetStats    `json:"fleet"`
}

// Warmup is what happened before the clock started: accounts signed in
// and drivers brought online. None of it is in the measurements.
type Warmup struct {
	Took          time.Duration `json:"took_ns"`
	RidersReady   int           `json:"riders_ready"`
	DriversOnline int           `json:"drivers_online"`
	// LastError is the last sign-in failure, when a rider could not sign in.
	LastError string `json:"last_error,omitempty"`
}

// Latency summarizes answered requests' latencies (from sending the
// request to having the whole answer), from an HDR histogram.
type Latency struct {
	Count int64         `json:"count"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
}

// RouteReport is one route's share: a route template such as
// "GET /v1/rides/{id}", never a raw id.
type RouteReport struct {
	Route    string  `json:"route"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	Latency  Latency `json:"latency"`
}

// ErrorCount is how many requests to Route failed as Class: "HTTP 503",
// "HTTP 429" (rate limited), "timeout", "connection refused", ...
type ErrorCount struct {
	Route string `json:"route"`
	Class string `json:"class"`
	Count int64  `json:"count"`
}

// Rides accounts for every arrival:
// Offered = Dropped + Failed + Requested, and
// Requested = the sum of Terminal and NotTerminal.
type Rides struct {
	// Offered is every arrival the schedule made.
	Offered int64 `json:"offered"`
	// Dropped arrivals found every rider busy with a ride (each rider has
	// one at a time): the generator was saturated, not the platform.
	Dropped int64 `json:"dropped"`
	// Failed arrivals never got their ride accepted: the platform refused
	// the request, answered none of its retries, or the run ended first.
	Failed int64 `json:"failed"`
	// Requested rides were accepted by the platform (202).
	Requested int64 `json:"requested"`
	// Terminal counts ended rides by status: completed, cancelled,
	// payment_declined, no_driver.
	Terminal map[string]int64 `json:"terminal"`
	// NotTerminal counts rides still running when the run ended, by the
	// last status their rider saw.
	NotTerminal map[string]int64 `json:"not_terminal"`
}

func (r Rides) clone() Rides {
	r.Terminal, r.NotTerminal = maps.Clone(r.Terminal), maps.Clone(r.NotTerminal)
	return r
}

// Second is one second of the window, for plotting over time: requests
// and latency percentiles of the requests answered in it, and rides.
type Second struct {
	At             int           `json:"at"` // seconds since Report.Started
	Offered        int64         `json:"offered"`
	Dropped        int64         `json:"dropped"`
	Requests       int64         `json:"requests"`
	Errors         int64         `json:"errors"`
	P50            time.Duration `json:"p50_ns"`
	P99            time.Duration `json:"p99_ns"`
	RidesRequested int64         `json:"rides_requested"`
	RidesCompleted int64         `json:"rides_completed"`
}

// FleetStats is what the simulated drivers did in the window (fleet.Stats,
// without the warm-up); Online is how many were online at its end.
type FleetStats struct {
	Online    int64 `json:"online"`
	Offers    int64 `json:"offers"`
	Accepted  int64 `json:"accepted"`
	Completed int64 `json:"completed"`
	Errors    int64 `json:"errors"`
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "rideshare load: %d riders, %d drivers, %s rides/s for %s (drain up to %s), seed %d, against %s\n",
		r.Riders, r.Drivers, rate(r.Rate), r.Duration, r.Drain, r.Seed, r.Gateway)
	if r.Interrupted {
		b.WriteString("INTERRUPTED: the run was stopped early; the numbers cover what ran\n")
	}
	fmt.Fprintf(&b, "warm-up: %d riders signed in, %d drivers online in %s (not measured)\n",
		r.Warmup.RidersReady, r.Warmup.DriversOnline, r.Warmup.Took.Round(time.Millisecond))
	if r.Warmup.LastError != "" {
		fmt.Fprintf(&b, "  a rider could not sign in: %s\n", r.Warmup.LastError)
	}

	fmt.Fprintf(&b, "\nrequests  %d in %s: %s/s, %d errors (%s)\n", r.Requests, r.Elapsed.Round(time.Millisecond),
		rate(r.RequestsPerSecond), r.Errors, percent(r.Errors, r.Requests))
	rd := r.Rides
	fmt.Fprintf(&b, "rides     offered %d, requested %d (%s/s), completed %d (%s/s)\n",
		rd.Offered, rd.Requested, rate(r.RidesPerSecond), rd.Terminal[StatusCompleted], rate(r.CompletedPerSecond))
	if rd.Dropped > 0 {
		fmt.Fprintf(&b, "          dropped %d: generator saturated (every rider already had a ride)\n", rd.Dropped)
	}
	if rd.Failed > 0 {
		fmt.Fprintf(&b, "          failed to request %d (refused, unanswered, or cut off by the end)\n", rd.Failed)
	}
	b.WriteString("          by state:")
	for _, s := range terminalOrder {
		fmt.Fprintf(&b, " %s %d,", s, rd.Terminal[s])
	}
	fmt.Fprintf(&b, " not terminal %d%s\n", sum(rd.NotTerminal), breakdown(rd.NotTerminal))
	fmt.Fprintf(&b, "fleet     %d drivers online at the end, %d offers seen, %d accepted, %d completed, %d errors\n",
		r.Fleet.Online, r.Fleet.Offers, r.Fleet.Accepted, r.Fleet.Completed, r.Fleet.Errors)

	b.WriteString("\nlatency by route\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "route\trequests\terrors\tp50\tp90\tp99\tmax\t")
	for _, rt := range r.Routes {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t\n", rt.Route, rt.Requests, rt.Errors,
			ms(rt.Latency.P50), ms(rt.Latency.P90), ms(rt.Latency.P99), ms(rt.Latency.Max))
	}
	fmt.Fprintf(tw, "all\t%d\t%d\t%s\t%s\t%s\t%s\t\n", r.Requests, r.Errors,
		ms(r.Latency.P50), ms(r.Latency.P90), ms(r.Latency.P99), ms(r.Latency.Max))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.ErrorsByRoute) > 0 {
		b.WriteString("\nerrors by route and status\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, e := range r.ErrorsByRoute {
			fmt.Fprintf(tw, "%s\t%s\t%d\n", e.Route, e.Class, e.Count)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ms is a latency in milliseconds with the precision that means something
// at its size; "-" when nothing was measured.
func ms(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	f := float64(d) / float64(time.Millisecond)
	switch {
	case f < 10:
		return fmt.Sprintf("%.2fms", f)
	case f < 100:
		return fmt.Sprintf("%.1fms", f)
	}
	return fmt.Sprintf("%.0fms", f)
}

func rate(f float64) string {
	if f < 10 {
		return fmt.Sprintf("%.2f", f)
	}
	return fmt.Sprintf("%.1f", f)
}

func percent(n, of int64) string {
	if of == 0 {
		return "0%"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(n)/float64(of))
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// breakdown is " (searching 3, in_progress 2)", or "" for nothing.
func breakdown(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
