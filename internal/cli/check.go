package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/rideshare-platform/rideshare/internal/check"
	"github.com/rideshare-platform/rideshare/internal/rides"
)

const checkSummary = `Audits a running platform's invariants and prints what it counted, then either
"OK: all invariants hold" or every violation; the exit code is 1 on a violation.

  saga      every ride is terminal or progressing: a ride with no change for
            longer than --stuck-after is stuck (unless it waits for a timer of
            its own, the search watchdog)
  capture   every completed ride was captured exactly once, for its fare (a
            late cancellation exactly once, for its fee)
  hold      every other hold was voided, declined or never placed
  ledger    the payments ledger balances and every payment agrees with it
  outbox    no event waits in any service's outbox longer than --outbox-max-age
            (a live platform always has a few in flight, so the backlog is
            judged by the age of its oldest event, not by its size)

Rides and payments each report their own facts at /admin/audit on every
process (behind the admin token); the check joins them. A ride whose saga
still owes its payment a step is counted as settling and judged once the step
ran. --settled also requires the platform to be at rest (every ride terminal,
nothing owed, every outbox empty): what a drill expects once its riders stop.

It finds the platform ` + "`rideshare up`" + ` runs through ` + StateFile + ` in the data
folder; for a remote one give --gateway and the operator client credential,
and --service NAME=URL for each service to reach.

Examples:
  rideshare check
  rideshare check --wait 2m --settled     # after a drill: wait for it to settle
  rideshare check --json > report.json`

// checkPoll is how often --wait re-checks.
const checkPoll = time.Second

// tokenReuse is how long --wait keeps using one token: well within the
// 15 minutes an access token lives.
const tokenReuse = 5 * time.Minute

// maxPrinted bounds the violations printed as text; --json lists all.
const maxPrinted = 50

// runCheck is `rideshare check`: audit a running platform's invariants.
func runCheck(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "check", "check [--wait DURATION] [--settled] [--json] [flags]", checkSummary)
	op := addOperatorFlags(fs, env)
	stuckAfter := fs.Duration("stuck-after", check.DefaultStuckAfter, "a ride with no progress for longer than this is stuck")
	outboxAge := fs.Duration("outbox-max-age", check.DefaultOutboxMaxAge, "an outbox event unsent for longer than this is a violation")
	wait := fs.Duration("wait", 0, "re-check until every invariant holds or this much time has passed (default: check once)")
	settled := fs.Bool("settled", false, "also require the platform at rest: every ride terminal, nothing owed, outboxes empty")
	asJSON := fs.Bool("json", false, "write the report as JSON")
	if err := parse(fs, env, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return checkUsage(env, "check takes no arguments, got %s", strings.Join(fs.Args(), " "))
	case *stuckAfter <= 0:
		return checkUsage(env, "--stuck-after must be positive")
	case *outboxAge <= 0:
		return checkUsage(env, "--outbox-max-age must be positive")
	case *wait < 0:
		return checkUsage(env, "--wait must not be negative")
	}
	p, err := op.platform()
	if err != nil {
		return err
	}
	opts := check.Options{StuckAfter: *stuckAfter, OutboxMaxAge: *outboxAge, Settled: *settled}

	until := time.Now().Add(*wait)
	var loggedIn time.Time
	var rep check.Report
	said := false
	for {
		err = nil
		if time.Since(loggedIn) > tokenReuse {
			if err = p.login(ctx); err == nil {
				loggedIn = time.Now()
			}
		}
		if err == nil {
			src := &check.Admin{Processes: p.services, Token: p.token, HTTP: p.http}
			rep, err = check.Run(ctx, src, opts)
		}
		if err == nil && rep.OK() {
			break
		}
		var refused *credentialRefused
		if errors.As(err, &refused) || errors.Is(err, check.ErrRefused) || !time.Now().Add(checkPoll).Before(until) {
			break // out of time, or refused: asking again will not help
		}
		if !said {
			fmt.Fprintf(env.Stderr, "rideshare check: %s; re-checking until %s\n", notYet(rep, err), until.Local().Format(time.TimeOnly))
			said = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(checkPoll):
		}
	}
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(env.Stdout, rep, opts)
	}
	if !rep.OK() {
		return fmt.Errorf("%d %s", len(rep.Violations), plural(len(rep.Violations), "violation", "violations"))
	}
	return nil
}

// notYet says why a check has not passed yet.
func notYet(rep check.Report, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d %s", len(rep.Violations), plural(len(rep.Violations), "violation", "violations"))
}

func checkUsage(env Env, format string, args ...any) error {
	fmt.Fprintf(env.Stderr, "rideshare check: "+format+"\nRun 'rideshare check --help' for usage.\n", args...)
	return errUsage
}

// printReport writes the counts as a short table, then the verdict.
func printReport(w io.Writer, rep check.Report, opts check.Options) {
	fmt.Fprintf(w, "Checked at %s (stuck after %s, outbox events older than %s)\n\n",
		rep.CheckedAt.Local().Format(time.TimeOnly), shortDuration(opts.StuckAfter), shortDuration(opts.OutboxMaxAge))
	row := func(label string, n any, detail string) {
		fmt.Fprintf(w, "%-15s %7v  %s\n", label, n, detail)
	}
	r := rep.Rides
	var byStatus []string
	for _, s := range rides.Statuses {
		if n := r.ByStatus[s]; n > 0 {
			byStatus = append(byStatus, fmt.Sprintf("%d %s", n, s))
		}
	}
	row("rides", r.Total, strings.Join(byStatus, ", "))
	row("in flight", r.InFlight, "not yet terminal")
	row("owing", r.Owing, "terminal, their saga still owes a step")
	row("stuck", r.Stuck, "")
	pc := rep.Payments
	row("captured once", pc.CapturedOnce+pc.FeesCaptured, fmt.Sprintf("%d fares, %d cancellation fees", pc.CapturedOnce, pc.FeesCaptured))
	row("holds released", pc.Released(), fmt.Sprintf("%d voided, %d declined, %d never placed", pc.Voided, pc.Declined, pc.NeverHeld))
	row("settling", pc.Settling, "terminal, their payment step still owed")
	l := rep.Ledger
	balance := "balanced"
	if !l.Balanced {
		balance = "NOT balanced"
	}
	row("ledger entries", l.Entries, fmt.Sprintf("%s: %d transactions, debits %d, credits %d", balance, l.Transactions, l.Debits, l.Credits))
	unsent := 0
	var per []string
	for _, o := range rep.Outboxes {
		unsent += o.Unsent
		s := o.Service + " " + strconv.Itoa(o.Unsent)
		if o.Unsent > 0 {
			s += " (oldest " + o.OldestAge.Round(100*time.Millisecond).String() + ")"
		}
		per = append(per, s)
	}
	row("outbox backlog", unsent, strings.Join(per, ", "))
	fmt.Fprintln(w)

	if rep.OK() {
		fmt.Fprintln(w, "OK: all invariants hold")
		return
	}
	n := len(rep.Violations)
	fmt.Fprintf(w, "FAILED: %d %s\n", n, plural(n, "violation", "violations"))
	for i, v := range rep.Violations {
		if i == maxPrinted {
			fmt.Fprintf(w, "  ... and %d more (--json lists every one)\n", n-maxPrinted)
			break
		}
		fmt.Fprintf(w, "  [%s] %s\n", v.Invariant, v.Message)
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
