package apperr

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestRoundTrip: every kind and code survives the trip through an RPC error,
// so an error raised three services deep reaches the edge unchanged.
func TestRoundTrip(t *testing.T) {
	for k := range kindInfo {
		kind := Kind(k)
		sent := E(kind, "some_code", "message %d", k)
		got := As(ToConnect(fmt.Errorf("wrapped: %w", sent)))
		if got.Kind != kind || got.Code != "some_code" || got.Message != sent.Message {
			t.Errorf("%s: came back as %s/%s/%q", kind, got.Kind, got.Code, got.Message)
		}
	}
}

// TestOutermostClassificationWins: a handler that reclassifies a downstream
// RPC error is heard as it said, not as the downstream did.
func TestOutermostClassificationWins(t *testing.T) {
	downstream := ToConnect(E(NotFound, "", "no such zone"))
	got := As(ToConnect(Wrap(As(downstream), Unavailable, "surge_unavailable", "surge is unavailable")))
	if got.Kind != Unavailable || got.Code != "surge_unavailable" {
		t.Fatalf("came back as %s/%s", got.Kind, got.Code)
	}
	// A bare RPC error passes through with its own kind and code.
	if got := As(ToConnect(fmt.Errorf("calling: %w", downstream))); got.Kind != NotFound {
		t.Fatalf("bare RPC error came back as %s", got.Kind)
	}
}

func TestContextErrors(t *testing.T) {
	if k := KindOf(context.DeadlineExceeded); k != Timeout {
		t.Errorf("deadline: %s", k)
	}
	if k := KindOf(fmt.Errorf("x: %w", context.Canceled)); k != Unavailable {
		t.Errorf("canceled: %s", k)
	}
	if e := As(fmt.Errorf("disk on fire")); e.Kind != Internal || e.Message != "internal error" {
		t.Errorf("unclassified errors must hide their cause: %+v", e)
	}
}

func TestWriteProblem(t *testing.T) {
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/v1/rides/x", nil)
	WriteProblem(w, r, E(RateLimited, "", "slow down"), 1500e6)
	var p Problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Content-Type") != "application/problem+json" ||
		w.Header().Get("Retry-After") != "2" || p.Code != "rate_limited" || p.Status != 429 || p.Instance != "/v1/rides/x" {
		t.Fatalf("got %d %v %+v", w.Code, w.Header(), p)
	}
}

func TestWriteMethodNotAllowed(t *testing.T) {
	w := httptest.NewRecorder()
	w.Header().Set("X-Request-Id", "req-1")
	WriteMethodNotAllowed(w, httptest.NewRequest("POST", "/admin/audit", nil), "GET, HEAD", "read it with GET")
	var p Problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" || w.Header().Get("Content-Type") != "application/problem+json" ||
		p.Code != "method_not_allowed" || p.Status != 405 || p.Instance != "/admin/audit" || p.Detail != "read it with GET" || p.RequestID != "req-1" {
		t.Fatalf("got %d %v %+v", w.Code, w.Header(), p)
	}
}
