// Package procs finds the processes `rideshare up` runs, by reading /proc,
// so that a drill or a test can signal one of them: SIGKILL a replica,
// SIGSTOP the broker and SIGCONT it again.
//
// `up` runs each service instance as a child `rideshare serve NAME`
// (a replica with `--instance NAME-i`) and the embedded broker as
// `rideshare serve broker`; a child is named by those arguments, so its
// name is what platform.json and the supervisor call it ("rides",
// "dispatch-2", "broker").
//
// Only Linux has /proc; elsewhere Children reports ErrUnsupported.
package procs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Proc is one live child process.
type Proc struct {
	PID int
	// Name is the service instance it runs ("dispatch-2", "broker"), or
	// "?" for a child that is not a `serve`.
	Name string
}

// ErrUnsupported means the system has no /proc to read.
var ErrUnsupported = errors.New("procs: this system has no /proc: processes cannot be found")

// ErrNotFound means no live child has the name asked for.
var ErrNotFound = errors.New("procs: no such process")

// root is where the process table is read; tests point it elsewhere.
var root = "/proc"

// Children lists the live (not zombie) children of parent, ordered by pid.
func Children(parent int) ([]Proc, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrUnsupported
	}
	if err != nil {
		return nil, fmt.Errorf("procs: %w", err)
	}
	var out []Proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// A process may exit between the listing and the reads: it is
		// simply not a child any more.
		ppid, state, ok := stat(pid)
		if !ok || ppid != parent || state == "Z" {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join(root, e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		out = append(out, Proc{PID: pid, Name: nameOf(cmd)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out, nil
}

// Find is the pid of parent's live child called name.
func Find(parent int, name string) (int, error) {
	kids, err := Children(parent)
	if err != nil {
		return 0, err
	}
	for _, p := range kids {
		if p.Name == name {
			return p.PID, nil
		}
	}
	names := make([]string, 0, len(kids))
	for _, p := range kids {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return 0, fmt.Errorf("%w: process %d has no child %q (its children: %s)", ErrNotFound, parent, name, strings.Join(names, ", "))
}

// Signal sends sig to parent's child called name and returns its pid.
func Signal(parent int, name string, sig syscall.Signal) (int, error) {
	pid, err := Find(parent, name)
	if err != nil {
		return 0, err
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return pid, fmt.Errorf("procs: %s (pid %d): %w", name, pid, err)
	}
	return pid, nil
}

// Alive reports whether pid names a live process (not a zombie).
func Alive(pid int) bool {
	_, state, ok := stat(pid)
	return ok && state != "Z"
}

// stat reads a process's parent and state from /proc/PID/stat.
func stat(pid int) (ppid int, state string, ok bool) {
	b, err := os.ReadFile(filepath.Join(root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, "", false
	}
	// The command name is in parentheses and may itself hold spaces and
	// parentheses: the fields after the last ")" are "state ppid ...".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, "", false
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 2 {
		return 0, "", false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0], err == nil
}

// nameOf names a child by its command line: "serve NAME", with
// "--instance ID" for a replica.
func nameOf(cmdline []byte) string {
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(args) < 3 || args[1] != "serve" {
		return "?"
	}
	name := args[2]
	for i, a := range args {
		switch {
		case a == "--instance" && i+1 < len(args):
			name = args[i+1]
		case strings.HasPrefix(a, "--instance="):
			name = strings.TrimPrefix(a, "--instance=")
		}
	}
	return name
}

// ServiceOf is the service a process name belongs to: "dispatch-2" is a
// replica of dispatch (`up` names replicas NAME-i); any other name is its
// own service.
func ServiceOf(name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			return name[:i]
		}
	}
	return name
}

// Instances are the names among names that belong to service: the service
// itself, or its replicas ("payments-1", "payments-2"), sorted.
func Instances(names []string, service string) []string {
	var out []string
	for _, n := range names {
		if n == service || n != ServiceOf(n) && ServiceOf(n) == service {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}
