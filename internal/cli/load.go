package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rideshare-platform/rideshare/internal/load"
)

const loadSummary = `Drives simulated riders and drivers through the platform's public API and
reports throughput and latency. Ride requests arrive at a fixed rate (open
loop): a slow platform shows as latency, not as fewer requests. Each arrival
is one ride by a free rider: estimate the fare, request the ride (retried with
the same Idempotency-Key on 5xx, 409, 429 or no answer), then poll it until it
ends. Drivers are simulated phones that go online, take offers and drive the
trips. An arrival that finds every rider busy is reported as dropped: the
generator is saturated, add riders.

Before the clock starts the accounts sign in (load-rider-NNNN@... and
load-driver-NNN@..., reused by later runs) and the drivers go online; that is
not measured. After --duration no new rides arrive; rides still running are
followed for up to --drain, then reported as not terminal.

A progress line goes to stderr every second; the report goes to stdout:
requests and rides per second, latency percentiles per route (from HDR
histograms), rides by final state, errors by route and status (rate-limit
refusals show as HTTP 429). --json writes it for machines, with a per-second
timeline. The command fails only on a usage error or when the platform cannot
be reached at all.

It finds the platform 'rideshare up' runs through ` + StateFile + ` in the data
folder; for a remote one give --gateway (its accounts then get a fresh
password and fresh emails each run unless --password is given).

Examples:
  rideshare load
  rideshare load --riders 200 --drivers 100 --duration 60s
  rideshare load --rate 20 --duration 2m --json report.json
  rideshare load --gateway https://api.example.com --riders 50 --drivers 0 --json - | jq .latency`

// runLoad is `rideshare load`.
func runLoad(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "load", "load [--riders 200] [--drivers 100] [--duration 60s] [--rate N] [--json FILE] [flags]", loadSummary)
	riders := fs.Int("riders", 200, "simulated riders; each has one ride at a time, so this caps the rides in flight")
	drivers := fs.Int("drivers", 100, "simulated drivers (0: rely on the platform's own, such as up's --fleet)")
	duration := fs.Duration("duration", 60*time.Second, "how long rides arrive")
	rate := fs.Float64("rate", 0, fmt.Sprintf("ride requests per second (default: riders/%s, each rider asking for a ride about every %s)",
		load.DefaultRideEvery.String(), load.DefaultRideEvery.String()))
	drain := fs.Duration("drain", load.DefaultDrain, "after --duration, follow rides still running this long before reporting them as not terminal")
	seed := fs.Int64("seed", 0, "seed of the trips and the drivers' behaviour, to replay a run (default: random; the report shows it)")
	timeScale := fs.Float64("time-scale", load.DefaultTimeScale, "how many times faster than real time the simulated drivers drive")
	jsonOut := fs.String("json", "", "also write the report as JSON to this file ('-': to stdout, and the text report to stderr)")
	data := fs.String("data", ".rideshare", "data folder of the local platform, holding "+StateFile)
	gateway := fs.String("gateway", envOr(env, "RIDESHARE_GATEWAY", ""), "gateway URL of a remote platform (instead of "+StateFile+") [RIDESHARE_GATEWAY]")
	password := fs.String("password", envOr(env, "RIDESHARE_LOAD_PASSWORD", ""),
		"password of the load accounts (default: the local platform's fleet password from "+StateFile+") [RIDESHARE_LOAD_PASSWORD]")
	accounts := fs.String("accounts", load.DefaultAccounts, "email prefix of the load accounts")
	if err := parse(fs, env, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case fs.NArg() > 0:
		return loadUsage(env, "unexpected argument %q", fs.Arg(0))
	case *riders < 1:
		return loadUsage(env, "--riders must be at least 1")
	case *drivers < 0:
		return loadUsage(env, "--drivers must be 0 or more")
	case *duration <= 0:
		return loadUsage(env, "--duration must be positive")
	case *rate < 0 || (set["rate"] && *rate == 0):
		return loadUsage(env, "--rate must be a positive number of rides per second")
	case *drain < 0:
		return loadUsage(env, "--drain must be 0 or more")
	case *timeScale <= 0:
		return loadUsage(env, "--time-scale must be positive")
	case *accounts == "" || strings.ContainsAny(*accounts, "@ \t"):
		return loadUsage(env, "--accounts must be a non-empty email prefix")
	}

	gw, pw, fresh, err := findLoadPlatform(*data, *gateway, *password)
	if err != nil {
		return err
	}
	if fresh {
		// Without the password earlier runs used, their accounts are out
		// of reach: this run signs up its own, under a prefix of its own.
		*accounts += "-" + randomSecret()[:6]
		fmt.Fprintf(env.Stderr, "load: no --password given: signing up fresh accounts %s-rider-*\n", *accounts)
	}
	if !set["seed"] {
		*seed = time.Now().UnixNano()
	}
	cfg := load.Config{
		Gateway: gw, Riders: *riders, Drivers: *drivers, Duration: *duration, Rate: *rate,
		Drain: *drain, Seed: *seed, Password: pw, Accounts: *accounts, TimeScale: *timeScale,
		Progress: env.Stderr,
	}
	if *drain == 0 {
		cfg.Drain = -1 // the flag's 0 means none; the API's zero means the default
	}
	// The JSON file is created first, so a bad path fails before the run
	// rather than after it.
	var jsonFile *os.File
	if *jsonOut != "" && *jsonOut != "-" {
		f, err := os.Create(*jsonOut)
		if err != nil {
			return err
		}
		defer f.Close() // on the early returns; closed and checked below
		jsonFile = f
	}
	fmt.Fprintf(env.Stderr, "load: signing in %d riders and %d drivers at %s ...\n", *riders, *drivers, gw)
	rep, err := load.Run(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(env.Stderr, "load: interrupted before the run started")
			return nil
		}
		return err
	}
	text := env.Stdout
	if *jsonOut == "-" {
		text = env.Stderr
	}
	if err := rep.WriteText(text); err != nil {
		return err
	}
	switch {
	case *jsonOut == "-":
		return rep.WriteJSON(env.Stdout)
	case jsonFile != nil:
		if err := rep.WriteJSON(jsonFile); err != nil {
			return fmt.Errorf("writing %s: %w", *jsonOut, err)
		}
		return jsonFile.Close()
	}
	return nil
}

func loadUsage(env Env, format string, args ...any) error {
	fmt.Fprintf(env.Stderr, "rideshare load: "+format+"\nRun 'rideshare load --help' for usage.\n", args...)
	return errUsage
}

// findLoadPlatform is the gateway to load and the accounts' password:
// from the flags, else from the local platform's state. fresh means no
// password was known, so a random one was made for this run.
func findLoadPlatform(data, gateway, password string) (gw, pw string, fresh bool, err error) {
	gw, pw = gateway, password
	if gw == "" {
		st, err := ReadState(data)
		if errors.Is(err, os.ErrNotExist) {
			return "", "", false, fmt.Errorf("the platform is not running: there is no %s (start it with `rideshare up`; "+
				"for a platform in another data folder use --data DIR, for a remote one --gateway URL)", filepath.Join(data, StateFile))
		}
		if err != nil {
			return "", "", false, err
		}
		if st.GatewayURL == "" {
			return "", "", false, fmt.Errorf("%s names no gateway: is the platform still starting?", filepath.Join(data, StateFile))
		}
		gw = st.GatewayURL
		if pw == "" {
			pw = st.FleetPassword
		}
	}
	if pw == "" {
		return gw, randomSecret()[:24], true, nil
	}
	return gw, pw, false, nil
}
