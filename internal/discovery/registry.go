// Package discovery answers "where is payments?" (DESIGN section 4). Each
// instance of a service registers itself in a NATS key-value bucket and
// heartbeats; an entry not refreshed within the TTL is gone. Callers watch
// the bucket and spread their calls over the live instances (balancer.go).
//
// Callers see instances only through the Resolver interface, so where a
// platform already knows its instances (Kubernetes Service DNS), a static
// address replaces the registry and nothing else changes.
package discovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the key-value bucket instances register in, one key per
// instance: "<service>.<id>".
const Bucket = "rideshare_instances"

// DefaultTTL is how long an instance stays registered without a heartbeat.
// Instances heartbeat three times per TTL, so one lost heartbeat never drops
// a live instance, and a dead one is gone within three seconds.
const DefaultTTL = 3 * time.Second

// Instance is one running copy of a service.
type Instance struct {
	Service string    `json:"service"`
	ID      string    `json:"id"`
	URL     string    `json:"url"`
	Started time.Time `json:"started"`
}

func (i Instance) key() string { return i.Service + "." + i.ID }

// NewID is a fresh instance id: a restarted process is a new instance,
// since its address may differ.
func NewID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// OpenBucket creates the bucket, or binds to it. The bucket's own TTL drops
// the entries of instances that died without deregistering; file storage
// keeps the registry across a broker restart, so callers do not lose every
// address while instances re-register.
func OpenBucket(ctx context.Context, js jetstream.JetStream, ttl time.Duration, replicas int) (jetstream.KeyValue, error) {
	if replicas < 1 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "live service instances; each heartbeats its key",
		TTL:         ttl,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("discovery: bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// BucketOpener opens the bucket; Register and Watch open it again after a
// failure, since a broker that lost its store lost the bucket too.
type BucketOpener func(ctx context.Context) (jetstream.KeyValue, error)

// Register keeps inst registered until ctx ends, then deregisters it, so
// that callers stop sending to an instance that shuts down cleanly at once
// rather than after the TTL. A failed heartbeat is logged and retried at
// the next tick: the registry being unreachable must not stop the service.
func Register(ctx context.Context, open BucketOpener, inst Instance, ttl time.Duration, log *slog.Logger) error {
	value, err := json.Marshal(inst)
	if err != nil {
		return err
	}
	var kv jetstream.KeyValue
	beat := func() {
		pctx, cancel := context.WithTimeout(ctx, ttl/3)
		defer cancel()
		if kv == nil {
			if kv, err = open(pctx); err != nil {
				log.Warn("discovery: registry unreachable", "err", err)
				return
			}
		}
		if _, err := kv.Put(pctx, inst.key(), value); err != nil && ctx.Err() == nil {
			log.Warn("discovery: heartbeat failed", "err", err)
			if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
				kv = nil
			}
		}
	}
	beat()
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			beat()
		case <-ctx.Done():
			if kv != nil {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				defer cancel()
				_ = kv.Delete(dctx, inst.key())
			}
			return nil
		}
	}
}

// Watcher is a live view of the registry: every instance of every service.
type Watcher struct {
	ttl    time.Duration
	now    func() time.Time
	loaded chan struct{}

	mu   sync.RWMutex
	seen map[string]map[string]seenInstance // service → key → instance
}

type seenInstance struct {
	Instance
	at time.Time // when its last heartbeat arrived here
}

// NewWatcher is an empty view; Run fills it.
func NewWatcher(ttl time.Duration, now func() time.Time) *Watcher {
	if now == nil {
		now = time.Now
	}
	return &Watcher{ttl: ttl, now: now, loaded: make(chan struct{}), seen: map[string]map[string]seenInstance{}}
}

// Run watches the bucket until ctx ends, watching again after any failure.
func (w *Watcher) Run(ctx context.Context, open BucketOpener, log *slog.Logger) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := w.watch(ctx, open)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("discovery: watching the registry failed; watching again", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

// watch follows the bucket. With no update for a whole TTL (every
// instance, this one included, heartbeats three times per TTL) the watch
// is presumed dead, as after a broker restart that lost its store, and is
// started again.
func (w *Watcher) watch(ctx context.Context, open BucketOpener) error {
	kv, err := open(ctx)
	if err != nil {
		return err
	}
	kw, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer kw.Stop()
	silence := time.NewTimer(2 * w.ttl)
	defer silence.Stop()
	prune := time.NewTicker(10 * w.ttl)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-prune.C:
			w.Prune()
		case <-silence.C:
			return errors.New("no heartbeat from any instance for two TTLs")
		case e, ok := <-kw.Updates():
			if !ok {
				return errors.New("watch ended")
			}
			silence.Reset(2 * w.ttl)
			if e == nil { // the initial values are all in
				w.markLoaded()
				continue
			}
			w.apply(e)
		}
	}
}

func (w *Watcher) markLoaded() {
	select {
	case <-w.loaded:
	default:
		close(w.loaded)
	}
}

func (w *Watcher) apply(e jetstream.KeyValueEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		for _, byKey := range w.seen {
			delete(byKey, e.Key())
		}
		return
	}
	var inst Instance
	if err := json.Unmarshal(e.Value(), &inst); err != nil || inst.Service == "" || inst.URL == "" {
		return // not an instance this version understands
	}
	if w.seen[inst.Service] == nil {
		w.seen[inst.Service] = map[string]seenInstance{}
	}
	w.seen[inst.Service][e.Key()] = seenInstance{Instance: inst, at: w.now()}
}

// Observe records an instance as if its heartbeat had just arrived; tests
// and static set-ups use it to fill a Watcher without a broker.
func (w *Watcher) Observe(inst Instance) {
	w.mu.Lock()
	if w.seen[inst.Service] == nil {
		w.seen[inst.Service] = map[string]seenInstance{}
	}
	w.seen[inst.Service][inst.key()] = seenInstance{Instance: inst, at: w.now()}
	w.mu.Unlock()
	w.markLoaded()
}

// Instances are service's live instances, oldest first. It waits for the
// registry's first snapshot. When every instance known is past its TTL it
// returns them all anyway: either they are all dead, and calls fail as they
// would with none, or the registry is what broke, and they still answer.
func (w *Watcher) Instances(ctx context.Context, service string) ([]Instance, error) {
	select {
	case <-w.loaded:
	case <-ctx.Done():
		return nil, fmt.Errorf("discovery: the registry has not answered yet: %w", ctx.Err())
	}
	now := w.now()
	w.mu.RLock()
	var live, stale []Instance
	for _, s := range w.seen[service] {
		if now.Sub(s.at) <= w.ttl {
			live = append(live, s.Instance)
		} else {
			stale = append(stale, s.Instance)
		}
	}
	w.mu.RUnlock()
	if len(live) == 0 {
		live = stale
	}
	sort.Slice(live, func(i, j int) bool {
		if !live[i].Started.Equal(live[j].Started) {
			return live[i].Started.Before(live[j].Started)
		}
		return live[i].ID < live[j].ID
	})
	return live, nil
}

// Prune forgets instances silent for ten TTLs, so that a platform whose
// instances restart for weeks does not remember every address they had.
func (w *Watcher) Prune() {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, byKey := range w.seen {
		for k, s := range byKey {
			if now.Sub(s.at) > 10*w.ttl {
				delete(byKey, k)
			}
		}
	}
}
