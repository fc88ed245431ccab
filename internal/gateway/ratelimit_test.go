package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	"github.com/rideshare-platform/rideshare/internal/auth"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// newClock is a hand-moved clock, safe to read from a worker while the
// test moves it.
func newClock() *testenv.Clock { return testenv.NewClock(time.Unix(1_800_000_000, 0)) }

func onePolicy(r rate.Limit, b int) map[string]policy {
	return map[string]policy{policyUser: {r, b}, policyAnon: {r, b}, policySignup: {r, b}, policyToken: {r, b}}
}

func TestLimiterBucket(t *testing.T) {
	c := newClock()
	l := newLimiter(onePolicy(1, 3), c.Now) // 1 a second, bursts of 3
	for i := range 3 {
		if ok, _ := l.take(policyUser, "a"); !ok {
			t.Fatalf("request %d of a burst of 3 refused", i+1)
		}
	}
	ok, wait := l.take(policyUser, "a")
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("4th request: ok=%v retry after %v, want refused with a wait of at most 1s", ok, wait)
	}
	// A refusal spends nothing: after the wait there is exactly one token.
	if ok, _ := l.take(policyUser, "b"); !ok {
		t.Fatal("another caller was limited by a's bucket")
	}
	if ok, _ := l.take(policySignup, "a"); !ok {
		t.Fatal("another policy shares a's bucket")
	}
	c.Advance(wait)
	if ok, _ := l.take(policyUser, "a"); !ok {
		t.Fatal("refused after waiting Retry-After")
	}
	if ok, _ := l.take(policyUser, "a"); ok {
		t.Fatal("two tokens after waiting for one")
	}
}

func TestLimiterOff(t *testing.T) {
	l := newLimiter(onePolicy(rate.Inf, 1), newClock().Now)
	for range 1000 {
		if ok, _ := l.take(policyUser, "a"); !ok {
			t.Fatal("limited with the limit off")
		}
	}
	if l.size() != 0 {
		t.Errorf("%d buckets kept for an unlimited policy", l.size())
	}
}

// TestLimiterEvicts: buckets of callers gone long enough to have refilled
// are dropped, and a flood of distinct callers never holds more than the
// cap.
func TestLimiterEvicts(t *testing.T) {
	c := newClock()
	l := newLimiter(onePolicy(10, 20), c.Now) // refills in 2 s
	for i := range 500 {
		l.take(policyAnon, fmt.Sprint("caller-", i))
	}
	if l.size() != 500 {
		t.Fatalf("%d buckets for 500 callers", l.size())
	}
	c.Advance(sweepEvery)
	l.take(policyAnon, "newcomer")
	if l.size() != 1 {
		t.Fatalf("after every caller went idle, %d buckets remain, want only the newcomer's", l.size())
	}
	// A caller still inside its refill time is kept: dropping its bucket
	// would hand it a fresh burst.
	l = newLimiter(onePolicy(0.001, 5), c.Now) // refills in well over a minute
	for range 5 {
		l.take(policyUser, "slow")
	}
	c.Advance(sweepEvery)
	l.take(policyUser, "other")
	if ok, _ := l.take(policyUser, "slow"); ok {
		t.Fatal("a sweep forgot an empty bucket that had not refilled")
	}

	l = newLimiter(onePolicy(10, 20), c.Now)
	l.maxKeys = 100
	for i := range 10_000 {
		l.take(policyAnon, fmt.Sprint("flood-", i))
		if l.size() > l.maxKeys {
			t.Fatalf("%d buckets, over the cap of %d", l.size(), l.maxKeys)
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, c := range []struct {
		in   string
		want rate.Limit
		ok   bool
	}{
		{"", 7, true}, {"20", 20, true}, {"0.5", 0.5, true}, {"20/s", 20, true}, {"600/m", 10, true},
		{"3600/h", 1, true}, {"off", rate.Inf, true},
		{"0", 0, false}, {"-1", 0, false}, {"NaN", 0, false}, {"Inf", 0, false}, {"10/d", 0, false}, {"fast", 0, false},
	} {
		got, err := parseRate(c.in, 7)
		if (err == nil) != c.ok || (c.ok && got != c.want) {
			t.Errorf("parseRate(%q) = %v, %v; want %v ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestLoadPolicies(t *testing.T) {
	settings := map[string]string{"gateway.rate": "5", "gateway.burst": "10", "gateway.signup_rate": "1/m", "gateway.signup_burst": "2"}
	get := func(k, def string) string {
		if v, ok := settings[k]; ok {
			return v
		}
		return def
	}
	p, err := loadPolicies(get)
	if err != nil {
		t.Fatal(err)
	}
	if p[policyUser] != (policy{5, 10}) || p[policySignup].burst != 2 || p[policyAnon] != policyDefaults[policyAnon] || p[policyToken] != policyDefaults[policyToken] {
		t.Fatalf("policies %v", p)
	}
	if p[policySignup].rate >= p[policyUser].rate || policyDefaults[policySignup].rate >= policyDefaults[policyAnon].rate || policyDefaults[policyToken].rate >= policyDefaults[policyAnon].rate {
		t.Error("sign-up and token limits are not the stricter ones")
	}
	for _, bad := range []map[string]string{{"gateway.burst": "0"}, {"gateway.anon_burst": "x"}, {"gateway.token_rate": "-3"}} {
		settings = bad
		if _, err := loadPolicies(get); err == nil {
			t.Errorf("settings %v accepted", bad)
		}
	}
}

// testGateway is a gateway with a real verifier over a static key and the
// given limits, for driving endpoint() without any service behind it.
type testGateway struct {
	*Gateway
	key *ecdsa.PrivateKey
}

func newTestGateway(t *testing.T, policies map[string]policy, c *testenv.Clock) testGateway {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pt, _ := priv.PublicKey.ECDH()
	b := pt.Bytes()
	enc := base64.RawURLEncoding.EncodeToString
	set, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "EC", "crv": "P-256", "x": enc(b[1:33]), "y": enc(b[33:]), "kid": "k1", "alg": "ES256"}}})
	keys, err := keyfunc.NewJWKSetJSON(set)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	v, err := auth.New(context.Background(), auth.Config{Issuer: "https://gw.test", Keys: keys, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{auth: v, limits: newLimiter(policies, c.Now)}
	g.deps.Log = log
	return testGateway{g, priv}
}

func (tg testGateway) token(t *testing.T, sub, role string) string {
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": "https://gw.test", "sub": sub, "aud": "rideshare", "role": role, "jti": "j-" + sub,
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
	})
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(tg.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func serve(h http.Handler, remote, token string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "/x", nil)
	r.RemoteAddr = remote
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestEndpointRateLimits(t *testing.T) {
	c := newClock()
	policies := map[string]policy{policyUser: {1, 2}, policyAnon: {1, 3}, policySignup: {0.1, 1}, policyToken: {1, 1}}
	g := newTestGateway(t, policies, c)
	ok := func(w http.ResponseWriter, _ *http.Request, _ *authv1.Caller) error { w.WriteHeader(200); return nil }
	authed := g.endpoint(route{method: "GET", path: "/x", roles: riders, handle: ok})
	anon := g.endpoint(route{method: "GET", path: "/x", handle: ok})
	signup := g.endpoint(route{method: "POST", path: "/x", limit: policySignup, handle: ok})

	ada, bob := g.token(t, "ada", "rider"), g.token(t, "bob", "rider")
	for i := range 2 {
		if w := serve(authed, "10.0.0.1:1000", ada); w.Code != 200 {
			t.Fatalf("ada's request %d: %d", i+1, w.Code)
		}
	}
	w := serve(authed, "10.0.0.1:1000", ada)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" || w.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("ada over her limit: %d Retry-After %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	var p struct{ Code string }
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Code != "rate_limited" {
		t.Fatalf("429 body %s", w.Body)
	}
	// Per caller: bob behind the same address is not limited by ada.
	if w := serve(authed, "10.0.0.1:1000", bob); w.Code != 200 {
		t.Fatalf("bob after ada was limited: %d", w.Code)
	}
	// Anonymous routes are per address; refused tokens are charged to the
	// address too.
	for i := range 2 {
		if w := serve(anon, "10.0.0.2:1", ""); w.Code != 200 {
			t.Fatalf("anonymous request %d: %d", i+1, w.Code)
		}
	}
	if w := serve(authed, "10.0.0.2:2", "forged"); w.Code != http.StatusUnauthorized {
		t.Fatalf("forged token: %d", w.Code)
	}
	if w := serve(authed, "10.0.0.2:3", "forged"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("forged token over the address's limit: %d, want 429", w.Code)
	}
	if w := serve(anon, "10.0.0.3:1", ""); w.Code != 200 {
		t.Fatalf("another address: %d", w.Code)
	}
	// The sign-up policy is its own, stricter bucket.
	if w := serve(signup, "10.0.0.4:1", ""); w.Code != 200 {
		t.Fatalf("first sign-up: %d", w.Code)
	}
	w = serve(signup, "10.0.0.4:1", "")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "10" {
		t.Fatalf("second sign-up: %d Retry-After %q, want 429 after 10 s", w.Code, w.Header().Get("Retry-After"))
	}
	if w := serve(anon, "10.0.0.4:1", ""); w.Code != 200 {
		t.Fatalf("other anonymous routes limited by sign-ups: %d", w.Code)
	}
	c.Advance(10 * time.Second)
	if w := serve(signup, "10.0.0.4:1", ""); w.Code != 200 {
		t.Fatalf("sign-up after Retry-After: %d", w.Code)
	}
}

// TestForwardedTokenEndpointLimit: the token endpoint that the gateway
// forwards to identity has its own strict per-address policy; discovery
// does not share it.
func TestForwardedTokenEndpointLimit(t *testing.T) {
	identity := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }))
	defer identity.Close()
	c := newClock()
	g := newTestGateway(t, map[string]policy{policyUser: {1, 5}, policyAnon: {1, 5}, policySignup: {1, 1}, policyToken: {1, 2}}, c)
	g.peers = map[string]string{"identity": identity.URL}
	g.deps.HTTP = identity.Client()
	h := g.handler()
	do := func(method, path string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, nil)
		r.RemoteAddr = "192.0.2.1:5000"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for i := range 2 {
		if w := do("POST", "/oauth2/token"); w.Code != 200 {
			t.Fatalf("token request %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	if w := do("POST", "/oauth2/token"); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Fatalf("third token request: %d, want 429 with Retry-After", w.Code)
	}
	if w := do("GET", "/.well-known/openid-configuration"); w.Code != 200 {
		t.Fatalf("discovery after the token limit: %d", w.Code)
	}
}

// TestRouteTableLimits: sign-up is on its own policy, every route answers
// 429, and the exported description matches the table.
func TestRouteTableLimits(t *testing.T) {
	infos := Routes()
	rts := (&Gateway{}).routes()
	if len(infos) != len(rts) {
		t.Fatalf("Routes() lists %d routes, the table %d", len(infos), len(rts))
	}
	for i, info := range infos {
		rt := rts[i]
		if info.Method != rt.method || info.Path != rt.path || len(info.Roles) != len(rt.roles) {
			t.Errorf("Routes()[%d] = %+v for %s %s", i, info, rt.method, rt.path)
		}
		if info.Statuses[len(info.Statuses)-1] != http.StatusTooManyRequests {
			t.Errorf("%s %s does not list 429: %v", info.Method, info.Path, info.Statuses)
		}
		want := policyUser
		switch {
		case info.Method == "POST" && info.Path == "/v1/accounts":
			want = policySignup
		case info.Roles == nil:
			want = policyAnon
		}
		if info.Limit != want {
			t.Errorf("%s %s: limit %q, want %q", info.Method, info.Path, info.Limit, want)
		}
	}
	// Routes() hands out copies: changing them changes nothing.
	infos[0].Statuses[0] = 999
	if Routes()[0].Statuses[0] == 999 {
		t.Error("Routes() exposes the table's own slices")
	}
}

func TestPolicyShare(t *testing.T) {
	for _, c := range []struct {
		p     policy
		n     int64
		rate  rate.Limit
		burst int
	}{
		{policy{200, 1000}, 1, 200, 1000},
		{policy{200, 1000}, 2, 100, 500},
		{policy{10, 3}, 2, 5, 2}, // a burst rounds up
		{policy{1, 1}, 4, 0.25, 1},
	} {
		r, b := c.p.among(c.n)
		if r != c.rate || b != c.burst {
			t.Errorf("%+v among %d: rate %v burst %d, want %v and %d", c.p, c.n, r, b, c.rate, c.burst)
		}
	}
}

// fakeReplicas is a registry's count of gateway replicas, set by the test.
type fakeReplicas struct {
	n, calls atomic.Int64
	broken   atomic.Bool
}

func (f *fakeReplicas) count(context.Context) (int, error) {
	defer f.calls.Add(1)
	if f.broken.Load() {
		return 0, errors.New("registry unreachable")
	}
	return int(f.n.Load()), nil
}

// TestLimiterSharedAmongReplicas: with two gateway replicas live each
// enforces half of every limit, so a caller spread over both gets the
// configured limit in all; when one leaves, the other's share is the whole
// limit again. A registry that cannot be read leaves the share as it was.
func TestLimiterSharedAmongReplicas(t *testing.T) {
	c := newClock()
	l := newLimiter(onePolicy(10, 10), c.Now)
	reg := &fakeReplicas{}
	reg.n.Store(1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- l.followReplicas(reg.count, time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))(ctx)
	}()
	defer func() { cancel(); <-done }()

	// allowed takes from caller's bucket until refused, and says how many
	// it got and how long the refusal asked to wait.
	allowed := func(caller string) (n int, wait time.Duration) {
		for n = 0; n < 100; n++ {
			if ok, w := l.take(policyUser, caller); !ok {
				return n, w
			}
		}
		t.Fatalf("%s was never limited", caller)
		return 0, 0
	}
	shareIs := func(n int64) {
		t.Helper()
		testenv.Eventually(t, 5*time.Second, func() bool { return l.replicas.Load().n == n }, "the share never followed the registry to %d replicas", n)
		c.Advance(time.Second) // every bucket refills
	}

	if n, _ := allowed("ada"); n != 10 {
		t.Fatalf("alone: %d requests allowed, want the burst of 10", n)
	}
	reg.n.Store(2)
	shareIs(2)
	for _, caller := range []string{"ada", "bob"} { // an old bucket and a new one
		if n, wait := allowed(caller); n != 5 || wait != 200*time.Millisecond {
			t.Fatalf("one of two replicas: %s allowed %d, then told to wait %v; want 5 then 200ms (5 a second)", caller, n, wait)
		}
	}
	reg.broken.Store(true)
	calls := reg.calls.Load()
	testenv.Eventually(t, 5*time.Second, func() bool { return reg.calls.Load() >= calls+3 }, "the registry was not asked again")
	if got := l.replicas.Load().n; got != 2 {
		t.Fatalf("an unreadable registry changed the share to %d replicas", got)
	}
	reg.broken.Store(false)
	reg.n.Store(1)
	shareIs(1)
	if n, _ := allowed("ada"); n != 10 {
		t.Fatalf("after the other replica left: %d requests allowed, want 10", n)
	}
}
