package check

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

const adminToken = "admin-token"

// auditServer is one process's /admin/audit as the platform serves it:
// behind an admin token, paged by after and limit, limit=0 for the outbox
// alone.
func auditServer(t *testing.T, service string, ob *outbox.Unsent, src *fakeSource) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != platform.AuditPath {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+adminToken {
			apperr.WriteProblem(w, r, apperr.E(apperr.Unauthenticated, "", "a valid admin token is required"), 0)
			return
		}
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		after := r.URL.Query().Get("after")
		pa := platform.ProcessAudit{Service: service, Now: now, Outbox: ob}
		if limit > 0 && src != nil {
			src.pageSize = limit
			var page any
			switch service {
			case "rides":
				p, _ := src.Rides(r.Context(), after)
				page = p.AuditPage
			case "payments":
				p, _ := src.Payments(r.Context(), after)
				page = p.AuditPage
			}
			pa.Audit, _ = json.Marshal(page)
		}
		_ = json.NewEncoder(w).Encode(pa)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestAdminSource runs the check over HTTP against processes that answer
// as the platform's do: pages are followed, a replica that is down is
// passed over, and the gateway (no database) has no outbox.
func TestAdminSource(t *testing.T) {
	facts := cleanPlatform()
	const down = testenv.NoListener
	src := &Admin{
		Processes: map[string]string{
			"rides":      auditServer(t, "rides", &outbox.Unsent{Count: 1, Oldest: now.Add(-time.Second)}, facts).URL,
			"payments-1": down,
			"payments-2": auditServer(t, "payments", &outbox.Unsent{}, facts).URL + "/",
			"gateway":    auditServer(t, "gateway", nil, nil).URL,
		},
		Token: adminToken, PageSize: 3,
	}
	rep, err := Run(context.Background(), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Rides.Total != len(facts.rides) || rep.Payments.CapturedOnce != 1 || rep.Payments.Released() != 4 {
		t.Fatalf("report %+v", rep)
	}
	want := []Outbox{{Service: "payments"}, {Service: "rides", Unsent: 1, OldestAge: time.Second}}
	if len(rep.Outboxes) != 2 || rep.Outboxes[0] != want[0] || rep.Outboxes[1] != want[1] {
		t.Fatalf("outboxes %+v, want %+v", rep.Outboxes, want)
	}

	// A violation travels through the JSON like the rest.
	payment(facts, "r01-completed").Captures = 2
	if rep, err := Run(context.Background(), src, Options{}); err != nil || rep.OK() || rep.Violations[0].Invariant != Captures {
		t.Fatalf("after a double capture: %v %+v", err, rep.Violations)
	}
}

func TestAdminSourceErrors(t *testing.T) {
	facts := cleanPlatform()
	rides := auditServer(t, "rides", &outbox.Unsent{}, facts).URL
	noAudit := auditServer(t, "rides", &outbox.Unsent{}, nil).URL
	for _, tc := range []struct {
		name  string
		src   *Admin
		says  string
		extra string
	}{
		{"wrong token", &Admin{Processes: map[string]string{"rides": rides}, Token: "nope"}, "rides refused the token (401 Unauthorized)", "admin token"},
		{"no rides", &Admin{Processes: map[string]string{"users": rides}, Token: adminToken}, "no address for rides", "users"},
		{"no audit endpoint", &Admin{Processes: map[string]string{"rides": rides + "/nothing-here"}, Token: adminToken}, "has no audit", "404"},
		{"an older build", &Admin{Processes: map[string]string{"rides": noAudit}, Token: adminToken}, "reports no audit of its own", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(context.Background(), tc.src, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), tc.extra) {
				t.Fatalf("err %v, want it to say %q and %q", err, tc.says, tc.extra)
			}
		})
	}
}
