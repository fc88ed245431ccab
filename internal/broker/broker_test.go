package broker

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunEmbeddedPortTaken: a port the server cannot listen on is named in
// the error at once, for the client port and for a cluster member's route
// port, instead of a start that waits and says only "not ready".
func TestRunEmbeddedPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	for _, tc := range []struct {
		name string
		opts EmbeddedOptions
	}{
		{"client port", EmbeddedOptions{Addr: addr}},
		{"route port", EmbeddedOptions{Addr: "127.0.0.1:0", Name: "n1",
			Cluster: &ClusterOptions{Name: "c", Listen: addr, Routes: []string{"nats://" + addr}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.StoreDir = filepath.Join(t.TempDir(), "store")
			srv, err := RunEmbedded(tc.opts)
			if err == nil {
				srv.Shutdown()
				t.Fatalf("started on %s, which another socket holds", addr)
			}
			if !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), addr[strings.LastIndex(addr, ":")+1:]) {
				t.Errorf("error %q does not say which port is taken", err)
			}
		})
	}
}
