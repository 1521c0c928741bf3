package engine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

// TestReplayTopicsThenRunIsACutOver replays the input topics into a fresh
// state directory, then runs the engine live on it while more events
// arrive. The replay's changes plus what the live engine publishes must be
// exactly the changes of one engine that processed everything: no gap, no
// double.
func TestReplayTopicsThenRunIsACutOver(t *testing.T) {
	const partitions = 2
	topics := []string{DefaultPurchasesTopic, DefaultBrowsesTopic, DefaultEngagementsTopic, DefaultProfilesTopic, "live.changes", "ref.changes", DefaultDeadLetterTopic}
	broker, err := connectors.StartEmbeddedBroker(0, partitions, topics...)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	brokers := broker.Addrs()
	g, _ := gen.New(gen.Config{Seed: 9, Customers: 200, EventsPerHour: 40, Start: ts("2024-01-01T00:00:00Z")})
	codecs, _ := schemas.NewCodecs()
	prod, _ := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	defer prod.Close()
	topicOf := map[schemas.EventType]string{schemas.EventPurchase: DefaultPurchasesTopic, schemas.EventBrowse: DefaultBrowsesTopic, schemas.EventEngagement: DefaultEngagementsTopic, schemas.EventProfile: DefaultProfilesTopic}
	produce := func(n int) {
		var batch []connectors.Message
		var e schemas.Event
		for i := 0; i < n; i++ {
			g.Next(&e)
			v, _ := codecs[e.Type].AppendEncode(nil, &e)
			batch = append(batch, connectors.Message{Topic: topicOf[e.Type], Key: []byte(e.CustomerID), Value: v, Time: time.UnixMilli(e.Time)})
		}
		if err := prod.Write(context.Background(), batch...); err != nil {
			t.Fatal(err)
		}
	}
	config := func(dir, changes string) *Config {
		cfg := &Config{}
		cfg.Kafka.Brokers = brokers
		cfg.Kafka.MaxWait = 50 * time.Millisecond
		cfg.Kafka.MaxTaskIdle = 10 * time.Second
		cfg.Kafka.Topics.Changes = changes
		// Each pipeline is its own group, with its own changelog.
		cfg.Kafka.Group = changes
		cfg.Rules.File = "../examples/rules.yaml"
		cfg.State.Dir = filepath.Join(dir, "state")
		cfg.Commit.Interval = 20 * time.Millisecond
		cfg.Clock.IdleAfter = -1
		cfg.API.Addr = "off"
		cfg.EnsureDefaults()
		return cfg
	}
	// run runs an engine until it applied wantEvents, published its
	// outbox, and its output stopped growing.
	run := func(cfg *Config, wantEvents float64, stop func() bool) {
		eng, err := New(cfg, Options{Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- eng.Run(ctx) }()
		waitFor(t, 60*time.Second, "engine to settle", func() bool {
			p := eng.Progress()
			return p.Events >= wantEvents && p.OutboxDepth == 0 && stop()
		})
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		eng.Close()
	}
	settled := func(topic string) func() bool {
		last, stable := -1, 0
		return func() bool {
			n := len(readAll(t, brokers, topic, partitions, 0, 0))
			if n == last && n > 0 {
				stable++
			} else {
				stable = 0
			}
			last = n
			return stable >= 2
		}
	}

	produce(3000)
	liveCfg := config(t.TempDir(), "live.changes")
	var replayed bytes.Buffer
	sum, err := Backfill(context.Background(), liveCfg, &replayed, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Events != 3000 || sum.ChangesWritten == 0 {
		t.Fatalf("replay: %d events, %d changes", sum.Events, sum.ChangesWritten)
	}
	produce(2000)
	run(liveCfg, 2000, settled("live.changes"))
	run(config(t.TempDir(), "ref.changes"), 5000, settled("ref.changes"))

	ids := map[string]int{}
	sc := bufio.NewScanner(&replayed)
	for sc.Scan() {
		var c schemas.SegmentChange
		if err := schemas.DecodeSegmentChangeJSON(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		ids[c.ID]++
	}
	for _, m := range readAll(t, brokers, "live.changes", partitions, 0, 0) {
		ids[changeKey(t, m)]++
	}
	ref := readAll(t, brokers, "ref.changes", partitions, 0, 0)
	for _, m := range ref {
		id := changeKey(t, m)
		if ids[id] != 1 {
			t.Errorf("change %s seen %d times across replay and live run, want once", id, ids[id])
		}
		delete(ids, id)
	}
	for id := range ids {
		t.Errorf("change %s is not in the uninterrupted run", id)
	}
	t.Logf("replay %d changes, reference %d", sum.ChangesWritten, len(ref))

	// Equivalence: replaying all topics gives the final memberships of the
	// live run.
	final := map[string]int64{}
	state := map[string]bool{}
	for _, m := range ref {
		var c schemas.SegmentChange
		if err := schemas.DecodeSegmentChangeAvro(m.Value, &c); err != nil {
			t.Fatal(err)
		}
		state[c.SegmentID+"/"+c.CustomerID] = c.Kind == schemas.Enter
	}
	for k, in := range state {
		if in {
			seg, _, _ := strings.Cut(k, "/")
			final[seg]++
		}
	}
	full, err := Backfill(context.Background(), config(t.TempDir(), "unused.changes"), nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	for seg, n := range full.Sizes {
		if final[seg] != n {
			t.Errorf("segment %s: live run ends with %d members, topic replay with %d", seg, final[seg], n)
		}
	}
}
