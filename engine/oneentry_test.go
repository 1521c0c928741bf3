package engine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/state"

	"github.com/segd/segd/internal/segdtest"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/internal/kpart"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/segment"
)

// TestLiveAndBackfillGiveTheSameBytes: live partitions (Local, the task a
// running engine uses) and a backfill of the same topics go through one
// entry point and differ only in options, so the same records, within
// both sets of bounds, leave byte-identical outboxes: every change and
// every dead letter, headers included, in the same order.
func TestLiveAndBackfillGiveTheSameBytes(t *testing.T) {
	const partitions = 2
	_, brokers := segdtest.StartBroker(t, partitions, DefaultPurchasesTopic, DefaultBrowsesTopic, DefaultEngagementsTopic, DefaultProfilesTopic,
		DefaultChangesTopic, DefaultDeadLetterTopic, DefaultMergesTopic)
	records := oneEntryRecords(t, 1500)
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.Write(context.Background(), records...); err != nil {
		t.Fatal(err)
	}

	config := func(dir string) *Config { return oneEntryConfig(t, brokers, dir) }
	// The backfill, its outboxes kept.
	// Both hold record times to the same wall clock: the backfill's start.
	start := time.Now()
	now := func() time.Time { return start }
	bf, err := New(config(t.TempDir()), Options{Logger: zerolog.Nop(), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	bf.keepBackfillOutbox = true
	sum, err := bf.Backfill(context.Background(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// Live: the same records in the order the backfill's consumer merged
	// them (by record time, all distinct), with their Kafka offsets.
	live, err := New(config(t.TempDir()), Options{Logger: zerolog.Nop(), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	l, err := live.OpenLocal(partitions)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	offsets := map[string]int64{}
	for _, m := range records {
		p := kpart.For(m.Key, partitions)
		at := fmt.Sprint(m.Topic, "/", p)
		if err := l.Handle(int32(p), m.Topic, offsets[at], m.Key, m.Value, m.Time); err != nil {
			t.Fatal(err)
		}
		offsets[at]++
	}
	for p := range int32(partitions) {
		if err := l.Advance(p, sum.LastEventTime); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Commit(); err != nil {
		t.Fatal(err)
	}

	changes, deadLetters := 0, map[string]int{}
	for p := range int32(partitions) {
		bfPart, err := bf.st.Partition(p)
		if err != nil {
			t.Fatal(err)
		}
		want := outboxEntries(t, bfPart)
		got := outboxEntries(t, l.tasks[p].part)
		if len(got) != len(want) {
			t.Fatalf("partition %d: live left %d outbox entries, the backfill %d", p, len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("partition %d entry %d differs:\nlive:     %q\nbackfill: %q", p, i, got[i], want[i])
			}
			env, err := segment.DecodeEnvelope(want[i])
			if err != nil {
				t.Fatal(err)
			}
			if env.Topic == DefaultDeadLetterTopic {
				r, _ := env.HeaderValue("segd-reason")
				deadLetters[string(r)]++
			} else {
				changes++
			}
		}
	}
	t.Logf("%d changes and dead letters %v identical in both", changes, deadLetters)
	for _, reason := range []string{"too_large", "avro_decode", "future_timestamp"} {
		if deadLetters[reason] == 0 {
			t.Errorf("no %s dead letter among %v: the test lost its bad records", reason, deadLetters)
		}
	}
	if deadLetters["avro_decode"] != 2 {
		t.Errorf("%d avro_decode dead letters, want 2 (the corrupt value, the browse on the purchases topic)", deadLetters["avro_decode"])
	}
	if changes < 100 {
		t.Errorf("only %d changes", changes)
	}
}

// oneEntryRecords is n generated events as Avro records, each stamped with
// a record time of its own (the consumer's merge order is then the
// slice's), with bad records among them: a corrupt value, one over
// input.max_record_bytes, one from the far future, a browse on the
// purchases topic, and a profile tombstone.
// oneEntryConfig is the config of the one-entry tests' engines: the
// example rules, JSON output, a 4 KiB record bound (oneEntryRecords holds
// a larger one), state under dir, no API.
func oneEntryConfig(t *testing.T, brokers []string, dir string) *Config {
	t.Helper()
	cfg := &Config{}
	cfg.Kafka.Brokers = brokers
	cfg.Rules.File = "../examples/rules.yaml"
	cfg.State.Dir = filepath.Join(dir, "state")
	cfg.Output.Format = "json"
	cfg.Input.MaxRecordBytes = 4096
	cfg.API.Addr = "off"
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func oneEntryRecords(t *testing.T, n int) []connectors.Message {
	t.Helper()
	g, err := gen.New(gen.Config{Seed: 5, Customers: 150, EventsPerHour: 60, Start: ts("2024-01-01T00:00:00Z")})
	if err != nil {
		t.Fatal(err)
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	topicOf := map[schemas.EventType]string{schemas.EventPurchase: DefaultPurchasesTopic, schemas.EventBrowse: DefaultBrowsesTopic, schemas.EventEngagement: DefaultEngagementsTopic, schemas.EventProfile: DefaultProfilesTopic}
	var out []connectors.Message
	var e schemas.Event
	last := int64(0)
	add := func(topic, key string, value []byte, at int64) {
		at = max(at, last+1)
		last = at
		out = append(out, connectors.Message{Topic: topic, Key: []byte(key), Value: value, Time: time.UnixMilli(at)})
	}
	for i := 0; i < n && g.Next(&e); i++ {
		v, err := codecs[e.Type].AppendEncode(nil, &e)
		if err != nil {
			t.Fatal(err)
		}
		add(topicOf[e.Type], e.CustomerID, v, e.Time)
		switch i {
		case 300:
			add(DefaultPurchasesTopic, e.CustomerID, []byte{0xff, 0xff, 0xff}, e.Time)
		case 600:
			add(DefaultBrowsesTopic, e.CustomerID, []byte(strings.Repeat("x", 5000)), e.Time)
		case 900:
			far := e
			far.EventID, far.Time = "far-future", time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
			fv, err := codecs[far.Type].AppendEncode(nil, &far)
			if err != nil {
				t.Fatal(err)
			}
			add(topicOf[far.Type], far.CustomerID, fv, e.Time)
		case 1000:
			b := schemas.Event{Type: schemas.EventBrowse, EventID: "misplaced", CustomerID: e.CustomerID, Time: e.Time, Page: "product"}
			bv, err := codecs[schemas.EventBrowse].AppendEncode(nil, &b)
			if err != nil {
				t.Fatal(err)
			}
			add(DefaultPurchasesTopic, b.CustomerID, bv, e.Time)
		case 1200:
			add(DefaultProfilesTopic, e.CustomerID, nil, e.Time)
		}
	}
	return out
}

// outboxEntries is a partition's whole outbox, raw.
func outboxEntries(t *testing.T, part *state.Partition) [][]byte {
	t.Helper()
	var out [][]byte
	err := part.ReadOutbox(0, 1<<62, func(_ uint64, v []byte) error {
		out = append(out, bytes.Clone(v))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
