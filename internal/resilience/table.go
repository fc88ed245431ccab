package resilience

import (
	"context"
	"sort"
	"strings"
	"sync"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Table holds a process's dependencies, each with its policies, created on
// the first call to it (or up front for the peers the service declares).
// One Table per process: its breakers and bulkheads see every call.
type Table struct {
	policies *Policies
	metrics  *metrics

	mu   sync.Mutex
	deps map[string]*dependency // by peer name

	byProcedure sync.Map // procedure → *dependency, so a call parses nothing
}

// Options configure a Table.
type Options struct {
	// Settings are the process's settings; the resilience.* ones apply.
	Settings map[string]string
	// Peers are created up front so that metrics and the admin endpoint
	// show them before the first call.
	Peers []string
	// Metrics receives the per-dependency series; nil registers nowhere.
	Metrics prometheus.Registerer
}

// New builds the table, failing on a malformed resilience setting.
func New(o Options) (*Table, error) {
	ps, err := ParsePolicies(o.Settings)
	if err != nil {
		return nil, err
	}
	t := &Table{policies: ps, deps: map[string]*dependency{}}
	reg := o.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if t.metrics, err = newMetrics(reg, t); err != nil {
		return nil, err
	}
	for _, p := range o.Peers {
		t.dependency(p)
	}
	return t, nil
}

// dependency is peer's, created on first use.
func (t *Table) dependency(peer string) *dependency {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d := t.deps[peer]; d != nil {
		return d
	}
	p, err := t.policies.For(peer)
	if err != nil {
		// ParsePolicies checked every peer its settings name and the
		// defaults every other peer gets, so this cannot fail; if it
		// somehow did, the defaults are the safe answer.
		p = Defaults
	}
	d := newDependency(peer, p, t.metrics.forPeer(peer))
	t.deps[peer] = d
	return d
}

func (t *Table) forProcedure(procedure string) *dependency {
	if d, ok := t.byProcedure.Load(procedure); ok {
		return d.(*dependency)
	}
	d := t.dependency(PeerOf(procedure))
	t.byProcedure.Store(procedure, d)
	return d
}

// PeerOf names the dependency a procedure belongs to: the service's
// package, "payments" for "/rideshare.payments.v1.PaymentsService/Authorize".
// Deriving it from the procedure means a client built with the shared
// options gets its peer's policies without saying which peer it calls, and
// a process that calls five peers with one set of options (the gateway)
// keeps five breakers, not one.
func PeerOf(procedure string) string {
	svc, _, _ := strings.Cut(strings.TrimPrefix(procedure, "/"), "/")
	if rest, ok := strings.CutPrefix(svc, "rideshare."); ok {
		name, _, _ := strings.Cut(rest, ".")
		return name
	}
	return svc // another API: the fully-qualified service is the dependency
}

// Idempotent reports whether req may be sent again: its procedure declares
// it has no side effects or is idempotent, or it carries a non-empty
// idempotency_key (the server then answers a repeat with the first result).
func Idempotent(req connect.AnyRequest) bool {
	switch req.Spec().IdempotencyLevel {
	case connect.IdempotencyNoSideEffects, connect.IdempotencyIdempotent:
		return true
	}
	m, ok := req.Any().(proto.Message)
	if !ok {
		return false
	}
	r := m.ProtoReflect()
	f := r.Descriptor().Fields().ByName("idempotency_key")
	return f != nil && f.Kind() == protoreflect.StringKind && !f.IsList() && r.Get(f).String() != ""
}

// Interceptor applies the table to every unary RPC a client makes.
// Streams pass through untouched: a stream lives as long as its caller
// wants (it would hold a bulkhead slot all that time), and its failure
// shows only once it is read, after the call returned.
func (t *Table) Interceptor() connect.Interceptor { return interceptor{t} }

type interceptor struct{ t *Table }

func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if !req.Spec().IsClient {
			return next(ctx, req)
		}
		return i.t.forProcedure(req.Spec().Procedure).call(ctx, req, next)
	}
}

func (interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// sorted is the dependencies by name.
func (t *Table) sorted() []*dependency {
	t.mu.Lock()
	out := make([]*dependency, 0, len(t.deps))
	for _, d := range t.deps {
		out = append(out, d)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].peer < out[j].peer })
	return out
}
