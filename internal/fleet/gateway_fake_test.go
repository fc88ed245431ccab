package fleet

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// fakeGateway implements, in memory, just the public routes a driver's app
// uses, with the gateway's paths and JSON shapes. A test tells it to offer a
// ride to whoever polls next, to refuse an accept, or to cancel a ride, and
// reads back what the drivers did. Bodies are decoded strictly, like the
// real gateway does, and any malformed request fails the test.
type fakeGateway struct {
	srv *httptest.Server

	mu       sync.Mutex
	accounts map[string]*fakeAccount // by email
	tokens   map[string]string       // access token → email
	nextTok  int
	signups  int // sign-up requests, including refused ones
	logins   int // tokens issued
	requests int
	rides    map[string]*fakeRide
	pending  []string       // rides to offer to the next driver who polls
	refuse   map[string]int // ride → the status to refuse its accept with
	// cancelOn is, per ride, a step that finds the ride cancelled by its
	// rider a moment before (the race a real driver can lose).
	cancelOn map[string]string
	// failing makes the next n requests for a trip step fail with status.
	failing map[string]struct{ status, n int }
	// hangOffline makes "go offline" hang until the caller gives up.
	hangOffline bool
	bad         []string // malformed requests
}

type fakeAccount struct {
	email, password, name, plate string
	online                       bool
	onlineAt                     geo.Point
	pings                        []fakePing
	polls                        int
}

type fakePing struct {
	at   geo.Point
	when time.Time
}

type fakeRide struct {
	id, status, driver string
	pickup, dropoff    geo.Point
	offeredTo          string
	offeredAt          time.Time
	accepts            int
	steps              []fakeStep
	// attempts counts requests per trip step, answered or refused.
	attempts map[string]int
}

// fakeStep is a trip step the gateway accepted, with the driver's last
// reported position and how many pings it had sent by then.
type fakeStep struct {
	action string
	when   time.Time
	at     geo.Point
	pings  int
}

func newFakeGateway(t *testing.T) *fakeGateway {
	f := &fakeGateway{
		accounts: map[string]*fakeAccount{}, tokens: map[string]string{},
		rides: map[string]*fakeRide{}, refuse: map[string]int{}, cancelOn: map[string]string{}, failing: map[string]struct{ status, n int }{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/accounts", f.signup)
	mux.HandleFunc("POST /oauth2/token", f.token)
	mux.HandleFunc("PUT /v1/drivers/me/availability", f.auth(f.availability))
	mux.HandleFunc("POST /v1/drivers/me/location", f.auth(f.location))
	mux.HandleFunc("GET /v1/drivers/me/offers", f.auth(f.offers))
	mux.HandleFunc("GET /v1/rides/{id}", f.auth(f.getRide))
	mux.HandleFunc("POST /v1/rides/{id}/{action}", f.auth(f.step))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		f.malformed("unexpected request %s %s", r.Method, r.URL.Path)
		problem(w, http.StatusNotFound, "not_found")
	})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests++
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		f.srv.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, b := range f.bad {
			t.Error(b)
		}
	})
	return f
}

func (f *fakeGateway) malformed(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bad = append(f.bad, fmt.Sprintf(format, args...))
}

func problem(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "code": code, "title": http.StatusText(status)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads exactly one JSON object into v, refusing unknown fields,
// as the gateway does.
func (f *fakeGateway) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.Header.Get("Content-Type") != "application/json" {
		f.malformed("%s %s: Content-Type %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		f.malformed("%s %s: %v", r.Method, r.URL.Path, err)
		problem(w, http.StatusBadRequest, "invalid_argument")
		return false
	}
	return true
}

type fakePoint struct {
	Lat *float64 `json:"lat"`
	Lng *float64 `json:"lng"`
}

func (p *fakePoint) point() (geo.Point, bool) {
	if p == nil || p.Lat == nil || p.Lng == nil {
		return geo.Point{}, false
	}
	return geo.Point{Lat: *p.Lat, Lng: *p.Lng}, true
}

func (f *fakeGateway) signup(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Role, Name, Email, Password string
		Vehicle                     *struct{ Make, Model, Plate, Color string }
	}
	if !f.decode(w, r, &in) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.signups++
	if in.Role != "driver" || in.Name == "" || in.Email == "" || in.Password == "" || in.Vehicle == nil || in.Vehicle.Plate == "" {
		f.bad = append(f.bad, fmt.Sprintf("incomplete driver sign-up: %+v", in))
		problem(w, http.StatusBadRequest, "invalid_argument")
		return
	}
	if f.accounts[in.Email] != nil {
		problem(w, http.StatusConflict, "email_taken")
		return
	}
	for _, a := range f.accounts {
		if a.plate == in.Vehicle.Plate {
			f.bad = append(f.bad, "two fleet drivers with plate "+a.plate)
		}
	}
	f.accounts[in.Email] = &fakeAccount{email: in.Email, password: in.Password, name: in.Name, plate: in.Vehicle.Plate}
	writeJSON(w, http.StatusCreated, map[string]any{"id": in.Email, "role": "driver", "email": in.Email})
}

func (f *fakeGateway) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		f.malformed("token: %v", err)
		return
	}
	form := r.PostForm
	f.mu.Lock()
	defer f.mu.Unlock()
	if form.Get("grant_type") != "password" || form.Get("client_id") != "rideshare-cli" {
		f.bad = append(f.bad, "token request: "+form.Encode())
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	a := f.accounts[form.Get("username")]
	if a == nil || a.password != form.Get("password") {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": "invalid username or password"})
		return
	}
	f.nextTok++
	tok := fmt.Sprintf("tok-%d", f.nextTok)
	f.tokens[tok] = a.email
	f.logins++
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 300})
}

// auth resolves the bearer token to its account, or answers 401.
func (f *fakeGateway) auth(next func(http.ResponseWriter, *http.Request, *fakeAccount)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		const prefix = "Bearer "
		h := r.Header.Get("Authorization")
		f.mu.Lock()
		var a *fakeAccount
		if len(h) > len(prefix) && h[:len(prefix)] == prefix {
			a = f.accounts[f.tokens[h[len(prefix):]]]
		}
		f.mu.Unlock()
		if a == nil {
			problem(w, http.StatusUnauthorized, "unauthenticated")
			return
		}
		next(w, r, a)
	}
}

func (f *fakeGateway) availability(w http.ResponseWriter, r *http.Request, a *fakeAccount) {
	var in struct {
		Online   *bool      `json:"online"`
		Location *fakePoint `json:"location,omitempty"`
	}
	if !f.decode(w, r, &in) {
		return
	}
	if in.Online == nil {
		f.malformed("availability without online")
		problem(w, http.StatusBadRequest, "invalid_argument")
		return
	}
	if !*in.Online {
		f.mu.Lock()
		hang := f.hangOffline
		f.mu.Unlock()
		if hang {
			<-r.Context().Done()
			return
		}
	}
	p, ok := in.Location.point()
	if *in.Online && !ok {
		f.malformed("online without a location")
		problem(w, http.StatusBadRequest, "invalid_argument")
		return
	}
	f.mu.Lock()
	a.online = *in.Online
	if ok {
		a.onlineAt = p
	}
	f.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]bool{"online": *in.Online})
}

func (f *fakeGateway) location(w http.ResponseWriter, r *http.Request, a *fakeAccount) {
	var in fakePoint
	if !f.decode(w, r, &in) {
		return
	}
	p, ok := in.point()
	if !ok {
		f.malformed("ping without lat/lng")
		problem(w, http.StatusBadRequest, "invalid_argument")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !a.online {
		problem(w, http.StatusConflict, "driver_offline")
		return
	}
	a.pings = append(a.pings, fakePing{at: p, when: time.Now()})
	w.WriteHeader(http.StatusNoContent)
}

func rideJSON(rd *fakeRide) map[string]any {
	return map[string]any{
		"id": rd.id, "status": rd.status, "rider_id": "rider-1", "driver_id": rd.driver,
		"pickup":  map[string]float64{"lat": rd.pickup.Lat, "lng": rd.pickup.Lng},
		"dropoff": map[string]float64{"lat": rd.dropoff.Lat, "lng": rd.dropoff.Lng},
		"fare":    map[string]any{"amount": 1250, "currency": "USD"},
	}
}

func (f *fakeGateway) offers(w http.ResponseWriter, r *http.Request, a *fakeAccount) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a.polls++
	if a.online && len(f.pending) > 0 {
		rd := f.rides[f.pending[0]]
		f.pending = f.pending[1:]
		rd.offeredTo, rd.offeredAt = a.email, time.Now()
	}
	items := []map[string]any{}
	for _, rd := range f.rides {
		if rd.offeredTo == a.email && rd.status == "searching" {
			o := rideJSON(rd)
			items = append(items, map[string]any{
				"ride_id": rd.id, "pickup": o["pickup"], "dropoff": o["dropoff"], "fare": o["fare"],
				"expires_at": rd.offeredAt.Add(30 * time.Second).UTC().Format(time.RFC3339Nano),
			})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

func (f *fakeGateway) getRide(w http.ResponseWriter, r *http.Request, a *fakeAccount) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rd := f.rides[r.PathValue("id")]
	if rd == nil || rd.driver != a.email {
		problem(w, http.StatusNotFound, "not_found")
		return
	}
	writeJSON(w, http.StatusOK, rideJSON(rd))
}

// transitions are the trip steps: the status each needs and the one it
// leads to. Each is idempotent, as on the platform.
var transitions = map[string][2]string{
	"arrive":   {"driver_assigned", "driver_arrived"},
	"start":    {"driver_arrived", "in_progress"},
	"complete": {"in_progress", "completed"},
}

func (f *fakeGateway) step(w http.ResponseWriter, r *http.Request, a *fakeAccount) {
	var in map[string]any
	if !f.decode(w, r, &in) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	rd := f.rides[r.PathValue("id")]
	action := r.PathValue("action")
	if rd == nil {
		problem(w, http.StatusNotFound, "not_found")
		return
	}
	rd.attempts[action]++
	if f.cancelOn[rd.id] == action {
		rd.status = "cancelled"
	}
	if fail := f.failing[action]; fail.n > 0 {
		fail.n--
		f.failing[action] = fail
		problem(w, fail.status, "unavailable")
		return
	}
	var lastAt geo.Point
	if len(a.pings) > 0 {
		lastAt = a.pings[len(a.pings)-1].at
	}
	record := func() { rd.steps = append(rd.steps, fakeStep{action, time.Now(), lastAt, len(a.pings)}) }
	switch action {
	case "accept":
		rd.accepts++
		if code := f.refuse[rd.id]; code != 0 {
			rd.offeredTo = "" // it went to someone else, or expired
			problem(w, code, "offer_expired")
			return
		}
		if rd.offeredTo != a.email || rd.status != "searching" {
			problem(w, http.StatusUnprocessableEntity, "offer_expired")
			return
		}
		rd.status, rd.driver = "driver_assigned", a.email
		record()
	case "cancel":
		if rd.driver != a.email {
			problem(w, http.StatusNotFound, "not_found")
			return
		}
		rd.status, rd.driver, rd.offeredTo = "searching", "", ""
		record()
	default:
		tr, ok := transitions[action]
		if !ok {
			f.bad = append(f.bad, "unknown trip step "+action)
			problem(w, http.StatusNotFound, "not_found")
			return
		}
		switch {
		case rd.driver != a.email:
			problem(w, http.StatusNotFound, "not_found")
			return
		case rd.status == tr[1]:
		case rd.status != tr[0]:
			problem(w, http.StatusConflict, "conflict")
			return
		default:
			rd.status = tr[1]
			record()
		}
	}
	writeJSON(w, http.StatusOK, rideJSON(rd))
}

// offer adds a searching ride and offers it to whoever polls next.
func (f *fakeGateway) offer(id string, pickup, dropoff geo.Point) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rides[id] = &fakeRide{id: id, status: "searching", pickup: pickup, dropoff: dropoff, attempts: map[string]int{}}
	f.pending = append(f.pending, id)
}

// refuseAccept makes accepting ride id fail with status.
func (f *fakeGateway) refuseAccept(id string, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuse[id] = status
}

// failStep makes the next n requests for the trip step action fail with
// status, as a platform having a bad moment would.
func (f *fakeGateway) failStep(action string, status, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing[action] = struct{ status, n int }{status, n}
}

// forceOffline takes driver email offline behind its back, as dispatch
// would after losing its state.
func (f *fakeGateway) forceOffline(email string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accounts[email].online = false
}

// cancelWhen makes the rider cancel ride id just before the driver's step
// action reaches the platform. Call it before offering the ride: once
// offered, a driver may take the step before the test gets to set it.
func (f *fakeGateway) cancelWhen(id, action string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancelOn[id] = action
}

// cancel cancels ride id, as its rider would.
func (f *fakeGateway) cancel(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rides[id].status = "cancelled"
}

// expireTokens makes every issued token invalid, as a key rotation would.
func (f *fakeGateway) expireTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.tokens)
}

func (f *fakeGateway) setHangOffline(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hangOffline = v
}

// account is a copy of the account with email, or nil.
func (f *fakeGateway) account(email string) *fakeAccount {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.accounts[email]
	if a == nil {
		return nil
	}
	c := *a
	c.pings = slices.Clone(a.pings)
	return &c
}

// ride is a copy of ride id.
func (f *fakeGateway) ride(id string) fakeRide {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := *f.rides[id]
	c.steps = slices.Clone(c.steps)
	c.attempts = maps.Clone(c.attempts)
	return c
}

// counts are the gateway-wide counters.
func (f *fakeGateway) counts() (accounts, signups, logins, requests int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.accounts), f.signups, f.logins, f.requests
}
