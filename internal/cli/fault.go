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
	"os"
	"path/filepath"
	"sort"
	"strconv"
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
	data := fs.String("data", ".rideshare", "data folder of the local platform, holding "+StateFile)
	gateway := fs.String("gateway", envOr(env, "RIDESHARE_GATEWAY", ""), "gateway URL of a remote platform (instead of "+StateFile+") [RIDESHARE_GATEWAY]")
	clientID := fs.String("client-id", envOr(env, "RIDESHARE_CLIENT_ID", ""), "operator client id [RIDESHARE_CLIENT_ID]")
	clientSecret := fs.String("client-secret", envOr(env, "RIDESHARE_CLIENT_SECRET", ""), "operator client secret [RIDESHARE_CLIENT_SECRET]")
	timeout := fs.Duration("timeout", 10*time.Second, "give up on a call that takes longer than this")
	overrides := keyValues{}
	fs.Var(overrides, "service", "NAME=URL where to reach a service's admin switch; repeatable")

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

	p, err := findFaultPlatform(*data, *gateway, *clientID, *clientSecret, overrides)
	if err != nil {
		return err
	}
	p.http = &http.Client{Timeout: *timeout}
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
		return p.each(env, targets, func(name string) error { return p.clear(ctx, w, name, *route, set["route"]) })
	case !faultFlags: // list, or one service's faults
		return p.each(env, targets, func(name string) error {
			got, err := p.call(ctx, name, http.MethodGet, "", nil)
			if err == nil {
				printFaults(w, name, got)
			}
			return err
		})
	}
	return p.each(env, targets, func(name string) error {
		got, err := p.call(ctx, name, http.MethodPut, "", fault)
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

// instancesOf are the processes a service name stands for: itself, or,
// for a service `up` runs as replicas, every one of them ("payments-1",
// "payments-2"), so that a fault slows the service, not a third of it.
func (p *faultPlatform) instancesOf(name string) []string {
	if _, ok := p.services[name]; ok {
		return []string{name}
	}
	var out []string
	for _, n := range p.names() {
		if rest, ok := strings.CutPrefix(n, name+"-"); ok {
			if _, err := strconv.Atoi(rest); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
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

// faultPlatform is how to reach a platform's fault switches.
type faultPlatform struct {
	gateway      string
	clientID     string
	clientSecret string
	services     map[string]string // name → base URL, the gateway included
	stateFile    string            // where the local platform was found; "" for a remote one
	http         *http.Client
	token        string
}

// findFaultPlatform reads the local platform's state file, or takes a
// remote platform from flags; --service overrides either.
func findFaultPlatform(data, gateway, clientID, clientSecret string, overrides keyValues) (*faultPlatform, error) {
	p := &faultPlatform{services: map[string]string{}}
	if gateway == "" {
		st, err := ReadState(data)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("the platform is not running: there is no %s (start it with `rideshare up`; "+
				"for a platform in another data folder use --data DIR, for a remote one --gateway URL --client-id ID --client-secret SECRET)",
				filepath.Join(data, StateFile))
		}
		if err != nil {
			return nil, err
		}
		p.stateFile = filepath.Join(data, StateFile)
		p.gateway, p.clientID, p.clientSecret = st.GatewayURL, st.ClientID, st.ClientSecret
		for name, u := range st.Services {
			p.services[name] = u
		}
	} else {
		p.gateway = gateway
	}
	if clientID != "" {
		p.clientID = clientID
	}
	if clientSecret != "" {
		p.clientSecret = clientSecret
	}
	if p.gateway == "" {
		return nil, fmt.Errorf("%s names no gateway: is the platform still starting?", p.stateFile)
	}
	if p.clientID == "" || p.clientSecret == "" {
		return nil, errors.New("no operator credential: give --client-id and --client-secret (or RIDESHARE_CLIENT_ID and RIDESHARE_CLIENT_SECRET)")
	}
	p.gateway = strings.TrimRight(p.gateway, "/")
	p.services["gateway"] = p.gateway
	for name, u := range overrides {
		p.services[name] = u
	}
	for name, u := range p.services {
		p.services[name] = strings.TrimRight(u, "/")
	}
	return p, nil
}

func (p *faultPlatform) names() []string {
	names := make([]string, 0, len(p.services))
	for n := range p.services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// login gets an admin access token with the operator's client credential
// from the gateway. If the gateway itself is faulted (an injected error on
// every route would lock the operator out of clearing it), it asks the
// identity service directly, which issues the same token.
func (p *faultPlatform) login(ctx context.Context) error {
	tok, err := p.requestToken(ctx, p.gateway)
	if err == nil {
		p.token = tok
		return nil
	}
	var down *gatewayUnavailable
	if identity, ok := p.services["identity"]; ok && errors.As(err, &down) {
		if tok, ierr := p.requestToken(ctx, identity); ierr == nil {
			p.token = tok
			return nil
		}
	}
	return err
}

// gatewayUnavailable is a token endpoint that answered but could not
// serve: a 5xx, or an injected fault.
type gatewayUnavailable struct{ msg string }

func (e *gatewayUnavailable) Error() string { return e.msg }

func (p *faultPlatform) requestToken(ctx context.Context, base string) (string, error) {
	tok, err := requestOperatorToken(ctx, p.http, base+"/oauth2/token", p.clientID, p.clientSecret)
	if err != nil {
		if p.stateFile != "" {
			return "", fmt.Errorf("the platform is not running: the gateway at %s does not answer (%v); start it with `rideshare up`", base, unwrapURLError(err))
		}
		return "", fmt.Errorf("the gateway at %s does not answer: %v", base, unwrapURLError(err))
	}
	if tok.status == http.StatusOK {
		if tok.AccessToken == "" {
			return "", fmt.Errorf("the token endpoint at %s answered without an access token: %.200s", base, tok.body)
		}
		return tok.AccessToken, nil
	}
	switch {
	case tok.status >= 500 || tok.Code == faults.Code:
		return "", &gatewayUnavailable{fmt.Sprintf("the gateway at %s could not issue a token (%d %s)%s", base,
			tok.status, http.StatusText(tok.status), describeRemote(tok.Detail, tok.Code, tok.body))}
	case tok.status == http.StatusBadRequest || tok.status == http.StatusUnauthorized:
		where := "--client-id/--client-secret"
		if p.stateFile != "" && p.clientID != "" {
			where = p.stateFile
		}
		reason := tok.Error
		if tok.ErrorDescription != "" {
			reason += ": " + tok.ErrorDescription
		}
		return "", fmt.Errorf("the gateway refused the operator credential (client %q from %s): the credential is wrong (%s)", p.clientID, where, reason)
	}
	return "", fmt.Errorf("the token endpoint at %s answered %d %s%s", base, tok.status, http.StatusText(tok.status), describeRemote(tok.Detail, tok.Code, tok.body))
}

// call sends one request to a service's fault switch and returns the faults
// in force afterwards.
func (p *faultPlatform) call(ctx context.Context, name, method, query string, fault any) ([]faults.Fault, error) {
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
func (p *faultPlatform) clear(ctx context.Context, w io.Writer, name, route string, onlyRoute bool) error {
	if !onlyRoute {
		if _, err := p.call(ctx, name, http.MethodDelete, "", nil); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s: faults cleared\n", name)
		return nil
	}
	_, err := p.call(ctx, name, http.MethodDelete, "?route="+url.QueryEscape(route), nil)
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

// each runs fn for every service in name order, reporting each failure and
// carrying on, so one service that is down does not hide the others.
func (p *faultPlatform) each(env Env, names []string, fn func(name string) error) error {
	if len(names) == 1 {
		return fn(names[0])
	}
	failed := 0
	for _, name := range names {
		if err := fn(name); err != nil {
			failed++
			fmt.Fprintf(env.Stderr, "%v\n", err)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d services failed", failed, len(names))
	}
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

// describeRemote is the useful part of an error answer: its detail and
// code, or the start of a body that is not a problem.
func describeRemote(detail, code string, raw []byte) string {
	switch {
	case detail != "" && code != "":
		return ": " + detail + " (" + code + ")"
	case detail != "":
		return ": " + detail
	case len(bytes.TrimSpace(raw)) > 0:
		return fmt.Sprintf(": %.200s", bytes.TrimSpace(raw))
	}
	return ""
}

// unwrapURLError drops net/http's "Post \"URL\":" prefix, which repeats
// what the message already says.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
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
