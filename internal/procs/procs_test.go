package procs

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// childEnv makes the test binary a stand-in child: it waits for its stdin
// to close, as a supervised service does.
const childEnv = "PROCS_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestNameOf(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"/bin/rideshare", "serve", "rides", "--listen", "fd:3"}, "rides"},
		{[]string{"/bin/rideshare", "serve", "dispatch", "--listen", "fd:3", "--instance", "dispatch-2"}, "dispatch-2"},
		{[]string{"/bin/rideshare", "serve", "payments", "--instance=payments-3"}, "payments-3"},
		{[]string{"/bin/rideshare", "serve", "broker", "--nats-listen", "127.0.0.1:4222"}, "broker"},
		{[]string{"/bin/rideshare", "up"}, "?"},
		{[]string{"sleep"}, "?"},
		{[]string{"/bin/rideshare", "serve", "dispatch", "--instance"}, "dispatch"},
	} {
		cmdline := []byte{}
		for _, a := range c.args {
			cmdline = append(append(cmdline, a...), 0)
		}
		if got := nameOf(cmdline); got != c.want {
			t.Errorf("nameOf(%q) = %q, want %q", c.args, got, c.want)
		}
	}
}

// TestChildrenParsesStat reads a made-up process table: a command name
// with spaces and parentheses must not shift the fields, and a zombie or
// another parent's child is not listed.
func TestChildrenParsesStat(t *testing.T) {
	dir := t.TempDir()
	write := func(pid int, stat string, args ...string) {
		d := filepath.Join(dir, strconv.Itoa(pid))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		var cmd []byte
		for _, a := range args {
			cmd = append(append(cmd, a...), 0)
		}
		if err := os.WriteFile(filepath.Join(d, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "cmdline"), cmd, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(11, "11 (rideshare) S 10 11 11 0", "rideshare", "serve", "rides")
	write(12, "12 (odd (name) x) R 10 12 12 0", "rideshare", "serve", "dispatch", "--instance", "dispatch-2")
	write(13, "13 (rideshare) Z 10 13 13 0", "rideshare", "serve", "users")
	write(14, "14 (rideshare) S 99 14 14 0", "rideshare", "serve", "pricing")
	write(15, "15 (sh) S 10 15 15 0", "sh", "-c", "true")
	if err := os.MkdirAll(filepath.Join(dir, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := root
	root = dir
	t.Cleanup(func() { root = old })

	got, err := Children(10)
	if err != nil {
		t.Fatal(err)
	}
	want := []Proc{{11, "rides"}, {12, "dispatch-2"}, {15, "?"}}
	if len(got) != len(want) {
		t.Fatalf("Children(10) = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Children(10) = %v, want %v", got, want)
		}
	}
	if pid, err := Find(10, "dispatch-2"); err != nil || pid != 12 {
		t.Errorf("Find(10, dispatch-2) = %d, %v; want 12", pid, err)
	}
	if _, err := Find(10, "users"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Find of a zombie: %v, want ErrNotFound", err)
	}

	root = filepath.Join(dir, "missing")
	if _, err := Children(10); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Children without /proc: %v, want ErrUnsupported", err)
	}
}

// TestSignalRealChild starts a stand-in `serve` child, stops and continues
// it, then kills it, as the drills do to up's children.
func TestSignalRealChild(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	cmd := exec.Command(os.Args[0], "serve", "dispatch", "--instance", "dispatch-7")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	me := os.Getpid()

	pid, err := Signal(me, "dispatch-7", syscall.SIGSTOP)
	if err != nil || pid != cmd.Process.Pid {
		t.Fatalf("Signal SIGSTOP = %d, %v; want pid %d", pid, err, cmd.Process.Pid)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { _, st, _ := stat(pid); return st == "T" }, "the child never stopped")
	if _, err := Signal(me, "dispatch-7", syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { _, st, _ := stat(pid); return st != "T" }, "the child never continued")
	if !Alive(pid) {
		t.Fatal("the child is not alive after SIGCONT")
	}
	if _, err := Signal(me, "dispatch-7", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait() // reaped: no zombie left
	if Alive(pid) {
		t.Error("the child is alive after SIGKILL")
	}
	if _, err := Find(me, "dispatch-7"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Find after the kill: %v, want ErrNotFound", err)
	}
}

func TestServiceOfAndInstances(t *testing.T) {
	for name, want := range map[string]string{
		"dispatch-2": "dispatch", "rides": "rides", "broker": "broker", "dispatch-": "dispatch-", "x-y": "x-y", "a-b-10": "a-b",
	} {
		if got := ServiceOf(name); got != want {
			t.Errorf("ServiceOf(%q) = %q, want %q", name, got, want)
		}
	}
	names := []string{"payments-2", "rides", "payments-1", "pricing", "payments-api"}
	if got := Instances(names, "payments"); !slices.Equal(got, []string{"payments-1", "payments-2"}) {
		t.Errorf("replicas of payments: %v", got)
	}
	if got := Instances(names, "rides"); !slices.Equal(got, []string{"rides"}) {
		t.Errorf("instances of rides: %v", got)
	}
	if got := Instances(names, "users"); len(got) != 0 {
		t.Errorf("instances of users: %v", got)
	}
}
