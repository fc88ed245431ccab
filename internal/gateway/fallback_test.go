package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/rideshare-platform/rideshare/api/auth/v1"
	identityv1 "github.com/rideshare-platform/rideshare/api/identity/v1"
	"github.com/rideshare-platform/rideshare/api/identity/v1/identityv1connect"
	moneyv1 "github.com/rideshare-platform/rideshare/api/money/v1"
	pricingv1 "github.com/rideshare-platform/rideshare/api/pricing/v1"
	"github.com/rideshare-platform/rideshare/api/pricing/v1/pricingv1connect"
	usersv1 "github.com/rideshare-platform/rideshare/api/users/v1"
	"github.com/rideshare-platform/rideshare/api/users/v1/usersv1connect"
	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/faults"
	"github.com/rideshare-platform/rideshare/internal/geo"
	"github.com/rideshare-platform/rideshare/internal/pricing"
	"github.com/rideshare-platform/rideshare/internal/resilience"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// downErrors are the ways a call to a service that is down ends, as the
// gateway's clients report them.
var downErrors = []struct {
	name string
	err  error
}{
	{"unavailable", apperr.E(apperr.Unavailable, "", "connection refused")},
	{"fault injected", apperr.E(apperr.Unavailable, faults.Code, "fault injected: error_rate=1")},
	{"circuit open", apperr.E(apperr.Unavailable, resilience.CodeCircuitOpen, "the peer is failing")},
	{"bulkhead full", apperr.E(apperr.Unavailable, resilience.CodeBulkheadFull, "64 calls in flight already")},
	{"timeout", apperr.E(apperr.Timeout, "", "the request ran out of time")},
	{"RPC unavailable", connect.NewError(connect.CodeUnavailable, errors.New("shedding load"))},
	{"RPC deadline exceeded", connect.NewError(connect.CodeDeadlineExceeded, errors.New("deadline"))},
	{"context deadline", context.DeadlineExceeded},
}

// answerErrors are answers from a service that is up: the caller's
// mistake or a real failure, never replaced by a fallback.
var answerErrors = []struct {
	name string
	err  error
}{
	{"invalid", apperr.E(apperr.Invalid, "", "pickup needs lat and lng")},
	{"quote not found", apperr.E(apperr.NotFound, "", "no such quote")},
	{"outside the service area", apperr.E(apperr.Unprocessable, "outside_service_area", "dropoff is outside the service area")},
	{"unauthenticated", apperr.E(apperr.Unauthenticated, "", "the request names no caller")},
	{"forbidden", apperr.E(apperr.Forbidden, "", "not yours")},
	{"internal", apperr.E(apperr.Internal, "", "internal error")},
}

// fakePricing answers every estimate with est, or fails with err.
type fakePricing struct {
	pricingv1connect.PricingServiceClient
	est *pricingv1.Estimate
	err error
}

func (f *fakePricing) Estimate(context.Context, *connect.Request[pricingv1.EstimateRequest]) (*connect.Response[pricingv1.EstimateResponse], error) {
	if f.err != nil {
		return nil, f.err
	}
	return connect.NewResponse(&pricingv1.EstimateResponse{Estimate: f.est}), nil
}

// fakeUsers keeps profiles by user id and answers each caller their own,
// or fails every call with err.
type fakeUsers struct {
	usersv1connect.UsersServiceClient
	profiles map[string]*usersv1.Profile
	err      error
}

func (f *fakeUsers) GetProfile(_ context.Context, req *connect.Request[usersv1.GetProfileRequest]) (*connect.Response[usersv1.GetProfileResponse], error) {
	if f.err != nil {
		return nil, f.err
	}
	p, ok := f.profiles[req.Msg.GetCaller().GetUserId()]
	if !ok {
		return nil, apperr.E(apperr.NotFound, "", "no profile")
	}
	return connect.NewResponse(&usersv1.GetProfileResponse{Profile: p}), nil
}

func (f *fakeUsers) CreateProfile(_ context.Context, req *connect.Request[usersv1.CreateProfileRequest]) (*connect.Response[usersv1.CreateProfileResponse], error) {
	if f.err != nil {
		return nil, f.err
	}
	m := req.Msg
	p := &usersv1.Profile{UserId: m.GetAccountId(), Role: m.GetRole(), Name: m.GetName(), Email: m.GetEmail(), Rating: 5, CreatedAt: timestamppb.New(time.Unix(1_800_000_000, 0))}
	f.profiles[p.GetUserId()] = p
	return connect.NewResponse(&usersv1.CreateProfileResponse{Profile: p}), nil
}

// fakeIdentity creates every account it is asked for, as user "new".
type fakeIdentity struct {
	identityv1connect.IdentityServiceClient
}

func (fakeIdentity) CreateAccount(_ context.Context, req *connect.Request[identityv1.CreateAccountRequest]) (*connect.Response[identityv1.CreateAccountResponse], error) {
	m := req.Msg
	return connect.NewResponse(&identityv1.CreateAccountResponse{Account: &identityv1.Account{
		Id: "new", Role: m.GetRole(), Name: m.GetName(), Email: m.GetEmail(), CreatedAt: timestamppb.New(time.Unix(1_800_000_000, 0)),
	}}), nil
}

// fallbackGateway is a test gateway with fake pricing and users, a profile
// cache on the test's clock, and its log kept for the test to read.
func fallbackGateway(t *testing.T, c *testenv.Clock) (testGateway, *fakePricing, *fakeUsers, *bytes.Buffer) {
	t.Helper()
	g := newTestGateway(t, onePolicy(1000, 1000), c)
	p := &fakePricing{}
	u := &fakeUsers{profiles: map[string]*usersv1.Profile{}}
	g.pricing, g.users, g.identity = p, u, fakeIdentity{}
	g.profiles = newProfileCache(profileCacheSize, profileCacheAge, c.Now)
	g.fallbacks = newFallbackCounter()
	var log bytes.Buffer
	g.deps.Log = slog.New(slog.NewTextHandler(&log, nil))
	return g, p, u, &log
}

// send makes one request as token with body (JSON, if any).
func send(h http.Handler, method, token, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/x", strings.NewReader(body))
	r.RemoteAddr = "10.0.0.1:1"
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func fields(t *testing.T, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("%d, not JSON: %s", w.Code, w.Body)
	}
	return m
}

// Two points in the service area, and one far outside it.
var (
	ferryJSON   = `{"lat":37.7955,"lng":-122.3937}`
	missionJSON = `{"lat":37.7599,"lng":-122.4148}`
	nycJSON     = `{"lat":40.7128,"lng":-74.0060}`
)

// TestEstimateFallback: with pricing down, whatever way it is down, a rider
// still gets the fare pricing gives without a route or surge, marked
// degraded and without a quote to book; every other error pricing answers
// reaches the rider unchanged.
func TestEstimateFallback(t *testing.T) {
	g, p, _, log := fallbackGateway(t, newClock())
	h := g.endpoint(route{method: "POST", path: routeEstimate, roles: riders, handle: g.estimate})
	tok := g.token(t, "ada", "rider")
	trip := `{"pickup":` + ferryJSON + `,"dropoff":` + missionJSON + `}`
	want, err := pricing.Fallback(geo.Point{Lat: 37.7955, Lng: -122.3937}, geo.Point{Lat: 37.7599, Lng: -122.4148})
	if err != nil {
		t.Fatal(err)
	}

	p.est = &pricingv1.Estimate{Fare: &moneyv1.Money{Amount: 3075, Currency: "USD"}, DistanceMeters: 10_000, DurationSeconds: 1200,
		SurgeMultiplier: 1.5, QuoteId: "q1.signed", ExpiresAt: timestamppb.New(time.Unix(1_800_000_120, 0))}
	if w := send(h, "POST", tok, trip); w.Code != http.StatusOK || fields(t, w)["degraded"] != false || fields(t, w)["quote_id"] != "q1.signed" {
		t.Fatalf("with pricing up: %d %s", w.Code, w.Body)
	}

	for i, c := range downErrors {
		t.Run(c.name, func(t *testing.T) {
			p.err = c.err
			for _, body := range []string{trip, `{"pickup":` + ferryJSON + `,"dropoff":` + missionJSON + `,"quote_id":"q1.signed"}`} {
				w := send(h, "POST", tok, body)
				if w.Code != http.StatusOK {
					t.Fatalf("%s: %d %s, want 200", body, w.Code, w.Body)
				}
				got := fields(t, w)
				fare, _ := got["fare"].(map[string]any)
				if got["degraded"] != true || got["surge"] != 1.0 || fare["amount"] != float64(want.Fare) || fare["currency"] != want.Currency ||
					got["distance_meters"] != float64(want.Route.Meters) || got["duration_seconds"] != float64(want.Route.Seconds) {
					t.Fatalf("degraded estimate %s, want pricing's fallback %+v", w.Body, want)
				}
				if _, ok := got["quote_id"]; ok {
					t.Fatalf("a degraded estimate offers a quote: %s", w.Body)
				}
				if _, ok := got["expires_at"]; ok {
					t.Fatalf("a degraded estimate expires: %s", w.Body)
				}
			}
			// Points pricing would refuse are refused while it is down too.
			if w := send(h, "POST", tok, `{"pickup":`+ferryJSON+`,"dropoff":`+nycJSON+`}`); w.Code != http.StatusUnprocessableEntity {
				t.Fatalf("a dropoff in New York with pricing down: %d %s, want 422", w.Code, w.Body)
			}
			if n := testutil.ToFloat64(g.fallbacks.WithLabelValues(routeEstimate)); n != float64(2*(i+1)) {
				t.Fatalf("fallbacks counted: %v, want %d", n, 2*(i+1))
			}
			if reason := "reason=" + apperr.CodeOf(c.err); !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), reason) {
				t.Fatalf("the fallback was not logged as a warning with %s:\n%s", reason, log)
			}
			log.Reset()
		})
	}

	before := testutil.ToFloat64(g.fallbacks.WithLabelValues(routeEstimate))
	for _, c := range answerErrors {
		t.Run(c.name, func(t *testing.T) {
			p.err = c.err
			w := send(h, "POST", tok, trip)
			if e := apperr.As(c.err); w.Code != e.Kind.HTTPStatus() || fields(t, w)["code"] != e.Code {
				t.Fatalf("%d %s, want %d %s passed through", w.Code, w.Body, e.Kind.HTTPStatus(), e.Code)
			}
		})
	}
	if n := testutil.ToFloat64(g.fallbacks.WithLabelValues(routeEstimate)); n != before {
		t.Fatalf("answers counted as fallbacks: %v, want %v", n, before)
	}
}

// TestMeFallback: with users down, a user still sees the profile the
// gateway last relayed for them, byte for byte, marked stale; never
// another user's, never one older than the cache keeps, never one users has
// since refused; with no copy the outage shows.
func TestMeFallback(t *testing.T) {
	created := timestamppb.New(time.Unix(1_800_000_000, 0))
	for _, c := range downErrors {
		t.Run(c.name, func(t *testing.T) {
			clk := newClock()
			g, _, u, log := fallbackGateway(t, clk)
			me := g.endpoint(route{method: "GET", path: routeMe, roles: anyUser, handle: g.me})
			ada, bob := g.token(t, "ada", "rider"), g.token(t, "bob", "driver")
			u.profiles["ada"] = &usersv1.Profile{UserId: "ada", Role: authv1.Role_ROLE_RIDER, Name: "Ada", Email: "ada@example.com", Rating: 4.8, RatingCount: 3, CreatedAt: created}
			u.profiles["bob"] = &usersv1.Profile{UserId: "bob", Role: authv1.Role_ROLE_DRIVER, Name: "Bob", Email: "bob@example.com", CreatedAt: created}
			fresh := send(me, "GET", ada, "")
			if fresh.Code != http.StatusOK || fresh.Header().Get("Warning") != "" {
				t.Fatalf("with users up: %d %q %s", fresh.Code, fresh.Header().Get("Warning"), fresh.Body)
			}

			u.err = c.err
			clk.Advance(90 * time.Second)
			w := send(me, "GET", ada, "")
			if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), fresh.Body.Bytes()) {
				t.Fatalf("ada with users down: %d %s, want the body users gave: %s", w.Code, w.Body, fresh.Body)
			}
			if w.Header().Get("Warning") != `110 - "response is stale"` || w.Header().Get("Age") != "90" {
				t.Fatalf("a cached answer is marked Warning %q, Age %q", w.Header().Get("Warning"), w.Header().Get("Age"))
			}
			if n := testutil.ToFloat64(g.fallbacks.WithLabelValues(routeMe)); n != 1 {
				t.Fatalf("fallbacks counted: %v, want 1", n)
			}
			if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "route=/v1/me") {
				t.Fatalf("the fallback was not logged as a warning:\n%s", log)
			}

			// bob was never relayed: he gets the outage, not ada's copy.
			want := apperr.As(c.err).Kind.HTTPStatus()
			if w := send(me, "GET", bob, ""); w.Code != want || strings.Contains(w.Body.String(), "ada") {
				t.Fatalf("bob, with no copy kept: %d %s, want %d", w.Code, w.Body, want)
			}
			// A copy lasts ten minutes from when users gave it.
			clk.Advance(profileCacheAge - 90*time.Second)
			if w := send(me, "GET", ada, ""); w.Code != http.StatusOK {
				t.Fatalf("ada at the cache's age limit: %d %s", w.Code, w.Body)
			}
			clk.Advance(time.Second)
			if w := send(me, "GET", ada, ""); w.Code != want {
				t.Fatalf("ada past the cache's age limit: %d %s, want %d", w.Code, w.Body, want)
			}
		})
	}

	for _, c := range answerErrors {
		t.Run(c.name, func(t *testing.T) {
			g, _, u, _ := fallbackGateway(t, newClock())
			me := g.endpoint(route{method: "GET", path: routeMe, roles: anyUser, handle: g.me})
			ada := g.token(t, "ada", "rider")
			u.profiles["ada"] = &usersv1.Profile{UserId: "ada", Role: authv1.Role_ROLE_RIDER, Name: "Ada", CreatedAt: created}
			if w := send(me, "GET", ada, ""); w.Code != http.StatusOK {
				t.Fatalf("with users up: %d %s", w.Code, w.Body)
			}
			u.err = c.err
			if w, e := send(me, "GET", ada, ""), apperr.As(c.err); w.Code != e.Kind.HTTPStatus() || fields(t, w)["code"] != e.Code {
				t.Fatalf("%d %s, want %d %s passed through", w.Code, w.Body, e.Kind.HTTPStatus(), e.Code)
			}
			// What users answered stands: the copy is gone, not served later.
			u.err = downErrors[0].err
			if w := send(me, "GET", ada, ""); w.Code != http.StatusServiceUnavailable {
				t.Fatalf("after users answered %s, then went down: %d %s, want 503", c.name, w.Code, w.Body)
			}
		})
	}
}

// TestSignupFillsProfileCache: the profile relayed at signup is the copy
// GET /v1/me answers if users goes down before the user ever asks.
func TestSignupFillsProfileCache(t *testing.T) {
	g, _, u, _ := fallbackGateway(t, newClock())
	signup := g.endpoint(route{method: "POST", path: "/v1/accounts", handle: g.signup})
	w := send(signup, "POST", "", `{"role":"rider","name":"New","email":"new@example.com","password":"correct horse battery"}`)
	if w.Code != http.StatusCreated {
		t.Fatalf("signup: %d %s", w.Code, w.Body)
	}
	u.err = apperr.E(apperr.Unavailable, resilience.CodeCircuitOpen, "users is failing")
	me := g.endpoint(route{method: "GET", path: routeMe, roles: anyUser, handle: g.me})
	got := send(me, "GET", g.token(t, "new", "rider"), "")
	if got.Code != http.StatusOK || got.Header().Get("Warning") == "" || !bytes.Equal(got.Body.Bytes(), w.Body.Bytes()) {
		t.Fatalf("GET /v1/me with users down after signup: %d %q %s, want the signup's profile %s", got.Code, got.Header().Get("Warning"), got.Body, w.Body)
	}
}

// TestDependencyDown: a caller who went away is not a dependency down.
func TestDependencyDown(t *testing.T) {
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	late, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	for _, c := range []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"unavailable", context.Background(), downErrors[0].err, true},
		{"caller gone", gone, downErrors[0].err, false},
		{"caller canceled, as the client hears it", gone, context.Canceled, false},
		{"the route's own deadline passed: the fallback is still owed", late, downErrors[4].err, true},
		{"not found", context.Background(), answerErrors[1].err, false},
	} {
		if got := dependencyDown(c.ctx, c.err); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
