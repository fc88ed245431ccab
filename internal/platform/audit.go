package platform

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/outbox"
)

// AuditPath is where every process serves its audit, behind the admin
// token like every admin endpoint.
const AuditPath = "/admin/audit"

// Page sizes of /admin/audit: a page is one query and one answer held in
// memory, so it stays bounded however many rides a platform has seen.
const (
	DefaultAuditLimit = 1000
	MaxAuditLimit     = 10_000
)

// AuditQuery asks a service for one page of its audit.
type AuditQuery struct {
	// After is the cursor: the page starts after this item ("" for the
	// first page, which also carries the service's totals).
	After string
	// Limit is the most items on the page, 1 to MaxAuditLimit.
	Limit int
}

// ProcessAudit is what /admin/audit answers.
type ProcessAudit struct {
	// Service is the service's name ("payments"), the same for every
	// replica; Instance names the replica, if it is one.
	Service  string `json:"service"`
	Instance string `json:"instance,omitempty"`
	// Now is the process's clock when it answered, so that ages are
	// measured by one clock, not the auditor's.
	Now time.Time `json:"now"`
	// Outbox is the database's outbox backlog (nil for a service without
	// a database). Replicas share it.
	Outbox *outbox.Unsent `json:"outbox,omitempty"`
	// Audit is the page of the service's own audit (Component.Audit);
	// absent when it declares none or the query asked for limit=0.
	Audit json.RawMessage `json:"audit,omitempty"`
}

// auditHandler serves ProcessAudit. The query takes after=CURSOR and
// limit=N; limit=0 asks for the outbox backlog alone.
func auditHandler(service, instance string, ob *outbox.Outbox, audit func(context.Context, AuditQuery) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			apperr.WriteMethodNotAllowed(w, r, "GET, HEAD", r.Method+" is not supported: the audit is read with GET")
			return
		}
		q := AuditQuery{After: r.URL.Query().Get("after"), Limit: DefaultAuditLimit}
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > MaxAuditLimit {
				apperr.WriteProblem(w, r, apperr.E(apperr.Invalid, "", "limit must be a whole number from 0 to %d", MaxAuditLimit), 0)
				return
			}
			q.Limit = n
		}
		ctx := r.Context()
		out := ProcessAudit{Service: service, Instance: instance, Now: time.Now().UTC()}
		if ob != nil {
			u, err := ob.Unsent(ctx)
			if err != nil {
				apperr.WriteProblem(w, r, err, 0)
				return
			}
			out.Outbox = &u
		}
		if audit != nil && q.Limit > 0 {
			page, err := audit(ctx, q)
			if err == nil {
				out.Audit, err = json.Marshal(page)
			}
			if err != nil {
				apperr.WriteProblem(w, r, err, 0)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(out)
	})
}
