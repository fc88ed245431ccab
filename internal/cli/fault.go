package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/faults"
)

// faultPath is where every process mounts its fault switch.
const faultPath = "/admin/faults"

// runFault is `rideshare fault`: make a service slow or broken on purpose,
// list what is set, or clear it.
func runFault(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "fault",
		"fault SERVICE [--latency 3s] [--error-rate 0.5] [--hang] [--route PREFIX] [--for 60s]\n"+
			"       rideshare fault SERVICE --clear [--route PREFIX]\n"+
			"       rideshare fault SERVICE          (list SERVICE's faults)\n"+
			"       rideshare fault list             (every service's faults)\n"+
			"       rideshare fault clear            (clear every service's faults)",
		"Sets, lists or clears injected faults through each service's admin fault switch, so a\n"+
			"drill can make any service slow or broken. It finds the platform `rideshare up` runs\n"+
			"through "+StateFile+" in the data folder; for a remote one give --gateway and the\n"+
			"operator client credential, and --service NAME=URL for each service to reach.")
	latency := fs.Duration("latency", 0, "add this latency to each request (e.g. 3s, 250ms)")
	errorRate := fs.Float64("error-rate", 0, "fail this share of requests, 0 to 1 (RPC callers see Unavailable)")
	hang := fs.Bool("hang", false, "hold every request until its caller gives up")
	route := fs.String("route", "", "only requests whose path starts with this prefix, e.g.\n/rideshare.payments.v1.PaymentsService/Authorize (default: every request)")
	lasting := fs.Duration("for", 0, "the fault ends by itself after this long (default: until cleared)")
	status := fs.Int("status", 0, "HTTP status of an injected error (default 503)")
	clearFlag := fs.Bool("clear", false, "clear SERVICE's faults (only the one on --route, if given)")
	op := addOperatorFlags(fs, env)

	target, err := parseFaultArgs(fs, env, args)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	faultFlags := set["latency"] || set["error-rate"] || set["hang"] || set["for"] || set["status"]
	fault := faults.Fault{Route: *route, Latency: *latency, ErrorRate: *errorRate, Hang: *hang, Status: *status, For: *lasting}
	switch {
	case (target == "list" || target == "clear") && (faultFlags || *clearFlag):
		return faultUsage(env, "`fault %s` takes no fault flags", target)
	case target == "list" && set["route"]:
		return faultUsage(env, "`fault list` takes no --route")
	case *clearFlag && faultFlags:
		return faultUsage(env, "--clear takes no fault flags (only --route)")
	case faultFlags && *latency == 0 && *errorRate == 0 && !*hang:
		return faultUsage(env, "give --latency, --error-rate or --hang (or --clear to remove faults)")
	case faultFlags:
		if err := fault.Validate(); err != nil {
			return faultUsage(env, "%s", strings.NewReplacer("error_rate", "--error-rate", "for must", "--for must", "route \"", "--route \"").Replace(err.Error()))
		}
	}

	p, err := op.platform()
	if err != nil {
		return err
	}
	targets := p.names()
	if target != "list" && target != "clear" {
		if targets = p.instancesOf(target); len(targets) == 0 {
			return fmt.Errorf("unknown service %q; the services are: %s", target, strings.Join(p.names(), ", "))
		}
	}
	if err := p.login(ctx); err != nil {
		return err
	}
	w := env.Stdout
	switch {
	case target == "clear" || *clearFlag:
		return p.each(env, targets, func(name string) error { return p.clearFaults(ctx, w, name, *route, set["route"]) })
	case !faultFlags: // list, or one service's faults
		return p.each(env, targets, func(name string) error {
			got, err := p.callFaults(ctx, name, http.MethodGet, "", nil)
			if err == nil {
				printFaults(w, name, got)
			}
			return err
		})
	}
	return p.each(env, targets, func(name string) error {
		got, err := p.callFaults(ctx, name, http.MethodPut, "", fault)
		if err != nil {
			return err
		}
		for _, f := range got {
			if f.Route == fault.Route {
				fmt.Fprintf(w, "%s: %s%s\n", name, f, faultLasting(f, true))
				return nil
			}
		}
		return fmt.Errorf("%s accepted the fault but does not list it", name)
	})
}

// parseFaultArgs parses flags on either side of the one positional
// argument (SERVICE, list or clear), as people type them.
func parseFaultArgs(fs *flag.FlagSet, env Env, args []string) (string, error) {
	var positional []string
	for {
		if err := parse(fs, env, args); err != nil {
			return "", err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch len(positional) {
	case 0:
		return "", faultUsage(env, "name a service, or `list` or `clear`")
	case 1:
		return positional[0], nil
	}
	return "", faultUsage(env, "one service at a time, got %s (use `fault clear` or `fault list` for all)", strings.Join(positional, " "))
}

func faultUsage(env Env, format string, args ...any) error {
	fmt.Fprintf(env.Stderr, "rideshare fault: "+format+"\nRun 'rideshare fault --help' for usage.\n", args...)
	return errUsage
}

// call sends one request to a service's fault switch and returns the faults
// in force afterwards.
func (p *operatorPlatform) callFaults(ctx context.Context, name, method, query string, fault any) ([]faults.Fault, error) {
	var body io.Reader
	if fault != nil {
		b, err := json.Marshal(fault)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	u := p.services[name] + faultPath + query
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s at %s does not answer: %v", name, p.services[name], unwrapURLError(err))
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var prob apperr.Problem
	if resp.StatusCode != http.StatusOK {
		_ = json.Unmarshal(raw, &prob)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		var l faults.List
		if err := json.Unmarshal(raw, &l); err != nil {
			return nil, fmt.Errorf("%s answered %s with something that is not a fault list: %.200s", name, u, raw)
		}
		return l.Faults, nil
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("%s refused the token (401 Unauthorized): the operator credential is wrong or was not issued by this platform%s",
			name, describeRemote(prob.Detail, prob.Code, raw))
	case resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("%s refused the operator (403 Forbidden): the credential %q is not an admin; fault injection needs the admin role%s",
			name, p.clientID, describeRemote(prob.Detail, prob.Code, raw))
	case resp.StatusCode == http.StatusNotFound && prob.Code != "no_fault":
		return nil, fmt.Errorf("%s has no fault switch at %s (404): is it a build without one, or the wrong URL?", name, u)
	case resp.StatusCode == http.StatusBadRequest:
		return nil, fmt.Errorf("%s rejected the fault%s", name, describeRemote(prob.Detail, prob.Code, raw))
	}
	return nil, &remoteError{status: resp.StatusCode, code: prob.Code,
		msg: fmt.Sprintf("%s answered %s%s", name, resp.Status, describeRemote(prob.Detail, prob.Code, raw))}
}

// remoteError is a switch's answer the caller may want to tell apart (a
// route with no fault to clear).
type remoteError struct {
	status int
	code   string
	msg    string
}

func (e *remoteError) Error() string { return e.msg }

// clear removes a service's faults, or only the one on route.
func (p *operatorPlatform) clearFaults(ctx context.Context, w io.Writer, name, route string, onlyRoute bool) error {
	if !onlyRoute {
		if _, err := p.callFaults(ctx, name, http.MethodDelete, "", nil); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s: faults cleared\n", name)
		return nil
	}
	_, err := p.callFaults(ctx, name, http.MethodDelete, "?route="+url.QueryEscape(route), nil)
	var re *remoteError
	if errors.As(err, &re) && re.code == "no_fault" {
		fmt.Fprintf(w, "%s: no fault on %q\n", name, route)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: fault on %q cleared\n", name, route)
	return nil
}

func printFaults(w io.Writer, name string, list []faults.Fault) {
	if len(list) == 0 {
		fmt.Fprintf(w, "%s: no faults\n", name)
		return
	}
	for _, f := range list {
		fmt.Fprintf(w, "%s: %s%s\n", name, f, faultLasting(f, false))
	}
}

// faultLasting says how long a fault lasts: " for 60s (until 20:41:07)"
// when it was just set, " until 20:41:07" when listed.
func faultLasting(f faults.Fault, justSet bool) string {
	if f.ExpiresAt.IsZero() {
		return " until cleared"
	}
	until := f.ExpiresAt.Local().Format(time.TimeOnly)
	if justSet && f.For > 0 {
		return fmt.Sprintf(" for %s (until %s)", shortDuration(f.For), until)
	}
	return " until " + until
}

// shortDuration drops Go's trailing zero units: "1m" rather than "1m0s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
