package platform

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	notificationsv1 "github.com/rideshare-platform/rideshare/api/notifications/v1"
	"github.com/rideshare-platform/rideshare/api/notifications/v1/notificationsv1connect"
	paymentsv1 "github.com/rideshare-platform/rideshare/api/payments/v1"
	"github.com/rideshare-platform/rideshare/api/payments/v1/paymentsv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/auth"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

const testIssuer = "https://rideshare.test"

// testGraph is a small platform: rides and the gateway call payments,
// users calls only rides.
var testGraph = map[string][]string{
	"gateway":  {"rides", "payments", "notifications"},
	"rides":    {"payments"},
	"users":    {"rides"},
	"payments": nil,
}

// issuer signs tokens as identity does, with a P-256 key under a kid.
type issuer struct {
	kid  string
	priv *ecdsa.PrivateKey
}

func newIssuer(t testing.TB, kid string) issuer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return issuer{kid: kid, priv: priv}
}

func (is issuer) sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = is.kid
	s, err := tok.SignedString(is.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serviceToken is identity's token for service name, issued at iat.
func (is issuer) serviceToken(t testing.TB, name string, iat time.Time) string {
	return is.sign(t, jwt.MapClaims{
		"iss": testIssuer, "sub": "client:" + auth.ServiceClientID(name), "aud": []string{auth.ServiceAudience, auth.ServiceClientID(name)},
		"exp": iat.Add(5 * time.Minute).Unix(), "iat": iat.Unix(), "jti": "s-" + name, "role": auth.ServiceRole,
		"client_id": auth.ServiceClientID(name),
	})
}

// userToken is identity's access token for account sub with role, or
// for the operator client (sub "client:rideshare-operator", role admin).
func (is issuer) userToken(t testing.TB, sub, role string, iat time.Time) string {
	return is.sign(t, jwt.MapClaims{
		"iss": testIssuer, "sub": sub, "aud": []string{auth.Audience, "rideshare-cli"},
		"exp": iat.Add(15 * time.Minute).Unix(), "iat": iat.Unix(), "jti": "u-" + sub, "role": role,
	})
}

func (is issuer) verifier(t testing.TB, log *slog.Logger) *auth.Verifier {
	t.Helper()
	pt, _ := is.priv.PublicKey.ECDH()
	b := pt.Bytes()
	enc := base64.RawURLEncoding.EncodeToString
	set, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "x": enc(b[1:33]), "y": enc(b[33:]), "kid": is.kid, "alg": "ES256", "use": "sig",
	}}})
	keys, err := keyfunc.NewJWKSetJSON(set)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.New(context.Background(), auth.Config{Issuer: testIssuer, Keys: keys, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// checking is service name's ServiceAuth, checking tokens with v.
func checking(name string, v *auth.Verifier, log *slog.Logger) *ServiceAuth {
	return &ServiceAuth{check: &callCheck{
		service: name, callers: callersOf(testGraph, name), log: log,
		keys: func() (*auth.Verifier, error) { return v, nil },
	}}
}

// payments records what reaches it.
type payments struct {
	paymentsv1connect.UnimplementedPaymentsServiceHandler
	mu         sync.Mutex
	calls      int
	userTokens []string
}

func (p *payments) GetPayment(ctx context.Context, _ *connect.Request[paymentsv1.GetPaymentRequest]) (*connect.Response[paymentsv1.GetPaymentResponse], error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	p.userTokens = append(p.userTokens, userToken(ctx))
	return connect.NewResponse(&paymentsv1.GetPaymentResponse{}), nil
}

// logLines collects JSON log lines.
type logLines struct{ testenv.Buffer }

func (l *logLines) audits(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		var m map[string]any
		if line == "" || json.Unmarshal([]byte(line), &m) != nil || m["audit"] != true {
			continue
		}
		out = append(out, m)
	}
	return out
}

// TestCallCheck serves payments behind the check and calls it with every
// kind of wrong credential, each differing from an accepted call in one
// respect.
func TestCallCheck(t *testing.T) {
	now := time.Now()
	key := newIssuer(t, "key-1")
	forger := newIssuer(t, "key-1") // another key under the same kid
	logs := &logLines{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	pay := &payments{}
	mux := http.NewServeMux()
	mux.Handle(paymentsv1connect.NewPaymentsServiceHandler(pay, Deps{ServiceAuth: checking("payments", key.verifier(t, log), log)}.HandlerOptions()...))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := paymentsv1connect.NewPaymentsServiceClient(srv.Client(), srv.URL)

	rider := &authv1.Caller{UserId: "rider-1", Role: authv1.Role_ROLE_RIDER}
	riderToken := key.userToken(t, "rider-1", "rider", now)
	expiredUserToken := key.userToken(t, "rider-1", "rider", now.Add(-time.Hour))
	saga := &authv1.Caller{UserId: "rides", Role: authv1.Role_ROLE_SERVICE}
	cases := []struct {
		name          string
		bearer        string
		user          string // forwarded user token
		caller        *authv1.Caller
		want          connect.Code // 0: accepted
		wantUserToken string       // what the handler's context carries
	}{
		{"no token", "", "", saga, connect.CodeUnauthenticated, ""},
		{"garbage", "not-a-jwt", "", saga, connect.CodeUnauthenticated, ""},
		{"forged: signed by another key", forger.serviceToken(t, "rides", now), "", saga, connect.CodeUnauthenticated, ""},
		{"expired", key.serviceToken(t, "rides", now.Add(-6*time.Minute)), "", saga, connect.CodeUnauthenticated, ""},
		{"a rider's token instead of a service token", riderToken, "", saga, connect.CodeUnauthenticated, ""},
		{"the operator's token (admin, not a service)", key.userToken(t, "client:rideshare-operator", "admin", now), "", saga, connect.CodeUnauthenticated, ""},
		{"a service that does not call payments", key.serviceToken(t, "users", now), "", &authv1.Caller{UserId: "users", Role: authv1.Role_ROLE_SERVICE}, connect.CodePermissionDenied, ""},
		{"a service naming another service as the caller", key.serviceToken(t, "rides", now), "", &authv1.Caller{UserId: "gateway", Role: authv1.Role_ROLE_SERVICE}, connect.CodePermissionDenied, ""},
		{"the saga, on its own behalf", key.serviceToken(t, "rides", now), "", saga, 0, ""},
		{"the gateway, for the user whose token it forwards", key.serviceToken(t, "gateway", now), riderToken, rider, 0, riderToken},
		{"the gateway, for another user than the token's", key.serviceToken(t, "gateway", now), key.userToken(t, "rider-2", "rider", now), rider, connect.CodePermissionDenied, ""},
		{"the gateway, the token checked a call ago but another Caller", key.serviceToken(t, "gateway", now), riderToken, &authv1.Caller{UserId: "rider-2", Role: authv1.Role_ROLE_RIDER}, connect.CodePermissionDenied, ""},
		{"the gateway, with the user's token but another role", key.serviceToken(t, "gateway", now), key.userToken(t, "rider-1", "admin", now), rider, connect.CodePermissionDenied, ""},
		{"the gateway, with an expired user token", key.serviceToken(t, "gateway", now), expiredUserToken, rider, connect.CodeUnauthenticated, ""},
		{"the gateway, with a service token as the user's", key.serviceToken(t, "gateway", now), key.serviceToken(t, "gateway", now), rider, connect.CodeUnauthenticated, ""},
		{"a service for a user, without the user's token", key.serviceToken(t, "rides", now), "", rider, 0, ""},
		{"an expired forwarded token, unchecked on a service's own call", key.serviceToken(t, "rides", now), expiredUserToken, saga, 0, expiredUserToken},
	}
	refused := 0
	for _, c := range cases {
		req := connect.NewRequest(&paymentsv1.GetPaymentRequest{Caller: c.caller})
		if c.bearer != "" {
			req.Header().Set("Authorization", "Bearer "+c.bearer)
		}
		if c.user != "" {
			req.Header().Set(UserTokenHeader, c.user)
		}
		before := pay.calls
		_, err := client.GetPayment(context.Background(), req)
		if c.want != 0 {
			refused++
			if connect.CodeOf(err) != c.want || pay.calls != before {
				t.Errorf("%s: %v (code %v), handler reached: %v; want %v", c.name, err, connect.CodeOf(err), pay.calls != before, c.want)
			}
			continue
		}
		if err != nil || pay.calls != before+1 {
			t.Errorf("%s: refused: %v", c.name, err)
			continue
		}
		if got := pay.userTokens[len(pay.userTokens)-1]; got != c.wantUserToken {
			t.Errorf("%s: handler context carries user token %.20q, want %.20q", c.name, got, c.wantUserToken)
		}
	}

	audits := logs.audits(t)
	if len(audits) != refused {
		t.Errorf("%d audit lines for %d refused calls:\n%s", len(audits), refused, logs.String())
	}
	for _, a := range audits {
		if a["event"] != auditServiceCallRefused || a["procedure"] != paymentsv1connect.PaymentsServiceGetPaymentProcedure || a["reason"] == "" {
			t.Errorf("audit line %v", a)
		}
	}
	if strings.Contains(logs.String(), riderToken[:40]) {
		t.Error("a token reached the log")
	}
}

// TestCallCheckExempt: a procedure that checks its callers itself is let
// through without a service token; the others on the same handler are not.
func TestCallCheckExempt(t *testing.T) {
	key := newIssuer(t, "k")
	d := Deps{ServiceAuth: checking("payments", key.verifier(t, nil), slog.New(slog.DiscardHandler))}
	mux := http.NewServeMux()
	mux.Handle(paymentsv1connect.NewPaymentsServiceHandler(&payments{}, d.HandlerOptions(paymentsv1connect.PaymentsServiceGetPaymentProcedure)...))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := paymentsv1connect.NewPaymentsServiceClient(srv.Client(), srv.URL)
	if _, err := c.GetPayment(context.Background(), connect.NewRequest(&paymentsv1.GetPaymentRequest{})); err != nil {
		t.Errorf("exempt procedure: %v", err)
	}
	_, err := c.CheckLedger(context.Background(), connect.NewRequest(&paymentsv1.CheckLedgerRequest{}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("other procedure without a token: %v", err)
	}
}

// notifications streams one message to whoever subscribes.
type notifications struct {
	notificationsv1connect.UnimplementedNotificationsServiceHandler
}

func (notifications) Subscribe(ctx context.Context, _ *connect.Request[notificationsv1.SubscribeRequest], s *connect.ServerStream[notificationsv1.SubscribeResponse]) error {
	return s.Send(&notificationsv1.SubscribeResponse{})
}

// TestCallCheckStreams: a stream is checked like a unary call, its request's
// Caller included, and the client side authorizes streams too.
func TestCallCheckStreams(t *testing.T) {
	now := time.Now()
	key := newIssuer(t, "k")
	quiet := slog.New(slog.DiscardHandler)
	mux := http.NewServeMux()
	mux.Handle(notificationsv1connect.NewNotificationsServiceHandler(notifications{},
		Deps{ServiceAuth: checking("notifications", key.verifier(t, quiet), quiet)}.HandlerOptions()...))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	riderToken := key.userToken(t, "rider-1", "rider", now)
	gateway := &ServiceAuth{tokens: newTokenSource(context.Background(), func(context.Context) (string, time.Duration, error) {
		return key.serviceToken(t, "gateway", now), 5 * time.Minute, nil
	}, quiet)}

	for _, c := range []struct {
		name   string
		client *ServiceAuth
		caller string
		ok     bool
	}{
		{"with the gateway's token, for the token's user", gateway, "rider-1", true},
		{"with the gateway's token, for another user", gateway, "rider-2", false},
		{"without a token", nil, "rider-1", false},
	} {
		c.name = "stream " + c.name
		client := notificationsv1connect.NewNotificationsServiceClient(srv.Client(), srv.URL, Deps{ServiceAuth: c.client}.ClientOptions()...)
		ctx := WithUserToken(context.Background(), riderToken)
		stream, err := client.Subscribe(ctx, connect.NewRequest(&notificationsv1.SubscribeRequest{
			Caller: &authv1.Caller{UserId: c.caller, Role: authv1.Role_ROLE_RIDER}}))
		got := err == nil && stream.Receive()
		if err == nil {
			err = stream.Err()
			stream.Close()
		}
		if got != c.ok {
			t.Errorf("%s: received %v, err %v; want ok=%v", c.name, got, err, c.ok)
		}
	}
}

// TestServiceCallEndToEnd: rides's client side gets its token from a token
// endpoint and payments's check accepts it; the user's token in the
// context travels along.
func TestServiceCallEndToEnd(t *testing.T) {
	now := time.Now()
	key := newIssuer(t, "k")
	quiet := slog.New(slog.DiscardHandler)
	var requests atomic.Int32
	identity := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		id, secret, _ := r.BasicAuth()
		if r.URL.Path != "/oauth2/token" || r.FormValue("grant_type") != "client_credentials" ||
			id != auth.ServiceClientID("rides") || secret != auth.ServiceSecret("master", "rides") {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client"})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": key.serviceToken(t, "rides", now), "expires_in": 300})
	}))
	defer identity.Close()
	pay := &payments{}
	mux := http.NewServeMux()
	mux.Handle(paymentsv1connect.NewPaymentsServiceHandler(pay, Deps{ServiceAuth: checking("payments", key.verifier(t, quiet), quiet)}.HandlerOptions()...))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	call := func(secret string, ctx context.Context) error {
		rides := Deps{ServiceAuth: &ServiceAuth{tokens: newTokenSource(context.Background(),
			clientCredentials(identity.Client(), identity.URL+"/oauth2/token", auth.ServiceClientID("rides"), secret), quiet)}}
		c := paymentsv1connect.NewPaymentsServiceClient(srv.Client(), srv.URL, rides.ClientOptions()...)
		_, err := c.GetPayment(ctx, connect.NewRequest(&paymentsv1.GetPaymentRequest{Caller: &authv1.Caller{UserId: "rides", Role: authv1.Role_ROLE_SERVICE}}))
		return err
	}
	if err := call(auth.ServiceSecret("master", "rides"), WithUserToken(context.Background(), "the-user-token")); err != nil {
		t.Fatalf("rides calling payments: %v", err)
	}
	if pay.userTokens[0] != "the-user-token" {
		t.Errorf("the user's token did not travel: %q", pay.userTokens[0])
	}
	err := call("a wrong secret", context.Background())
	if !apperr.Is(err, apperr.Unavailable) || pay.calls != 1 {
		t.Errorf("with a wrong secret: %v, %d calls reached payments; want Unavailable and none", err, pay.calls-1)
	}
}

// TestTokenSource: one request for many waiting calls, a refresh that no
// call waits for, and a failure that does not turn every call into a
// request to identity.
func TestTokenSource(t *testing.T) {
	clock := testenv.NewClock(time.Unix(1_000_000, 0))
	var fetches atomic.Int32
	release := make(chan struct{})
	fail := atomic.Bool{}
	s := newTokenSource(context.Background(), func(ctx context.Context) (string, time.Duration, error) {
		n := fetches.Add(1)
		<-release
		if fail.Load() {
			return "", 0, errors.New("identity is down")
		}
		return "token-" + string(rune('0'+n)), 100 * time.Second, nil
	}, nil)
	s.now = clock.Now

	// Twenty calls at once, no token yet: one request, every call gets it.
	var wg sync.WaitGroup
	got := make([]string, 20)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = s.token(context.Background())
		}()
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return fetches.Load() > 0 }, "no fetch started")
	close(release)
	wg.Wait()
	for i, tok := range got {
		if tok != "token-1" {
			t.Fatalf("call %d got %q", i, tok)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d token requests for 20 concurrent calls, want 1", n)
	}

	// Past three quarters of its life: the current token still serves at
	// once while one refresh runs.
	clock.Advance(80 * time.Second)
	if tok, err := s.token(context.Background()); tok != "token-1" || err != nil {
		t.Fatalf("during the refresh: %q %v", tok, err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		tok, _ := s.token(context.Background())
		return tok == "token-2"
	}, "the token was not refreshed")
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d token requests after one refresh, want 2", n)
	}

	// A refused token is forgotten, unless it was just fetched: then
	// another would be refused too.
	s.forget("token-2")
	if tok, _ := s.token(context.Background()); tok != "token-2" {
		t.Fatalf("a token refused right after it was fetched was dropped: now %q", tok)
	}
	clock.Advance(minForgetAge)
	s.forget("token-2")
	if tok, _ := s.token(context.Background()); tok != "token-3" {
		t.Fatalf("after forget: %q", tok)
	}

	// Identity down and the token expired: the call fails, and the calls
	// right after it fail without another request.
	fail.Store(true)
	clock.Advance(101 * time.Second)
	if _, err := s.token(context.Background()); !apperr.Is(err, apperr.Unavailable) {
		t.Fatalf("identity down: %v", err)
	}
	before := fetches.Load()
	for range 10 {
		_, _ = s.token(context.Background())
	}
	if n := fetches.Load(); n != before {
		t.Errorf("%d more token requests within the retry pause", n-before)
	}
	clock.Advance(tokenRetryAfter)
	fail.Store(false)
	if tok, err := s.token(context.Background()); err != nil || tok == "" {
		t.Errorf("after the pause: %q %v", tok, err)
	}
}

// TestVerifiedTokens: a token that passed is remembered until it expires,
// and the memory stays bounded, expired tokens going first.
func TestVerifiedTokens(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	var vt verifiedTokens[string]
	vt.put("a", "rides", now.Add(time.Minute), now)
	if s, ok := vt.get("a", now.Add(59*time.Second)); !ok || s != "rides" {
		t.Errorf("before expiry: %q %v", s, ok)
	}
	if _, ok := vt.get("a", now.Add(time.Minute)); ok {
		t.Error("remembered past its expiry")
	}
	if _, ok := vt.get("b", now); ok {
		t.Error("a token never put")
	}
	for i := range maxVerifiedTokens {
		vt.put(strconv.Itoa(i), "rides", now.Add(time.Duration(i%2)*time.Hour), now)
	}
	vt.put("new", "users", now.Add(time.Hour), now)
	if len(vt.m) > maxVerifiedTokens || len(vt.m) < maxVerifiedTokens/2 {
		t.Errorf("%d tokens after overflowing %d; want the expired half dropped", len(vt.m), maxVerifiedTokens)
	}
	if s, ok := vt.get("new", now); !ok || s != "users" {
		t.Errorf("the token put on overflow: %q %v", s, ok)
	}
}

// BenchmarkCallCheck is what the check adds to every RPC a service serves:
// lookups for tokens it has checked before, an ES256 verification for each
// token it sees the first time (a service's token every few minutes, a
// user's when the user's first call reaches this service).
func BenchmarkCallCheck(b *testing.B) {
	now := time.Now()
	key := newIssuer(b, "k")
	quiet := slog.New(slog.DiscardHandler)
	sa := checking("payments", key.verifier(b, quiet), quiet)
	noop := func(context.Context, connect.AnyRequest) (connect.AnyResponse, error) { return nil, nil }
	checked := sa.handlerInterceptor(nil).WrapUnary(noop)
	for _, c := range []struct {
		name   string
		bearer string
		user   string
		caller *authv1.Caller
		fresh  bool // the tokens are seen for the first time
	}{
		{"service token, checked before", key.serviceToken(b, "rides", now), "", &authv1.Caller{UserId: "rides", Role: authv1.Role_ROLE_SERVICE}, false},
		{"service and user token, checked before", key.serviceToken(b, "gateway", now), key.userToken(b, "rider-1", "rider", now), &authv1.Caller{UserId: "rider-1", Role: authv1.Role_ROLE_RIDER}, false},
		{"service token, first seen", key.serviceToken(b, "rides", now), "", &authv1.Caller{UserId: "rides", Role: authv1.Role_ROLE_SERVICE}, true},
		{"service and user token, first seen", key.serviceToken(b, "gateway", now), key.userToken(b, "rider-1", "rider", now), &authv1.Caller{UserId: "rider-1", Role: authv1.Role_ROLE_RIDER}, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			req := connect.NewRequest(&paymentsv1.GetPaymentRequest{Caller: c.caller})
			req.Header().Set("Authorization", "Bearer "+c.bearer)
			if c.user != "" {
				req.Header().Set(UserTokenHeader, c.user)
			}
			b.ReportAllocs()
			for b.Loop() {
				if c.fresh {
					sa.check.services, sa.check.users = verifiedTokens[string]{}, verifiedTokens[*authv1.Caller]{}
				}
				if _, err := checked(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
