// Package supervisor runs a set of programs as child processes: it starts
// them in dependency order, restarts them when they die and stops them in
// reverse order. It is what `rideshare up` uses to give every service
// instance its own OS process, so that one can be killed and come back
// without taking the others down. It knows nothing about the programs it
// runs; the caller describes each one with a Spec.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spec describes one child process.
type Spec struct {
	// Name identifies the process in events, errors, Status and Kill, and
	// names its log file (LogDir/Name.log), so it must be a plain file name.
	Name string
	// Path is the executable, normally the result of os.Executable.
	Path string
	// Args are the arguments after the program name.
	Args []string
	// Env is appended to os.Environ(); later entries win.
	Env []string
	// Listener, if set, is passed to the child as file descriptor 3. The
	// supervisor owns it from New on and keeps it open across restarts, so
	// the port never changes and connections that arrive while the child is
	// down wait in the backlog instead of being refused. Stop closes it.
	Listener *net.TCPListener
	// Listen, if set, opens a new socket for each incarnation, passed as
	// file descriptor 3 (4 when Listener is set too) and closed here once
	// the child has its copy: when the child dies its address refuses
	// connections, as a replica that died does, and callers fail over to
	// another instance instead of waiting in a backlog. Status reports the
	// current address. With both, the child serves a socket it shares
	// (replicas given one Listener) and one of its own.
	Listen func() (*net.TCPListener, error)
	// ReadyURL must answer GET with 200 once the child can serve. Empty
	// means the child counts as ready as soon as it has started. With
	// Listen, it is a path ("/readyz") on the incarnation's own address:
	// a probe sent to a shared socket could be answered by a sibling.
	ReadyURL string
	// Group orders startup: every process of a group is ready before the
	// next higher group starts. Stop goes from the highest group down.
	Group int
}

// Options tune a Supervisor. The zero value is usable.
type Options struct {
	// LogDir receives each child's stdout and stderr in Name.log, appended
	// to across restarts and runs. Empty keeps only the in-memory tail.
	LogDir string
	// Events receives short human-readable lines about starts, readiness,
	// exits, restarts and stops. Nil discards them. Writes are serialized.
	Events io.Writer
	// ReadyTimeout bounds how long Start waits for one group to become
	// ready. Default 30s.
	ReadyTimeout time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	// Default 10s.
	StopTimeout time.Duration
	// BackoffMin and BackoffMax bound the delay before restarting a child;
	// it doubles after each exit. Defaults 100ms and 10s.
	BackoffMin, BackoffMax time.Duration
	// BackoffReset: a child that ran at least this long before exiting
	// restarts after BackoffMin again. Default 30s.
	BackoffReset time.Duration
}

const (
	defaultReadyTimeout = 30 * time.Second
	defaultStopTimeout  = 10 * time.Second
	defaultBackoffMin   = 100 * time.Millisecond
	defaultBackoffMax   = 10 * time.Second
	defaultBackoffReset = 30 * time.Second

	// readyPollInterval keeps startup latency low without flooding a
	// starting child; probeTimeout is short because a request to a child
	// that is still starting sits in the listen backlog until it accepts.
	readyPollInterval = 25 * time.Millisecond
	probeTimeout      = 500 * time.Millisecond

	// startCrashLimit makes Start give up on a child that keeps exiting
	// before it was ever ready (a bad flag, a missing file) instead of
	// crash-looping until ReadyTimeout.
	startCrashLimit = 3
)

// ErrStopped is returned by Start when Stop was called first or meanwhile.
var ErrStopped = errors.New("supervisor: stopped")

// ProcStatus is a snapshot of one child.
type ProcStatus struct {
	Name  string
	Group int
	// PID is 0 while the child is down (between an exit and its restart).
	PID int
	// Addr is the address of the current incarnation's socket, for a
	// child started with Spec.Listen.
	Addr string
	// Ready is true once the current incarnation answered ReadyURL.
	Ready bool
	// Restarts counts how often the child was started again after exiting.
	Restarts int
	// LastExit describes the last exit ("exit status 1", "signal: killed"),
	// or is empty if the child never exited.
	LastExit string
}

// StartError names the child that kept Start from completing.
type StartError struct {
	Name string
	// Reason says what went wrong, e.g. "not ready after 30s (last probe:
	// 503 Service Unavailable)".
	Reason string
	// LastLines are the child's most recent output lines, oldest first.
	LastLines []string
}

func (e *StartError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "supervisor: %s %s", e.Name, e.Reason)
	if len(e.LastLines) == 0 {
		b.WriteString("; no output")
	} else {
		b.WriteString("; last log lines:")
		writeIndented(&b, e.LastLines)
	}
	return b.String()
}

// Supervisor runs the children described by its specs. Its methods are
// safe for concurrent use.
type Supervisor struct {
	opts    Options
	procs   []*proc   // spec order, for Status
	groups  [][]*proc // ascending Group
	specErr error
	client  *http.Client

	eventMu sync.Mutex

	mu       sync.Mutex
	started  bool
	stopping bool
	// changed is closed and replaced whenever a child's state changes, so
	// Start can wait for readiness without polling the children's state.
	changed chan struct{}

	stopOnce sync.Once
	stopErr  error
	done     chan struct{}
}

// New returns a Supervisor for specs; nothing runs until Start. The
// supervisor takes ownership of the specs' listeners. Invalid specs are
// reported by Start.
func New(specs []Spec, opts Options) *Supervisor {
	opts.ReadyTimeout = orDefault(opts.ReadyTimeout, defaultReadyTimeout)
	opts.StopTimeout = orDefault(opts.StopTimeout, defaultStopTimeout)
	opts.BackoffMin = orDefault(opts.BackoffMin, defaultBackoffMin)
	opts.BackoffMax = max(orDefault(opts.BackoffMax, defaultBackoffMax), opts.BackoffMin)
	opts.BackoffReset = orDefault(opts.BackoffReset, defaultBackoffReset)
	if opts.Events == nil {
		opts.Events = io.Discard
	}
	s := &Supervisor{
		opts:    opts,
		specErr: validate(specs),
		client: &http.Client{
			Timeout: probeTimeout,
			// No idle connections: they would hold goroutines after Stop
			// and keep sockets to children that are about to be replaced.
			Transport: &http.Transport{DisableKeepAlives: true},
		},
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	byGroup := map[int][]*proc{}
	for _, spec := range specs {
		spec.Args = slices.Clone(spec.Args)
		spec.Env = slices.Clone(spec.Env)
		p := &proc{
			spec:   spec,
			sup:    s,
			tail:   &logTail{},
			stopCh: make(chan struct{}),
			done:   make(chan struct{}),
		}
		s.procs = append(s.procs, p)
		byGroup[spec.Group] = append(byGroup[spec.Group], p)
	}
	for _, g := range slices.Sorted(maps.Keys(byGroup)) {
		s.groups = append(s.groups, byGroup[g])
	}
	return s
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func validate(specs []Spec) error {
	seen := map[string]bool{}
	for i, spec := range specs {
		switch {
		case spec.Name == "" || spec.Name == "." || spec.Name == ".." ||
			strings.ContainsAny(spec.Name, `/\`) || strings.ContainsRune(spec.Name, 0):
			return fmt.Errorf("supervisor: spec %d: invalid name %q", i, spec.Name)
		case seen[spec.Name]:
			return fmt.Errorf("supervisor: duplicate name %q", spec.Name)
		case spec.Path == "":
			return fmt.Errorf("supervisor: %s: empty path", spec.Name)
		}
		seen[spec.Name] = true
	}
	return nil
}

// Start starts the groups in ascending order and waits for each group to be
// ready before starting the next. ctx bounds only the startup: once Start
// returns nil, the children are supervised (restarted when they exit) until
// Stop. If a child does not become ready within ReadyTimeout, or keeps
// exiting before it was ever ready, Start returns a *StartError naming that
// child with its last output lines. Whenever Start fails it has already
// called Stop: the children it started are gone and the listeners closed.
// Start may be called once.
func (s *Supervisor) Start(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.stopping:
		s.mu.Unlock()
		return ErrStopped
	case s.started:
		s.mu.Unlock()
		return errors.New("supervisor: already started")
	}
	s.started = true
	s.mu.Unlock()

	err := s.specErr
	if err == nil {
		err = s.openLogs()
	}
	for _, group := range s.groups {
		if err != nil {
			break
		}
		err = s.startGroup(ctx, group)
	}
	if err != nil {
		_ = s.Stop() // its own failures are reported as events; err is what matters
		return err
	}
	return nil
}

func (s *Supervisor) openLogs() error {
	if s.opts.LogDir == "" {
		return nil
	}
	if err := os.MkdirAll(s.opts.LogDir, 0o755); err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	for _, p := range s.procs {
		path := filepath.Join(s.opts.LogDir, p.spec.Name+".log")
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("supervisor: %w", err)
		}
		p.tail.setFile(f)
	}
	return nil
}

func (s *Supervisor) startGroup(ctx context.Context, group []*proc) error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return ErrStopped
	}
	// Launching under the lock means Stop sees every launched child.
	for _, p := range group {
		p.launched = true
		go p.run()
	}
	s.mu.Unlock()

	timeout := time.NewTimer(s.opts.ReadyTimeout)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		changed := s.changed
		stopping := s.stopping
		var waiting []*proc
		var failed *StartError
		for _, p := range group {
			if p.ready {
				continue
			}
			waiting = append(waiting, p)
			if p.startExits >= startCrashLimit && failed == nil {
				failed = &StartError{
					Name:   p.spec.Name,
					Reason: fmt.Sprintf("exited %d times before becoming ready (last: %s)", p.startExits, p.lastExit),
				}
			}
		}
		s.mu.Unlock()
		switch {
		case stopping:
			return ErrStopped
		case failed != nil:
			failed.LastLines = s.byName(failed.Name).tail.lines()
			return failed
		case len(waiting) == 0:
			return nil
		}

		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("supervisor: start interrupted while waiting for %s: %w", names(waiting), ctx.Err())
		case <-timeout.C:
			p := waiting[0]
			s.mu.Lock()
			reason := fmt.Sprintf("not ready after %v", s.opts.ReadyTimeout)
			if p.lastProbe != "" {
				reason += fmt.Sprintf(" (last probe: %s)", p.lastProbe)
			}
			if p.lastExit != "" {
				reason += fmt.Sprintf(" (last exit: %s)", p.lastExit)
			}
			s.mu.Unlock()
			return &StartError{Name: p.spec.Name, Reason: reason, LastLines: p.tail.lines()}
		}
	}
}

func names(procs []*proc) string {
	var ns []string
	for _, p := range procs {
		ns = append(ns, p.spec.Name)
	}
	return strings.Join(ns, ", ")
}

// Stop stops the groups from the highest down: it sends SIGTERM to every
// child of a group, waits up to StopTimeout, sends SIGKILL to the ones still
// running and waits until all have exited before moving to the next group.
// Then it closes the listeners and log files. Stop is idempotent; concurrent
// calls all return once everything has stopped.
func (s *Supervisor) Stop() error {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopping = true
		s.broadcastLocked()
		s.mu.Unlock()

		for _, group := range slices.Backward(s.groups) {
			s.stopGroup(group)
		}
		var errs []error
		for _, p := range s.procs {
			if l := p.spec.Listener; l != nil {
				if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
					errs = append(errs, fmt.Errorf("supervisor: %s: %w", p.spec.Name, err))
				}
			}
			if err := p.tail.close(); err != nil {
				errs = append(errs, fmt.Errorf("supervisor: %s log: %w", p.spec.Name, err))
			}
		}
		s.client.CloseIdleConnections()
		s.stopErr = errors.Join(errs...)
		close(s.done)
	})
	return s.stopErr
}

func (s *Supervisor) stopGroup(group []*proc) {
	var live []*proc
	var events []string // written after unlocking: a slow Events writer must not block Status
	s.mu.Lock()
	for _, p := range group {
		if !p.launched {
			continue
		}
		live = append(live, p)
		p.stopping = true
		close(p.stopCh)
		if p.cmd != nil {
			events = append(events, fmt.Sprintf("stopping %s (pid %d)", p.spec.Name, p.pid))
			_ = p.cmd.Process.Signal(syscall.SIGTERM) // fails only if it already exited
		}
	}
	s.mu.Unlock()
	for _, e := range events {
		s.event(e, nil)
	}

	deadline := time.NewTimer(s.opts.StopTimeout)
	defer deadline.Stop()
	for _, p := range live {
		select {
		case <-p.done:
			continue
		case <-deadline.C:
		}
		events = events[:0]
		s.mu.Lock()
		for _, q := range live {
			if q.cmd != nil {
				events = append(events, fmt.Sprintf("%s did not exit within %v of SIGTERM; sending SIGKILL",
					q.spec.Name, s.opts.StopTimeout))
				_ = q.cmd.Process.Kill()
			}
		}
		s.mu.Unlock()
		for _, e := range events {
			s.event(e, nil)
		}
		break
	}
	for _, p := range live {
		<-p.done
	}
}

// Done is closed once Stop has finished (including the Stop a failed
// Start does): every child has exited and the listeners are closed.
func (s *Supervisor) Done() <-chan struct{} {
	return s.done
}

// Status returns a snapshot of every child, in spec order.
func (s *Supervisor) Status() []ProcStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProcStatus, 0, len(s.procs))
	for _, p := range s.procs {
		out = append(out, ProcStatus{
			Name:     p.spec.Name,
			Group:    p.spec.Group,
			PID:      p.pid,
			Addr:     p.addr,
			Ready:    p.ready,
			Restarts: p.restarts,
			LastExit: p.lastExit,
		})
	}
	return out
}

// Kill sends sig to the named child, for tests and fault drills. Unless
// Stop is under way, the supervisor then treats the exit like any other
// and restarts the child.
func (s *Supervisor) Kill(name string, sig syscall.Signal) error {
	p := s.byName(name)
	if p == nil {
		return fmt.Errorf("supervisor: no process named %q", name)
	}
	s.mu.Lock()
	cmd := p.cmd
	s.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("supervisor: %s is not running", name)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("supervisor: %s: %w", name, err)
	}
	return nil
}

// LastLines returns the named child's most recent output lines, oldest
// first, or nil if there is no such child.
func (s *Supervisor) LastLines(name string) []string {
	if p := s.byName(name); p != nil {
		return p.tail.lines()
	}
	return nil
}

func (s *Supervisor) byName(name string) *proc {
	for _, p := range s.procs {
		if p.spec.Name == name {
			return p
		}
	}
	return nil
}

// broadcastLocked wakes everything waiting on a state change; s.mu is held.
func (s *Supervisor) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Supervisor) eventf(format string, args ...any) {
	s.event(fmt.Sprintf(format, args...), nil)
}

// event writes one line, followed by lines indented beneath it, in a
// single Write so events from different children never interleave.
func (s *Supervisor) event(line string, lines []string) {
	var b strings.Builder
	b.WriteString(line)
	writeIndented(&b, lines)
	b.WriteByte('\n')
	s.eventMu.Lock()
	defer s.eventMu.Unlock()
	_, _ = io.WriteString(s.opts.Events, b.String()) // events are best effort
}

func writeIndented(b *strings.Builder, lines []string) {
	for _, l := range lines {
		b.WriteString("\n    | ")
		b.WriteString(l)
	}
}
