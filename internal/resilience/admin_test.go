package resilience

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestMetricsAndAdminState: what operators see matches what happened.
func TestMetricsAndAdminState(t *testing.T) {
	e := newEnv(t, fast("resilience.payments.breaker_min_calls", "5", "resilience.payments.bulkhead", "7"), true)
	e.payments.set(down)
	ctx := context.Background()
	_ = e.read(ctx)  // three attempts (two retries), each judged by the breaker
	_ = e.write(ctx) // the fourth failed attempt
	_ = e.write(ctx) // the fifth opens the breaker
	_ = e.write(ctx) // refused
	_ = e.surge(ctx)

	for _, c := range []struct {
		metric string
		want   float64
	}{
		{`rideshare_dependency_calls_total{peer="payments",result="failure"}`, 3},
		{`rideshare_dependency_calls_total{peer="payments",result="circuit_open"}`, 1},
		{`rideshare_dependency_calls_total{peer="pricing",result="success"}`, 1},
		{`rideshare_dependency_retries_total{peer="payments"}`, 2},
		{`rideshare_dependency_breaker_state{peer="payments"}`, 1},
		{`rideshare_dependency_breaker_state{peer="pricing"}`, 0},
		{`rideshare_dependency_bulkhead_in_use{peer="payments"}`, 0},
		{`rideshare_dependency_bulkhead_limit{peer="payments"}`, 7},
		{`rideshare_dependency_retry_budget_left{peer="payments"}`, 8},
	} {
		if got := gauge(t, e, c.metric); got != c.want {
			t.Errorf("%s = %v, want %v", c.metric, got, c.want)
		}
	}

	rec := httptest.NewRecorder()
	e.table.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/admin/resilience", nil))
	var body struct {
		Dependencies []DependencyState `json:"dependencies"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
	}
	if len(body.Dependencies) != 2 || body.Dependencies[0].Peer != "payments" || body.Dependencies[1].Peer != "pricing" {
		t.Fatalf("dependencies: %s", rec.Body)
	}
	pay := body.Dependencies[0]
	if pay.Breaker.State != "open" || pay.Breaker.RemainingOpenMS <= 0 || pay.Bulkhead.Limit != 7 ||
		pay.RetryBudget.Left != 8 || pay.RetryBudget.Allowed != 10 || pay.Policy.TimeoutMS != 5000 {
		t.Fatalf("payments: %s", rec.Body)
	}
	rec = httptest.NewRecorder()
	e.table.AdminHandler().ServeHTTP(rec, httptest.NewRequest("POST", "/admin/resilience", nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" ||
		rec.Header().Get("Content-Type") != "application/problem+json" || !strings.Contains(rec.Body.String(), `"code":"method_not_allowed"`) {
		t.Fatalf("POST: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
}

// gauge reads one series from the env's registry, by its text form.
func gauge(t *testing.T, e *env, series string) float64 {
	t.Helper()
	name, labels, _ := strings.Cut(series, "{")
	labels = strings.TrimSuffix(labels, "}")
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
			}
			if strings.Join(ls, ",") != labels {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}
