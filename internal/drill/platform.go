package drill

import (
	"context"
	"net/http"
	"syscall"
	"time"

	"github.com/rideshare-platform/rideshare/internal/check"
	"github.com/rideshare-platform/rideshare/internal/discovery"
	"github.com/rideshare-platform/rideshare/internal/faults"
	"github.com/rideshare-platform/rideshare/internal/load"
	"github.com/rideshare-platform/rideshare/internal/resilience"
)

// Platform is what a drill needs of the platform it drills: each part is
// a small interface the command line implements against a running
// platform and a test implements with fakes. A part left nil is a need
// the platform cannot meet; the drills that need it say so and fail.
type Platform struct {
	// Gateway is the public base URL the simulated riders and drivers use.
	Gateway string
	// Load runs simulated riders and drivers (load.Run).
	Load Loader
	// Faults sets and clears injected faults.
	Faults Faults
	// Admin reads the processes' admin and metrics endpoints.
	Admin Admin
	// Audit is what `rideshare check` reads: every ride's and payment's
	// facts and the outboxes.
	Audit check.Source
	// Procs signals the local platform's processes (nil for a remote one).
	Procs Processes
	// Broker republishes events (nil when the broker cannot be reached).
	Broker Broker
	// HTTP makes the drill's own requests (the overload drill's
	// estimates); nil: a client sized for them.
	HTTP *http.Client
}

// Loader runs one load: load.Run.
type Loader func(ctx context.Context, c load.Config) (*load.Report, error)

// Faults is the processes' admin fault switch.
type Faults interface {
	// Set puts f on target: a service (every instance of it) or one
	// instance ("dispatch-2").
	Set(ctx context.Context, target string, f faults.Fault) error
	// Clear removes target's fault on route ("" for the fault on every
	// route).
	Clear(ctx context.Context, target, route string) error
}

// Admin reads the processes' operator endpoints.
type Admin interface {
	// Processes maps every process the platform runs now ("rides",
	// "dispatch-2", "gateway") to its base URL; a replica that came back
	// is at its new address.
	Processes(ctx context.Context) (map[string]string, error)
	// Metrics scrapes a process's /metrics.
	Metrics(ctx context.Context, process string) (Metrics, error)
	// Resilience is a process's /admin/resilience: its policies for each
	// dependency, breakers included.
	Resilience(ctx context.Context, process string) ([]resilience.DependencyState, error)
	// Discovery is a process's /admin/discovery: the instances of each
	// service it calls, as it sees them.
	Discovery(ctx context.Context, process string) (map[string][]discovery.InstanceState, error)
}

// Processes signals the local platform's processes by name ("broker",
// "dispatch-2").
type Processes interface {
	Signal(name string, sig syscall.Signal) (pid int, err error)
}

// Broker republishes events already delivered, as a broker that lost
// its acknowledgements would redeliver them.
type Broker interface {
	// Redeliver republishes up to limit events published since since, on
	// every stream, each with its payload unchanged and a fresh message
	// id, so the broker's own deduplication does not drop it.
	Redeliver(ctx context.Context, since time.Time, limit int) (Redelivery, error)
}

// Redelivery is what Redeliver republished.
type Redelivery struct {
	// Events republished, by stream.
	Events   int            `json:"events"`
	ByStream map[string]int `json:"by_stream"`
	// Deliveries is how many times the copies are delivered to the
	// durable consumers whose filters they match: each is a duplicate
	// the consumer must recognise.
	Deliveries int `json:"deliveries"`
	// Truncated says the window held more than the limit.
	Truncated bool `json:"truncated,omitempty"`
}
