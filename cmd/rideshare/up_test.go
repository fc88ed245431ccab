package main

import (
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestUp boots the platform as `rideshare up` does and takes the public API
// through signup, login and profile, including the ways a client gets it
// wrong, then stops it as Ctrl-C would.
func TestUp(t *testing.T) {
	p := startPlatform(t, t.TempDir())
	t.Logf("platform resident memory: %.1f MiB across %d processes", float64(p.rssBytes())/(1<<20), len(childPIDs(t)))

	const email, password = "ada@example.com", "correct horse battery"
	riderID := p.signup("rider", email, password, nil)

	t.Run("signup then token then me", func(t *testing.T) {
		tok := p.token(email, password)
		for _, f := range []string{"access_token", "token_type", "expires_in", "refresh_token", "scope"} {
			if _, ok := tok[f]; !ok {
				t.Errorf("token response lacks %q: %v", f, tok)
			}
		}
		r := p.do("GET", "/v1/me", tok["access_token"].(string), nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET /v1/me: %d %s", r.status, r.body)
		}
		me := r.json(t)
		if me["id"] != riderID || me["role"] != "rider" || me["email"] != email {
			t.Fatalf("GET /v1/me = %v, want rider %s", me, riderID)
		}
		if r.header.Get("X-Request-Id") == "" {
			t.Error("no X-Request-Id on the response")
		}
		// The refresh token is rotated: it works once.
		ref := url.Values{"grant_type": {"refresh_token"}, "client_id": {"rideshare-cli"}, "refresh_token": {tok["refresh_token"].(string)}}
		if r := p.do("POST", "/oauth2/token", "", ref); r.status != http.StatusOK {
			t.Fatalf("refresh: %d %s", r.status, r.body)
		}
		if r := p.do("POST", "/oauth2/token", "", ref); r.status == http.StatusOK {
			t.Fatalf("a used refresh token was accepted again: %s", r.body)
		}
	})

	t.Run("driver with vehicle", func(t *testing.T) {
		id := p.signup("driver", "grace@example.com", password, map[string]string{"make": "Toyota", "model": "Prius", "plate": "7ABC123", "color": "blue"})
		tok := p.token("grace@example.com", password)
		me := p.do("GET", "/v1/me", tok["access_token"].(string), nil).json(t)
		v, _ := me["vehicle"].(map[string]any)
		if me["id"] != id || me["role"] != "driver" || v["plate"] != "7ABC123" {
			t.Fatalf("driver profile = %v", me)
		}
	})

	t.Run("discovery and keys through the gateway", func(t *testing.T) {
		d := p.do("GET", "/.well-known/openid-configuration", "", nil)
		if d.status != http.StatusOK {
			t.Fatalf("discovery: %d %s", d.status, d.body)
		}
		doc := d.json(t)
		if doc["issuer"] != p.state.GatewayURL || doc["token_endpoint"] != p.state.GatewayURL+"/oauth2/token" || doc["jwks_uri"] != p.state.GatewayURL+"/oauth2/jwks" {
			t.Fatalf("discovery document: %v", doc)
		}
		k := p.do("GET", "/oauth2/jwks", "", nil)
		if keys, _ := k.json(t)["keys"].([]any); k.status != http.StatusOK || len(keys) == 0 {
			t.Fatalf("jwks: %d %s", k.status, k.body)
		}
	})

	t.Run("bad input gets problem+json and changes nothing", func(t *testing.T) {
		big := `{"role":"rider","name":"` + strings.Repeat("x", 2<<20) + `"}`
		cases := []struct {
			name, method, path, body string
			status                   int
			code                     string
		}{
			{"malformed JSON", "POST", "/v1/accounts", `{"role":`, 400, "invalid_argument"},
			{"not an object", "POST", "/v1/accounts", `[1,2]`, 400, "invalid_argument"},
			{"wrong type", "POST", "/v1/accounts", `{"role":"rider","name":5,"email":"x@example.com","password":"longenough"}`, 400, "invalid_argument"},
			{"unknown field", "POST", "/v1/accounts", `{"role":"rider","name":"M","email":"m@example.com","password":"longenough","is_admin":true}`, 400, "unknown_field"},
			{"self-assigned admin", "POST", "/v1/accounts", `{"role":"admin","name":"M","email":"m@example.com","password":"longenough"}`, 400, "invalid_argument"},
			{"trailing data", "POST", "/v1/accounts", `{"role":"rider","name":"M","email":"m@example.com","password":"longenough"} {}`, 400, "invalid_argument"},
			{"empty body", "POST", "/v1/accounts", ``, 400, "invalid_argument"},
			{"bad email", "POST", "/v1/accounts", `{"role":"rider","name":"M","email":"not-an-email","password":"longenough"}`, 400, "invalid_argument"},
			{"short password", "POST", "/v1/accounts", `{"role":"rider","name":"M","email":"m@example.com","password":"short"}`, 400, "invalid_argument"},
			{"driver without vehicle", "POST", "/v1/accounts", `{"role":"driver","name":"M","email":"m@example.com","password":"longenough"}`, 400, "invalid_argument"},
			{"taken email", "POST", "/v1/accounts", `{"role":"rider","name":"Ada","email":"ADA@example.com","password":"longenough"}`, 409, "email_taken"},
			{"oversized body", "POST", "/v1/accounts", big, 413, "body_too_large"},
			{"unknown route", "GET", "/v1/nope", ``, 404, "not_found"},
			{"wrong method", "DELETE", "/v1/accounts", ``, 400, "method_not_allowed"},
		}
		for _, c := range cases {
			r := p.do(c.method, c.path, "", c.body)
			if r.status != c.status || r.header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("%s: %d %q, want %d problem+json: %s", c.name, r.status, r.header.Get("Content-Type"), c.status, r.body)
				continue
			}
			if got := r.json(t)["code"]; got != c.code {
				t.Errorf("%s: code %v, want %s", c.name, got, c.code)
			}
		}
		// None of the refused signups created an account.
		r := p.do("POST", "/oauth2/token", "", url.Values{"grant_type": {"password"}, "client_id": {"rideshare-cli"}, "username": {"m@example.com"}, "password": {"longenough"}})
		if r.status == http.StatusOK {
			t.Fatal("a refused signup left an account behind")
		}
	})

	t.Run("tokens", func(t *testing.T) {
		good := p.token(email, password)["access_token"].(string)
		parts := strings.Split(good, ".")
		flipped := []byte(parts[2])
		flipped[5] ^= 1
		forged := []struct{ name, token string }{
			{"none", ""},
			{"garbage", "not-a-jwt"},
			{"alg none", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + "."},
			{"flipped signature bit", parts[0] + "." + parts[1] + "." + string(flipped)},
			{"tampered payload", parts[0] + "." + parts[1] + "x." + parts[2]},
		}
		for _, f := range forged {
			r := p.do("GET", "/v1/me", f.token, nil)
			if r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s token: %d %s, want 401 with WWW-Authenticate", f.name, r.status, r.body)
			}
		}
		// A valid rider token on a driver route is forbidden, not unauthenticated.
		if r := p.do("GET", "/v1/drivers/me/offers", good, nil); r.status != http.StatusForbidden {
			t.Errorf("rider on a driver route: %d %s, want 403", r.status, r.body)
		}
		// Coordinates: not a coordinate is 400, a real place outside the
		// service area is 422, on every route that takes points.
		for _, c := range []struct {
			body   string
			status int
			code   string
		}{
			{`{"pickup":{"lat":91,"lng":0},"dropoff":{"lat":37.75,"lng":-122.44}}`, 400, "invalid_argument"},
			{`{"pickup":{"lat":37.79,"lng":-122.39}}`, 400, "invalid_argument"},
			{`{"pickup":{"lat":40.71,"lng":-74.0},"dropoff":{"lat":37.75,"lng":-122.44}}`, 422, "outside_service_area"},
		} {
			for _, path := range []string{"/v1/fares/estimate", "/v1/rides"} {
				r := p.do("POST", path, good, c.body, "Idempotency-Key", "coords-"+c.code+path)
				if r.status != c.status || r.json(t)["code"] != c.code {
					t.Errorf("POST %s %s: %d %s, want %d %s", path, c.body, r.status, r.body, c.status, c.code)
				}
			}
		}
		if r := p.do("POST", "/v1/rides", good, `{"pickup":{"lat":37.79,"lng":-122.39},"dropoff":{"lat":37.75,"lng":-122.44}}`); r.status != 400 || r.json(t)["code"] != "idempotency_key_required" {
			t.Errorf("ride without Idempotency-Key: %d %s", r.status, r.body)
		}
		if r := p.do("GET", "/v1/rides", good, nil); r.status != 200 || !strings.Contains(string(r.body), `"items":[]`) {
			t.Errorf("a new rider's rides: %d %s", r.status, r.body)
		}
	})

	t.Run("operator credential", func(t *testing.T) {
		r := p.do("POST", "/oauth2/token", "", url.Values{"grant_type": {"client_credentials"},
			"client_id": {p.state.ClientID}, "client_secret": {p.state.ClientSecret}})
		if r.status != http.StatusOK {
			t.Fatalf("client credentials from %s: %d %s", "platform.json", r.status, r.body)
		}
	})

	t.Run("infrastructure endpoints", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
			if r := p.do("GET", path, "", nil); r.status != http.StatusOK {
				t.Errorf("%s: %d", path, r.status)
			}
		}
		m := p.do("GET", "/metrics", "", nil)
		if !strings.Contains(string(m.body), `rideshare_http_requests_total{code="201",method="POST",route="POST /v1/accounts"}`) {
			t.Errorf("gateway metrics lack the per-route request count")
		}
		for name, u := range p.state.Services {
			res, err := p.client.Get(u + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 1<<20)
			n, _ := res.Body.Read(b)
			res.Body.Close()
			_ = n
			if res.StatusCode != http.StatusOK {
				t.Errorf("%s /metrics: %d", name, res.StatusCode)
			}
		}
	})

	if code := p.shutdown(); code != 0 {
		t.Fatalf("up exited %d after Ctrl-C:\n%s", code, p.out)
	}
}

// TestUpRestartsAKilledService kills a service with SIGKILL and watches up
// restart it on the same port, with its data intact.
func TestUpRestartsAKilledService(t *testing.T) {
	p := startPlatform(t, t.TempDir())
	p.signup("rider", "lin@example.com", "correct horse battery", nil)
	tok := p.token("lin@example.com", "correct horse battery")["access_token"].(string)

	for _, name := range []string{"users", "identity"} {
		pid := p.pidOf(name)
		if pid == 0 {
			t.Fatalf("no %s process", name)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, func() bool {
			np := p.pidOf(name)
			return np != 0 && np != pid && p.do("GET", "/readyz", "", nil).status == http.StatusOK
		}, "%s was not restarted and ready again:\n%s", name, p.out)
		if !strings.Contains(p.out.String(), name+" exited") {
			t.Errorf("up did not say that %s died:\n%s", name, p.out)
		}
	}
	// users came back with its data; identity with its keys (the old token
	// still verifies) and its accounts (login still works).
	if r := p.do("GET", "/v1/me", tok, nil); r.status != http.StatusOK {
		t.Fatalf("after restarts, GET /v1/me: %d %s", r.status, r.body)
	}
	p.token("lin@example.com", "correct horse battery")
}

// TestUpKeepsDataAcrossRuns stops the platform and starts it again on the
// same data folder: accounts, profiles and signing keys are all still there.
func TestUpKeepsDataAcrossRuns(t *testing.T) {
	dir := t.TempDir()
	p := startPlatform(t, dir)
	id := p.signup("rider", "kay@example.com", "correct horse battery", nil)
	secret := p.state.ClientSecret
	if code := p.shutdown(); code != 0 {
		t.Fatalf("first run exited %d", code)
	}

	p = startPlatform(t, dir)
	if p.state.ClientSecret != secret {
		t.Error("the operator credential changed between runs")
	}
	tok := p.token("kay@example.com", "correct horse battery")["access_token"].(string)
	me := p.do("GET", "/v1/me", tok, nil)
	if me.status != http.StatusOK || me.json(t)["id"] != id {
		t.Fatalf("second run, GET /v1/me: %d %s", me.status, me.body)
	}
}
