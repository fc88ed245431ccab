package drill

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare-platform/rideshare/internal/broker"
)

// The drill of a duplicate delivery, and the broker client it uses.

// maxRedelivered bounds the events duplicate-delivery republishes.
const maxRedelivered = 2000

// recogniseWithin bounds how long the consumers may take to get through
// the copies after the window: a few thousand events at the consumers'
// pace, with a redelivery backoff or two.
const recogniseWithin = 30 * time.Second

// consumed reads the consumers' counts of events by result, over every
// process.
func (r *run) consumed(ctx context.Context, result string) (float64, error) {
	procs, err := r.p.Admin.Processes(ctx)
	if err != nil {
		return 0, err
	}
	names := slices.Sorted(maps.Keys(procs))
	return r.scrape(ctx, names, "rideshare_events_consumed_total", "result="+result)
}

func duplicateDelivery(ctx context.Context, r *run) error {
	var (
		mu         sync.Mutex
		sent       Redelivery
		dup0, drop float64
		recognised float64
		tookFor    = time.Duration(-1)
		redelivAt  time.Time
	)
	watch := func(ctx context.Context, until time.Time) {
		for ctx.Err() == nil && time.Now().Before(until) {
			if n, err := r.consumed(ctx, "duplicate"); err == nil {
				mu.Lock()
				recognised = n - dup0
				done := recognised >= float64(sent.Deliveries)
				if done && tookFor < 0 {
					tookFor = time.Since(redelivAt)
					r.say("consumers recognised %.0f copies as already applied", recognised)
				}
				mu.Unlock()
				if done {
					return
				}
			}
			_ = sleep(ctx, 500*time.Millisecond)
		}
	}
	rep, _, err := r.underFault(ctx, r.loadConfig(0), act{
		inject: func(ctx context.Context) error {
			var err error
			if dup0, err = r.consumed(ctx, "duplicate"); err != nil {
				return fmt.Errorf("reading the consumers' metrics: %w", err)
			}
			if drop, err = r.consumed(ctx, "dropped"); err != nil {
				return fmt.Errorf("reading the consumers' metrics: %w", err)
			}
			redelivAt = time.Now()
			got, err := r.p.Broker.Redeliver(ctx, r.res.Start, maxRedelivered)
			if err != nil {
				return fmt.Errorf("republishing events: %w", err)
			}
			mu.Lock()
			sent = got
			mu.Unlock()
			r.say("broker: republished %d events published since the load began (%s), each with its payload and a fresh message id: %d deliveries to durable consumers",
				got.Events, streamCounts(got.ByStream), got.Deliveries)
			return nil
		},
		during: func(ctx context.Context) { watch(ctx, time.Now().Add(r.o.Window)) },
		after:  func(ctx context.Context) { watch(ctx, redelivAt.Add(r.o.Window+recogniseWithin)) },
	})
	if err != nil {
		return err
	}
	drop1, err := r.consumed(ctx, "dropped")
	if err != nil {
		return err
	}
	mu.Lock()
	r.find(duplicateFindings(sent, recognised, tookFor, drop1-drop)...)
	mu.Unlock()
	r.find(loadFindings(rep)...)
	r.settle(ctx)
	return nil
}

// streamCounts is "RIDES 40, DISPATCH 12".
func streamCounts(by map[string]int) string {
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(by)) {
		parts = append(parts, fmt.Sprintf("%s %d", s, by[s]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// duplicateFindings judge the consumers: every copy delivered was
// recognised as applied already (a copy applied again would not count as
// a duplicate), none dropped; whether anything was applied twice where
// it shows, money, the final audit says.
func duplicateFindings(sent Redelivery, recognised float64, took time.Duration, dropped float64) []Finding {
	republished := Finding{What: "events published again with a fresh message id (so the broker's deduplication cannot catch them)",
		Want: "some", Got: fmt.Sprintf("%d (%s)", sent.Events, streamCounts(sent.ByStream)), OK: sent.Events > 0}
	if sent.Truncated {
		republished.Got += fmt.Sprintf(", the first %d of the window", sent.Events)
	}
	dup := Finding{What: "copies the consumers recognised as already applied (rideshare_events_consumed_total{result=\"duplicate\"})",
		Want: fmt.Sprintf("all %d deliveries to durable consumers, within %s", sent.Deliveries, roundDur(recogniseWithin))}
	switch {
	case took >= 0:
		dup.Got = fmt.Sprintf("%.0f, %s after they were published", recognised, roundDur(took))
		dup.OK = sent.Deliveries > 0
	default:
		dup.Got = fmt.Sprintf("%.0f", max(recognised, 0))
	}
	drops := Finding{What: "events the consumers dropped as malformed", Want: "0", Got: fmt.Sprintf("%.0f", dropped), OK: dropped == 0}
	return []Finding{republished, dup, drops}
}

// Redeliverer republishes events on the platform's JetStream.
type Redeliverer struct {
	JS jetstream.JetStream
}

// fetchWait is how long one read of a stream waits for more messages: the
// window's messages are stored already, so an empty read means the end.
const fetchWait = 500 * time.Millisecond

// Redeliver implements Broker.
func (b *Redeliverer) Redeliver(ctx context.Context, since time.Time, limit int) (Redelivery, error) {
	out := Redelivery{ByStream: map[string]int{}}
	for _, owner := range broker.Owners {
		if out.Events >= limit {
			out.Truncated = true
			break
		}
		name := broker.StreamName(owner)
		st, err := b.JS.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("stream %s: %w", name, err)
		}
		last := st.CachedInfo().State.LastSeq
		if st.CachedInfo().State.Msgs == 0 || st.CachedInfo().State.LastTime.Before(since) {
			continue
		}
		filters, err := durableFilters(ctx, st)
		if err != nil {
			return out, fmt.Errorf("stream %s: %w", name, err)
		}
		msgs, truncated, err := window(ctx, st, since, last, limit-out.Events)
		if err != nil {
			return out, fmt.Errorf("stream %s: %w", name, err)
		}
		out.Truncated = out.Truncated || truncated
		for _, m := range msgs {
			if _, err := b.JS.PublishMsg(ctx, copyOf(m)); err != nil {
				return out, fmt.Errorf("stream %s: republishing %s: %w", name, m.Subject, err)
			}
			out.Events++
			out.ByStream[name]++
			out.Deliveries += matching(filters, m.Subject)
		}
	}
	return out, nil
}

// stored is a message read back from a stream.
type stored struct {
	Subject string
	Header  nats.Header
	Data    []byte
}

// window reads the messages of st stored since since, up to the sequence
// last, at most limit of them (truncated says there were more).
func window(ctx context.Context, st jetstream.Stream, since time.Time, last uint64, limit int) (msgs []stored, truncated bool, err error) {
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
		// Gone by itself soon after this read, leaving nothing behind.
		InactiveThreshold: 5 * time.Second,
	})
	if err != nil {
		return nil, false, err
	}
	for {
		batch, err := cons.Fetch(min(256, limit-len(msgs)+1), jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			return nil, false, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, false, err
			}
			if md.Sequence.Stream > last {
				return msgs, false, nil
			}
			if len(msgs) == limit {
				return msgs, true, nil
			}
			msgs = append(msgs, stored{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			if md.Sequence.Stream == last {
				return msgs, false, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, false, err
		}
		if n == 0 || ctx.Err() != nil {
			return msgs, false, ctx.Err()
		}
	}
}

// copyOf is m again, payload and headers unchanged but for a fresh
// message id: a broker deduplicates by it within its window, and the
// point is a copy it lets through, as one redelivered after the window
// (or by a relay that lost its record of sending) would be.
func copyOf(m stored) *nats.Msg {
	msg := nats.NewMsg(m.Subject)
	msg.Data = m.Data
	for k, vs := range m.Header {
		if strings.HasPrefix(k, "Nats-") {
			continue // the id and the expectations are per publication
		}
		for _, v := range vs {
			msg.Header.Add(k, v)
		}
	}
	msg.Header.Set(jetstream.MsgIDHeader, "drill-duplicate-"+uuid.NewString())
	return msg
}

// durableFilters are the subject filters of st's durable consumers (the
// services' event consumers), one list per consumer; an empty list takes
// every subject.
func durableFilters(ctx context.Context, st jetstream.Stream) ([][]string, error) {
	var out [][]string
	l := st.ListConsumers(ctx)
	for ci := range l.Info() {
		if ci.Config.Durable == "" {
			continue
		}
		fs := slices.Clone(ci.Config.FilterSubjects)
		if ci.Config.FilterSubject != "" {
			fs = append(fs, ci.Config.FilterSubject)
		}
		out = append(out, fs)
	}
	return out, l.Err()
}

// matching is how many of the consumers' filters take subject.
func matching(filters [][]string, subject string) int {
	n := 0
	for _, fs := range filters {
		if len(fs) == 0 || slices.ContainsFunc(fs, func(f string) bool { return server.SubjectMatchesFilter(subject, f) }) {
			n++
		}
	}
	return n
}
