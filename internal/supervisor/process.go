package supervisor

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// SupervisedEnv is set to "1" in every child's environment. Together with
// stdin being a pipe whose write end only the supervisor holds, it tells the
// child to exit when its stdin reaches EOF: that happens when the
// supervisor dies, even by SIGKILL, so children never outlive it.
const SupervisedEnv = "RIDESHARE_SUPERVISED"

// pipeDrainTimeout bounds how long Wait waits for the output pipe after
// the child exited, in case a grandchild inherited it and keeps it open.
const pipeDrainTimeout = 2 * time.Second

// proc is one child across all its incarnations.
type proc struct {
	spec   Spec
	sup    *Supervisor
	tail   *logTail
	stopCh chan struct{} // closed by Stop: no more restarts
	done   chan struct{} // closed when run returns

	// Guarded by sup.mu.
	launched   bool
	stopping   bool
	cmd        *exec.Cmd // current incarnation; nil while down
	pid        int
	addr       string // the incarnation's socket, with Spec.Listen
	ready      bool
	everReady  bool
	restarts   int
	startExits int // exits before the child was ever ready
	lastExit   string
	lastProbe  string
}

// run keeps the child running until Stop.
func (p *proc) run() {
	defer close(p.done)
	s := p.sup
	backoff := s.opts.BackoffMin
	for first := true; ; first = false {
		began := time.Now()
		reason, started := p.runOnce(first)
		if !started && reason == "" {
			return // Stop came first
		}
		ran := time.Since(began)

		s.mu.Lock()
		stopping := p.stopping
		p.cmd, p.pid, p.addr, p.ready = nil, 0, "", false
		p.lastExit = reason
		if !p.everReady {
			p.startExits++
		}
		s.broadcastLocked()
		s.mu.Unlock()
		p.tail.mark("%s: %s", p.spec.Name, reason)

		if stopping {
			s.eventf("%s stopped (%s)", p.spec.Name, reason)
			return
		}
		if ran >= s.opts.BackoffReset {
			backoff = s.opts.BackoffMin
		}
		delay := jitter(backoff, rand.Float64())
		backoff = min(backoff*2, s.opts.BackoffMax)
		if started {
			msg := fmt.Sprintf("%s exited: %s after %v; restarting in %v",
				p.spec.Name, reason, ran.Round(time.Millisecond), delay.Round(time.Millisecond))
			lines := p.tail.lines()
			if len(lines) == 0 {
				msg += "; no output"
			} else {
				msg += "; last log lines:"
			}
			s.event(msg, lines)
		} else {
			s.eventf("%s could not start: %s; retrying in %v", p.spec.Name, reason, delay.Round(time.Millisecond))
		}

		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-p.stopCh:
			t.Stop()
			return
		}
	}
}

// jitter spreads restarts over [d/2, d] so children that died together
// (say, after the broker restarted) do not all come back in lockstep.
// r is uniform in [0, 1).
func jitter(d time.Duration, r float64) time.Duration {
	return d/2 + time.Duration(r*float64(d-d/2))
}

// runOnce starts one incarnation and waits for it to exit. It reports why
// it ended, and started=false if it never ran; both empty means Stop was
// already under way.
func (p *proc) runOnce(first bool) (reason string, started bool) {
	s := p.sup
	s.mu.Lock()
	stopping := p.stopping
	s.mu.Unlock()
	if stopping {
		return "", false
	}

	cmd := exec.Command(p.spec.Path, p.spec.Args...)
	// Later entries win, so the marker cannot be overridden by accident.
	cmd.Env = append(append(os.Environ(), p.spec.Env...), SupervisedEnv+"=1")
	// The same comparable writer for both makes exec use one pipe and one
	// copying goroutine, so stdout and stderr lines keep their order.
	cmd.Stdout, cmd.Stderr = p.tail, p.tail
	// Its own process group keeps a terminal's Ctrl-C away from the child:
	// only the supervisor gets it, and stops the children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = pipeDrainTimeout
	// exec keeps the write end until Wait returns; the child sees EOF only
	// when it has exited anyway or when the supervisor process died.
	if _, err := cmd.StdinPipe(); err != nil {
		return "start failed: " + err.Error(), false
	}
	var listeners []*net.TCPListener
	if p.spec.Listener != nil {
		listeners = append(listeners, p.spec.Listener)
	}
	addr := ""
	if p.spec.Listen != nil {
		fresh, err := p.spec.Listen()
		if err != nil {
			return "start failed: listen: " + err.Error(), false
		}
		// The child holds its own copy from Start on; this one goes, so
		// the address dies with the child.
		defer fresh.Close()
		listeners, addr = append(listeners, fresh), fresh.Addr().String()
	}
	for _, l := range listeners {
		f, err := l.File()
		if err != nil {
			for _, f := range cmd.ExtraFiles {
				f.Close()
			}
			return "start failed: listener: " + err.Error(), false
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
	err := cmd.Start()
	// The dup is only needed until the child has its own copy; closing it
	// keeps one fd per listener in the supervisor across restarts.
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	if err != nil {
		return "start failed: " + err.Error(), false
	}
	pid := cmd.Process.Pid

	s.mu.Lock()
	p.cmd, p.pid, p.addr = cmd, pid, addr
	if !first {
		p.restarts++
	}
	stopping = p.stopping
	s.broadcastLocked()
	s.mu.Unlock()
	if stopping {
		// Stop looked before p.cmd was set, so it did not signal this one.
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	p.tail.mark("%s: started pid %d", p.spec.Name, pid)
	if first {
		s.eventf("%s started (pid %d)", p.spec.Name, pid)
	} else {
		s.eventf("%s restarted (pid %d)", p.spec.Name, pid)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.awaitReady(ctx, cmd, incarnationReadyURL(p.spec, addr)) })
	err = cmd.Wait()
	cancel()
	wg.Wait()
	if err == nil {
		return "exit status 0", true
	}
	return err.Error(), true
}

// awaitReady polls ReadyURL until it answers 200 or ctx ends with the
// incarnation. After a restart it warns once if the child takes longer
// than ReadyTimeout, but keeps polling: a slow child is not a dead one.
func (p *proc) awaitReady(ctx context.Context, cmd *exec.Cmd, url string) {
	s := p.sup
	began := time.Now()
	tick := time.NewTicker(readyPollInterval)
	defer tick.Stop()
	warned := false
	for {
		ok, detail := p.probe(ctx, url)
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		current := p.cmd == cmd
		everReady := p.everReady
		if current {
			p.lastProbe = detail
			if ok {
				p.ready, p.everReady = true, true
				s.broadcastLocked()
			}
		}
		s.mu.Unlock()
		if !current {
			return
		}
		if ok {
			s.eventf("%s ready (pid %d, %v after start)", p.spec.Name, cmd.Process.Pid,
				time.Since(began).Round(time.Millisecond))
			return
		}
		if everReady && !warned && time.Since(began) > s.opts.ReadyTimeout {
			warned = true
			s.eventf("%s still not ready %v after restart (last probe: %s)", p.spec.Name, s.opts.ReadyTimeout, detail)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// incarnationReadyURL is where an incarnation listening on addr answers readiness.
func incarnationReadyURL(spec Spec, addr string) string {
	if spec.Listen != nil && spec.ReadyURL != "" {
		return "http://" + addr + spec.ReadyURL
	}
	return spec.ReadyURL
}

func (p *proc) probe(ctx context.Context, url string) (ok bool, detail string) {
	if url == "" {
		return true, ""
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := p.sup.client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode == http.StatusOK, resp.Status
}
