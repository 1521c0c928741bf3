package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segd/segd/segment"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
)

// The per-record path above rules and schemas: what the task adds to
// decoding and rule evaluation when it handles a record, and what the
// publisher adds to a send. The bounds are today's counts; a change that
// allocates more per record fails here.

// TestTaskHandleAllocations: handling a JSON purchase of a known customer
// (decode, validate, de-duplicate, apply, evaluate, stage) allocates only
// the decoded event's strings.
func TestTaskHandleAllocations(t *testing.T) {
	proc := jsonPurchaseProcessor(t, newHarness(t, testRules))
	now := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	tk := openTask(0, proc, nil, nil, nil, taskOptions{idleAfter: -1, now: func() time.Time { return now }}, zerolog.Nop(), nil)
	values := make([][]byte, 4096)
	for i := range values {
		at := now.Add(-time.Hour).Add(time.Duration(i) * time.Millisecond)
		values[i] = []byte(fmt.Sprintf(`{"type":"purchase","event_id":"o%d","customer_id":"c%d","ts":%d,"amount":1}`, i, i%8, at.UnixMilli()))
	}
	m := connectors.Message{Topic: DefaultPurchasesTopic} // the customer id comes from the value
	i := 0
	handle := func() {
		m.Value, m.Offset = values[i%len(values)], int64(i)
		i++
		if err := tk.handle(&m); err != nil {
			t.Fatal(err)
		}
	}
	for range 64 { // warm: customers loaded, maps sized
		handle()
	}
	if err := proc.Commit(); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, handle)
	t.Logf("task.handle: %.1f allocations per record", allocs)
	// The decoded event's customer_id and event_id strings (a third, the
	// error target of the dead-letter check, went on 2026-12-04).
	if allocs > 2 {
		t.Errorf("task.handle allocates %.1f times per record, want at most 2", allocs)
	}
}

// TestPublisherSendAllocations: draining committed outbox entries to the
// sink allocates a bounded, small number of times per entry (the copies
// of key and value the sink keeps once ReadOutbox's bytes go).
func TestPublisherSendAllocations(t *testing.T) {
	h := newHarness(t, testRules)
	pb := newPublisher(h.part, discardSink{}, zerolog.Nop(), nil, setAsidePolicy{deadLetterTopic: DefaultDeadLetterTopic, unknownTopicFor: time.Second})
	pb.lat = &latencyTracker{}
	value := []byte(`{"id":"c1:buyer:1:0:1","customer_id":"c1","segment_id":"buyer","kind":"ENTER"}`)
	env := segment.AppendEnvelope(nil, DefaultChangesTopic, "c1", nil, value)
	const perRound = 64
	send := func() {
		for range perRound {
			h.part.AppendOutbox(env)
		}
		if err := h.part.Commit(); err != nil {
			t.Fatal(err)
		}
		if _, err := pb.drain(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for range 8 {
		send()
	}
	allocs := testing.AllocsPerRun(50, send) / perRound
	t.Logf("publisher: %.1f allocations per outbox entry (append, commit, read, send, delete)", allocs)
	// Today about 3: the copies of key and value, amortized batch work.
	if allocs > 4 {
		t.Errorf("publishing allocates %.1f times per entry, want at most 4", allocs)
	}
}

type discardSink struct{}

func (discardSink) Write(context.Context, ...connectors.Message) error { return nil }
