package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/cli"
	"github.com/rideshare-platform/rideshare/internal/drill"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestDrills runs three drills end to end against the whole platform, as
// an operator types them: pricing down (a fallback), the broker frozen
// (the outboxes hold the events, then drain) and a window of events
// published again (idempotent consumers, no double charge). Each must
// pass, with its findings, and leave its HTML report behind. Windows and
// trips are short to keep the test near a minute and a half; the
// thresholds are the drills' own.
func TestDrills(t *testing.T) {
	dir := t.TempDir()
	startPlatform(t, dir)
	out := t.TempDir()
	jsonFile, htmlDir := filepath.Join(out, "drills.json"), filepath.Join(out, "html")
	var stdout, stderr testenv.Buffer
	env := cli.Env{Getenv: os.Getenv, Stdout: &stdout, Stderr: &stderr}
	start := time.Now()
	err := cli.RunDrill(t.Context(), env, []string{
		"pricing-down", "broker-outage", "duplicate-delivery", "--data", dir,
		"--baseline", "3s", "--duration", "6s", "--recovery", "8s",
		"--riders", "12", "--drivers", "8", "--rate", "2", "--time-scale", "300",
		"--settle", "60s", "--json", jsonFile, "--html", htmlDir,
	})
	t.Logf("rideshare drill took %s:\n%s", time.Since(start).Round(time.Second), stdout.String())
	if err != nil {
		t.Fatalf("rideshare drill: %v\nprogress:\n%s", err, stderr.String())
	}

	b, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var results []drill.Result
	if err := json.Unmarshal(b, &results); err != nil {
		t.Fatalf("--json wrote something else than the results: %v\n%s", err, b)
	}
	if len(results) != 3 {
		t.Fatalf("%d results, want 3", len(results))
	}
	fault := regexp.MustCompile(`<rect class="fault" x="[0-9.]+" y="[0-9.]+" width="([0-9.]+)"`)
	for _, r := range results {
		if !r.Pass || len(r.Findings) < 4 || r.Check == nil || !r.Check.OK() {
			t.Errorf("%s: pass=%v, %d findings, error %q", r.Name, r.Pass, len(r.Findings), r.Error)
		}
		if got := r.FaultTo - r.FaultFrom; got < 6*time.Second || r.FaultFrom < 3*time.Second {
			t.Errorf("%s: fault window %s..%s, want 6s after 3s of baseline", r.Name, r.FaultFrom, r.FaultTo)
		}
		page, err := os.ReadFile(filepath.Join(htmlDir, r.Name+".html"))
		if err != nil {
			t.Errorf("%s: no HTML report: %v", r.Name, err)
			continue
		}
		if m := fault.FindSubmatch(page); m == nil || string(m[1]) == "0" || !strings.Contains(string(page), `class="p99"`) {
			t.Errorf("%s: the HTML report has no shaded fault window or no latency line", r.Name)
		}
	}
	if !strings.Contains(stdout.String(), "3 of 3 drills passed") {
		t.Errorf("no summary table in:\n%s", stdout.String())
	}
}
