package drill

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rideshare-platform/rideshare/internal/broker"
	"github.com/rideshare-platform/rideshare/internal/testenv"
)

// TestRedeliver republishes a stream's recent window on an embedded
// broker: the copies carry the originals' payloads and headers under fresh
// message ids, so the broker's deduplication lets them through, and each
// is counted once per durable consumer that will receive it.
func TestRedeliver(t *testing.T) {
	ctx := context.Background()
	srv := testenv.Broker(t)
	_, js := testenv.Connect(t, srv)
	if err := broker.EnsureStreams(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	publish := func(subject, id, body string) {
		t.Helper()
		msg := nats.NewMsg(subject)
		msg.Data = []byte(body)
		msg.Header.Set(jetstream.MsgIDHeader, id)
		msg.Header.Set("Traceparent", "00-trace-"+id)
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	publish("rides.ride.requested", "old-1", "old one")
	publish("rides.ride.requested", "old-2", "old two")
	since := time.Now()
	publish("rides.ride.requested", "e1", "first")
	publish("rides.ride.completed", "e2", "second")
	publish("rides.ride.requested", "e3", "third")
	publish("payments.payment.captured", "e4", "fourth")
	// Consumers as the services make them: durable, filtered; and one
	// that is not durable, which no service has and the count leaves out.
	for _, c := range []jetstream.ConsumerConfig{
		{Durable: "dispatch-requests", FilterSubjects: []string{"rides.ride.requested"}},
		{Durable: "notifications-rides", FilterSubjects: []string{"rides.>"}},
		{Durable: "everything"},
		{FilterSubject: "rides.ride.requested", InactiveThreshold: time.Minute},
	} {
		stream := "RIDES"
		if c.Durable == "everything" {
			stream = "PAYMENTS"
		}
		if _, err := js.CreateOrUpdateConsumer(ctx, stream, c); err != nil {
			t.Fatal(err)
		}
	}

	got, err := (&Redeliverer{JS: js}).Redeliver(ctx, since, 100)
	if err != nil {
		t.Fatal(err)
	}
	// rides.ride.requested ×2 reach two consumers each, rides.ride.completed
	// one, payments.payment.captured one.
	if got.Events != 4 || got.ByStream["RIDES"] != 3 || got.ByStream["PAYMENTS"] != 1 || got.Deliveries != 6 || got.Truncated {
		t.Fatalf("Redeliver = %+v, want 4 events (RIDES 3, PAYMENTS 1), 6 deliveries", got)
	}

	// The stream now holds each window message twice: the copy has the
	// same payload and headers and a fresh id.
	st, err := js.Stream(ctx, "RIDES")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 5+3 {
		t.Fatalf("RIDES holds %d messages, want 8", n)
	}
	for seq, want := range map[uint64]string{6: "first", 7: "second", 8: "third"} {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get(jetstream.MsgIDHeader)
		if !bytes.Equal(m.Data, []byte(want)) || !strings.HasPrefix(id, "drill-duplicate-") || !strings.HasPrefix(m.Header.Get("Traceparent"), "00-trace-e") {
			t.Errorf("copy %d: %q, id %q, traceparent %q; want %q under a fresh id with its trace", seq, m.Data, id, m.Header.Get("Traceparent"), want)
		}
	}

	// A limit truncates the window, and says so.
	got, err = (&Redeliverer{JS: js}).Redeliver(ctx, since, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got.Events != 2 || !got.Truncated {
		t.Errorf("Redeliver with a limit of 2 = %+v", got)
	}
	// Nothing since now: nothing to republish.
	got, err = (&Redeliverer{JS: js}).Redeliver(ctx, time.Now().Add(time.Hour), 100)
	if err != nil || got.Events != 0 {
		t.Errorf("Redeliver of an empty window = %+v, %v", got, err)
	}
}

func TestMatching(t *testing.T) {
	filters := [][]string{{"rides.ride.requested"}, {"rides.>"}, {}, {"rides.*.completed", "dispatch.>"}}
	for subject, want := range map[string]int{
		"rides.ride.requested": 3, "rides.ride.completed": 3, "dispatch.ride.assigned": 2, "payments.x": 1,
	} {
		if got := matching(filters, subject); got != want {
			t.Errorf("matching(%s) = %d, want %d", subject, got, want)
		}
	}
}
