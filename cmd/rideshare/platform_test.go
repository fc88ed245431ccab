package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/cli"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// childEnv marks a process as a child that `up` started from this test
// binary: it then behaves exactly as the rideshare binary would.
const childEnv = "RIDESHARE_TEST_AS_BINARY"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// runningPlatform is a running `rideshare up` in a test.
type runningPlatform struct {
	t      testing.TB
	dir    string
	state  cli.State
	stop   context.CancelFunc
	done   chan int
	out    *testenv.Buffer
	client *http.Client
}

// startPlatform runs `rideshare up` on a free port with its data in dir, as
// a user would, and waits until the gateway says every service is ready.
// extra are further flags for up, such as --set.
func startPlatform(t testing.TB, dir string, extra ...string) *runningPlatform {
	t.Helper()
	if testing.Short() {
		t.Skip("boots the whole platform; skipped with -short")
	}
	t.Setenv(childEnv, "1")
	// A race-enabled binary sleeps a second in os.Exit; children must not,
	// or every graceful stop looks like a hang.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	ctx, cancel := context.WithCancel(context.Background())
	p := &runningPlatform{t: t, dir: dir, stop: cancel, done: make(chan int, 1), out: &testenv.Buffer{},
		client: &http.Client{Timeout: 15 * time.Second}}
	start := time.Now()
	go func() {
		args := append([]string{"up", "--listen", "127.0.0.1:0", "--data", dir, "--fleet", "0"}, extra...)
		p.done <- run(ctx, args, os.Getenv, nil, p.out, p.out)
	}()
	t.Cleanup(func() { p.shutdown() })
	testenv.Eventually(t, 60*time.Second, func() bool {
		select {
		case code := <-p.done:
			p.done <- code
			t.Fatalf("up exited with %d before it was ready:\n%s", code, p.out.String())
		default:
		}
		s, err := cli.ReadState(dir)
		if err != nil || s.PID != os.Getpid() || s.StartedAt.Before(start) {
			return false
		}
		p.state = s
		return true
	}, "the platform did not become ready:\n%s", p.out)
	res, err := p.client.Get(p.state.GatewayURL + "/readyz")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("gateway /readyz after up reported ready: %v %v", res, err)
	}
	res.Body.Close()
	t.Logf("up: ready in %s", time.Since(start).Round(time.Millisecond))
	return p
}

// shutdown stops up as Ctrl-C would and checks it exits cleanly with no
// process left behind.
func (p *runningPlatform) shutdown() int {
	if p.stop == nil {
		return 0
	}
	p.stop()
	p.stop = nil
	var code int
	select {
	case code = <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Errorf("up did not stop within 30s:\n%s", p.out)
		return -1
	}
	if left := childPIDs(p.t); len(left) > 0 {
		p.t.Errorf("processes left after up stopped: %v", left)
	}
	return code
}

// childPIDs lists this test process's live child processes (up's children).
func childPIDs(t testing.TB) map[int]string {
	t.Helper()
	me := os.Getpid()
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state ppid ...
		rest := string(stat[bytes.LastIndexByte(stat, ')')+2:])
		f := strings.Fields(rest)
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == me {
			cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			args := strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
			name := "?"
			if len(args) > 2 && args[1] == "serve" {
				name = args[2]
				if i := slices.Index(args, "--instance"); i > 0 && i+1 < len(args) {
					name = args[i+1] // a replica: dispatch-2
				}
			}
			out[pid] = name
		}
	}
	return out
}

// pidOf is the pid of the running process of service name.
func (p *runningPlatform) pidOf(name string) int {
	for pid, n := range childPIDs(p.t) {
		if n == name {
			return pid
		}
	}
	return 0
}

// rssBytes sums the resident memory of up's children.
func (p *runningPlatform) rssBytes() int64 {
	var total int64
	for pid := range childPIDs(p.t) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

// response is an HTTP answer read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not JSON (%d): %s", r.status, r.body)
	}
	return m
}

// do sends a request to the gateway and fails the test if it cannot. body
// may be a string (sent as is), url.Values (a form) or anything else
// (JSON-encoded).
func (p *runningPlatform) do(method, path, token string, body any, header ...string) response {
	p.t.Helper()
	r, err := p.tryDo(method, path, token, body, header...)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// tryDo is do for callers that expect the platform to be briefly away.
func (p *runningPlatform) tryDo(method, path, token string, body any, header ...string) (response, error) {
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd, ct = strings.NewReader(b), "application/json"
	case url.Values:
		rd, ct = strings.NewReader(b.Encode()), "application/x-www-form-urlencoded"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return response{}, err
		}
		rd, ct = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequest(method, p.state.GatewayURL+path, rd)
	if err != nil {
		return response{}, err
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := p.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: b}, err
}

// signup creates an account and returns its id.
func (p *runningPlatform) signup(role, email, password string, vehicle map[string]string) string {
	p.t.Helper()
	body := map[string]any{"role": role, "name": "Test " + role, "email": email, "password": password}
	if vehicle != nil {
		body["vehicle"] = vehicle
	}
	r := p.do("POST", "/v1/accounts", "", body)
	if r.status != http.StatusCreated {
		p.t.Fatalf("signup %s: %d %s", email, r.status, r.body)
	}
	return r.json(p.t)["id"].(string)
}

// token logs in with the first-party password grant.
func (p *runningPlatform) token(email, password string) map[string]any {
	p.t.Helper()
	r := p.do("POST", "/oauth2/token", "", url.Values{
		"grant_type": {"password"}, "client_id": {"rideshare-cli"}, "username": {email}, "password": {password},
	})
	if r.status != http.StatusOK {
		p.t.Fatalf("password grant for %s: %d %s", email, r.status, r.body)
	}
	return r.json(p.t)
}
