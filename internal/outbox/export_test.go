package outbox

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// CrashBeforeMark makes the relay stop after the broker acknowledged a batch
// and before marking it sent, returning err, as a crash at that point would.
func (o *Outbox) CrashBeforeMark(err error) {
	if err == nil {
		o.beforeMark = nil
		return
	}
	o.beforeMark = func() error { return err }
}

// RelayOnce runs one relay round.
func (o *Outbox) RelayOnce(ctx context.Context, js jetstream.JetStream) (int, error) {
	return o.relayBatch(ctx, js)
}
