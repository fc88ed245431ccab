package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare-platform/rideshare/internal/broker"
	"github.com/rideshare-platform/rideshare/internal/check"
	"github.com/rideshare-platform/rideshare/internal/discovery"
	"github.com/rideshare-platform/rideshare/internal/drill"
	"github.com/rideshare-platform/rideshare/internal/faults"
	"github.com/rideshare-platform/rideshare/internal/load"
	"github.com/rideshare-platform/rideshare/internal/procs"
	"github.com/rideshare-platform/rideshare/internal/resilience"
)

const drillSummary = `Runs one drill against a running platform, or all of them in turn, and prints
what happened, the findings (each a number against what it should be) and a
verdict. A drill runs simulated riders and drivers (as 'rideshare load'
does) for a baseline, injects its fault for --duration, heals it, lets the
riders finish, then audits the invariants ('rideshare check --settled'):
every ride ended, each completed ride captured once, every other hold
released, the ledger balanced, the outboxes empty.

Drills (--list shows each one's question, fault window and needs):
  slow-payments       payments answers 5 s late: ride requests still answered
                      fast, other routes unaffected, rides end cleanly
  payments-down       payments fails every call: rides' breaker opens and
                      sheds the calls, closes once payments is back
  pricing-down        pricing fails: estimates still answered, degraded, no surge
  declined-cards      some riders' cards are declined: those rides end
                      payment_declined with nothing charged, the rest complete
  no-drivers          nobody takes the rides: they end no_driver, holds voided
                      (waits out rides.search_timeout, 60 s by default: --search-timeout)
  duplicate-delivery  a window of events is published again: every copy is
                      recognised, nothing applied twice, no double charge
  overload            fare estimates at twice the measured capacity: load
                      shedding keeps the goodput, refusals are fast
  kill-replica        one instance of a replicated service is SIGKILLed: no
                      ride lost, it leaves the registry, its successor returns
                      (needs 'rideshare up --replicas dispatch=3')
  broker-outage       the broker is frozen (SIGSTOP) for --duration under load:
                      the outboxes hold the events, then drain; nothing lost

kill-replica and broker-outage signal the platform's processes, so they need
the local platform. 'drill all' runs every drill, prints a summary table and
fails if any drill failed. --html DIR writes DIR/NAME.html per drill: a
self-contained page with a latency-over-time chart (p50, p99, errors per
second) that shades the fault window, and the findings.

It finds the platform 'rideshare up' runs through ` + StateFile + ` in the data
folder; for a remote one give --gateway, the operator client credential,
--service NAME=URL for each process to reach, and --nats for
duplicate-delivery.

Examples:
  rideshare drill --list
  rideshare drill slow-payments
  rideshare drill broker-outage --duration 30s --html drills/
  rideshare drill all --json drills.json --html drills/`

// runDrill is `rideshare drill`.
func runDrill(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "drill", "drill NAME|all [--duration D] [--riders N] [--drivers N] [--json FILE] [--html DIR] [flags]\n"+
		"       rideshare drill --list", drillSummary)
	op := addOperatorFlags(fs, env)
	window := fs.Duration("duration", 0, "how long the fault lasts (default: each drill's own, see --list)")
	riders := fs.Int("riders", drill.DefaultRiders, "simulated riders")
	drivers := fs.Int("drivers", drill.DefaultDrivers, "simulated drivers")
	rate := fs.Float64("rate", drill.DefaultRate, "ride requests per second")
	baseline := fs.Duration("baseline", drill.DefaultBaseline, "load before the fault")
	recovery := fs.Duration("recovery", 0, fmt.Sprintf("load after the fault (default %s, longer where a drill watches something come back)", drill.DefaultRecovery))
	jsonOut := fs.String("json", "", "also write the results as JSON to this file ('-': to stdout, and the text to stderr)")
	htmlDir := fs.String("html", "", "write each drill's HTML report to DIR/NAME.html")
	list := fs.Bool("list", false, "list the drills and exit")
	password := fs.String("password", envOr(env, "RIDESHARE_LOAD_PASSWORD", ""),
		"password of the drill's rider and driver accounts (default: the local platform's fleet password from "+StateFile+") [RIDESHARE_LOAD_PASSWORD]")
	accounts := fs.String("accounts", drill.DefaultAccounts, "email prefix of the drill's accounts")
	natsURL := fs.String("nats", envOr(env, "RIDESHARE_NATS", ""), "the broker's URL, for duplicate-delivery (default: the local platform's, from "+StateFile+") [RIDESHARE_NATS]")
	natsSec := natsSecurityFlags(fs, env)
	searchTimeout := fs.Duration("search-timeout", drill.DefaultSearchTimeout, "the platform's rides.search_timeout: how long no-drivers waits for its rides to give up")
	settle := fs.Duration("settle", drill.DefaultSettle, "after the riders stop, how long to wait for the platform to settle before the final audit fails")
	kill := fs.String("kill", "", "the service or instance kill-replica kills (default: an instance of dispatch, else of the first service with replicas)")
	seed := fs.Int64("seed", 0, "seed of the trips (default: random)")
	timeScale := fs.Float64("time-scale", load.DefaultTimeScale, "how many times faster than real time the simulated drivers drive")

	names, err := parseDrillArgs(fs, env, args)
	if err != nil {
		return err
	}
	if *list {
		return listDrills(env.Stdout)
	}
	switch {
	case len(names) == 0:
		return drillUsage(env, "name a drill, or `all` (--list shows them)")
	case *window < 0 || *baseline < 0 || *recovery < 0 || *settle < 0 || *searchTimeout < 0:
		return drillUsage(env, "durations must not be negative")
	case *riders < 1 || *drivers < 1:
		return drillUsage(env, "--riders and --drivers must be at least 1")
	case *rate <= 0 || *timeScale <= 0:
		return drillUsage(env, "--rate and --time-scale must be positive")
	case *accounts == "" || strings.ContainsAny(*accounts, "@ \t"):
		return drillUsage(env, "--accounts must be a non-empty email prefix")
	}
	if len(names) == 1 && names[0] == "all" {
		names = drill.Names()
	}
	for _, n := range names {
		if _, ok := drill.Find(n); !ok {
			return drillUsage(env, "no drill %q; the drills: %s", n, strings.Join(drill.Names(), ", "))
		}
	}

	p, err := op.platform()
	if err != nil {
		return err
	}
	gw, pw, fresh, err := findLoadPlatform(*op.data, *op.gateway, *password)
	if err != nil {
		return err
	}
	if fresh {
		*accounts += "-" + randomSecret()[:6]
		fmt.Fprintf(env.Stderr, "drill: no --password given: signing up fresh accounts %s-*\n", *accounts)
	}
	ops := &drillOperator{p: p}
	plat := drill.Platform{Gateway: gw, Faults: ops, Admin: ops, Audit: ops}
	if p.stateFile != "" {
		ops.data = *op.data
		if st, err := ReadState(*op.data); err == nil && st.PID > 0 {
			plat.Procs = upChildren{pid: st.PID}
			if *natsURL == "" {
				*natsURL = st.NATSURL
			}
		}
	}
	if *natsURL != "" {
		plat.Broker = &natsRedeliverer{url: *natsURL, security: natsSec()}
	}
	opts := drill.Options{
		Window: *window, Baseline: *baseline, Recovery: *recovery, Riders: *riders, Drivers: *drivers, Rate: *rate,
		Password: pw, Accounts: *accounts, Seed: *seed, TimeScale: *timeScale, SearchTimeout: *searchTimeout, Settle: *settle, Kill: *kill,
		Progress: env.Stderr,
	}

	// Files are opened first, so a bad path fails before a drill runs.
	var jsonFile *os.File
	if *jsonOut != "" && *jsonOut != "-" {
		if jsonFile, err = os.Create(*jsonOut); err != nil {
			return err
		}
		defer jsonFile.Close()
	}
	if *htmlDir != "" {
		if err := os.MkdirAll(*htmlDir, 0o755); err != nil {
			return err
		}
	}
	text := env.Stdout
	if *jsonOut == "-" {
		text = env.Stderr
	}

	var results []*drill.Result
	for i, name := range names {
		if ctx.Err() != nil {
			break
		}
		if i > 0 {
			fmt.Fprintln(text)
		}
		// A token per drill: a drill lasts minutes, a token a quarter hour.
		if err := p.login(ctx); err != nil {
			return err
		}
		res, err := drill.Run(ctx, name, plat, opts)
		if err != nil {
			return err
		}
		results = append(results, res)
		if err := res.WriteText(text); err != nil {
			return err
		}
		if *htmlDir != "" {
			if err := writeDrillHTML(filepath.Join(*htmlDir, name+".html"), res); err != nil {
				return err
			}
		}
	}
	if len(names) > 1 {
		fmt.Fprintln(text)
		if err := drill.WriteSummary(text, results); err != nil {
			return err
		}
	}
	switch {
	case *jsonOut == "-":
		if err := drill.WriteJSON(env.Stdout, results); err != nil {
			return err
		}
	case jsonFile != nil:
		if err := drill.WriteJSON(jsonFile, results); err != nil {
			return fmt.Errorf("writing %s: %w", *jsonOut, err)
		}
		if err := jsonFile.Close(); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	failed := 0
	for _, r := range results {
		if !r.Pass {
			failed++
		}
	}
	if failed > 0 {
		if len(results) == 1 {
			return fmt.Errorf("drill %s failed", results[0].Name)
		}
		return fmt.Errorf("%d of %d drills failed", failed, len(results))
	}
	return nil
}

// RunDrill is `rideshare drill` for callers outside the command table
// (the whole-platform tests).
func RunDrill(ctx context.Context, env Env, args []string) error { return runDrill(ctx, env, args) }

// parseDrillArgs parses flags on either side of the drill names.
func parseDrillArgs(fs *flag.FlagSet, env Env, args []string) ([]string, error) {
	var names []string
	for {
		if err := parse(fs, env, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return names, nil
		}
		names = append(names, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func drillUsage(env Env, format string, args ...any) error {
	fmt.Fprintf(env.Stderr, "rideshare drill: "+format+"\nRun 'rideshare drill --help' for usage.\n", args...)
	return errUsage
}

// listDrills prints the table of drills.
func listDrills(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "drill\tfault window\tneeds\tquestion")
	for _, s := range drill.Scenarios() {
		var needs []string
		for _, n := range s.Needs {
			needs = append(needs, string(n))
		}
		need := strings.Join(needs, ", ")
		if need == "" {
			need = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, shortDuration(s.Window), need, s.Question)
	}
	return tw.Flush()
}

func writeDrillHTML(path string, res *drill.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := drill.WriteHTML(f, res); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}

// drillOperator is the operator's reach into the platform, as the drills
// need it: fault switches, admin endpoints, metrics and the audit.
type drillOperator struct {
	p *operatorPlatform
	// data is the local platform's data folder ("" for a remote one):
	// `up` rewrites its state when a replica comes back on a new address.
	data string
}

// Processes implements drill.Admin: the processes as the platform knows
// them now.
func (d *drillOperator) Processes(context.Context) (map[string]string, error) {
	out := map[string]string{}
	if d.data != "" {
		st, err := ReadState(d.data)
		if err != nil {
			return nil, err
		}
		for n, u := range st.Services {
			out[n] = strings.TrimRight(u, "/")
		}
		out["gateway"] = strings.TrimRight(st.GatewayURL, "/")
	}
	for n, u := range d.p.services {
		if _, ok := out[n]; !ok {
			out[n] = u
		}
	}
	return out, nil
}

// base is process name's URL now.
func (d *drillOperator) base(ctx context.Context, name string) (string, error) {
	procs, err := d.Processes(ctx)
	if err != nil {
		return "", err
	}
	u, ok := procs[name]
	if !ok {
		return "", fmt.Errorf("no process %q", name)
	}
	return u, nil
}

// Set implements drill.Faults.
func (d *drillOperator) Set(ctx context.Context, target string, f faults.Fault) error {
	names := d.p.instancesOf(target)
	if len(names) == 0 {
		return fmt.Errorf("unknown service %q; the services are: %s", target, strings.Join(d.p.names(), ", "))
	}
	for _, n := range names {
		if _, err := d.p.callFaults(ctx, n, http.MethodPut, "", f); err != nil {
			return err
		}
	}
	return nil
}

// Clear implements drill.Faults.
func (d *drillOperator) Clear(ctx context.Context, target, route string) error {
	query := ""
	if route != "" {
		query = "?route=" + url.QueryEscape(route)
	}
	var errs []error
	for _, n := range d.p.instancesOf(target) {
		_, err := d.p.callFaults(ctx, n, http.MethodDelete, query, nil)
		var re *remoteError
		if errors.As(err, &re) && re.code == "no_fault" {
			err = nil // expired by itself already
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Metrics implements drill.Admin.
func (d *drillOperator) Metrics(ctx context.Context, process string) (drill.Metrics, error) {
	var m drill.Metrics
	err := d.get(ctx, process, "/metrics", func(r io.Reader) error {
		var err error
		m, err = drill.ParseMetrics(r)
		return err
	})
	return m, err
}

// Resilience implements drill.Admin.
func (d *drillOperator) Resilience(ctx context.Context, process string) ([]resilience.DependencyState, error) {
	var body struct {
		Dependencies []resilience.DependencyState `json:"dependencies"`
	}
	err := d.get(ctx, process, "/admin/resilience", func(r io.Reader) error { return json.NewDecoder(r).Decode(&body) })
	return body.Dependencies, err
}

// Discovery implements drill.Admin.
func (d *drillOperator) Discovery(ctx context.Context, process string) (map[string][]discovery.InstanceState, error) {
	var view map[string][]discovery.InstanceState
	err := d.get(ctx, process, "/admin/discovery", func(r io.Reader) error { return json.NewDecoder(r).Decode(&view) })
	return view, err
}

// get reads one of a process's operator endpoints with the admin token.
func (d *drillOperator) get(ctx context.Context, process, path string, decode func(io.Reader) error) error {
	base, err := d.base(ctx, process)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.p.token)
	res, err := d.p.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s at %s does not answer: %v", process, base, unwrapURLError(err))
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
		return fmt.Errorf("%s %s answered %s: %.200s", process, path, res.Status, raw)
	}
	if err := decode(io.LimitReader(res.Body, 64<<20)); err != nil {
		return fmt.Errorf("%s %s: %w", process, path, err)
	}
	return nil
}

// audit is the check's source over the processes as they are now.
func (d *drillOperator) audit(ctx context.Context) (*check.Admin, error) {
	procs, err := d.Processes(ctx)
	if err != nil {
		return nil, err
	}
	return &check.Admin{Processes: procs, Token: d.p.token, HTTP: d.p.http}, nil
}

// Rides implements check.Source.
func (d *drillOperator) Rides(ctx context.Context, after string) (check.RidesPage, error) {
	a, err := d.audit(ctx)
	if err != nil {
		return check.RidesPage{}, err
	}
	return a.Rides(ctx, after)
}

// Payments implements check.Source.
func (d *drillOperator) Payments(ctx context.Context, after string) (check.PaymentsPage, error) {
	a, err := d.audit(ctx)
	if err != nil {
		return check.PaymentsPage{}, err
	}
	return a.Payments(ctx, after)
}

// Outboxes implements check.Source.
func (d *drillOperator) Outboxes(ctx context.Context) ([]check.Outbox, error) {
	a, err := d.audit(ctx)
	if err != nil {
		return nil, err
	}
	return a.Outboxes(ctx)
}

// upChildren signals the processes of the local `up`, its children.
type upChildren struct{ pid int }

func (u upChildren) Signal(name string, sig syscall.Signal) (int, error) {
	return procs.Signal(u.pid, name, sig)
}

// natsRedeliverer connects to the broker when a drill needs it, and only
// for as long as it does.
type natsRedeliverer struct {
	url      string
	security broker.Security
}

func (n *natsRedeliverer) Redeliver(ctx context.Context, since time.Time, limit int) (drill.Redelivery, error) {
	opts, err := n.security.Options()
	if err != nil {
		return drill.Redelivery{}, err
	}
	opts = append(opts, nats.Name("rideshare-drill"), nats.Timeout(5*time.Second))
	nc, err := nats.Connect(n.url, opts...)
	if err != nil {
		return drill.Redelivery{}, fmt.Errorf("connecting to the broker at %s: %w", broker.RedactURL(n.url), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return drill.Redelivery{}, err
	}
	return (&drill.Redeliverer{JS: js}).Redeliver(ctx, since, limit)
}
