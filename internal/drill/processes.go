package drill

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rideshare-platform/rideshare/internal/discovery"
	"github.com/rideshare-platform/rideshare/internal/procs"
)

// The drills that stop processes: an instance killed, the broker frozen.

// instancesOf are the processes of service among the named ones: itself,
// or its replicas, sorted.
func instancesOf(processes map[string]string, service string) []string {
	return procs.Instances(slices.Collect(maps.Keys(processes)), service)
}

// replicaAdvice is what to do when no service has replicas.
const replicaAdvice = "start the platform with replicas, e.g. `rideshare up --replicas dispatch=3`"

// pickVictim chooses the instance kill-replica kills: want names a service
// or one instance; by default an instance of dispatch, else of the first
// service with replicas (the gateway last: its replicas share one socket,
// so killing one also cuts the drill's own connections). The victim is a
// service's second instance, so the first keeps serving.
func pickVictim(processes map[string]string, want string) (victim, service string, err error) {
	replicated := func(svc string) []string {
		if in := instancesOf(processes, svc); len(in) >= 2 {
			return in
		}
		return nil
	}
	switch {
	case want != "" && procs.ServiceOf(want) != want && processes[want] != "":
		service = procs.ServiceOf(want)
		if replicated(service) == nil {
			return "", "", fmt.Errorf("%s is the only instance of %s: %s", want, service, replicaAdvice)
		}
		return want, service, nil
	case want != "":
		in := instancesOf(processes, want)
		switch len(in) {
		case 0:
			names := slices.Sorted(maps.Keys(processes))
			return "", "", fmt.Errorf("no service or instance %q (the processes: %s)", want, strings.Join(names, ", "))
		case 1:
			return "", "", fmt.Errorf("%s runs one instance, and killing it is a crash, not a failover: %s",
				want, strings.Replace(replicaAdvice, "dispatch=3", want+"=3", 1))
		}
		return in[1], want, nil
	}
	if in := replicated("dispatch"); in != nil {
		return in[1], "dispatch", nil
	}
	var services []string
	for name := range processes {
		if s := procs.ServiceOf(name); s != name && !slices.Contains(services, s) {
			services = append(services, s)
		}
	}
	sort.Slice(services, func(i, j int) bool {
		if (services[i] == "gateway") != (services[j] == "gateway") {
			return services[j] == "gateway"
		}
		return services[i] < services[j]
	})
	for _, s := range services {
		if in := replicated(s); in != nil {
			return in[1], s, nil
		}
	}
	return "", "", errors.New("no service runs more than one instance, so there is no failover to drill: " + replicaAdvice)
}

// registryViewer finds a process that calls service, whose discovery view
// lists it: the gateway if it does, else the first other one.
func (r *run) registryViewer(ctx context.Context, processes map[string]string, service string) (string, error) {
	names := make([]string, 0, len(processes))
	for n := range processes {
		if procs.ServiceOf(n) != service {
			names = append(names, n)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == "gateway") != (names[j] == "gateway") {
			return names[i] == "gateway"
		}
		return names[i] < names[j]
	})
	for _, n := range names {
		view, err := r.p.Admin.Discovery(ctx, n)
		if err == nil && len(view[service]) > 0 {
			return n, nil
		}
	}
	return "", fmt.Errorf("no process lists %s in its /admin/discovery: is the platform running with a registry?", service)
}

// registered lists the instance URLs of service that viewer sees.
func (r *run) registered(ctx context.Context, viewer, service string) ([]string, error) {
	view, err := r.p.Admin.Discovery(ctx, viewer)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, in := range view[service] {
		out = append(out, strings.TrimRight(in.URL, "/"))
	}
	return out, nil
}

// failover is what kill-replica saw after the kill.
type failover struct {
	mu        sync.Mutex
	left      time.Duration // the dead instance out of the registry, since the kill; -1: not seen
	back      time.Duration // its successor registered, since the kill; -1: not seen
	successor string        // the successor's URL
}

// failoverPoll is how often kill-replica reads the registry.
const failoverPoll = 100 * time.Millisecond

// successorWithin bounds a successor's return: up restarts a dead child
// after a short backoff, and it must migrate, listen and register.
const successorWithin = 20 * time.Second

func killReplica(ctx context.Context, r *run) error {
	procs, err := r.p.Admin.Processes(ctx)
	if err != nil {
		return err
	}
	victim, service, err := pickVictim(procs, r.o.Kill)
	if err != nil {
		return err
	}
	oldURL := strings.TrimRight(procs[victim], "/")
	viewer, err := r.registryViewer(ctx, procs, service)
	if err != nil {
		return err
	}
	urls, err := r.registered(ctx, viewer, service)
	if err != nil {
		return err
	}
	r.say("%s runs %d instances (%s sees %d registered); the drill kills %s at %s",
		service, len(instancesOf(procs, service)), viewer, len(urls), victim, oldURL)

	fo := &failover{left: -1, back: -1}
	var killedAt time.Time
	watch := func(ctx context.Context, until time.Time) {
		for ctx.Err() == nil && time.Now().Before(until) {
			fo.mu.Lock()
			finished := fo.left >= 0 && fo.back >= 0
			fo.mu.Unlock()
			if finished {
				return
			}
			if urls, err := r.registered(ctx, viewer, service); err == nil {
				fo.mu.Lock()
				if fo.left < 0 && !slices.Contains(urls, oldURL) {
					fo.left = time.Since(killedAt)
					r.say("%s left %s's registry view", victim, viewer)
				}
				if fo.back < 0 {
					if now, err := r.p.Admin.Processes(ctx); err == nil {
						u := strings.TrimRight(now[victim], "/")
						if u != "" && u != oldURL && slices.Contains(urls, u) {
							fo.back, fo.successor = time.Since(killedAt), u
							r.say("%s is back at %s and registered", victim, u)
						}
					}
				}
				fo.mu.Unlock()
			}
			_ = sleep(ctx, failoverPoll)
		}
	}
	var servedBefore float64
	rep, calls, err := r.underFault(ctx, r.loadConfig(0), act{
		inject: func(ctx context.Context) error {
			pid, err := r.p.Procs.Signal(victim, syscall.SIGKILL)
			if err != nil {
				return fmt.Errorf("killing %s: %w", victim, err)
			}
			killedAt = time.Now()
			r.say("%s (pid %d): SIGKILL", victim, pid)
			return nil
		},
		during: func(ctx context.Context) { watch(ctx, killedAt.Add(successorWithin)) },
		after: func(ctx context.Context) {
			watch(ctx, killedAt.Add(successorWithin))
			if m, err := r.p.Admin.Metrics(ctx, victim); err == nil {
				servedBefore = m.SumPrefix("rideshare_http_requests_total", "route", "/rideshare.")
			}
		},
	})
	if err != nil {
		return err
	}
	// The successor takes calls: its own server counts them.
	served := -1.0
	if fo.back >= 0 {
		if m, err := r.p.Admin.Metrics(ctx, victim); err == nil {
			served = m.SumPrefix("rideshare_http_requests_total", "route", "/rideshare.") - servedBefore
		}
	}
	r.find(failoverFindings(victim, fo, served, discovery.DefaultTTL)...)
	r.find(errorShareFinding(stats(calls, r.baseline(), ""), stats(calls, r.window(), ""), victim+" was down"))
	r.find(loadFindings(rep)...)
	r.settle(ctx)
	return nil
}

// failoverFindings judge the registry: the dead instance left it within
// its TTL (and a poll), its successor came back and took calls.
func failoverFindings(victim string, fo *failover, served float64, ttl time.Duration) []Finding {
	fo.mu.Lock()
	defer fo.mu.Unlock()
	leaveBy := ttl + 2*time.Second
	left := Finding{What: fmt.Sprintf("the killed %s out of the registry", victim),
		Want: fmt.Sprintf("within %s (its TTL %s, and a heartbeat's slack)", roundDur(leaveBy), roundDur(ttl))}
	if fo.left >= 0 {
		left.Got, left.OK = fmt.Sprintf("after %s", roundDur(fo.left)), fo.left <= leaveBy
	} else {
		left.Got = "still registered when the drill stopped watching"
	}
	back := Finding{What: fmt.Sprintf("%s's successor (restarted by up) registered and taking calls", victim),
		Want: fmt.Sprintf("within %s, and serving", roundDur(successorWithin))}
	switch {
	case fo.back < 0:
		back.Got = fmt.Sprintf("not back within %s", roundDur(successorWithin))
	case served <= 0:
		back.Got = fmt.Sprintf("registered at %s after %s, but served no call", fo.successor, roundDur(fo.back))
	default:
		back.Got = fmt.Sprintf("registered at %s after %s; served %.0f calls", fo.successor, roundDur(fo.back), served)
		back.OK = fo.back <= successorWithin
	}
	return []Finding{left, back}
}

// errorSlack is how much larger a share of failed requests may be during
// a fault than before it: one percentage point.
const errorSlack = 0.01

// errorShareFinding judges the share of the load's requests that failed
// during the fault against the share before it.
func errorShareFinding(before, during routeStats, fault string) Finding {
	f := Finding{What: "requests that failed while " + fault,
		Want: fmt.Sprintf("≤ %.1f%% (%.1f%% before, plus %.0f point)", 100*(before.failedShare()+errorSlack), 100*before.failedShare(), 100*errorSlack)}
	if during.Calls == 0 {
		f.Got = "no request during the fault"
		return f
	}
	f.Got = fmt.Sprintf("%d of %d (%.1f%%)", during.Failed, during.Calls, 100*during.failedShare())
	f.OK = during.failedShare() <= before.failedShare()+errorSlack
	return f
}

// outboxWatch is what broker-outage saw of the outboxes.
type outboxWatch struct {
	mu       sync.Mutex
	baseline int           // the largest backlog before the outage
	peak     int           // the largest during it
	atEnd    int           // at the end of it
	drained  time.Duration // back to the baseline, since the broker resumed; -1: not seen
}

// backlog is every outbox's unsent events together.
func (r *run) backlog(ctx context.Context) (int, error) {
	obs, err := r.p.Audit.Outboxes(ctx)
	if err != nil && len(obs) == 0 {
		return 0, err
	}
	n := 0
	for _, o := range obs {
		n += o.Unsent
	}
	return n, nil
}

// outboxPoll is how often broker-outage reads the outboxes.
const outboxPoll = 250 * time.Millisecond

// drainWithin bounds how long the outboxes may take to hand the held
// events to the broker once it is back: the relays' backoff after a
// failure is at most 5 s, and a few thousand events publish in well under
// a second.
const drainWithin = 30 * time.Second

func brokerOutage(ctx context.Context, r *run) error {
	w := &outboxWatch{drained: -1}
	var resumed time.Time
	poll := func(ctx context.Context, fn func(n int)) {
		for ctx.Err() == nil {
			if n, err := r.backlog(ctx); err == nil {
				w.mu.Lock()
				fn(n)
				w.mu.Unlock()
			}
			_ = sleep(ctx, outboxPoll)
		}
	}
	const key = "the broker's freeze"
	rep, calls, err := r.underFault(ctx, r.loadConfig(0), act{
		before: func(ctx context.Context) { poll(ctx, func(n int) { w.baseline = max(w.baseline, n) }) },
		inject: func(ctx context.Context) error {
			pid, err := r.p.Procs.Signal("broker", syscall.SIGSTOP)
			if err != nil {
				return fmt.Errorf("stopping the broker (is it one of up's processes? with `up --nats` it is not): %w", err)
			}
			r.onCleanup(key, func(context.Context) error { _, err := r.p.Procs.Signal("broker", syscall.SIGCONT); return err })
			r.say("broker (pid %d): SIGSTOP: it holds its connections open and answers nothing", pid)
			return nil
		},
		during: func(ctx context.Context) {
			poll(ctx, func(n int) { w.peak, w.atEnd = max(w.peak, n), n })
		},
		heal: func(ctx context.Context) error {
			pid, err := r.p.Procs.Signal("broker", syscall.SIGCONT)
			if err != nil {
				return fmt.Errorf("resuming the broker: %w", err)
			}
			r.done(key)
			resumed = time.Now()
			r.say("broker (pid %d): SIGCONT", pid)
			return nil
		},
		after: func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, drainWithin+5*time.Second)
			defer cancel()
			poll(ctx, func(n int) {
				if w.drained < 0 && n <= w.baseline {
					w.drained = time.Since(resumed)
					r.say("outboxes back to their usual backlog (%d events)", n)
					cancel()
				}
			})
		},
	})
	if err != nil {
		return err
	}
	r.find(outageFindings(w)...)
	r.find(acceptedFinding(stats(calls, r.window(), routeRequestRide), "while the broker was stopped"))
	r.find(loadFindings(rep)...)
	r.settle(ctx)
	return nil
}

// outageFindings judge the outboxes: they held the events the services
// committed while the broker was away, and handed them on once it was back.
func outageFindings(w *outboxWatch) []Finding {
	w.mu.Lock()
	defer w.mu.Unlock()
	held := Finding{What: "events held in the services' outboxes while the broker was stopped",
		Want: fmt.Sprintf("more than the usual backlog (%d): state changes kept committing, their events waiting", w.baseline)}
	held.Got = fmt.Sprintf("up to %d (%d when the broker resumed)", w.peak, w.atEnd)
	held.OK = w.peak > w.baseline
	drained := Finding{What: "outboxes drained once the broker resumed", Want: fmt.Sprintf("back to ≤ %d within %s", w.baseline, roundDur(drainWithin))}
	if w.drained >= 0 {
		drained.Got, drained.OK = fmt.Sprintf("after %s", roundDur(w.drained)), w.drained <= drainWithin
	} else {
		drained.Got = fmt.Sprintf("not within %s", roundDur(drainWithin))
	}
	return []Finding{held, drained}
}

// acceptedFinding judges ride requests during a fault that their path
// does not need: every one accepted (202).
func acceptedFinding(st routeStats, when string) Finding {
	f := Finding{What: "ride requests accepted " + when, Want: "all (202)"}
	if st.Calls == 0 {
		f.Got = "no ride was requested then"
		return f
	}
	f.Got = fmt.Sprintf("%d of %d%s", st.Statuses[202], st.Calls, otherStatuses(st.Statuses, 202))
	f.OK = st.Statuses[202] == st.Calls
	return f
}
