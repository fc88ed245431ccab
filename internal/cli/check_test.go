package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/apperr"
	"github.com/rideshare-platform/rideshare/internal/check"
	"github.com/rideshare-platform/rideshare/internal/outbox"
	"github.com/rideshare-platform/rideshare/internal/payments"
	"github.com/rideshare-platform/rideshare/internal/platform"
	"github.com/rideshare-platform/rideshare/internal/rides"
)

// auditPlatform is a gateway with a token endpoint and the rides and
// payments processes, each serving /admin/audit behind the admin token as
// the platform does, from facts the test changes.
type auditPlatform struct {
	dir string
	mu  sync.Mutex
	// ride and pay are one completed ride and its payment.
	ride rides.RideFacts
	pay  payments.PaymentFacts
	// outboxAge is the age of rides' one unsent event (0: none).
	outboxAge time.Duration
	// audits counts requests for rides' page; onAudit, if set, runs on each.
	audits  int
	onAudit func(n int)
	tokens  int
}

func newAuditPlatform(t *testing.T) *auditPlatform {
	t.Helper()
	now := time.Now().UTC()
	p := &auditPlatform{
		dir: t.TempDir(),
		ride: rides.RideFacts{ID: "ride-1", Status: rides.StatusCompleted, Fare: 1250, Currency: "USD", Charge: 1250,
			CapturedAt: now.Add(-time.Minute), PaymentID: "pay-1", UpdatedAt: now.Add(-time.Minute)},
		pay: payments.PaymentFacts{RideID: "ride-1", ID: "pay-1", Status: payments.Captured, Currency: "USD",
			Authorized: 1250, Captured: 1250, Captures: 1, CreatedAt: now.Add(-2 * time.Minute)},
	}
	serve := func(service string, page func() any) *httptest.Server {
		mux := http.NewServeMux()
		mux.HandleFunc("POST /oauth2/token", func(w http.ResponseWriter, r *http.Request) {
			p.mu.Lock()
			p.tokens++
			p.mu.Unlock()
			_ = r.ParseForm()
			issueToken(w, r)
		})
		mux.HandleFunc("GET "+platform.AuditPath, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+faultToken {
				apperr.WriteProblem(w, r, apperr.E(apperr.Unauthenticated, "", "a valid admin token is required"), 0)
				return
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			pa := platform.ProcessAudit{Service: service, Now: time.Now().UTC()}
			if service != "gateway" {
				pa.Outbox = &outbox.Unsent{}
				if service == "rides" && p.outboxAge > 0 {
					pa.Outbox = &outbox.Unsent{Count: 1, Oldest: pa.Now.Add(-p.outboxAge)}
				}
			}
			if r.URL.Query().Get("limit") != "0" && page != nil {
				pa.Audit, _ = json.Marshal(page())
			}
			_ = json.NewEncoder(w).Encode(pa)
		})
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		return srv
	}
	gateway := serve("gateway", nil)
	ridesSrv := serve("rides", func() any {
		p.audits++
		if p.onAudit != nil {
			p.onAudit(p.audits)
		}
		return rides.AuditPage{Rides: []rides.RideFacts{p.ride}}
	})
	paymentsSrv := serve("payments", func() any {
		return payments.AuditPage{Payments: []payments.PaymentFacts{p.pay},
			Ledger: &payments.LedgerAudit{Transactions: 2, Entries: 5, Debits: 2500, Credits: 2500, Balanced: true}}
	})
	if err := writeState(p.dir, State{
		GatewayURL: gateway.URL,
		Services:   map[string]string{"rides": ridesSrv.URL, "payments": paymentsSrv.URL},
		ClientID:   faultClientID, ClientSecret: faultSecret,
	}); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *auditPlatform) set(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
}

// runCheckCLI runs the command as Run would and returns its exit code.
func runCheckCLI(args ...string) (code int, stdout, stderr string) {
	var out, errs bytes.Buffer
	env := Env{Args: append([]string{"check"}, args...), Getenv: func(string) string { return "" }, Stdout: &out, Stderr: &errs}
	err := runCheck(context.Background(), env, args)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		code = 2
	default:
		code = 1
		errs.WriteString("rideshare check: " + err.Error() + "\n")
	}
	return code, out.String(), errs.String()
}

func TestCheckOK(t *testing.T) {
	p := newAuditPlatform(t)
	code, out, errs := runCheckCLI("--data", p.dir)
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errs, out)
	}
	for _, s := range []string{
		"rides                 1  1 completed",
		"captured once         1  1 fares, 0 cancellation fees",
		"holds released        0  0 voided, 0 declined, 0 never placed",
		"ledger entries        5  balanced: 2 transactions, debits 2500, credits 2500",
		"outbox backlog        0  payments 0, rides 0",
		"OK: all invariants hold",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}

func TestCheckViolation(t *testing.T) {
	p := newAuditPlatform(t)
	p.set(func() { p.pay.Captures = 2 })
	code, out, errs := runCheckCLI("--data", p.dir)
	if code != 1 || !strings.Contains(out, "FAILED: 1 violation\n  [capture] ride ride-1 was captured 2 times (payment pay-1)") ||
		!strings.Contains(errs, "rideshare check: 1 violation") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}

	code, out, _ = runCheckCLI("--data", p.dir, "--json")
	var rep check.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json printed %s: %v", out, err)
	}
	if code != 1 || len(rep.Violations) != 1 || rep.Violations[0].Invariant != check.Captures || rep.Violations[0].Subject != "ride-1" ||
		rep.Rides.Total != 1 || !rep.Ledger.Balanced {
		t.Fatalf("exit %d, report %+v", code, rep)
	}
}

// TestCheckWait: --wait re-checks until the violation is gone (the outbox
// drains on the third look), and says once that it is waiting.
func TestCheckWait(t *testing.T) {
	p := newAuditPlatform(t)
	p.set(func() {
		p.outboxAge = time.Minute
		p.onAudit = func(n int) {
			if n == 3 {
				p.outboxAge = 0
			}
		}
	})
	code, out, errs := runCheckCLI("--data", p.dir, "--wait", "1m")
	if code != 0 || !strings.Contains(out, "OK: all invariants hold") || strings.Count(errs, "re-checking until") != 1 ||
		!strings.Contains(errs, "1 violation") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.audits != 3 || p.tokens != 1 {
		t.Fatalf("%d audits with %d tokens, want 3 with one", p.audits, p.tokens)
	}
}

// TestCheckWaitRefused: a credential the platform refuses is not retried.
func TestCheckWaitRefused(t *testing.T) {
	p := newAuditPlatform(t)
	code, _, errs := runCheckCLI("--data", p.dir, "--wait", "1h", "--client-secret", "wrong")
	p.mu.Lock()
	defer p.mu.Unlock()
	if code != 1 || !strings.Contains(errs, "refused the operator credential") || p.tokens != 1 || p.audits != 0 {
		t.Fatalf("exit %d after %d token requests: %s", code, p.tokens, errs)
	}
}

func TestCheckUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"rides"}, 2, "takes no arguments"},
		{[]string{"--stuck-after", "0s"}, 2, "--stuck-after must be positive"},
		{[]string{"--outbox-max-age", "-1s"}, 2, "--outbox-max-age must be positive"},
		{[]string{"--wait", "-1s"}, 2, "--wait must not be negative"},
		{[]string{"--data", "/nonexistent"}, 1, "the platform is not running"},
	} {
		code, _, errs := runCheckCLI(tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.says) {
			t.Errorf("%v: exit %d, stderr %s", tc.args, code, errs)
		}
	}
	code, out, _ := runCheckCLI("--help")
	if code != 0 || !strings.Contains(out, "--stuck-after") || !strings.Contains(out, "rideshare check --wait 2m --settled") {
		t.Fatalf("help: exit %d\n%s", code, out)
	}
}
