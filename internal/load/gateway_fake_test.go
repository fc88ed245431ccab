package load

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeGateway answers, in memory, the public routes a rider's app uses,
// with the gateway's paths and JSON shapes. A ride it creates ends after a
// few reads in the status its outcome function gives; a test can slow every
// ride request down, or fail the first attempt of each. It counts what it
// answered per route pattern, so a test can hold the report against it.
type fakeGateway struct {
	srv *httptest.Server
	t   *testing.T

	// Set before the run starts.
	delay      time.Duration      // added to every estimate and ride request
	outcome    func(n int) string // the terminal status of ride n (from 0); "" never ends
	pollsToEnd int                // reads of a ride before it shows its outcome
	// failTimes attempts of each ride request are refused with failStatus.
	failStatus, failTimes int
	retryAfter            string                 // Retry-After on refused ride requests
	signInFail            func(email string) int // status to refuse a token request with, or 0

	mu       sync.Mutex
	accounts map[string]string // email → password
	byRoute  map[string]int    // answered requests per route pattern
	rides    map[string]*fakeRide
	byKey    map[string]*fakeRide // idempotency key → ride
	attempts map[string]int       // ride request attempts per key
	bodies   map[string]string    // first body per key
	ended    map[string]int       // terminal statuses shown, one per ride
	bad      []string
}

type fakeRide struct {
	id, rider, status, outcome string
	reads                      int
}

func newFakeGateway(t *testing.T) *fakeGateway {
	f := &fakeGateway{
		t: t, pollsToEnd: 2, outcome: func(int) string { return StatusCompleted },
		accounts: map[string]string{}, byRoute: map[string]int{}, rides: map[string]*fakeRide{},
		byKey: map[string]*fakeRide{}, attempts: map[string]int{}, bodies: map[string]string{}, ended: map[string]int{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("POST /v1/accounts", f.signup)
	mux.HandleFunc("POST /oauth2/token", f.token)
	mux.HandleFunc("POST /v1/fares/estimate", f.auth(f.estimate))
	mux.HandleFunc("POST /v1/rides", f.auth(f.requestRide))
	mux.HandleFunc("GET /v1/rides/{id}", f.auth(f.getRide))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		f.malformed("unexpected request %s %s", r.Method, r.URL.Path)
		problem(w, http.StatusNotFound, "not_found", "")
	})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := mux.Handler(r)
		f.mu.Lock()
		f.byRoute[pattern]++
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

func problem(w http.ResponseWriter, status int, code, retryAfter string) {
	w.Header().Set("Content-Type", "application/problem+json")
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "code": code, "title": http.StatusText(status)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeGateway) decode(r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		f.malformed("%s %s: %v", r.Method, r.URL.Path, err)
		return false
	}
	return true
}

func (f *fakeGateway) signup(w http.ResponseWriter, r *http.Request) {
	var in struct{ Role, Name, Email, Password string }
	if !f.decode(r, &in) {
		problem(w, http.StatusBadRequest, "invalid_argument", "")
		return
	}
	if in.Role != "rider" || in.Name == "" || !strings.HasSuffix(in.Email, "@load.rideshare.invalid") {
		f.malformed("sign-up %+v", in)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.accounts[in.Email]; ok {
		problem(w, http.StatusConflict, "email_taken", "")
		return
	}
	f.accounts[in.Email] = in.Password
	writeJSON(w, http.StatusCreated, map[string]string{"id": in.Email})
}

func (f *fakeGateway) token(w http.ResponseWriter, r *http.Request) {
	email, password := r.PostFormValue("username"), r.PostFormValue("password")
	if r.PostFormValue("grant_type") != "password" || r.PostFormValue("client_id") != "rideshare-cli" {
		f.malformed("token request %v", r.PostForm)
	}
	if f.signInFail != nil {
		if s := f.signInFail(email); s != 0 {
			writeJSON(w, s, map[string]string{"error": "invalid_grant"})
			return
		}
	}
	f.mu.Lock()
	ok := f.accounts[email] == password && password != ""
	f.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"access_token": "tok-" + email, "token_type": "Bearer", "expires_in": 300})
}

// auth passes the caller's email to h, or answers 401.
func (f *fakeGateway) auth(h func(w http.ResponseWriter, r *http.Request, email string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		email, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer tok-")
		f.mu.Lock()
		_, known := f.accounts[email]
		f.mu.Unlock()
		if !ok || !known {
			problem(w, http.StatusUnauthorized, "unauthenticated", "")
			return
		}
		h(w, r, email)
	}
}

type fakePoint struct {
	Lat *float64 `json:"lat"`
	Lng *float64 `json:"lng"`
}

func (p fakePoint) ok() bool { return p.Lat != nil && p.Lng != nil }

func (f *fakeGateway) estimate(w http.ResponseWriter, r *http.Request, _ string) {
	time.Sleep(f.delay)
	var in struct{ Pickup, Dropoff fakePoint }
	if !f.decode(r, &in) || !in.Pickup.ok() || !in.Dropoff.ok() {
		problem(w, http.StatusBadRequest, "invalid_argument", "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"fare": map[string]any{"amount": 1234, "currency": "USD"}, "quote_id": "q-1",
		"distance_meters": 2000, "duration_seconds": 300, "surge": 1, "degraded": false})
}

func (f *fakeGateway) requestRide(w http.ResponseWriter, r *http.Request, email string) {
	time.Sleep(f.delay)
	key := r.Header.Get("Idempotency-Key")
	var raw json.RawMessage
	if key == "" || !f.decode(r, &raw) {
		f.malformed("ride request without a key or a body")
		problem(w, http.StatusBadRequest, "invalid_argument", "")
		return
	}
	var in struct {
		Pickup, Dropoff fakePoint
		QuoteID         string `json:"quote_id"`
		PaymentMethod   string `json:"payment_method"`
	}
	if err := json.Unmarshal(raw, &in); err != nil || !in.Pickup.ok() || !in.Dropoff.ok() || in.QuoteID != "q-1" {
		f.malformed("ride request %s: %v", raw, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts[key]++
	if first, ok := f.bodies[key]; !ok {
		f.bodies[key] = string(raw)
	} else if first != string(raw) {
		f.bad = append(f.bad, fmt.Sprintf("key %s reused with another body", key))
	}
	if f.attempts[key] <= f.failTimes {
		problem(w, f.failStatus, "unavailable", f.retryAfter)
		return
	}
	rd := f.byKey[key]
	if rd == nil {
		n := len(f.rides)
		rd = &fakeRide{id: fmt.Sprintf("ride-%d", n), rider: email, status: "searching", outcome: f.outcome(n)}
		f.rides[rd.id], f.byKey[key] = rd, rd
	}
	w.Header().Set("Location", "/v1/rides/"+rd.id)
	writeJSON(w, http.StatusAccepted, map[string]any{"id": rd.id, "status": "requested", "rider_id": email})
}

func (f *fakeGateway) getRide(w http.ResponseWriter, r *http.Request, email string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rd := f.rides[r.PathValue("id")]
	if rd == nil || rd.rider != email {
		problem(w, http.StatusNotFound, "not_found", "")
		return
	}
	rd.reads++
	if rd.reads >= f.pollsToEnd && rd.outcome != "" && rd.status != rd.outcome {
		rd.status = rd.outcome
		f.ended[rd.status]++
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": rd.id, "status": rd.status, "rider_id": email})
}

// routeCounts is how many requests the fake answered per route pattern.
func (f *fakeGateway) routeCounts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.byRoute {
		out[k] = v
	}
	return out
}
