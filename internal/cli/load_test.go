package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rideshare-platform/rideshare/internal/load"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// ridesStub is the few public routes a load rider uses, each ride completed
// on its first read. It records the passwords riders log in with.
type ridesStub struct {
	srv       *httptest.Server
	mu        sync.Mutex
	passwords map[string]bool
	rides     int
}

func newRidesStub(t *testing.T) *ridesStub {
	t.Helper()
	s := &ridesStub{passwords: map[string]bool{}}
	js := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("POST /v1/accounts", func(w http.ResponseWriter, r *http.Request) { js(w, 201, map[string]string{}) })
	mux.HandleFunc("POST /oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.passwords[r.PostFormValue("password")] = true
		s.mu.Unlock()
		js(w, 200, map[string]string{"access_token": "t"})
	})
	mux.HandleFunc("POST /v1/fares/estimate", func(w http.ResponseWriter, r *http.Request) { js(w, 200, map[string]string{"quote_id": "q"}) })
	mux.HandleFunc("POST /v1/rides", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.rides++
		s.mu.Unlock()
		js(w, 202, map[string]string{"id": "r-" + r.Header.Get("Idempotency-Key"), "status": "requested"})
	})
	mux.HandleFunc("GET /v1/rides/{id}", func(w http.ResponseWriter, r *http.Request) {
		js(w, 200, map[string]string{"id": r.PathValue("id"), "status": "completed"})
	})
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

func loadEnv(stdout, stderr *bytes.Buffer) Env {
	return Env{Getenv: func(string) string { return "" }, Stdout: stdout, Stderr: stderr}
}

// Against the local platform the command needs no flags but the size of
// the run: the gateway and the accounts' password come from platform.json.
func TestLoadLocalPlatform(t *testing.T) {
	stub := newRidesStub(t)
	dir := t.TempDir()
	if err := writeState(dir, State{GatewayURL: stub.srv.URL, FleetPassword: "fleet-pw-1"}); err != nil {
		t.Fatal(err)
	}
	jsonFile := filepath.Join(t.TempDir(), "report.json")
	var stdout, stderr bytes.Buffer
	err := runLoad(context.Background(), loadEnv(&stdout, &stderr),
		[]string{"--data", dir, "--riders", "4", "--drivers", "0", "--duration", "1s", "--rate", "4", "--seed", "5", "--json", jsonFile})
	if err != nil {
		t.Fatalf("load: %v\n%s", err, stderr.String())
	}
	stub.mu.Lock()
	passwords, rides := stub.passwords, stub.rides
	stub.mu.Unlock()
	if len(passwords) != 1 || !passwords["fleet-pw-1"] {
		t.Errorf("riders logged in with %v, want the platform's fleet password", passwords)
	}
	for _, s := range []string{"4 riders, 0 drivers, 4.00 rides/s", "seed 5", "completed 4", "POST /v1/rides", "GET /v1/rides/{id}"} {
		if !strings.Contains(stdout.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, stdout.String())
		}
	}
	b, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var rep load.Report
	if err := json.Unmarshal(b, &rep); err != nil || rep.Rides.Terminal[load.StatusCompleted] != 4 || rides != 4 {
		t.Errorf("JSON report (%v): %+v; the stub saw %d rides, want 4 completed", err, rep.Rides, rides)
	}
}

// With --json - the JSON report is all of stdout, and the text goes to
// stderr; a remote gateway without --password gets fresh accounts.
func TestLoadJSONToStdout(t *testing.T) {
	stub := newRidesStub(t)
	var stdout, stderr bytes.Buffer
	err := runLoad(context.Background(), loadEnv(&stdout, &stderr),
		[]string{"--gateway", stub.srv.URL, "--riders", "2", "--drivers", "0", "--duration", "500ms", "--rate", "4", "--json", "-"})
	if err != nil {
		t.Fatalf("load: %v\n%s", err, stderr.String())
	}
	var rep load.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, stdout.String())
	}
	if rep.Rides.Offered != 2 || !strings.Contains(stderr.String(), "latency by route") || !strings.Contains(stderr.String(), "fresh accounts") {
		t.Errorf("offered %d; stderr:\n%s", rep.Rides.Offered, stderr.String())
	}
}

func TestLoadUsageAndFailures(t *testing.T) {
	const closed = testenv.NoListener
	for _, tc := range []struct {
		name    string
		args    []string
		want    error  // errUsage, flag.ErrHelp, or nil for any other error
		wantOut string // in stdout+stderr
	}{
		{"help", []string{"--help"}, flag.ErrHelp, "Usage: rideshare load"},
		{"unknown flag", []string{"--nope"}, errUsage, "flag provided but not defined"},
		{"argument", []string{"now"}, errUsage, `unexpected argument "now"`},
		{"no riders", []string{"--riders", "0"}, errUsage, "--riders"},
		{"negative drivers", []string{"--drivers", "-1"}, errUsage, "--drivers"},
		{"zero rate", []string{"--rate", "0"}, errUsage, "--rate"},
		{"zero duration", []string{"--duration", "0s"}, errUsage, "--duration"},
		{"negative drain", []string{"--drain", "-1s"}, errUsage, "--drain"},
		{"zero time scale", []string{"--time-scale", "0"}, errUsage, "--time-scale"},
		{"no platform", []string{"--data", t.TempDir()}, nil, ""},
		{"unreachable", []string{"--gateway", closed, "--password", "x"}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runLoad(context.Background(), loadEnv(&stdout, &stderr), tc.args)
			switch {
			case err == nil:
				t.Fatal("runLoad succeeded")
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Errorf("error %v, want %v", err, tc.want)
			case tc.want == nil && (errors.Is(err, errUsage) || errors.Is(err, flag.ErrHelp)):
				t.Errorf("error %v, want a failure that is not a usage error", err)
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, tc.wantOut) {
				t.Errorf("output lacks %q:\n%s", tc.wantOut, out)
			}
			if tc.name == "no platform" && !strings.Contains(err.Error(), "not running") {
				t.Errorf("error %v, want it to say the platform is not running", err)
			}
			if tc.name == "unreachable" && !errors.Is(err, load.ErrUnreachable) {
				t.Errorf("error %v, want load.ErrUnreachable", err)
			}
		})
	}
}
