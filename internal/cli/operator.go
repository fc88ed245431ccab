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
	"strings"
	"time"

	"github.com/rideshare-platform/rideshare/internal/faults"
	"github.com/rideshare-platform/rideshare/internal/procs"
)

// tokenResponse is a token endpoint's answer: an OAuth token response, an
// OAuth error, or (from the gateway) a problem+json with a code.
type tokenResponse struct {
	AccessToken      string `json:"access_token"`
	ExpiresIn        int64  `json:"expires_in"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	Code             string `json:"code"`
	Detail           string `json:"detail"`

	status int
	body   []byte
}

// requestOperatorToken asks tokenURL for an access token with the
// client_credentials grant. Only a failure to get any answer is an error:
// the commands word a refusal each in their own terms.
func requestOperatorToken(ctx context.Context, client *http.Client, tokenURL, clientID, clientSecret string) (*tokenResponse, error) {
	body := strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749, section 2.3.1: both are form-encoded before basic auth.
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(clientSecret))
	res, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	tok := &tokenResponse{status: res.StatusCode}
	tok.body, _ = io.ReadAll(io.LimitReader(res.Body, 1<<20))
	_ = json.Unmarshal(tok.body, tok)
	return tok, nil
}

// operatorFlags are the flags of every command that acts on a running
// platform as its operator (fault, check): where the platform is and the
// operator's client credential.
type operatorFlags struct {
	data, gateway, clientID, clientSecret *string
	timeout                               *time.Duration
	services                              keyValues
}

// addOperatorFlags registers the operator flags on fs.
func addOperatorFlags(fs *flag.FlagSet, env Env) *operatorFlags {
	f := &operatorFlags{services: keyValues{}}
	f.data = fs.String("data", ".rideshare", "data folder of the local platform, holding "+StateFile)
	f.gateway = fs.String("gateway", envOr(env, "RIDESHARE_GATEWAY", ""), "gateway URL of a remote platform (instead of "+StateFile+") [RIDESHARE_GATEWAY]")
	f.clientID = fs.String("client-id", envOr(env, "RIDESHARE_CLIENT_ID", ""), "operator client id [RIDESHARE_CLIENT_ID]")
	f.clientSecret = fs.String("client-secret", envOr(env, "RIDESHARE_CLIENT_SECRET", ""), "operator client secret [RIDESHARE_CLIENT_SECRET]")
	f.timeout = fs.Duration("timeout", 10*time.Second, "give up on a call that takes longer than this")
	fs.Var(f.services, "service", "NAME=URL where to reach a service's admin endpoints; repeatable")
	return f
}

// platform finds the platform the flags name.
func (f *operatorFlags) platform() (*operatorPlatform, error) {
	p, err := findOperatorPlatform(*f.data, *f.gateway, *f.clientID, *f.clientSecret, f.services)
	if err != nil {
		return nil, err
	}
	p.http = &http.Client{Timeout: *f.timeout}
	return p, nil
}

// operatorPlatform is how an operator reaches a running platform: its
// gateway (for tokens), every process's base URL (for its /admin/
// endpoints) and the operator's client credential.
type operatorPlatform struct {
	gateway      string
	clientID     string
	clientSecret string
	services     map[string]string // name → base URL, the gateway included
	stateFile    string            // where the local platform was found; "" for a remote one
	http         *http.Client
	token        string
}

// findOperatorPlatform reads the local platform's state file, or takes a
// remote platform from flags; --service overrides either.
func findOperatorPlatform(data, gateway, clientID, clientSecret string, overrides keyValues) (*operatorPlatform, error) {
	p := &operatorPlatform{services: map[string]string{}}
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

func (p *operatorPlatform) names() []string {
	names := make([]string, 0, len(p.services))
	for n := range p.services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// instancesOf are the processes a service name stands for: itself, or,
// for a service `up` runs as replicas, every one of them ("payments-1",
// "payments-2"), so that a fault slows the service, not a third of it.
func (p *operatorPlatform) instancesOf(name string) []string {
	if _, ok := p.services[name]; ok {
		return []string{name}
	}
	return procs.Instances(p.names(), name)
}

// login gets an admin access token with the operator's client credential
// from the gateway. If the gateway itself is faulted (an injected error on
// every route would lock the operator out of clearing it), it asks the
// identity service directly, which issues the same token.
func (p *operatorPlatform) login(ctx context.Context) error {
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

// credentialRefused is the token endpoint refusing the operator's
// credential: asking again will not help.
type credentialRefused struct{ msg string }

func (e *credentialRefused) Error() string { return e.msg }

func (p *operatorPlatform) requestToken(ctx context.Context, base string) (string, error) {
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
		return "", &credentialRefused{fmt.Sprintf("the gateway refused the operator credential (client %q from %s): the credential is wrong (%s)", p.clientID, where, reason)}
	}
	return "", fmt.Errorf("the token endpoint at %s answered %d %s%s", base, tok.status, http.StatusText(tok.status), describeRemote(tok.Detail, tok.Code, tok.body))
}

// each runs fn for every service in name order, reporting each failure and
// carrying on, so one service that is down does not hide the others.
func (p *operatorPlatform) each(env Env, names []string, fn func(name string) error) error {
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
