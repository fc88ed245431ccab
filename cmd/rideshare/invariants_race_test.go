package main

import (
	"strings"
	"testing"
)

// TestUpstreamRace: a race is passed over only when both of its accesses
// are in the NATS server's code.
func TestUpstreamRace(t *testing.T) {
	const nats = `WARNING: DATA RACE
Read at 0x00c0007c9b58 by goroutine 614:
  sync/atomic.LoadInt64()
      /usr/lib/go/src/runtime/race_amd64.s:1 +0x1
  github.com/nats-io/nats-server/v2/server.(*stream).processJetStreamMsg()
      /go/pkg/mod/github.com/nats-io/nats-server/v2@v2.15.2/server/stream.go:5146 +0x2dbd

Previous write at 0x00c0007c9b58 by goroutine 555:
  github.com/nats-io/nats-server/v2/server.(*stream).processJetStreamMsg.func2()
      /go/pkg/mod/github.com/nats-io/nats-server/v2@v2.15.2/server/stream.go:4806 +0x18a8

Goroutine 614 (running) created at:
  github.com/rideshare-platform/rideshare/internal/broker.RunEmbedded()
      /src/internal/broker/broker.go:101 +0x1
==================`
	ours := strings.Replace(nats, "github.com/nats-io/nats-server/v2/server.(*stream).processJetStreamMsg.func2()",
		"github.com/rideshare-platform/rideshare/internal/cli.serveBroker.func1()", 1)
	for _, tc := range []struct {
		name   string
		report string
		want   bool
	}{
		{"both accesses in the NATS server", nats, true},
		{"one access in this platform's code", ours, false},
		{"a stack the detector could not restore", strings.Replace(nats, "  github.com/nats-io/nats-server/v2/server.(*stream).processJetStreamMsg.func2()", "  [failed to restore the stack]", 1), false},
		{"runtime frames only", "WARNING: DATA RACE\nWrite at 0x1 by goroutine 1:\n  runtime.chansend1()\n\nPrevious read at 0x1 by goroutine 2:\n  runtime.chanrecv()\n", false},
	} {
		if got := upstreamRace(strings.Split(tc.report, "\n")); got != tc.want {
			t.Errorf("%s: upstreamRace = %v, want %v", tc.name, got, tc.want)
		}
	}
}
