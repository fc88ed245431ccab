package main

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestFaultCommand makes a service broken with `rideshare fault`, as an
// operator would, sees the public API feel it, and clears it again. The
// switch itself answers only to an admin token.
func TestFaultCommand(t *testing.T) {
	dir := t.TempDir()
	p := startPlatform(t, dir)
	rider := p.newRider("faulty@example.com")
	fault := func(args ...string) string {
		t.Helper()
		var out testenv.Buffer
		if code := run(t.Context(), append(append([]string{"fault"}, args...), "--data", dir), os.Getenv, nil, &out, &out); code != 0 {
			t.Fatalf("rideshare fault %v: exit %d\n%s", args, code, out.String())
		}
		return out.String()
	}

	if got := fault("users", "--error-rate", "1", "--for", "5m"); !strings.Contains(got, "users") {
		t.Fatalf("fault users said: %s", got)
	}
	// The gateway kept the profile it relayed at signup: it answers from
	// that copy, marked stale, so the outage shows without failing the rider.
	if r := rider.do("GET", "/v1/me", nil); r.status != http.StatusOK || r.header.Get("Warning") == "" {
		t.Fatalf("with users failing, GET /v1/me: %d %s, want the gateway's copy marked stale", r.status, r.body)
	}
	if got := fault("list"); !strings.Contains(got, "error") {
		t.Fatalf("fault list said: %s", got)
	}
	fault("clear")
	if r := rider.do("GET", "/v1/me", nil); r.status != http.StatusOK {
		t.Fatalf("after clear, GET /v1/me: %d %s", r.status, r.body)
	}

	for _, tok := range []string{"", rider.token} {
		req, _ := http.NewRequest("PUT", p.state.Services["users"]+"/admin/faults", strings.NewReader(`{"error_rate":1}`))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, err := p.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if want := map[bool]int{true: 401, false: 403}[tok == ""]; res.StatusCode != want {
			t.Errorf("PUT /admin/faults with a token: %v: %d, want %d", tok != "", res.StatusCode, want)
		}
	}
}
