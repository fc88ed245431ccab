package testenv

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare-platform/rideshare/internal/broker"
)

// Cluster is a JetStream cluster of embedded servers on loopback, run in
// the test's process, each member with its own store folder. Members can be
// stopped and restarted to prove what survives losing one.
type Cluster struct {
	t       testing.TB
	name    string
	mu      sync.Mutex
	members []*member
}

type member struct {
	name, store string
	clientPort  int // fixed after the first start, so client URLs stay valid
	routePort   int
	srv         *server.Server // nil while stopped
}

// JetStreamCluster starts a JetStream cluster of size members (3 when size
// is 0) and waits until it has elected a meta leader. Every member is shut
// down when t ends.
//
// A member's route port must be known before any member starts (JetStream
// clustering requires configured routes), and the NATS server takes an
// address, not a listener: so each route port is found free by listening on
// port 0 and closing; if the first member loses its port to someone else in
// the moment between, it moves to another (no member knows it yet).
func JetStreamCluster(t testing.TB, size int) *Cluster {
	t.Helper()
	if size == 0 {
		size = 3
	}
	dir := t.TempDir()
	c := &Cluster{t: t, name: "rideshare-test"}
	for i := range size {
		c.members = append(c.members, &member{
			name:  fmt.Sprintf("n%d", i+1),
			store: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
		})
	}
	t.Cleanup(func() {
		for i := range c.members {
			c.Stop(i)
		}
	})
	for _, m := range c.members {
		p, err := freeLoopbackPort()
		if err != nil {
			t.Fatal(err)
		}
		m.routePort = p
	}
	for i := range c.members {
		c.start(i, true)
	}
	c.WaitForMetaLeader(30 * time.Second)
	c.awaitPlacement(30 * time.Second)
	return c
}

// awaitPlacement waits until the cluster can place a stream on every
// member. A leader that counts every member current may still see one as
// offline for placement for a moment, and a test's first stream would
// then fail with "no suitable peers for placement".
func (c *Cluster) awaitPlacement(timeout time.Duration) {
	c.t.Helper()
	nc, err := nats.Connect(c.URL())
	if err != nil {
		c.t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := jetstream.StreamConfig{Name: "TESTENV_PLACEMENT", Subjects: []string{"testenv.placement"},
		Replicas: len(c.members), Storage: jetstream.MemoryStorage}
	Eventually(c.t, timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err = js.CreateStream(ctx, cfg); err != nil {
			return false
		}
		err = js.DeleteStream(ctx, cfg.Name)
		return err == nil
	}, "the JetStream cluster cannot place a stream on all its members: %v", &err)
}

// start runs member i. Only the first member's first start may move its
// route port: the members after it are started with the route list, and a
// restart must keep the port its peers keep dialling.
func (c *Cluster) start(i int, firstStart bool) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	var err error
	for try := 0; try < 3; try++ {
		var srv *server.Server
		srv, err = broker.RunEmbedded(broker.EmbeddedOptions{
			Addr: "127.0.0.1:" + strconv.Itoa(m.clientPort), StoreDir: m.store, Name: m.name,
			Cluster: &broker.ClusterOptions{
				Name: c.name, Listen: "127.0.0.1:" + strconv.Itoa(m.routePort), Routes: c.routesLocked(),
			},
		})
		if err == nil {
			m.srv = srv
			m.clientPort = srv.Addr().(*net.TCPAddr).Port
			return
		}
		if !firstStart || i > 0 {
			break
		}
		// Only the first member may move: nobody has dialled it yet, and
		// the others read the routes when they start.
		if m.routePort, err = freeLoopbackPort(); err != nil {
			break
		}
	}
	c.t.Fatalf("starting cluster member %s: %v", m.name, err)
}

func (c *Cluster) routesLocked() []string {
	routes := make([]string, len(c.members))
	for i, m := range c.members {
		routes[i] = "nats://127.0.0.1:" + strconv.Itoa(m.routePort)
	}
	return routes
}

// Size is the number of members, running or not.
func (c *Cluster) Size() int { return len(c.members) }

// URLs are the running members' client URLs.
func (c *Cluster) URLs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.members {
		if m.srv != nil {
			out = append(out, broker.URL(m.srv))
		}
	}
	return out
}

// URL is every member's client URL, comma-separated, the form a NATS client
// takes for a cluster; stopped members are included, since they come back.
func (c *Cluster) URL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	urls := make([]string, len(c.members))
	for i, m := range c.members {
		urls[i] = "nats://127.0.0.1:" + strconv.Itoa(m.clientPort)
	}
	return strings.Join(urls, ",")
}

// Server is member i's server, nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].srv
}

// Name is member i's server name.
func (c *Cluster) Name(i int) string { return c.members[i].name }

// Stop shuts member i down, keeping its store for a restart.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	srv := c.members[i].srv
	c.members[i].srv = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Restart starts a stopped member i again on its old ports and store.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Server(i) != nil {
		c.t.Fatalf("cluster member %s is running", c.members[i].name)
	}
	c.start(i, false)
}

// MetaLeader is the member index of the meta leader every running member
// agrees on, once that leader counts every other running member as a
// current peer; -1 until then. (A leader is elected by a majority, before
// the last member has caught up, and the JetStream API may not answer
// until it has.)
func (c *Cluster) MetaLeader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	leader, running := "", map[string]bool{}
	var meta *server.MetaClusterInfo
	for _, m := range c.members {
		if m.srv == nil {
			continue
		}
		running[m.name] = true
		info, err := m.srv.Jsz(&server.JSzOptions{Limit: 1})
		if err != nil || info.Meta == nil || info.Meta.Leader == "" || (leader != "" && info.Meta.Leader != leader) {
			return -1
		}
		leader = info.Meta.Leader
		if m.name == leader {
			meta = info.Meta
		}
	}
	if meta == nil {
		return -1
	}
	current := 0
	for _, p := range meta.Replicas {
		if running[p.Name] && p.Current && !p.Offline {
			current++
		}
	}
	if current != len(running)-1 {
		return -1
	}
	return slices.IndexFunc(c.members, func(m *member) bool { return m.name == leader })
}

// WaitForMetaLeader waits until the running members agree on a running
// meta leader: until then the cluster cannot create or change streams.
func (c *Cluster) WaitForMetaLeader(timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	Eventually(c.t, timeout, func() bool {
		leader = c.MetaLeader()
		return leader >= 0
	}, "the JetStream cluster elected no meta leader")
	return leader
}

// freeLoopbackPort is a loopback port nothing listened on a moment ago.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
