package testenv_test

import (
	"testing"
	"time"

	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestJetStreamCluster: three members elect a meta leader; when the leader
// stops, the other two elect another; when it returns on its old ports and
// store, all three agree again.
func TestJetStreamCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member cluster; skipped with -short")
	}
	c := testenv.JetStreamCluster(t, 3)
	if got := len(c.URLs()); got != 3 {
		t.Fatalf("%d members running, want 3", got)
	}
	// A peer's "current" flag can flicker under load, so ask again rather
	// than trust the moment JetStreamCluster returned.
	leader := c.WaitForMetaLeader(30 * time.Second)
	url := c.URL()
	c.Stop(leader)
	if got := len(c.URLs()); got != 2 {
		t.Fatalf("%d members running after a stop, want 2", got)
	}
	next := c.WaitForMetaLeader(30 * time.Second)
	if next == leader {
		t.Fatalf("the stopped member %s is still the leader", c.Name(leader))
	}
	c.Restart(leader)
	c.WaitForMetaLeader(30 * time.Second)
	if c.URL() != url {
		t.Fatalf("client URLs changed across the restart: %s, then %s", url, c.URL())
	}
	if got := len(c.URLs()); got != 3 {
		t.Fatalf("%d members running after the restart, want 3", got)
	}
}
