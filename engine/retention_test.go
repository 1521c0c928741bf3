package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
)

// Input records Kafka deletes while segd is down (retention overtaking a
// stopped instance) are counted and logged when it comes back, not
// skipped in silence: state misses them and operators must know.
func TestInputDeletedBeforeReadIsReported(t *testing.T) {
	broker, brokers := startTestBroker(t)
	cfg, _ := jsonTestConfig(t, brokers)
	cfg.Rules.WatchInterval = -1
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	produce := func(first, n int) {
		t.Helper()
		base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		for i := first; i < first+n; i++ {
			at := base.Add(time.Duration(i) * time.Minute)
			body := fmt.Sprintf(`{"type":"purchase","event_id":"p%d","customer_id":"c%d","ts":%q,"amount":10}`, i, i%7, at.Format(time.RFC3339))
			if err := prod.Write(context.Background(), connectors.Message{Topic: DefaultPurchasesTopic, Key: []byte(fmt.Sprintf("c%d", i%7)), Value: []byte(body), Time: at}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// run runs an engine until it applied events events, then stops it,
	// returning how many input records it reported lost.
	run := func(events float64) float64 {
		t.Helper()
		eng, err := New(cfg, Options{Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- eng.Run(ctx) }()
		waitFor(t, 30*time.Second, fmt.Sprintf("%v events applied", events), func() bool { return eng.Progress().Events == events })
		lost := counterSum(t, eng, "segd_input_records_lost_total", "topic", DefaultPurchasesTopic)
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
		if err := eng.Close(); err != nil {
			t.Fatal(err)
		}
		return lost
	}
	produce(0, 10)
	if lost := run(10); lost != 0 {
		t.Fatalf("first run reported %v records lost, want 0", lost)
	}
	// While segd is down 30 more arrive and retention deletes 10..29.
	produce(10, 30)
	if err := broker.DeleteRecords(DefaultPurchasesTopic, 0, 30); err != nil {
		t.Fatal(err)
	}
	if lost := run(10); lost != 20 {
		t.Fatalf("second run reported %v records lost, want 20 (offsets 10..29)", lost)
	}
}

// counterSum returns the value of the counter family name with label
// key=value, or of all its samples with key "" (0 if absent).
func counterSum(t *testing.T, eng *Engine, name, key, value string) float64 {
	t.Helper()
	mfs, err := eng.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if m.Counter == nil {
				continue
			}
			if key == "" {
				sum += m.Counter.GetValue()
				continue
			}
			for _, l := range m.Label {
				if l.GetName() == key && l.GetValue() == value {
					sum += m.Counter.GetValue()
				}
			}
		}
	}
	return sum
}
