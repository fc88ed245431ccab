package dispatch

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare-platform/rideshare/internal/geo"
)

// Replicas of dispatch each hold the fleet in memory, and a ping reaches
// only one of them. So every replica broadcasts what it learns (accepted
// position fixes, drivers going online or offline, drivers locked or freed)
// and applies what the others broadcast, so a search on any replica sees a
// ping taken by another within milliseconds rather than at the next
// database refresh.
//
// The broadcast is core NATS, not JetStream: a position is superseded
// within seconds, so storing or redelivering one is waste. A lost message
// costs freshness only until the driver's next ping, or at worst until the
// database refresh (refreshEvery), which stays the safety net, as it is
// after a restart. Every fact carries the time it was taken and the fleet
// keeps a fact only if it is newer than the one it holds, so duplicates,
// reordering and a replica's own echo change nothing.

// fleetSubject is where replicas broadcast. It lies outside every stream's
// subjects (a stream takes "<owner>.>"), so the broker stores none of it.
const fleetSubject = "live.dispatch.fleet"

// Broadcast limits. Positions are coalesced per driver for castWindow (the
// latest fix wins) and sent in messages of at most castBatch facts, about
// 30 bytes each, well under NATS's default 1 MiB payload.
const (
	defaultCastWindow = 50 * time.Millisecond
	castBatch         = 2000
)

// castVersion leads every message; a replica drops messages of a version it
// does not know (a rolling upgrade then converges through the database).
const castVersion = 1

// Kinds of broadcast facts.
const (
	factFix byte = iota + 1
	factOnline
	factOffline
	factBusy
	factFree
)

// fact is one change to a driver's live state.
type fact struct {
	kind   byte
	driver string
	at     time.Time
	pos    geo.Point // factFix only
}

// broadcaster sends this replica's fleet changes to the other replicas and
// applies theirs to its fleet. A nil broadcaster (no broker) does nothing.
type broadcaster struct {
	nc     *nats.Conn
	origin string // this replica, so it can drop its own messages
	fleet  *fleet
	window time.Duration
	log    *slog.Logger
	// records counts facts sent and received; messages counts messages
	// sent, applied, dropped as this replica's own, malformed, or failed
	// to publish.
	records, messages *prometheus.CounterVec

	mu     sync.Mutex
	fixes  map[string]fact // coalesced: the latest fix per driver
	states []fact          // availability and locks, in order; rare
	kick   chan struct{}
}

func newBroadcaster(nc *nats.Conn, f *fleet, window time.Duration, reg prometheus.Registerer, log *slog.Logger) (*broadcaster, error) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	b := &broadcaster{
		nc: nc, origin: hex.EncodeToString(id[:]), fleet: f, window: window, log: log,
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_dispatch_fleet_broadcast_facts_total",
			Help: "Driver positions, availability and lock changes broadcast to other dispatch replicas (sent) or applied from them (received).",
		}, []string{"direction"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rideshare_dispatch_fleet_broadcast_messages_total",
			Help: "Fleet broadcast messages: sent, received from another replica, own (this replica's echo, ignored), malformed, failed (not sent).",
		}, []string{"result"}),
		fixes: map[string]fact{},
		kick:  make(chan struct{}, 1),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{b.records, b.messages} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("dispatch: metrics: %w", err)
			}
		}
	}
	return b, nil
}

// fix queues an accepted position fix.
func (b *broadcaster) fix(driver string, p geo.Point, at time.Time) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.fixes[driver] = fact{kind: factFix, driver: driver, at: at, pos: p}
	first := len(b.fixes) == 1 && len(b.states) == 0
	b.mu.Unlock()
	if first {
		b.wake()
	}
}

// online queues an availability change.
func (b *broadcaster) online(driver string, online bool, at time.Time) {
	kind := factOffline
	if online {
		kind = factOnline
	}
	b.state(driver, at, kind)
}

// busy queues a lock taken or released.
func (b *broadcaster) busy(driver string, busy bool, at time.Time) {
	kind := factFree
	if busy {
		kind = factBusy
	}
	b.state(driver, at, kind)
}

func (b *broadcaster) state(driver string, at time.Time, kind byte) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.states = append(b.states, fact{kind: kind, driver: driver, at: at})
	first := len(b.fixes) == 0 && len(b.states) == 1
	b.mu.Unlock()
	if first {
		b.wake()
	}
}

func (b *broadcaster) wake() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// run applies the other replicas' broadcasts and sends this one's until ctx
// ends. After the first fact of a quiet spell it waits one window before
// sending, so a burst of pings goes out as a few messages, and an idle
// replica sends nothing at all.
func (b *broadcaster) run(ctx context.Context) error {
	sub, err := b.listen()
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	b.sendLoop(ctx)
	return nil
}

// listen subscribes to the other replicas' broadcasts. The client
// resubscribes by itself after a reconnect; what was said meanwhile is
// lost, and the database refresh makes up for it.
func (b *broadcaster) listen() (*nats.Subscription, error) {
	sub, err := b.nc.Subscribe(fleetSubject, b.receive)
	if err != nil {
		return nil, fmt.Errorf("dispatch: subscribing to %s: %w", fleetSubject, err)
	}
	// Once the server has the subscription, nothing sent from now on is
	// missed; without a server it will have it on connecting.
	_ = b.nc.Flush()
	return sub, nil
}

// sendLoop sends what is queued until ctx ends.
func (b *broadcaster) sendLoop(ctx context.Context) {
	window := time.NewTimer(0)
	<-window.C
	for {
		select {
		case <-ctx.Done():
			b.send()
			return
		case <-b.kick:
		}
		window.Reset(b.window)
		select {
		case <-ctx.Done():
			b.send()
			return
		case <-window.C:
		}
		b.send()
	}
}

// send publishes what is queued. A failed publish is counted and dropped:
// the facts are in the database (or will be, at the next flush), and the
// other replicas' refresh brings them in.
func (b *broadcaster) send() {
	b.mu.Lock()
	facts := b.states
	for _, f := range b.fixes {
		facts = append(facts, f)
	}
	b.states = nil
	clear(b.fixes)
	b.mu.Unlock()
	for len(facts) > 0 {
		n := min(len(facts), castBatch)
		if err := b.nc.Publish(fleetSubject, encodeFacts(b.origin, facts[:n])); err != nil {
			b.messages.WithLabelValues("failed").Inc()
			b.log.Debug("broadcasting fleet changes", "err", err, "facts", n)
		} else {
			b.messages.WithLabelValues("sent").Inc()
			b.records.WithLabelValues("sent").Add(float64(n))
		}
		facts = facts[n:]
	}
}

// receive applies another replica's message to the fleet.
func (b *broadcaster) receive(m *nats.Msg) {
	origin, facts, err := decodeFacts(m.Data)
	switch {
	case err != nil:
		b.messages.WithLabelValues("malformed").Inc()
		b.log.Debug("ignoring a fleet broadcast", "err", err)
		return
	case origin == b.origin:
		b.messages.WithLabelValues("own").Inc()
		return
	}
	b.fleet.absorb(facts)
	b.messages.WithLabelValues("received").Inc()
	b.records.WithLabelValues("received").Add(float64(len(facts)))
}

// The message format: a version byte, the origin as a length-prefixed
// string, then facts to the end, each a kind byte, the driver as a
// length-prefixed string, the time in Unix microseconds (the database's
// precision), and for a fix the position in millionths of a degree (the
// database's too), all as varints. Hand-written because it is a handful of
// fields on a hot path between replicas of one binary, and versioned so a
// replica can tell a format it does not know.
func encodeFacts(origin string, facts []fact) []byte {
	buf := make([]byte, 0, 1+1+len(origin)+len(facts)*40)
	buf = append(buf, castVersion)
	buf = appendString(buf, origin)
	for _, f := range facts {
		buf = append(buf, f.kind)
		buf = appendString(buf, f.driver)
		buf = binary.AppendVarint(buf, micros(f.at))
		if f.kind == factFix {
			buf = binary.AppendVarint(buf, e6(f.pos.Lat))
			buf = binary.AppendVarint(buf, e6(f.pos.Lng))
		}
	}
	return buf
}

func appendString(buf []byte, s string) []byte {
	return append(binary.AppendUvarint(buf, uint64(len(s))), s...)
}

var errMalformed = errors.New("malformed fleet broadcast")

func decodeFacts(data []byte) (origin string, facts []fact, err error) {
	r := reader{data: data}
	if r.byte() != castVersion {
		return "", nil, fmt.Errorf("%w: unknown version", errMalformed)
	}
	origin = r.string()
	for r.err == nil && len(r.data) > 0 {
		f := fact{kind: r.byte(), driver: r.string(), at: timeOf(r.varint())}
		switch f.kind {
		case factFix:
			f.pos = geo.Point{Lat: fromE6(r.varint()), Lng: fromE6(r.varint())}
			if r.err == nil && !f.pos.Valid() {
				r.err = fmt.Errorf("%w: position out of range", errMalformed)
			}
		case factOnline, factOffline, factBusy, factFree:
		default:
			r.fail()
		}
		if f.driver == "" || f.at.IsZero() {
			r.fail()
		}
		facts = append(facts, f)
	}
	if r.err != nil {
		return "", nil, r.err
	}
	return origin, facts, nil
}

// reader reads the format above, remembering the first error so that the
// decoder checks once per fact instead of after every field.
type reader struct {
	data []byte
	err  error
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = errMalformed
	}
	r.data = nil
}

func (r *reader) byte() byte {
	if len(r.data) == 0 {
		r.fail()
		return 0
	}
	c := r.data[0]
	r.data = r.data[1:]
	return c
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.data)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.data = r.data[n:]
	return v
}

func (r *reader) string() string {
	n, k := binary.Uvarint(r.data)
	if k <= 0 || n > uint64(len(r.data)-k) {
		r.fail()
		return ""
	}
	s := string(r.data[k : k+int(n)])
	r.data = r.data[k+int(n):]
	return s
}
