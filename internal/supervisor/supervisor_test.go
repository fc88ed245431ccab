package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// childEnv makes the test binary act as a child process instead of running
// the tests, so the tests supervise real processes without building any.
const childEnv = "SUPERVISOR_TEST_CHILD"

func TestMain(m *testing.M) {
	switch mode := os.Getenv(childEnv); mode {
	case "":
		os.Exit(m.Run())
	case "serve":
		os.Exit(serveChild())
	case "supervise":
		os.Exit(superviseChild())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", childEnv, mode)
		os.Exit(2)
	}
}

// serveChild plays a service: it serves HTTP on the inherited fd 3 and is
// configured by CHILD_* variables to misbehave in the ways under test.
func serveChild() int {
	name := os.Getenv("CHILD_NAME")
	trace(name, "start")
	if os.Getenv(SupervisedEnv) != "1" {
		fmt.Println("not supervised")
		return 4
	}
	if fi, err := os.Stdin.Stat(); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		fmt.Println("stdin is not a pipe")
		return 5
	}
	// Ordering check from the child's side: what it depends on must
	// already be ready when it starts.
	for _, url := range strings.FieldsFunc(os.Getenv("CHILD_REQUIRE"), func(r rune) bool { return r == ',' }) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			fmt.Println("dependency not ready:", url, err)
			return 2
		}
	}
	if os.Getenv("CHILD_EXIT_AFTER") == "0" {
		fmt.Println("boom: giving up")
		return 3
	}
	if d, err := time.ParseDuration(os.Getenv("CHILD_EXIT_AFTER")); err == nil {
		time.AfterFunc(d, func() {
			fmt.Println("boom: giving up")
			os.Exit(3)
		})
	}
	if os.Getenv("CHILD_IGNORE_TERM") != "" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		go func() {
			<-term
			trace(name, "term")
			os.Exit(0)
		}()
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		trace(name, "stdin-eof")
		fmt.Println("stdin closed, exiting")
		os.Exit(0)
	}()

	delay, _ := time.ParseDuration(os.Getenv("CHILD_READY_DELAY"))
	readyAt := time.Now().Add(delay)
	never := os.Getenv("CHILD_NEVER_READY") != ""
	// A child that is slow to be ready turns away its first probe however
	// late that probe comes: a child held off the CPU past its delay must
	// still be seen warming up.
	var probed atomic.Bool
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Println("fd 3:", err)
		return 6
	}
	fmt.Println("listening on", ln.Addr())
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if never || time.Now().Before(readyAt) || (delay > 0 && !probed.Swap(true)) {
			fmt.Println("warming up")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("/pid", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getpid())
	})
	if os.Getenv("CHILD_OWN_SOCKET") != "" {
		// fd 3 is shared with siblings; fd 4 is this child's own.
		own, err := net.FileListener(os.NewFile(4, "own listener"))
		if err != nil {
			fmt.Println("fd 4:", err)
			return 6
		}
		go func() { _ = http.Serve(own, mux) }()
	}
	_ = http.Serve(ln, mux)
	return 1
}

// trace appends "NAME EVENT PID" to CHILD_TRACE, so a test can see the
// order of events across processes. O_APPEND keeps lines whole.
func trace(name, event string) {
	path := os.Getenv("CHILD_TRACE")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %s %d\n", name, event, os.Getpid())
}

// superviseChild is a supervisor in a process of its own, so a test can
// SIGKILL it and watch what its children do.
func superviseChild() int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var specs []Spec
	for i, name := range []string{"a", "b"} {
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		specs = append(specs, Spec{
			Name:     name,
			Path:     exe,
			Env:      []string{childEnv + "=serve", "CHILD_NAME=" + name, "CHILD_TRACE=" + os.Getenv("CHILD_TRACE"), quickRaceExit()},
			Listener: ln,
			ReadyURL: "http://" + ln.Addr().String() + "/readyz",
			Group:    i,
		})
	}
	s := New(specs, Options{Events: os.Stderr})
	if err := s.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, st := range s.Status() {
		fmt.Println("pid", st.PID)
	}
	fmt.Println("ready")
	// The test kills this process; EOF here means the test itself went
	// away, and then the polite way out is the right one.
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = s.Stop()
	return 0
}

func TestStartsGroupsInOrderAndStopsInReverse(t *testing.T) {
	t.Parallel()
	tracePath := filepath.Join(t.TempDir(), "trace")
	lb, li, lg := listen(t), listen(t), listen(t)
	logDir := t.TempDir()
	// Spec order is deliberately not group order.
	s, events := newSupervisor(t, []Spec{
		childSpec(t, "gateway", 2, lg, "CHILD_TRACE="+tracePath, "CHILD_REQUIRE="+readyURL(lb)+","+readyURL(li)),
		childSpec(t, "broker", 0, lb, "CHILD_TRACE="+tracePath, "CHILD_READY_DELAY=300ms"),
		childSpec(t, "identity", 1, li, "CHILD_TRACE="+tracePath, "CHILD_REQUIRE="+readyURL(lb)),
	}, Options{LogDir: logDir})

	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, st := range s.Status() {
		if !st.Ready || st.PID == 0 || st.Restarts != 0 || st.LastExit != "" {
			t.Errorf("after Start: %+v, want ready, running, never restarted", st)
		}
		pids = append(pids, st.PID)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}

	want := []string{
		"broker start", "identity start", "gateway start",
		"gateway term", "identity term", "broker term",
	}
	if got := traceEvents(t, tracePath); !slices.Equal(got, want) {
		t.Errorf("trace:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after Stop (kill 0: %v)", pid, err)
		}
	}
	select {
	case <-s.Done():
	default:
		t.Error("Done not closed after Stop")
	}
	if _, err := lb.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("listener after Stop: Accept = %v, want net.ErrClosed", err)
	}
	log, err := os.ReadFile(filepath.Join(logDir, "broker.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"listening on " + lb.Addr().String(), "supervisor: broker: started pid", "warming up"} {
		if !bytes.Contains(log, []byte(w)) {
			t.Errorf("broker.log lacks %q:\n%s", w, log)
		}
	}
	for _, w := range []string{"broker ready", "gateway stopped"} {
		if !strings.Contains(events.String(), w) {
			t.Errorf("events lack %q:\n%s", w, events)
		}
	}
}

// Not parallel, so the goroutine count at the end means something.
func TestKillRestartsOnSamePort(t *testing.T) {
	baseGoroutines := runtime.NumGoroutine()
	ln := listen(t)
	base := "http://" + ln.Addr().String()
	// A fixed, long-ish backoff makes the down time (half of it at least,
	// with jitter) wide enough for the test to see it and connect during
	// it, even when the test is held off the CPU for a while.
	s, events := newSupervisor(t, []Spec{childSpec(t, "identity", 0, ln)},
		Options{BackoffMin: time.Second, BackoffMax: time.Second})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	pid1 := status(t, s, "identity").PID
	if got := get(t, base+"/pid"); got != strconv.Itoa(pid1) {
		t.Fatalf("GET /pid = %s, want %d", got, pid1)
	}

	if err := s.Kill("identity", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "identity seen down after SIGKILL", func() bool {
		st := status(t, s, "identity")
		return st.PID == 0 && st.LastExit == "signal: killed"
	})
	// Nothing is accepting now; the connection waits in the backlog of the
	// listener the supervisor kept open, and the next incarnation serves it.
	got := get(t, base+"/pid")
	// The new child can answer before the supervisor's goroutine, back
	// from starting it, has recorded its pid.
	var pid2 int
	eventually(t, 5*time.Second, "the supervisor to record the pid that answered", func() bool {
		pid2 = status(t, s, "identity").PID
		return got == strconv.Itoa(pid2)
	}, func() string {
		return fmt.Sprintf("GET /pid during restart = %s; pids before %d, after %d", got, pid1, pid2)
	})
	if pid2 == pid1 || pid2 == 0 {
		t.Errorf("GET /pid during restart = %s; pids before %d, after %d", got, pid1, pid2)
	}
	eventually(t, 5*time.Second, "identity ready again", func() bool { return status(t, s, "identity").Ready })
	if st := status(t, s, "identity"); st.Restarts != 1 {
		t.Errorf("Restarts = %d, want 1", st.Restarts)
	}
	if n := socketFDs(t, ln); n != 1 && n != -1 {
		t.Errorf("%d fds refer to the listening socket after a restart, want 1: the dups passed to children leak", n)
	}
	if err := syscall.Kill(pid1, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("killed pid %d still exists: %v", pid1, err)
	}
	ev := events.String()
	for _, w := range []string{"identity exited: signal: killed", "restarting in", "| listening on " + ln.Addr().String(), "identity restarted (pid"} {
		if !strings.Contains(ev, w) {
			t.Errorf("events lack %q:\n%s", w, ev)
		}
	}

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill("identity", syscall.SIGKILL); err == nil {
		t.Error("Kill after Stop succeeded")
	}
	eventually(t, 5*time.Second, "goroutines back to baseline", func() bool {
		return runtime.NumGoroutine() <= baseGoroutines
	}, func() string {
		buf := make([]byte, 1<<20)
		return fmt.Sprintf("%d goroutines, was %d:\n%s", runtime.NumGoroutine(), baseGoroutines, buf[:runtime.Stack(buf, true)])
	})
}

func TestRestartsChildThatCrashes(t *testing.T) {
	t.Parallel()
	s, events := newSupervisor(t, []Spec{childSpec(t, "crasher", 0, listen(t), "CHILD_EXIT_AFTER=300ms")},
		Options{BackoffMin: 50 * time.Millisecond})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "crasher restarted and ready", func() bool {
		st := status(t, s, "crasher")
		return st.Restarts >= 1 && st.Ready && st.LastExit == "exit status 3"
	})
	ev := events.String()
	for _, w := range []string{"crasher exited: exit status 3", "| boom: giving up", "restarting in"} {
		if !strings.Contains(ev, w) {
			t.Errorf("events lack %q:\n%s", w, ev)
		}
	}
}

func TestStopKillsChildIgnoringSIGTERM(t *testing.T) {
	t.Parallel()
	// Long enough that the polite child, which exits on SIGTERM, does so
	// within it even when the machine is busy.
	const stopTimeout = 2 * time.Second
	s, events := newSupervisor(t, []Spec{
		childSpec(t, "stubborn", 1, listen(t), "CHILD_IGNORE_TERM=1"),
		childSpec(t, "polite", 0, listen(t)),
	}, Options{StopTimeout: stopTimeout})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	stubborn, polite := status(t, s, "stubborn").PID, status(t, s, "polite").PID

	began := time.Now()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < stopTimeout {
		t.Errorf("Stop took %v, less than StopTimeout: was SIGTERM ignored at all?", took)
	}
	for _, pid := range []int{stubborn, polite} {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after Stop: %v", pid, err)
		}
	}
	ev := events.String()
	if !strings.Contains(ev, fmt.Sprintf("stubborn did not exit within %v of SIGTERM; sending SIGKILL", stopTimeout)) {
		t.Errorf("events lack the SIGKILL escalation:\n%s", ev)
	}
	if strings.Contains(ev, "polite did not exit") {
		t.Errorf("polite child was SIGKILLed:\n%s", ev)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStartFailsWhenChildNeverReady(t *testing.T) {
	t.Parallel()
	tracePath := filepath.Join(t.TempDir(), "trace")
	s, _ := newSupervisor(t, []Spec{
		childSpec(t, "stuck", 0, listen(t), "CHILD_NEVER_READY=1", "CHILD_TRACE="+tracePath),
		childSpec(t, "later", 1, listen(t), "CHILD_TRACE="+tracePath),
	}, Options{ReadyTimeout: 3 * time.Second}) // room for a child slow to start to answer a probe or two

	err := s.Start(t.Context())
	var se *StartError
	if !errors.As(err, &se) {
		t.Fatalf("Start = %v, want a *StartError", err)
	}
	if se.Name != "stuck" || !slices.Contains(se.LastLines, "warming up") {
		t.Errorf("StartError = %+v, want stuck with its output", se)
	}
	for _, w := range []string{"stuck not ready after 3s", "503 Service Unavailable", "| warming up"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	// Start cleaned up after itself: the stuck child was stopped and the
	// next group never started.
	lines := traceLines(t, tracePath)
	if len(lines) != 2 || lines[0].event != "stuck start" || lines[1].event != "stuck term" {
		t.Fatalf("trace = %v, want stuck's start and term only", lines)
	}
	if err := syscall.Kill(lines[0].pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("stuck pid %d still exists: %v", lines[0].pid, err)
	}
	select {
	case <-s.Done():
	default:
		t.Error("Done not closed after a failed Start")
	}
}

func TestStartHonoursContext(t *testing.T) {
	t.Parallel()
	s, _ := newSupervisor(t, []Spec{childSpec(t, "stuck", 0, listen(t), "CHILD_NEVER_READY=1")},
		Options{ReadyTimeout: 30 * time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	err := s.Start(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting for stuck") {
		t.Fatalf("Start = %v, want the deadline while waiting for stuck", err)
	}
	if st := status(t, s, "stuck"); st.PID != 0 {
		t.Errorf("stuck still running after a cancelled Start: %+v", st)
	}
}

func TestStartFailsFastWhenChildKeepsCrashing(t *testing.T) {
	t.Parallel()
	const readyTimeout = 30 * time.Second
	s, _ := newSupervisor(t, []Spec{childSpec(t, "broken", 0, listen(t), "CHILD_EXIT_AFTER=0")},
		Options{ReadyTimeout: readyTimeout})
	began := time.Now()
	err := s.Start(t.Context())
	if took := time.Since(began); took >= readyTimeout {
		t.Errorf("Start took %v: it waited out ReadyTimeout instead of giving up on the crash loop", took)
	}
	var se *StartError
	if !errors.As(err, &se) || se.Name != "broken" {
		t.Fatalf("Start = %v, want a *StartError for broken", err)
	}
	for _, w := range []string{"broken exited 3 times before becoming ready (last: exit status 3)", "| boom: giving up"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

func TestChildrenExitWhenSupervisorProcessDies(t *testing.T) {
	t.Parallel()
	tracePath := filepath.Join(t.TempDir(), "trace")
	var stderr testenv.Buffer
	cmd := execSelf(t, childEnv+"=supervise", "CHILD_TRACE="+tracePath)
	cmd.Stderr = &stderr
	// Held open, so the helper does not take its polite exit.
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("supervisor process output:\n%s", stderr.String())
		}
	})
	var pids []int
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "ready" {
		if s, ok := strings.CutPrefix(sc.Text(), "pid "); ok {
			pid, _ := strconv.Atoi(s)
			pids = append(pids, pid)
		}
	}
	if len(pids) != 2 {
		t.Fatalf("supervisor process reported pids %v, want 2", pids)
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	for _, pid := range pids {
		eventually(t, 10*time.Second, fmt.Sprintf("orphaned child %d to exit", pid), func() bool { return processGone(pid) })
	}
	var eofs []string
	for _, l := range traceLines(t, tracePath) {
		if strings.HasSuffix(l.event, "stdin-eof") {
			eofs = append(eofs, l.event)
		}
	}
	slices.Sort(eofs)
	if !slices.Equal(eofs, []string{"a stdin-eof", "b stdin-eof"}) {
		t.Errorf("children that saw stdin EOF: %v, want a and b", eofs)
	}
}

func TestStopBeforeStart(t *testing.T) {
	t.Parallel()
	ln := listen(t)
	s := New([]Spec{childSpec(t, "idle", 0, ln)}, Options{})
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("listener after Stop: Accept = %v, want net.ErrClosed", err)
	}
	if err := s.Start(t.Context()); !errors.Is(err, ErrStopped) {
		t.Errorf("Start after Stop = %v, want ErrStopped", err)
	}
	if err := s.Kill("nobody", syscall.SIGKILL); err == nil {
		t.Error("Kill of an unknown name succeeded")
	}
	if err := s.Kill("idle", syscall.SIGKILL); err == nil {
		t.Error("Kill of a process that never ran succeeded")
	}
}

func TestStartRejectsBadSpecs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		specs []Spec
		want  string
	}{
		{"duplicate", []Spec{{Name: "a", Path: "x"}, {Name: "a", Path: "x"}}, `duplicate name "a"`},
		{"path in name", []Spec{{Name: "../a", Path: "x"}}, `invalid name "../a"`},
		{"no path", []Spec{{Name: "a"}}, "a: empty path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(tc.specs, Options{})
			err := s.Start(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestJitter(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		r    float64
		want time.Duration
	}{
		{100 * time.Millisecond, 0, 50 * time.Millisecond},
		{100 * time.Millisecond, 0.5, 75 * time.Millisecond},
		{100 * time.Millisecond, 0.999999, 99999950 * time.Nanosecond},
		{time.Nanosecond, 0.5, 0},
	} {
		if got := jitter(tc.d, tc.r); got != tc.want {
			t.Errorf("jitter(%v, %v) = %v, want %v", tc.d, tc.r, got, tc.want)
		}
	}
}

func TestLogTail(t *testing.T) {
	var tail logTail
	for i := range tailLines + 5 {
		fmt.Fprintf(&tail, "line %d\r\n", i)
	}
	_, _ = tail.Write([]byte("unfinished "))
	_, _ = tail.Write([]byte("and long: " + strings.Repeat("x", 2*maxLineBytes)))
	got := tail.lines()
	if len(got) != tailLines+1 || got[0] != "line 5" || got[tailLines-1] != fmt.Sprintf("line %d", tailLines+4) {
		t.Fatalf("lines = %q", got)
	}
	if last := got[tailLines]; !strings.HasPrefix(last, "unfinished and long: x") || len(last) != maxLineBytes {
		t.Errorf("partial line = %d bytes starting %.30q", len(last), last)
	}

	// A mark ends the partial line, so the next incarnation starts afresh.
	tail.mark("exited")
	_, _ = tail.Write([]byte("next\n"))
	got = tail.lines()
	if len(got) != tailLines || !strings.HasPrefix(got[tailLines-2], "unfinished") || got[tailLines-1] != "next" {
		t.Errorf("after mark: lines end %q", got[tailLines-2:])
	}
}

// Helpers.

func newSupervisor(t *testing.T, specs []Spec, opts Options) (*Supervisor, *testenv.Buffer) {
	t.Helper()
	events := &testenv.Buffer{}
	opts.Events = events
	if opts.LogDir == "" {
		opts.LogDir = t.TempDir()
	}
	s := New(specs, opts)
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if t.Failed() {
			t.Logf("supervisor events:\n%s", events)
		}
	})
	return s, events
}

func childSpec(t *testing.T, name string, group int, ln *net.TCPListener, env ...string) Spec {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Spec{
		Name:     name,
		Path:     exe,
		Env:      append([]string{childEnv + "=serve", "CHILD_NAME=" + name, quickRaceExit()}, env...),
		Listener: ln,
		ReadyURL: readyURL(ln),
		Group:    group,
	}
}

func execSelf(t *testing.T, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), append(env, quickRaceExit())...)
	return cmd
}

// quickRaceExit stops a child built with -race from sleeping a second in
// os.Exit (the race runtime's default, to let reports flush), which would
// look like a child ignoring SIGTERM.
func quickRaceExit() string {
	return strings.TrimSpace("GORACE=" + os.Getenv("GORACE") + " atexit_sleep_ms=0")
}

func listen(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func readyURL(ln *net.TCPListener) string {
	return "http://" + ln.Addr().String() + "/readyz"
}

func status(t *testing.T, s *Supervisor, name string) ProcStatus {
	t.Helper()
	for _, st := range s.Status() {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no status for %s", name)
	return ProcStatus{}
}

// testClient keeps no idle connections, so no goroutines outlive a test.
var testClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := testClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(body)
}

// eventually polls cond until it holds or timeout passes; explain, if
// given, adds detail to the failure.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool, explain ...func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("gave up after %v waiting for %s", timeout, what)
			for _, e := range explain {
				msg += "\n" + e()
			}
			t.Fatal(msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// processGone reports whether pid has exited. An orphan whose new parent
// has not reaped it yet is a zombie: exited, though kill(pid, 0) succeeds.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist) && runtime.GOOS == "linux"
	}
	// The state follows the parenthesized command name, which may itself
	// contain parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X')
}

// socketFDs counts this process's file descriptors that refer to ln's
// socket, or returns -1 where /proc is missing.
func socketFDs(t *testing.T, ln *net.TCPListener) int {
	t.Helper()
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var target string
	if err := rc.Control(func(fd uintptr) {
		target, err = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	}); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		return -1
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == target {
			n++
		}
	}
	return n
}

type traceLine struct {
	event string // "NAME EVENT"
	pid   int
}

func traceLines(t *testing.T, path string) []traceLine {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []traceLine
	for l := range strings.Lines(string(data)) {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("bad trace line %q", l)
		}
		pid, _ := strconv.Atoi(f[2])
		out = append(out, traceLine{event: f[0] + " " + f[1], pid: pid})
	}
	return out
}

func traceEvents(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	for _, l := range traceLines(t, path) {
		out = append(out, l.event)
	}
	return out
}

// A replica started with Spec.Listen gets a new socket at every start, and
// its old address refuses connections once it died: callers must notice
// and go elsewhere, not wait in a backlog.
func TestListenGivesEachIncarnationItsOwnSocket(t *testing.T) {
	spec := childSpec(t, "dispatch-2", 0, listen(t))
	spec.Listener = nil
	spec.Listen = func() (*net.TCPListener, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		return l.(*net.TCPListener), nil
	}
	spec.ReadyURL = "/readyz"
	s, _ := newSupervisor(t, []Spec{spec}, Options{BackoffMin: 300 * time.Millisecond, BackoffMax: 300 * time.Millisecond})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	first := status(t, s, "dispatch-2")
	if first.Addr == "" || !first.Ready {
		t.Fatalf("status after start = %+v, want an address and ready", first)
	}
	if got := get(t, "http://"+first.Addr+"/pid"); got != strconv.Itoa(first.PID) {
		t.Fatalf("GET /pid = %s, want %d", got, first.PID)
	}
	if err := s.Kill("dispatch-2", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "killed replica's address refuses connections", func() bool {
		c, err := net.DialTimeout("tcp", first.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	eventually(t, 15*time.Second, "replica ready again on a new address", func() bool {
		st := status(t, s, "dispatch-2")
		return st.Ready && st.Addr != "" && st.Addr != first.Addr
	})
	second := status(t, s, "dispatch-2")
	if got := get(t, "http://"+second.Addr+"/pid"); got != strconv.Itoa(second.PID) {
		t.Fatalf("GET /pid on the new address = %s, want %d", got, second.PID)
	}
}

// Replicas that accept on one shared socket (Listener) and each on its own
// (Listen) are asked for readiness on their own: through the shared one a
// sibling that is already ready could answer for one that is not.
func TestSharedSocketReplicasProbedOnTheirOwn(t *testing.T) {
	shared := listen(t)
	own := func() (*net.TCPListener, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		return l.(*net.TCPListener), nil
	}
	fast := childSpec(t, "gateway-1", 0, shared, "CHILD_OWN_SOCKET=1")
	slow := childSpec(t, "gateway-2", 0, shared, "CHILD_OWN_SOCKET=1", "CHILD_READY_DELAY=1500ms")
	for _, spec := range []*Spec{&fast, &slow} {
		spec.Listen, spec.ReadyURL = own, "/readyz"
	}
	s, _ := newSupervisor(t, []Spec{fast, slow}, Options{})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"gateway-1", "gateway-2"} {
		st := status(t, s, name)
		if st.Addr == "" || st.Addr == shared.Addr().String() {
			t.Fatalf("%s: address %q, want its own beside the shared %s", name, st.Addr, shared.Addr())
		}
		res, err := http.Get("http://" + st.Addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s answers %d on its own address once Start returned: a sibling answered its probe", name, res.StatusCode)
		}
		if got := get(t, "http://"+st.Addr+"/pid"); got != strconv.Itoa(st.PID) {
			t.Errorf("GET /pid at %s's address = %s, want %d", name, got, st.PID)
		}
	}
	pids := []string{strconv.Itoa(status(t, s, "gateway-1").PID), strconv.Itoa(status(t, s, "gateway-2").PID)}
	if got := get(t, "http://"+shared.Addr().String()+"/pid"); !slices.Contains(pids, got) {
		t.Errorf("GET /pid on the shared socket = %s, want one of %v", got, pids)
	}
}
