package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare-platform/rideshare/internal/broker"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestStreamsSurviveLosingAMember runs the platform's streams with three
// replicas on a three-member cluster, stops the member that leads the rides
// stream, and checks that publishing and consuming go on with the other
// two, and that the stopped member catches up when it returns.
func TestStreamsSurviveLosingAMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member cluster; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testenv.JetStreamCluster(t, 3)
	nc, js, err := broker.Dial(ctx, broker.DialOptions{URL: c.URL(), Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := broker.EnsureStreams(ctx, js, 3); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, broker.StreamName("rides"))
	if err != nil {
		t.Fatal(err)
	}
	// The stream's leader may step down under load right after creating
	// it; until another is elected its info is not answered, or answered
	// without a leader. The checks below are on the info once it has one.
	var info *jetstream.StreamInfo
	testenv.Eventually(t, 20*time.Second, func() bool {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		info, err = stream.Info(ictx)
		return err == nil && info.Cluster != nil && info.Cluster.Leader != ""
	}, "the rides stream has no leader: %v", testenv.Later(func() string { return fmt.Sprint(err) }))
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream is not replicated three ways: replicas %d, cluster %+v", info.Config.Replicas, info.Cluster)
	}

	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			id := fmt.Sprintf("ev-%d", i)
			// A publish may land while the stream elects a new leader: the
			// relay retries in that case, and so does this loop, under the
			// same message id, so a retried publish is stored once.
			testenv.Eventually(t, 20*time.Second, func() bool {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				_, err := js.Publish(pctx, "rides.ride.requested", []byte(id), jetstream.WithMsgID(id))
				return err == nil
			}, "publishing %s", id)
		}
	}
	publish(0, 10)

	leader := -1
	for i := range c.Size() {
		if c.Name(i) == info.Cluster.Leader {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatalf("stream leader %q is no member", info.Cluster.Leader)
	}
	c.Stop(leader)
	t.Logf("stopped %s, the rides stream's leader", c.Name(leader))
	publish(10, 20)

	var got []string
	testenv.Eventually(t, 20*time.Second, func() bool {
		got = got[:0]
		cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return false
		}
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			return false
		}
		for m := range batch.Messages() {
			got = append(got, string(m.Data()))
		}
		return len(got) == 20
	}, "consuming after the loss of a member: got %d of 20 messages", len(got))
	for i, g := range got {
		if want := fmt.Sprintf("ev-%d", i); g != want {
			t.Fatalf("message %d is %q, want %q", i, g, want)
		}
	}

	c.Restart(leader)
	testenv.Eventually(t, 30*time.Second, func() bool {
		info, err := stream.Info(ctx)
		if err != nil || info.Cluster == nil || info.State.Msgs != 20 {
			return false
		}
		current := 0
		for _, r := range info.Cluster.Replicas {
			if r.Current && !r.Offline {
				current++
			}
		}
		return current == 2
	}, "the restarted member did not catch up with the stream")
}
