package platform

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestAuditHandler: the answer carries the outbox backlog and the
// service's page, the query reaches the service, limit=0 leaves the
// service out, and bad queries and methods are refused.
func TestAuditHandler(t *testing.T) {
	ob := outbox.New(testenv.DB(t, nil), "rides", outbox.Options{})
	var asked []AuditQuery
	h := auditHandler("rides", "rides-2", ob, func(_ context.Context, q AuditQuery) (any, error) {
		asked = append(asked, q)
		if q.After == "boom" {
			return nil, errors.New("database gone")
		}
		return map[string]string{"after": q.After}, nil
	})
	get := func(method, query string) (*httptest.ResponseRecorder, ProcessAudit) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, AuditPath+query, nil))
		var pa ProcessAudit
		if rec.Code == http.StatusOK {
			if err := json.Unmarshal(rec.Body.Bytes(), &pa); err != nil {
				t.Fatalf("%s: %v", rec.Body, err)
			}
		}
		return rec, pa
	}

	rec, pa := get("GET", "?after=r7&limit=50")
	if rec.Code != http.StatusOK || pa.Service != "rides" || pa.Instance != "rides-2" || pa.Outbox == nil ||
		pa.Outbox.Count != 0 || time.Since(pa.Now) > time.Minute || string(pa.Audit) != `{"after":"r7"}` {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if len(asked) != 1 || asked[0] != (AuditQuery{After: "r7", Limit: 50}) {
		t.Fatalf("the service was asked %+v", asked)
	}
	if _, pa := get("GET", ""); asked[1].Limit != DefaultAuditLimit || pa.Audit == nil {
		t.Fatalf("default query: %+v", asked[1])
	}
	if rec, pa := get("GET", "?limit=0"); rec.Code != http.StatusOK || pa.Audit != nil || pa.Outbox == nil || len(asked) != 2 {
		t.Fatalf("limit=0: %d %s (service asked %d times)", rec.Code, rec.Body, len(asked))
	}
	for _, tc := range []struct {
		method, query string
		status        int
	}{
		{"GET", "?limit=-1", http.StatusBadRequest},
		{"GET", "?limit=10001", http.StatusBadRequest},
		{"GET", "?limit=ten", http.StatusBadRequest},
		{"POST", "", http.StatusMethodNotAllowed},
		{"GET", "?after=boom", http.StatusInternalServerError},
	} {
		if rec, _ := get(tc.method, tc.query); rec.Code != tc.status || rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: %d %s, want %d problem+json", tc.method, tc.query, rec.Code, rec.Body, tc.status)
		}
	}

	// A process without a database or an audit of its own still answers.
	rec = httptest.NewRecorder()
	auditHandler("gateway", "", nil, nil).ServeHTTP(rec, httptest.NewRequest("GET", AuditPath, nil))
	if rec.Code != http.StatusOK || rec.Body.String() == "" {
		t.Fatalf("gateway: %d %s", rec.Code, rec.Body)
	}
	var gw map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &gw)
	if _, has := gw["outbox"]; has || gw["service"] != "gateway" {
		t.Fatalf("gateway: %s", rec.Body)
	}
}
