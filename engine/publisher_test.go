package engine

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/segment"
	"github.com/segd/segd/state"
)

// TestPublisherSetsAsideWhatKafkaRefuses: outbox records Kafka will never
// take (one over kafka-go's 1 MiB batch limit, one for a topic that stays
// unknown) are set aside as bounded dead letters and the valid change
// queued behind them goes out; before, the publisher retried the first
// refused batch forever and the partition's output was wedged.
func TestPublisherSetsAsideWhatKafkaRefuses(t *testing.T) {
	_, brokers := startTestBroker(t)
	st, err := state.Open(t.TempDir(), state.Options{Decode: func(string, []byte) (state.Record, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	part, err := st.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	huge := bytes.Repeat([]byte("x"), 2<<20)
	part.AppendOutbox(segment.AppendEnvelope(nil, DefaultChangesTopic, "c1", nil, []byte("before")))
	part.AppendOutbox(segment.AppendEnvelope(nil, "no.such.topic", "c2", nil, []byte("lost topic")))
	part.AppendOutbox(segment.AppendEnvelope(nil, DefaultChangesTopic, "c3", nil, huge))
	part.AppendOutbox(segment.AppendEnvelope(nil, DefaultChangesTopic, "c4", nil, []byte("after")))
	if err := part.Commit(); err != nil {
		t.Fatal(err)
	}
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	m := newMetrics()
	pb := newPublisher(part, prod, zerolog.New(zerolog.NewTestWriter(t)), m.partition(0),
		setAsidePolicy{deadLetterTopic: DefaultDeadLetterTopic, unknownTopicFor: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); pb.run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, 30*time.Second, "the outbox drained", func() bool { return part.OutboxDepth() == 0 })

	changes := readTopic(t, brokers, DefaultChangesTopic, 2, 10*time.Second)
	var got []string
	for _, c := range changes {
		got = append(got, string(c.Value))
	}
	if strings.Join(got, ",") != "before,after" {
		t.Fatalf("changes topic holds %q, want before and after", got)
	}
	dead := readTopic(t, brokers, DefaultDeadLetterTopic, 2, 10*time.Second)
	if len(dead) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dead))
	}
	headers := func(m connectors.Message) map[string]string {
		out := map[string]string{}
		for _, h := range m.Headers {
			out[h.Key] = string(h.Value)
		}
		return out
	}
	// The too-large record is refused at once, the unknown topic after
	// unknownTopicFor: order by what they were.
	byTopic := map[string]connectors.Message{}
	for _, d := range dead {
		byTopic[headers(d)["segd-original-topic"]] = d
	}
	lost, big := byTopic["no.such.topic"], byTopic[DefaultChangesTopic]
	if h := headers(lost); h["segd-reason"] != "unpublishable" || string(lost.Value) != "lost topic" {
		t.Errorf("dead letter for the unknown topic: %d bytes, headers %v", len(lost.Value), h)
	}
	if h := headers(big); h["segd-reason"] != "unpublishable" || h["segd-truncated"] != "2097152" || len(big.Value) != segment.DeadLetterMaxValue {
		t.Errorf("dead letter for the too-large record: %d bytes, headers %v", len(big.Value), h)
	}
	for class, want := range map[string]float64{"unknown_topic": 1, "permanent": 1} {
		var pm dto.Metric
		if err := m.setAside.WithLabelValues(class).Write(&pm); err != nil {
			t.Fatal(err)
		}
		if got := pm.GetCounter().GetValue(); got != want {
			t.Errorf("segd_outbox_set_aside_total{class=%q} = %v, want %v", class, got, want)
		}
	}
	if pb.failing.Load() != nil {
		t.Errorf("publisher still reports a failure: %+v", pb.failing.Load())
	}
}

// TestPublisherSkipsAHoleInTheOutbox: a partition restored from a
// changelog that still carries entries a previous owner published, but not
// later ones it published and logged the deletes of, has sequence numbers
// with no entry below its committed one; the publisher sends what is there
// and moves past the hole, so the depth reaches zero (before, it stayed at
// the hole's size for good and the failover test stalled).
func TestPublisherSkipsAHoleInTheOutbox(t *testing.T) {
	_, brokers := startTestBroker(t)
	open := func() *state.Store {
		st, err := state.Open(t.TempDir(), state.Options{Decode: func(string, []byte) (state.Record, error) { return nil, nil }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	// The previous owner: two commits, entries 1-3, then 4-5.
	src := open()
	sp, err := src.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.EnableChangelog(); err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{3, 2} {
		for j := 0; j < n; j++ {
			sp.AppendOutbox(segment.AppendEnvelope(nil, DefaultChangesTopic, "c1", nil, []byte(fmt.Sprintf("commit %d entry %d", i, j))))
		}
		if err := sp.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// The changelog as the new owner finds it: the first commit whole, of
	// the second only the outbox sequence (its entries were deleted).
	dst := open()
	r, err := dst.Restore(0)
	if err != nil {
		t.Fatal(err)
	}
	err = sp.ReadChangelog(0, 10, func(seq uint64, entry []byte) error {
		return state.ForEachChangelogOp(entry, func(op state.ChangelogOp) error {
			if seq == 2 && op.Key[0] == 'x' {
				return nil
			}
			return r.Apply(op.Key, op.Value, op.Deleted)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Finish(2); err != nil {
		t.Fatal(err)
	}
	part, err := dst.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	if d := part.OutboxDepth(); d != 5 {
		t.Fatalf("restored outbox depth %d, want 5 (3 entries and a hole of 2)", d)
	}
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	pb := newPublisher(part, prod, zerolog.New(zerolog.NewTestWriter(t)), nil, setAsidePolicy{deadLetterTopic: DefaultDeadLetterTopic, unknownTopicFor: time.Second})
	pb.lat = &latencyTracker{}
	if err := pb.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := part.OutboxDepth(); d != 0 {
		t.Fatalf("outbox depth %d after a flush, want 0", d)
	}
	if got := readTopic(t, brokers, DefaultChangesTopic, 3, 10*time.Second); len(got) != 3 {
		t.Fatalf("%d changes published, want the 3 entries", len(got))
	}
}
