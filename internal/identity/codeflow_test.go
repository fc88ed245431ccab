package identity

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// testVerifier is a PKCE code verifier, and testChallenge its S256
// challenge.
const testVerifier = "a-code-verifier-that-is-long-enough-0123456789abcdef"

var testChallenge = func() string {
	sum := sha256.Sum256([]byte(testVerifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}()

// testRedirect is the command line's loopback listener on some port.
const testRedirect = "http://127.0.0.1:49152/callback"

// authorizeParams is a valid authorization request of the command line.
func authorizeParams() url.Values {
	return url.Values{
		"client_id": {CLIClientID}, "redirect_uri": {testRedirect}, "response_type": {"code"},
		"scope": {"openid offline_access"}, "state": {"st4te"},
		"code_challenge": {testChallenge}, "code_challenge_method": {"S256"},
	}
}

// browser is a user agent: it keeps cookies and shows the test every
// redirect instead of following it.
type browser struct {
	t    *testing.T
	ti   *testIdentity
	http *http.Client
}

func (ti *testIdentity) browser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, ti: ti, http: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// page is a response as the browser saw it.
type page struct {
	status   int
	header   http.Header
	body     string
	location *url.URL
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	res, err := b.http.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	p := page{status: res.StatusCode, header: res.Header, body: string(body)}
	if loc := res.Header.Get("Location"); loc != "" {
		// Resolved as a browser would: a relative redirect stays on the
		// issuer, which may be the gateway.
		if p.location, err = req.URL.Parse(loc); err != nil {
			b.t.Fatal(err)
		}
	}
	return p
}

func (b *browser) get(u string) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

func (b *browser) post(u string, form url.Values) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// authorize starts a sign-in and returns the login page it leads to.
func (b *browser) authorize(params url.Values) page {
	b.t.Helper()
	p := b.get(b.ti.issuer + authorizePath + "?" + params.Encode())
	if p.status != http.StatusFound || p.location == nil || p.location.Path != loginPath {
		b.t.Fatalf("authorize: %d to %v, want a redirect to the login page: %s", p.status, p.location, p.body)
	}
	if got := p.location.Scheme + "://" + p.location.Host; got != b.ti.issuer {
		b.t.Fatalf("login page at %s, want it on the issuer %s", got, b.ti.issuer)
	}
	login := b.get(p.location.String())
	if login.status != http.StatusOK {
		b.t.Fatalf("login page: %d %s", login.status, login.body)
	}
	return login
}

var hiddenField = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// loginForm is the login page's form with email and password filled in.
func loginForm(t *testing.T, p page, email, password string) url.Values {
	t.Helper()
	f := url.Values{"email": {email}, "password": {password}}
	for _, m := range hiddenField.FindAllStringSubmatch(p.body, -1) {
		f.Set(m[1], m[2])
	}
	if f.Get("auth_request_id") == "" || f.Get("csrf") == "" {
		t.Fatalf("login page lacks its hidden fields: %s", p.body)
	}
	return f
}

// signIn walks the whole browser part: authorize, login, callback. It
// returns the redirect back to the client, which carries the code.
func (b *browser) signIn(params url.Values, email, password string) *url.URL {
	b.t.Helper()
	login := b.authorize(params)
	done := b.post(b.ti.issuer+loginPath, loginForm(b.t, login, email, password))
	if done.status != http.StatusSeeOther || done.location == nil || done.location.Path != callbackPath {
		b.t.Fatalf("login: %d to %v, want 303 to the callback: %s", done.status, done.location, done.body)
	}
	back := b.get(done.location.String())
	if back.status != http.StatusFound || back.location == nil {
		b.t.Fatalf("callback: %d %s", back.status, back.body)
	}
	return back.location
}

// codeOf checks the redirect to the client and returns its code.
func codeOf(t *testing.T, back *url.URL, redirect string) string {
	t.Helper()
	code := back.Query().Get("code")
	u := *back
	u.RawQuery = ""
	if u.String() != redirect || back.Query().Get("state") != "st4te" || code == "" {
		t.Fatalf("redirected to %s, want %s with the code and state", back, redirect)
	}
	return code
}

func exchangeForm(code, verifier string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "client_id": {CLIClientID}, "code": {code},
		"redirect_uri": {testRedirect}, "code_verifier": {verifier}}
}

func TestCodeFlowThroughGateway(t *testing.T) {
	ti := startIdentityWith(t, testConfig{viaGateway: true})
	verify := ti.verifier(t)
	accountID := ti.signUp(t, "ann@example.com", "password1")
	b := ti.browser(t)

	login := b.authorize(authorizeParams())
	for k, want := range map[string]string{
		"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
		"Content-Type": "text/html; charset=utf-8",
	} {
		if got := login.header.Get(k); got != want {
			t.Errorf("login page %s = %q, want %q", k, got, want)
		}
	}
	csp := login.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("login page CSP = %q", csp)
	}
	// The inline style is the one the policy allows by its hash, or a
	// browser would refuse it.
	if _, rest, ok := strings.Cut(login.body, "<style>"); ok {
		style, _, _ := strings.Cut(rest, "</style>")
		sum := sha256.Sum256([]byte(style))
		if want := "style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, want) {
			t.Errorf("login page CSP %q does not allow its own style (%s)", csp, want)
		}
	}
	if !strings.Contains(login.body, `<form method="post" action="/oauth2/login">`) || !strings.Contains(login.body, CLIClientID) ||
		strings.Contains(login.body, "<script") {
		t.Errorf("login page:\n%s", login.body)
	}
	cookie := login.header.Get("Set-Cookie")
	for _, attr := range []string{loginCookie + "=", "Path=/oauth2/", "HttpOnly", "SameSite=Lax"} {
		if !strings.Contains(cookie, attr) {
			t.Errorf("login cookie %q lacks %s", cookie, attr)
		}
	}
	if strings.Contains(cookie, "Secure") {
		t.Errorf("login cookie %q is Secure on an http issuer: the browser would drop it", cookie)
	}

	done := b.post(ti.issuer+loginPath, loginForm(t, login, "Ann@Example.com", "password1"))
	if done.status != http.StatusSeeOther || done.location.Path != callbackPath {
		t.Fatalf("login: %d to %v: %s", done.status, done.location, done.body)
	}
	back := b.get(done.location.String())
	if back.status != http.StatusFound {
		t.Fatalf("callback: %d %s", back.status, back.body)
	}
	code := codeOf(t, back.location, testRedirect)

	status, tok := ti.token(t, exchangeForm(code, testVerifier), "", "")
	if status != http.StatusOK || tok.RefreshToken == "" || tok.IDToken == "" || tok.Scope != "openid offline_access" {
		t.Fatalf("code exchange: %d %+v", status, tok)
	}
	claims, err := verify(tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if claims.Subject != accountID || claims.Role != "rider" || !slices.Contains(claims.Audience, APIAudience) {
		t.Errorf("claims = %+v", claims)
	}
	if got := ti.logs.audits(t, auditLoginSucceeded); len(got) != 1 || got[0]["account_id"] != accountID || got[0]["client_id"] != CLIClientID {
		t.Errorf("login_succeeded audit lines = %v", got)
	}
}

func TestLoginRefusesWrongCredentialsAlike(t *testing.T) {
	ti := startIdentity(t, false)
	ti.signUp(t, "ann@example.com", "password1")
	b := ti.browser(t)
	login := b.authorize(authorizeParams())
	id := loginForm(t, login, "", "").Get("auth_request_id")

	var pages []page
	for _, c := range []struct{ email, password string }{
		{"ann@example.com", "wrong-password"},
		{"nobody@example.com", "password1"}, // no such account
		{"not an email", "password1"},
		{"ann@example.com", ""},
	} {
		p := b.post(ti.issuer+loginPath, loginForm(t, login, c.email, c.password))
		if p.status != http.StatusOK || p.location != nil || !strings.Contains(p.body, msgBadCredentials) {
			t.Fatalf("%s / %q: %d %v, want the form again with the generic error:\n%s", c.email, c.password, p.status, p.location, p.body)
		}
		// The form is shown again for the same request, keeping the email
		// and never the password.
		again := loginForm(t, p, "", "")
		if again.Get("auth_request_id") != id || strings.Contains(p.body, "wrong-password") {
			t.Errorf("form shown again = %v", again)
		}
		pages = append(pages, p)
	}
	// Unknown account and wrong password read the same, but for the email
	// the form keeps.
	same := func(p page, email string) string { return strings.Replace(p.body, email, "EMAIL", 1) }
	if same(pages[0], "ann@example.com") != same(pages[1], "nobody@example.com") {
		t.Errorf("unknown email and wrong password answer differently:\n%s\n---\n%s", pages[0].body, pages[1].body)
	}
	var done bool
	if err := ti.db.Reader().QueryRow(`SELECT done FROM auth_requests WHERE id = $1`, id).Scan(&done); err != nil || done {
		t.Fatalf("auth request signed in after failed logins (done=%v, %v)", done, err)
	}
	// The right password still works on the same form.
	ok := b.post(ti.issuer+loginPath, loginForm(t, login, "ann@example.com", "password1"))
	if ok.status != http.StatusSeeOther {
		t.Fatalf("login after failures: %d %s", ok.status, ok.body)
	}
}

func TestLoginCSRFAndCallbackBinding(t *testing.T) {
	ti := startIdentityWith(t, testConfig{viaGateway: true})
	ti.signUp(t, "ann@example.com", "password1")
	victim := ti.browser(t)
	login := victim.authorize(authorizeParams())
	form := loginForm(t, login, "ann@example.com", "password1")

	// Another browser (a page on another site posting cross-site sends no
	// SameSite=Lax cookie) cannot submit the form, even with its token.
	other := ti.browser(t)
	if p := other.post(ti.issuer+loginPath, form); p.status != http.StatusForbidden || !strings.Contains(p.body, msgFormExpired) {
		t.Fatalf("post without the cookie: %d %s", p.status, p.body)
	}
	// Nor can the right browser with a token that is not its form's.
	forged := loginForm(t, login, "ann@example.com", "password1")
	forged.Set("csrf", "forged-token")
	if p := victim.post(ti.issuer+loginPath, forged); p.status != http.StatusForbidden {
		t.Fatalf("post with a forged token: %d %s", p.status, p.body)
	}
	// The refused posts gave the browser a fresh form; the old one is dead.
	if p := victim.post(ti.issuer+loginPath, form); p.status != http.StatusForbidden {
		t.Fatalf("post of a superseded form: %d %s", p.status, p.body)
	}
	login = victim.get(ti.issuer + loginPath + "?authRequestID=" + url.QueryEscape(form.Get("auth_request_id")))
	done := victim.post(ti.issuer+loginPath, loginForm(t, login, "ann@example.com", "password1"))
	if done.status != http.StatusSeeOther {
		t.Fatalf("login with a fresh form: %d %s", done.status, done.body)
	}
	// Someone who learned the request id cannot collect the code: the
	// callback answers only the browser that signed in.
	if p := other.get(done.location.String()); p.status != http.StatusBadRequest || p.location != nil {
		t.Fatalf("callback from another browser: %d to %v", p.status, p.location)
	}
	back := victim.get(done.location.String())
	codeOf(t, back.location, testRedirect)
	// And it is issued once.
	if p := victim.get(done.location.String()); p.status == http.StatusFound && p.location.Query().Get("code") != "" {
		t.Fatalf("the callback issued a second code: %v", p.location)
	}
	if got := ti.logs.audits(t, auditLoginRefused); len(got) < 4 {
		t.Errorf("login_refused audit lines = %d, want one per refused post and callback", len(got))
	}
}

func TestLoginPageForUnknownRequest(t *testing.T) {
	ti := startIdentity(t, false)
	p := ti.browser(t).get(ti.issuer + loginPath + "?authRequestID=no-such-request")
	if p.status != http.StatusBadRequest || !strings.Contains(p.body, "expired") || strings.Contains(p.body, "<form") {
		t.Fatalf("login page for an unknown request: %d %s", p.status, p.body)
	}
}

func TestPKCERequired(t *testing.T) {
	ti := startIdentity(t, false)
	ti.signUp(t, "ann@example.com", "password1")
	b := ti.browser(t)

	for name, change := range map[string]func(url.Values){
		"no challenge":   func(v url.Values) { v.Del("code_challenge"); v.Del("code_challenge_method") },
		"plain method":   func(v url.Values) { v.Set("code_challenge", testVerifier); v.Set("code_challenge_method", "plain") },
		"no method":      func(v url.Values) { v.Del("code_challenge_method") },
		"unknown method": func(v url.Values) { v.Set("code_challenge_method", "S512") },
	} {
		t.Run(name, func(t *testing.T) {
			params := authorizeParams()
			change(params)
			p := b.get(ti.issuer + authorizePath + "?" + params.Encode())
			// Refused back to the (registered) client, never to the login page.
			if p.status != http.StatusFound || p.location.Query().Get("error") != "invalid_request" ||
				!strings.HasPrefix(p.location.String(), testRedirect) {
				t.Fatalf("authorize: %d to %v, want an invalid_request redirect to the client", p.status, p.location)
			}
		})
	}

	code := codeOf(t, b.signIn(authorizeParams(), "ann@example.com", "password1"), testRedirect)
	for _, verifier := range []string{"", "the-wrong-verifier-0123456789abcdef0123456789"} {
		if status, res := ti.token(t, exchangeForm(code, verifier), "", ""); status != http.StatusBadRequest || res.AccessToken != "" {
			t.Fatalf("exchange with verifier %q: %d %+v", verifier, status, res)
		}
	}
	if status, res := ti.token(t, exchangeForm(code, testVerifier), "", ""); status != http.StatusOK {
		t.Fatalf("exchange with the verifier: %d %+v", status, res)
	}
}

func TestCodeUsedOnceAndReuseRevokes(t *testing.T) {
	ti := startIdentity(t, false)
	ti.signUp(t, "ann@example.com", "password1")
	code := codeOf(t, ti.browser(t).signIn(authorizeParams(), "ann@example.com", "password1"), testRedirect)

	status, tok := ti.token(t, exchangeForm(code, testVerifier), "", "")
	if status != http.StatusOK {
		t.Fatalf("exchange: %d %+v", status, tok)
	}
	if got := ti.introspect(t, tok.AccessToken); got["active"] != true {
		t.Fatalf("fresh access token introspects as %v", got)
	}
	status, again := ti.token(t, exchangeForm(code, testVerifier), "", "")
	if status != http.StatusBadRequest || again.Error != "invalid_grant" || again.AccessToken != "" {
		t.Fatalf("second exchange: %d %+v, want 400 invalid_grant", status, again)
	}
	// What the first exchange issued is revoked: the refresh token, and
	// the access token wherever identity is asked about it.
	refresh := url.Values{"grant_type": {"refresh_token"}, "client_id": {CLIClientID}, "refresh_token": {tok.RefreshToken}}
	if status, res := ti.token(t, refresh, "", ""); status != http.StatusBadRequest || res.Error != "invalid_grant" {
		t.Fatalf("refresh token of a reused code: %d %+v", status, res)
	}
	if got := ti.introspect(t, tok.AccessToken); got["active"] == true {
		t.Errorf("access token of a reused code introspects as %v", got)
	}
	if got := ti.logs.audits(t, auditCodeReused); len(got) != 1 {
		t.Errorf("code reuse audit lines = %v", got)
	}
}

// TestCodeExchangeRace sends simultaneous exchanges of one code: at most
// one may succeed. (TestRedeemIsConditional forces the interleaving this
// can only hope to hit.)
func TestCodeExchangeRace(t *testing.T) {
	ti := startIdentity(t, false)
	ti.signUp(t, "ann@example.com", "password1")
	code := codeOf(t, ti.browser(t).signIn(authorizeParams(), "ann@example.com", "password1"), testRedirect)
	const n = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest(http.MethodPost, ti.issuer+tokenPath, strings.NewReader(exchangeForm(code, testVerifier).Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			res, err := ti.http.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if ok > 1 {
		t.Fatalf("%d of %d simultaneous exchanges of one code succeeded", ok, n)
	}
}

func TestRedirectURIMatchedExactly(t *testing.T) {
	ti := startIdentity(t, false)
	ti.signUp(t, "ann@example.com", "password1")
	b := ti.browser(t)
	for _, tc := range []struct {
		uri string
		ok  bool
	}{
		{"http://127.0.0.1:49152/callback", true},
		{"http://127.0.0.1:8/callback", true},
		{"http://127.0.0.1/callback", true},
		{"http://127.0.0.1:49152/callback/", false},
		{"http://127.0.0.1:49152/Callback", false},
		{"http://127.0.0.1:49152/callback/x", false},
		{"http://127.0.0.1:49152/callback?next=x", false},
		{"http://127.0.0.1:49152/callback#x", false},
		{"http://localhost:49152/callback", false},
		{"http://[::1]:49152/callback", false},
		{"https://127.0.0.1:49152/callback", false},
		{"http://127.0.0.2:49152/callback", false},
		{"http://me@127.0.0.1:49152/callback", false},
		{"http://127.0.0.1:0/callback", false},
		{"http://127.0.0.1:049152/callback", false},
		{"http://127.0.0.1.example.com:49152/callback", false},
		{"https://app.example.com/callback", false},
		{"com.rideshare:/callback", false},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			params := authorizeParams()
			params.Set("redirect_uri", tc.uri)
			p := b.get(ti.issuer + authorizePath + "?" + params.Encode())
			switch {
			case tc.ok && (p.status != http.StatusFound || p.location.Path != loginPath):
				t.Fatalf("%d to %v, want the login page", p.status, p.location)
			case !tc.ok && (p.status != http.StatusBadRequest || p.location != nil):
				// Refused on identity's own page, never redirected to the
				// unregistered address (an open redirector).
				t.Fatalf("%d to %v, want 400 and no redirect", p.status, p.location)
			}
		})
	}

	// The exchange must name the very redirect the code was sent to.
	code := codeOf(t, b.signIn(authorizeParams(), "ann@example.com", "password1"), testRedirect)
	f := exchangeForm(code, testVerifier)
	f.Set("redirect_uri", "http://127.0.0.1:49153/callback")
	if status, res := ti.token(t, f, "", ""); status != http.StatusBadRequest || res.Error != "invalid_grant" {
		t.Fatalf("exchange naming another port: %d %+v", status, res)
	}
}

func TestRefreshRotationOverHTTP(t *testing.T) {
	ti := startIdentity(t, false)
	ti.signUp(t, "ann@example.com", "password1")
	code := codeOf(t, ti.browser(t).signIn(authorizeParams(), "ann@example.com", "password1"), testRedirect)
	_, first := ti.token(t, exchangeForm(code, testVerifier), "", "")
	refresh := func(token string) (int, tokenJSON) {
		return ti.token(t, url.Values{"grant_type": {"refresh_token"}, "client_id": {CLIClientID}, "refresh_token": {token}}, "", "")
	}
	status, second := refresh(first.RefreshToken)
	if status != http.StatusOK || second.RefreshToken == first.RefreshToken {
		t.Fatalf("refresh: %d %+v", status, second)
	}
	status, third := refresh(second.RefreshToken)
	if status != http.StatusOK {
		t.Fatalf("second refresh: %d %+v", status, third)
	}
	// The first token, rotated twice over, is replayed: refused, and the
	// live token of its family dies with it.
	if status, res := refresh(first.RefreshToken); status != http.StatusBadRequest || res.Error != "invalid_grant" {
		t.Fatalf("replayed refresh token: %d %+v", status, res)
	}
	if status, res := refresh(third.RefreshToken); status != http.StatusBadRequest || res.Error != "invalid_grant" {
		t.Fatalf("live token after its family was revoked: %d %+v", status, res)
	}
	if got := ti.logs.audits(t, auditRefreshReused); len(got) != 1 || got[0]["how"] != "replayed" {
		t.Errorf("refresh reuse audit lines = %v", got)
	}
}

func TestGrantTypesAreThoseRegistered(t *testing.T) {
	ti := startIdentity(t, true)
	ti.signUp(t, "ann@example.com", "password1")
	_, cliTokens := ti.token(t, passwordForm("ann@example.com", "password1"), "", "")
	b := ti.browser(t)
	code := codeOf(t, b.signIn(authorizeParams(), "ann@example.com", "password1"), testRedirect)

	for _, tc := range []struct {
		name       string
		form       url.Values
		user, pass string
		errs       []string
	}{
		{"cli asks for client_credentials", url.Values{"grant_type": {"client_credentials"}, "client_id": {CLIClientID}}, "", "",
			[]string{"invalid_client", "unauthorized_client"}},
		{"operator asks for refresh_token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {cliTokens.RefreshToken}},
			OperatorClientID, testOperatorSecret, []string{"unauthorized_client"}},
		{"operator redeems the cli's code", url.Values{"grant_type": {"authorization_code"}, "code": {code},
			"redirect_uri": {testRedirect}, "code_verifier": {testVerifier}}, OperatorClientID, testOperatorSecret,
			[]string{"invalid_grant", "unauthorized_client"}},
		{"operator asks for password", url.Values{"grant_type": {"password"}, "username": {"ann@example.com"}, "password": {"password1"}},
			OperatorClientID, testOperatorSecret, []string{"unauthorized_client"}},
		{"jwt bearer assertion", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {"x.y.z"}}, "", "",
			[]string{"invalid_grant", "unsupported_grant_type", "invalid_request", "invalid_client"}},
		{"token exchange", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "client_id": {CLIClientID}},
			"", "", []string{"unsupported_grant_type"}},
		{"device code", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "client_id": {CLIClientID}},
			"", "", []string{"unsupported_grant_type"}},
		{"made up", url.Values{"grant_type": {"magic"}, "client_id": {CLIClientID}}, "", "", []string{"unsupported_grant_type"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, res := ti.token(t, tc.form, tc.user, tc.pass)
			if status < 400 || res.AccessToken != "" || !slices.Contains(tc.errs, res.Error) {
				t.Fatalf("%d %+v, want one of %v", status, res, tc.errs)
			}
		})
	}
	// The operator may not start a browser sign-in either.
	params := authorizeParams()
	params.Set("client_id", OperatorClientID)
	if p := b.get(ti.issuer + authorizePath + "?" + params.Encode()); p.location != nil && p.location.Path == loginPath {
		t.Fatalf("the operator client was sent to the login page")
	}
	// The code refused to the operator is still the cli's to redeem: a
	// refusal for the wrong client is not an exchange.
	if status, res := ti.token(t, exchangeForm(code, testVerifier), "", ""); status != http.StatusOK {
		t.Fatalf("the cli's exchange after the operator's attempt: %d %+v", status, res)
	}
	if got := ti.logs.audits(t, auditGrantRefused); len(got) < 7 {
		t.Errorf("%d grant_refused audit lines, want one per refusal", len(got))
	}
}

// introspect asks identity about token as the operator.
func (ti *testIdentity) introspect(t *testing.T, token string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ti.issuer+introspectPath, strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(OperatorClientID, testOperatorSecret)
	res, err := ti.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatalf("introspection (%d): %v", res.StatusCode, err)
	}
	return body
}
