package engine

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/segment"
)

// TestHandlePollMatchesHandle: records handed a poll at a time leave the
// same outbox, byte for byte, as the same records handed one by one (bad
// records and an event from the future included), and the poll reads
// the wall clock once where Handle reads it per record.
func TestHandlePollMatchesHandle(t *testing.T) {
	records := oneEntryRecords(t, 1500)
	start := time.Now()
	run := func(poll int) (outbox [][]byte, clockReads int64) {
		var reads atomic.Int64
		now := func() time.Time { reads.Add(1); return start }
		cfg := oneEntryConfig(t, []string{"127.0.0.1:1"}, t.TempDir())
		e, err := New(cfg, Options{Logger: zerolog.Nop(), Now: now})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		l, err := e.OpenLocal(1)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		msgs := make([]connectors.Message, len(records))
		for i, m := range records {
			m.Offset = int64(i)
			msgs[i] = m
		}
		reads.Store(0)
		for i := 0; i < len(msgs); {
			if poll == 0 {
				m := msgs[i]
				if err := l.Handle(0, m.Topic, m.Offset, m.Key, m.Value, m.Time); err != nil {
					t.Fatal(err)
				}
				i++
				continue
			}
			end := min(i+poll, len(msgs))
			if err := l.HandlePoll(0, msgs[i:end]); err != nil {
				t.Fatal(err)
			}
			i = end
		}
		clockReads = reads.Load()
		if err := l.Commit(); err != nil {
			t.Fatal(err)
		}
		return outboxEntries(t, l.tasks[0].part), clockReads
	}
	const poll = 100
	one, oneReads := run(0)
	polled, pollReads := run(poll)
	if len(one) != len(polled) {
		t.Fatalf("one by one left %d outbox entries, by polls %d", len(one), len(polled))
	}
	future := 0
	for i := range one {
		if !bytes.Equal(one[i], polled[i]) {
			t.Fatalf("entry %d differs:\none by one: %q\nby polls:   %q", i, one[i], polled[i])
		}
		env, err := segment.DecodeEnvelope(one[i])
		if err != nil {
			t.Fatal(err)
		}
		if r, _ := env.HeaderValue("segd-reason"); string(r) == "future_timestamp" {
			future++
		}
	}
	if future == 0 || len(one) < 100 {
		t.Fatalf("%d outbox entries, %d future_timestamp dead letters: the records lost what the test compares", len(one), future)
	}
	polls := int64((len(records) + poll - 1) / poll)
	if want := oneReads - int64(len(records)) + polls; pollReads != want {
		t.Errorf("by polls the clock was read %d times, want %d (one by one %d, %d records, %d polls)", pollReads, want, oneReads, len(records), polls)
	}
}
