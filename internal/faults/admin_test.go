package faults

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
)

// call sends one admin request and returns the status and body.
func call(t *testing.T, h http.Handler, method, target, body string) (int, []byte) {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	h.ServeHTTP(w, r)
	return w.Code, w.Body.Bytes()
}

// list sends an admin request that must succeed and returns the faults
// it answers with.
func list(t *testing.T, h http.Handler, method, target, body string) []Fault {
	t.Helper()
	status, resp := call(t, h, method, target, body)
	body = string(resp)
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	var l List
	if err := json.Unmarshal(resp, &l); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	if l.Faults == nil {
		t.Fatalf("faults must be a list, even empty: %s", body)
	}
	return l.Faults
}

func TestAdminSetListReplaceClear(t *testing.T) {
	r := newRig(t)
	h := r.inj.Admin()

	if got := list(t, h, "GET", "/admin/faults", ""); len(got) != 0 {
		t.Fatalf("faults before any were set: %+v", got)
	}

	got := list(t, h, "PUT", "/admin/faults",
		`{"latency":"3s","error_rate":0.5,"route":"/rideshare.payments.v1.PaymentsService/Authorize","for":"60s"}`)
	want := Fault{Route: "/rideshare.payments.v1.PaymentsService/Authorize", Latency: 3 * time.Second, ErrorRate: 0.5,
		Status: 503, For: time.Minute, SetAt: epoch, ExpiresAt: epoch.Add(time.Minute)}
	if len(got) != 1 || !sameFault(got[0], want) {
		t.Fatalf("after PUT: %+v, want %+v", got, want)
	}
	// POST works too; another route adds a fault, the same route replaces.
	list(t, h, "POST", "/admin/faults", `{"hang":true,"route":"/rideshare.users.v1.UsersService/"}`)
	got = list(t, h, "PUT", "/admin/faults", `{"error_rate":1,"status":429,"route":"/rideshare.payments.v1.PaymentsService/Authorize"}`)
	if len(got) != 2 || got[0].Route != want.Route || got[0].Latency != 0 || got[0].Status != 429 || !got[0].ExpiresAt.IsZero() ||
		got[1].Route != "/rideshare.users.v1.UsersService/" || !got[1].Hang {
		t.Fatalf("after replace: %+v", got)
	}
	if w := r.do(t.Context(), "/rideshare.payments.v1.PaymentsService/Authorize"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("the replaced fault is not in force: status %d", w.Code)
	}

	got = list(t, h, "DELETE", "/admin/faults?route=/rideshare.users.v1.UsersService/", "")
	if len(got) != 1 || got[0].Route != want.Route {
		t.Fatalf("after clearing one route: %+v", got)
	}
	status, body := call(t, h, "DELETE", "/admin/faults?route=/nothing", "")
	if p := problem(t, body); status != http.StatusNotFound || p.Code != "no_fault" {
		t.Fatalf("clearing a route with no fault: %d %+v", status, p)
	}
	if got := list(t, h, "DELETE", "/admin/faults", ""); len(got) != 0 {
		t.Fatalf("after clearing all: %+v", got)
	}
	if w := r.do(t.Context(), "/rideshare.payments.v1.PaymentsService/Authorize"); w.Code != http.StatusNoContent {
		t.Fatalf("after clearing, status %d", w.Code)
	}
}

func sameFault(a, b Fault) bool {
	return a.Route == b.Route && a.Latency == b.Latency && a.ErrorRate == b.ErrorRate && a.Hang == b.Hang &&
		a.Status == b.Status && a.For == b.For && a.SetAt.Equal(b.SetAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}

func problem(t *testing.T, body []byte) apperr.Problem {
	t.Helper()
	var p apperr.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("not a problem: %s: %v", body, err)
	}
	return p
}

// TestAdminRejectsBadFaults: a bad request is a 400 problem that says what
// to fix, and sets nothing.
func TestAdminRejectsBadFaults(t *testing.T) {
	for _, tc := range []struct{ name, body, says string }{
		{"not json", `{"latency":`, "not valid JSON"},
		{"empty", ``, "not valid JSON"},
		{"latency not a duration", `{"latency":"soon"}`, `"soon" is not a duration`},
		{"latency a number", `{"latency":3}`, "latency must be a string"},
		{"typo", `{"errorRate":0.5}`, `unknown field "errorRate"`},
		{"rate too high", `{"error_rate":2}`, "between 0 and 1"},
		{"nothing to do", `{"route":"/a.B/"}`, "needs latency, error_rate or hang"},
		{"bad status", `{"error_rate":1,"status":302}`, "status 302"},
		{"two objects", `{"hang":true}{"hang":true}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			status, body := call(t, r.inj.Admin(), "PUT", "/admin/faults", tc.body)
			p := problem(t, body)
			if status != http.StatusBadRequest || p.Status != 400 || p.Code == "" || !strings.Contains(p.Detail, tc.says) {
				t.Fatalf("status %d, problem %+v; want 400 saying %q", status, p, tc.says)
			}
			if len(r.inj.Active()) != 0 {
				t.Fatal("a rejected fault was set")
			}
		})
	}
}

func TestAdminMethodNotAllowed(t *testing.T) {
	status, body := call(t, New(Options{}).Admin(), "PATCH", "/admin/faults", `{}`)
	if p := problem(t, body); status != http.StatusMethodNotAllowed || p.Code != "method_not_allowed" {
		t.Fatalf("%d %+v", status, p)
	}
}

// TestFaultJSONRoundTrip: what the admin endpoint lists reads back as the
// same fault (the command line decodes it with this type).
func TestFaultJSONRoundTrip(t *testing.T) {
	in := Fault{Route: "/a.B/C", Latency: 1500 * time.Millisecond, ErrorRate: 0.25, Hang: true, Status: 504,
		For: time.Hour, SetAt: epoch, ExpiresAt: epoch.Add(time.Hour)}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"latency":"1.5s"`) || !strings.Contains(string(b), `"for":"1h0m0s"`) {
		t.Fatalf("durations must read as an operator types them: %s", b)
	}
	var out Fault
	if err := json.Unmarshal(b, &out); err != nil || !sameFault(in, out) {
		t.Fatalf("round trip: %+v %v", out, err)
	}
}
