package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/faults"
	"github.com/rideshare-platform/rideshare/internal/identity"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

const (
	faultClientID = "rideshare-operator"
	faultSecret   = "s3cret"
	faultToken    = "admin-token-123"
)

// switchStub is a service's fault switch behind an admin-token check, as
// the platform mounts it: a real Injector, so what the command sets is what
// the service would apply.
type switchStub struct {
	inj  *faults.Injector
	srv  *httptest.Server
	mux  *http.ServeMux
	mu   sync.Mutex
	auth []string // Authorization headers received
	// deny, if set, answers every admin request with this status (a token
	// the service does not accept, or a caller that is not an admin).
	deny int
	// accepts decides whether a bearer token is an admin's.
	accepts func(token string) bool
}

func newSwitchStub(t *testing.T) *switchStub {
	t.Helper()
	s := &switchStub{
		inj:     faults.New(faults.Options{Clock: testenv.NewClock(time.Date(2026, 11, 3, 20, 40, 7, 0, time.UTC))}),
		mux:     http.NewServeMux(),
		accepts: func(tok string) bool { return tok == faultToken },
	}
	s.mux.HandleFunc(faultPath, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.auth = append(s.auth, r.Header.Get("Authorization"))
		deny, accepts := s.deny, s.accepts
		s.mu.Unlock()
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		switch {
		case deny != 0:
			apperr.WriteProblem(w, r, apperr.E(map[int]apperr.Kind{401: apperr.Unauthenticated, 403: apperr.Forbidden}[deny], "", "no"), 0)
		case !ok || !accepts(tok):
			apperr.WriteProblem(w, r, apperr.E(apperr.Unauthenticated, "", "a valid admin token is required"), 0)
		default:
			s.inj.Admin().ServeHTTP(w, r)
		}
	})
	s.srv = httptest.NewServer(s.mux)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *switchStub) setDeny(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deny = status
}

func (s *switchStub) tokensSeen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.auth...)
}

// fakePlatform is a gateway with a token endpoint and two services, each
// with its fault switch, written into a data folder as `up` would.
type fakePlatform struct {
	dir                     string
	gateway, payments, user *switchStub
	tokenRequests           []map[string]string
	mu                      sync.Mutex
	// tokenFails, if set, is how the gateway's token endpoint answers.
	tokenFails func(w http.ResponseWriter, r *http.Request)
}

func newFakePlatform(t *testing.T) *fakePlatform {
	t.Helper()
	p := &fakePlatform{dir: t.TempDir(), gateway: newSwitchStub(t), payments: newSwitchStub(t), user: newSwitchStub(t)}
	p.gateway.mux.HandleFunc("POST /oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		id, secret := clientCredentials(r)
		p.mu.Lock()
		p.tokenRequests = append(p.tokenRequests, map[string]string{"grant_type": r.PostForm.Get("grant_type"),
			"client_id": id, "client_secret": secret})
		fails := p.tokenFails
		p.mu.Unlock()
		if fails != nil {
			fails(w, r)
			return
		}
		issueToken(w, r)
	})
	if err := writeState(p.dir, State{
		GatewayURL: p.gateway.srv.URL,
		Services:   map[string]string{"payments": p.payments.srv.URL, "users": p.user.srv.URL},
		ClientID:   faultClientID, ClientSecret: faultSecret,
	}); err != nil {
		t.Fatal(err)
	}
	return p
}

// clientCredentials reads a client's id and secret the two ways RFC 6749
// allows: HTTP Basic (form-encoded values) or the form body.
func clientCredentials(r *http.Request) (id, secret string) {
	if u, p, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
		return id, secret
	}
	return r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
}

// issueToken is a token endpoint for the test credential.
func issueToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if id, secret := clientCredentials(r); r.PostForm.Get("grant_type") != "client_credentials" || id != faultClientID ||
		secret != faultSecret {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client","error_description":"client authentication failed"}`))
		return
	}
	_, _ = w.Write([]byte(`{"access_token":"` + faultToken + `","token_type":"Bearer","expires_in":900}`))
}

func runFaultCLI(args ...string) (code int, stdout, stderr string) {
	var out, errs bytes.Buffer
	code = Run(context.Background(), Env{Args: append([]string{"fault"}, args...), Stdout: &out, Stderr: &errs})
	return code, out.String(), errs.String()
}

// TestFaultFindsTheLocalPlatform: with only the data folder, the command
// reads platform.json, gets a token with the operator credential and sets
// the fault on the service named, sending the token.
func TestFaultFindsTheLocalPlatform(t *testing.T) {
	p := newFakePlatform(t)
	code, out, errs := runFaultCLI("payments", "--latency", "3s", "--error-rate", "0.5",
		"--route", "/rideshare.payments.v1.PaymentsService/Authorize", "--for", "60s", "--data", p.dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	until := time.Date(2026, 11, 3, 20, 41, 7, 0, time.UTC).Local().Format(time.TimeOnly)
	want := "payments: latency 3s, 50% errors on /rideshare.payments.v1.PaymentsService/Authorize for 1m (until " + until + ")\n"
	if out != want {
		t.Fatalf("printed %q, want %q", out, want)
	}
	active := p.payments.inj.Active()
	if len(active) != 1 || active[0].Latency != 3*time.Second || active[0].ErrorRate != 0.5 || active[0].For != time.Minute ||
		active[0].Route != "/rideshare.payments.v1.PaymentsService/Authorize" {
		t.Fatalf("payments has %+v", active)
	}
	if len(p.user.inj.Active()) != 0 || len(p.gateway.inj.Active()) != 0 {
		t.Fatal("a fault reached a service it was not meant for")
	}
	if got := p.payments.tokensSeen(); len(got) != 1 || got[0] != "Bearer "+faultToken {
		t.Fatalf("payments saw Authorization %q", got)
	}
	p.mu.Lock()
	reqs := p.tokenRequests
	p.mu.Unlock()
	if len(reqs) != 1 || reqs[0]["grant_type"] != "client_credentials" ||
		reqs[0]["client_id"] != faultClientID || reqs[0]["client_secret"] != faultSecret {
		t.Fatalf("token requests: %v", reqs)
	}

	// Flags may come before the service, too; without --for it lasts.
	if code, out, errs := runFaultCLI("--data", p.dir, "users", "--hang"); code != 0 || out != "users: hang until cleared\n" {
		t.Fatalf("exit %d %q %s", code, out, errs)
	}
	if a := p.user.inj.Active(); len(a) != 1 || !a[0].Hang {
		t.Fatalf("users has %+v", a)
	}
}

func TestFaultListAndClear(t *testing.T) {
	p := newFakePlatform(t)
	if _, err := p.payments.inj.Set(faults.Fault{Latency: time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.payments.inj.Set(faults.Fault{Route: "/a.B/C", ErrorRate: 1, For: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.gateway.inj.Set(faults.Fault{Hang: true}); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runFaultCLI("list", "--data", p.dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	until := time.Date(2026, 11, 3, 21, 40, 7, 0, time.UTC).Local().Format(time.TimeOnly)
	want := "gateway: hang until cleared\n" +
		"payments: latency 1s until cleared\n" +
		"payments: 100% errors on /a.B/C until " + until + "\n" +
		"users: no faults\n"
	if out != want {
		t.Fatalf("list printed:\n%s\nwant:\n%s", out, want)
	}

	// One service's faults, then one route.
	if code, out, _ := runFaultCLI("payments", "--data", p.dir); code != 0 || !strings.Contains(out, "payments: latency 1s") {
		t.Fatalf("exit %d, %q", code, out)
	}
	if code, out, errs := runFaultCLI("payments", "--clear", "--route", "/a.B/C", "--data", p.dir); code != 0 ||
		out != "payments: fault on \"/a.B/C\" cleared\n" {
		t.Fatalf("exit %d %q %s", code, out, errs)
	}
	if a := p.payments.inj.Active(); len(a) != 1 || a[0].Route != "" {
		t.Fatalf("payments has %+v after clearing one route", a)
	}
	if code, out, _ := runFaultCLI("payments", "--clear", "--route", "/a.B/C", "--data", p.dir); code != 0 ||
		out != "payments: no fault on \"/a.B/C\"\n" {
		t.Fatalf("clearing again: exit %d %q", code, out)
	}
	if code, out, _ := runFaultCLI("payments", "--clear", "--data", p.dir); code != 0 || out != "payments: faults cleared\n" {
		t.Fatalf("exit %d %q", code, out)
	}

	// clear: every service.
	if _, err := p.user.inj.Set(faults.Fault{Hang: true}); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runFaultCLI("clear", "--data", p.dir)
	if code != 0 || out != "gateway: faults cleared\npayments: faults cleared\nusers: faults cleared\n" {
		t.Fatalf("exit %d %q %s", code, out, errs)
	}
	for name, s := range map[string]*switchStub{"gateway": p.gateway, "payments": p.payments, "users": p.user} {
		if a := s.inj.Active(); len(a) != 0 {
			t.Errorf("%s still has %+v", name, a)
		}
	}
}

// TestFaultRemotePlatformByFlags: no state file; the gateway, credential
// and services come from flags.
func TestFaultRemotePlatformByFlags(t *testing.T) {
	p := newFakePlatform(t)
	empty := t.TempDir()
	code, out, errs := runFaultCLI("users", "--error-rate", "1", "--status", "429", "--data", empty,
		"--gateway", p.gateway.srv.URL+"/", "--client-id", faultClientID, "--client-secret", faultSecret,
		"--service", "users="+p.user.srv.URL)
	if code != 0 || out != "users: 100% errors (status 429) until cleared\n" {
		t.Fatalf("exit %d %q %s", code, out, errs)
	}
	if a := p.user.inj.Active(); len(a) != 1 || a[0].Status != 429 {
		t.Fatalf("users has %+v", a)
	}
	// Only the services named are known; the gateway always is.
	code, _, errs = runFaultCLI("payments", "--hang", "--data", empty, "--gateway", p.gateway.srv.URL,
		"--client-id", faultClientID, "--client-secret", faultSecret, "--service", "users="+p.user.srv.URL)
	if code != 1 || !strings.Contains(errs, `unknown service "payments"; the services are: gateway, users`) {
		t.Fatalf("exit %d: %s", code, errs)
	}
	// --service overrides the state file's address.
	other := newSwitchStub(t)
	if code, _, errs := runFaultCLI("payments", "--hang", "--data", p.dir, "--service", "payments="+other.srv.URL); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if len(other.inj.Active()) != 1 || len(p.payments.inj.Active()) != 0 {
		t.Fatal("--service did not override the state file")
	}
}

// TestFaultGatewayFaultedStillClears: an error fault on every gateway route
// also fails the token endpoint; the command then asks identity directly,
// so the operator can still clear it.
func TestFaultGatewayFaultedStillClears(t *testing.T) {
	p := newFakePlatform(t)
	p.mu.Lock()
	p.tokenFails = func(w http.ResponseWriter, r *http.Request) {
		apperr.WriteProblem(w, r, apperr.E(apperr.Unavailable, faults.Code, "fault injected: 100%% errors"), 0)
	}
	p.mu.Unlock()
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		issueToken(w, r)
	}))
	t.Cleanup(idp.Close)
	if _, err := p.gateway.inj.Set(faults.Fault{ErrorRate: 1}); err != nil {
		t.Fatal(err)
	}
	// Without an identity address there is nowhere else to ask.
	code, _, errs := runFaultCLI("gateway", "--clear", "--data", p.dir)
	if code != 1 || !strings.Contains(errs, "could not issue a token") || !strings.Contains(errs, faults.Code) {
		t.Fatalf("exit %d: %s", code, errs)
	}
	code, out, errs := runFaultCLI("gateway", "--clear", "--data", p.dir, "--service", "identity="+idp.URL)
	if code != 0 || out != "gateway: faults cleared\n" {
		t.Fatalf("exit %d %q %s", code, out, errs)
	}
	if len(p.gateway.inj.Active()) != 0 {
		t.Fatal("the gateway's fault is still set")
	}
}

// TestFaultErrors: each way it can go wrong says what is wrong and what to
// do about it.
func TestFaultErrors(t *testing.T) {
	p := newFakePlatform(t)
	const stoppedGateway = testenv.NoListener
	stopped := newFakePlatform(t)
	st, err := ReadState(stopped.dir)
	if err != nil {
		t.Fatal(err)
	}
	st.GatewayURL = stoppedGateway
	if err := writeState(stopped.dir, st); err != nil {
		t.Fatal(err)
	}
	wrongSecret := newFakePlatform(t)
	if st, err = ReadState(wrongSecret.dir); err != nil {
		t.Fatal(err)
	}
	st.ClientSecret = "wrong"
	if err := writeState(wrongSecret.dir, st); err != nil {
		t.Fatal(err)
	}
	notAdmin := newFakePlatform(t)
	notAdmin.payments.setDeny(http.StatusForbidden)
	badToken := newFakePlatform(t)
	badToken.payments.setDeny(http.StatusUnauthorized)

	for _, tc := range []struct {
		name string
		args []string
		code int
		says []string
	}{
		{"unknown service", []string{"billing", "--hang", "--data", p.dir}, 1,
			[]string{`unknown service "billing"`, "gateway, payments, users"}},
		{"no state file", []string{"payments", "--hang", "--data", t.TempDir()}, 1,
			[]string{"the platform is not running", "platform.json", "rideshare up", "--gateway"}},
		{"gateway not answering", []string{"payments", "--hang", "--data", stopped.dir}, 1,
			[]string{"the platform is not running", "the gateway at " + stoppedGateway + " does not answer", "rideshare up"}},
		{"wrong credential", []string{"payments", "--hang", "--data", wrongSecret.dir}, 1,
			[]string{"refused the operator credential", faultClientID, "the credential is wrong", "invalid_client"}},
		{"token refused by the service", []string{"payments", "--hang", "--data", badToken.dir}, 1,
			[]string{"payments refused the token (401 Unauthorized)", "credential is wrong"}},
		{"not an admin", []string{"payments", "--hang", "--data", notAdmin.dir}, 1,
			[]string{"403 Forbidden", "not an admin"}},
		{"one of several fails", []string{"list", "--data", notAdmin.dir}, 1,
			[]string{"not an admin", "1 of 3 services failed"}},
		{"no service", []string{"--data", p.dir}, 2, []string{"name a service"}},
		{"two services", []string{"payments", "users", "--hang", "--data", p.dir}, 2, []string{"one service at a time"}},
		{"rate out of range", []string{"payments", "--error-rate", "2", "--data", p.dir}, 2, []string{"--error-rate must be between 0 and 1"}},
		{"for alone", []string{"payments", "--for", "1m", "--data", p.dir}, 2, []string{"give --latency, --error-rate or --hang"}},
		{"clear with a fault", []string{"payments", "--clear", "--hang", "--data", p.dir}, 2, []string{"--clear takes no fault flags"}},
		{"list with a fault", []string{"list", "--hang", "--data", p.dir}, 2, []string{"takes no fault flags"}},
		{"bad route", []string{"payments", "--hang", "--route", "payments", "--data", p.dir}, 2, []string{"must be a path prefix"}},
		{"remote without a credential", []string{"payments", "--hang", "--gateway", p.gateway.srv.URL}, 1,
			[]string{"--client-id and --client-secret"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := runFaultCLI(tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, errs)
			}
			for _, s := range tc.says {
				if !strings.Contains(errs, s) {
					t.Errorf("stderr does not say %q:\n%s", s, errs)
				}
			}
		})
	}
	// Nothing was set anywhere by a failed command.
	for _, fp := range []*fakePlatform{p, notAdmin, badToken} {
		if len(fp.payments.inj.Active())+len(fp.user.inj.Active()) != 0 {
			t.Fatal("a failed command set a fault")
		}
	}
}

func TestFaultHelp(t *testing.T) {
	code, out, _ := runFaultCLI("--help")
	if code != 0 || !strings.Contains(out, "rideshare fault list") || !strings.Contains(out, "--error-rate") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// TestFaultWithRealIdentity: the token request is one the identity
// service really answers, and the token it issues to the operator client
// carries the admin role a service's admin check looks for.
func TestFaultWithRealIdentity(t *testing.T) {
	idp := startIdentity(t)
	svc := newSwitchStub(t)
	svc.mu.Lock()
	svc.accepts = func(tok string) bool {
		var claims struct {
			jwt.RegisteredClaims
			Role string `json:"role"`
		}
		_, _, err := jwt.NewParser().ParseUnverified(tok, &claims)
		return err == nil && claims.Role == "admin"
	}
	svc.mu.Unlock()
	code, out, errs := runFaultCLI("payments", "--latency", "250ms", "--data", t.TempDir(),
		"--gateway", idp, "--client-id", identity.OperatorClientID, "--client-secret", testSecret,
		"--service", "payments="+svc.srv.URL)
	if code != 0 || out != "payments: latency 250ms until cleared\n" {
		t.Fatalf("exit %d %q %s", code, out, errs)
	}
}
