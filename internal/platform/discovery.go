package platform

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare-platform/rideshare/internal/discovery"
)

// discovered are the peers of svc found in the registry: those it calls
// that have no fixed address, and identity, which every process asks for
// the keys that admin tokens are checked with.
func discovered(svc Service, cfg Config) []string {
	var out []string
	for _, p := range append(slices.Clone(svc.Calls), "identity") {
		if cfg.Peers[p] == "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// useDiscovery makes d's HTTP client resolve the logical addresses of the
// peers found in the registry, and d.Replicas count this service's
// instances, from a view of the registry it keeps current until ctx ends,
// and returns the worker that keeps this instance registered, and the
// admin view of the instances.
func useDiscovery(ctx context.Context, d *Deps, svc Service, ln net.Listener) ([]Worker, http.Handler, error) {
	cfg := d.Config
	open := func(ctx context.Context) (jetstream.KeyValue, error) {
		return discovery.OpenBucket(ctx, d.JS, discovery.DefaultTTL, cfg.StreamReplicas)
	}
	var workers []Worker
	u := advertised(cfg, ln)
	if u != "" {
		id := discovery.NewID()
		if cfg.Instance != "" {
			id = cfg.Instance + "-" + id
		}
		inst := discovery.Instance{Service: svc.Name, ID: id, URL: u, Started: time.Now().UTC()}
		workers = append(workers, Worker{Name: "registry-heartbeat", Run: func(ctx context.Context) error {
			return discovery.Register(ctx, open, inst, discovery.DefaultTTL, d.Log)
		}})
	} else {
		d.Log.Info("not registering: listening on a wildcard address; set --advertise URL to register")
	}
	w := discovery.NewWatcher(discovery.DefaultTTL, time.Now)
	d.Replicas = func(ctx context.Context) (int, error) {
		insts, err := w.Instances(ctx, svc.Name)
		if err != nil {
			return 0, err
		}
		if u == "" { // not registered, so not among them
			return len(insts) + 1, nil
		}
		return max(len(insts), 1), nil
	}
	// The view must be filling before the service is built: building one
	// may already call a peer (the gateway fetches identity's keys).
	go func() { _ = w.Run(ctx, open, d.Log) }()
	peers := discovered(svc, cfg)
	if len(peers) == 0 {
		return workers, nil, nil
	}
	b, err := discovery.NewBalancer(w, discovery.BalancerOptions{Services: peers, Next: d.HTTP.Transport, Metrics: d.Metrics})
	if err != nil {
		return nil, nil, err
	}
	for _, p := range peers {
		g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "rideshare_discovery_instances",
			Help:        "Instances of a peer this process can call, from the registry.",
			ConstLabels: prometheus.Labels{"service": p},
		}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			defer cancel()
			insts, _ := w.Instances(ctx, p)
			return float64(len(insts))
		})
		if err := d.Metrics.Register(g); err != nil {
			return nil, nil, fmt.Errorf("discovery metrics: %w", err)
		}
	}
	d.HTTP.Transport = b
	admin := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		rw.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(rw).Encode(b.Snapshot(ctx))
	})
	return workers, admin, nil
}

// advertised is the URL callers reach this instance at.
func advertised(cfg Config, ln net.Listener) string {
	if cfg.Advertise != "" {
		return cfg.Advertise
	}
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok || addr.IP.IsUnspecified() {
		return ""
	}
	return "http://" + addr.String()
}
