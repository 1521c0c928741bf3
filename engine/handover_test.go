package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/connectors"
)

// A partition handed over to another instance takes its gauges along:
// the outbox and changelog depth, watermark and lag of a partition this
// instance no longer runs would otherwise stay at their last values and
// hold alerts forever. Two engines share a group in one process.
func TestHandedOverPartitionLeavesNoGauges(t *testing.T) {
	cfgA, cfgB := twoInstances(t, "handover")
	a := startEngine(t, cfgA)
	waitFor(t, 30*time.Second, "A to run both partitions and apply every event", func() bool {
		return len(a.ownedPartitions()) == 2 && a.Progress().Events == 40
	})
	if got := gaugePartitions(t, a); got != "0 1" {
		t.Fatalf("A runs both partitions but reports gauges for %q", got)
	}
	b := startEngine(t, cfgB)
	waitFor(t, 60*time.Second, "A and B to run one partition each", func() bool {
		return len(a.ownedPartitions()) == 1 && len(b.ownedPartitions()) == 1
	})
	for name, eng := range map[string]*Engine{"A": a, "B": b} {
		want := fmt.Sprint(eng.ownedPartitions()[0])
		waitFor(t, 10*time.Second, name+"'s gauges to follow its partitions", func() bool {
			return gaugePartitions(t, eng) == want
		})
	}
}

// gaugePartitions lists, space separated and sorted, the partitions any of
// the per-partition gauges has a series for; a gauge with different
// partitions than another fails the test.
func gaugePartitions(t *testing.T, eng *Engine) string {
	t.Helper()
	mfs, err := eng.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]string{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "segd_outbox_depth", "segd_changelog_depth", "segd_watermark_seconds", "segd_consumer_lag",
			"segd_consumer_buffered_records", "segd_consumer_buffered_bytes", "segd_consumer_paused_topics":
		default:
			continue
		}
		set := map[string]bool{}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "partition" {
					set[l.GetValue()] = true
				}
			}
		}
		ps := make([]string, 0, len(set))
		for p := range set {
			ps = append(ps, p)
		}
		sort.Strings(ps)
		by[mf.GetName()] = strings.Join(ps, " ")
	}
	out := ""
	for _, ps := range by {
		if out != "" && ps != out {
			return fmt.Sprintf("mismatch: %v", by)
		}
		out = ps
	}
	return out
}

// The assignor is sticky: an instance that restarts gets back the
// partition its store is in sync on, so it restores nothing, and the
// instance that stood in for it gives that one back and keeps its own.
func TestRestartedInstanceGetsItsPartitionBack(t *testing.T) {
	cfgA, cfgB := twoInstances(t, "sticky")
	// B runs alone first (both partitions), then A joins: from then on
	// each holds one, and B restarts three times.
	bFirst, stopFirst := runStoppable(t, cfgB)
	waitFor(t, 30*time.Second, "B to apply every event", func() bool { return bFirst.Progress().Events == 40 })
	a := startEngine(t, cfgA)
	waitFor(t, 60*time.Second, "A and B to run one partition each", func() bool {
		return len(a.ownedPartitions()) == 1 && len(bFirst.ownedPartitions()) == 1
	})
	first := bFirst.ownedPartitions()[0]
	aKeeps := fmt.Sprint([]int32{1 - first})
	stopFirst()
	waitFor(t, 30*time.Second, "A to run both partitions", func() bool { return len(a.ownedPartitions()) == 2 })
	// runB runs B until A and B own one partition each and returns B's
	// partition and how many changelog records B restored.
	runB := func() (int32, float64) {
		t.Helper()
		b, stop := runStoppable(t, cfgB)
		waitFor(t, 60*time.Second, "A and B to run one partition each", func() bool {
			return len(a.ownedPartitions()) == 1 && len(b.ownedPartitions()) == 1
		})
		waitFor(t, 10*time.Second, "B ready", func() bool { return b.ready.Load() })
		p := b.ownedPartitions()[0]
		if got := fmt.Sprint(a.ownedPartitions()); got != aKeeps {
			t.Fatalf("A runs %s while B runs %d, it ran %s", got, p, aKeeps)
		}
		restored := counterSum(t, b, "segd_restore_records_total", "", "")
		stop()
		waitFor(t, 30*time.Second, "A to run both partitions again", func() bool { return len(a.ownedPartitions()) == 2 })
		return p, restored
	}
	for i := 0; i < 3; i++ {
		p, restored := runB()
		if p != first || restored != 0 {
			t.Fatalf("restart %d: B got partition %d restoring %v records; it had %d, whose state it keeps", i+1, p, restored, first)
		}
	}
}

// twoInstances starts an embedded broker with two partitions and 40
// purchases in it, and returns the configs of two instances of group
// (API off, quick heartbeats) with their own state directories.
func twoInstances(t *testing.T, group string) (*Config, *Config) {
	t.Helper()
	topics := []string{DefaultPurchasesTopic, DefaultBrowsesTopic, DefaultEngagementsTopic, DefaultProfilesTopic, DefaultChangesTopic, DefaultDeadLetterTopic}
	broker, err := connectors.StartEmbeddedBroker(0, 2, topics...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	brokers := broker.Addrs()
	cfgA, _ := jsonTestConfig(t, brokers)
	cfgA.Kafka.Group = group
	cfgA.Kafka.SessionTimeout = 6 * time.Second
	cfgA.Kafka.HeartbeatInterval = 200 * time.Millisecond
	cfgA.Rules.WatchInterval = -1
	cfgA.API.Addr = "off"
	cfgA.EnsureDefaults()
	if err := cfgA.Validate(); err != nil {
		t.Fatal(err)
	}
	cfgB := *cfgA
	cfgB.State.Dir = filepath.Join(t.TempDir(), "b")

	producePurchases(t, brokers, 0, 40)
	return cfgA, &cfgB
}

// producePurchases writes purchases first..first+n-1 (a customer each, a
// minute apart, 2000 each) to the purchases topic.
func producePurchases(t *testing.T, brokers []string, first, n int) {
	t.Helper()
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	var msgs []connectors.Message
	for i := first; i < first+n; i++ {
		at := base.Add(time.Duration(i) * time.Minute)
		id := fmt.Sprintf("c%d", i%60)
		msgs = append(msgs, connectors.Message{Topic: DefaultPurchasesTopic, Key: []byte(id), Time: at,
			Value: []byte(fmt.Sprintf(`{"type":"purchase","event_id":"p%d","customer_id":%q,"ts":%q,"amount":2000}`, i, id, at.Format(time.RFC3339)))})
	}
	if err := prod.Write(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// partitionContents is a partition's committed customers and offsets, for
// comparing two stores.
func partitionContents(t *testing.T, eng *Engine, p int32) string {
	t.Helper()
	var b strings.Builder
	if err := eng.st.RangeCommitted(p, func(id string, data []byte) error {
		fmt.Fprintf(&b, "%s=%x\n", id, data)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	offs, err := eng.st.CommittedOffsets(p)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(offs))
	for k := range offs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "offset %s=%d\n", k, offs[k])
	}
	return b.String()
}

// An instance coming back to a partition that another ran meanwhile, with
// new input, catches up on the changelog from where it synced instead of
// restoring it all, and ends with the same state as the stand-in.
func TestReturningInstanceCatchesUpOnTheChangelog(t *testing.T) {
	cfgA, cfgB := twoInstances(t, "catchup")
	brokers := cfgA.Kafka.Brokers
	b, stopB := runStoppable(t, cfgB)
	waitFor(t, 30*time.Second, "B to apply every event", func() bool { return b.Progress().Events == 40 })
	a := startEngine(t, cfgA)
	waitFor(t, 60*time.Second, "A and B to run one partition each", func() bool {
		return len(a.ownedPartitions()) == 1 && len(b.ownedPartitions()) == 1
	})
	p := b.ownedPartitions()[0]
	stopB()
	waitFor(t, 30*time.Second, "A to run both partitions", func() bool { return len(a.ownedPartitions()) == 2 })
	// New input while B is away, customers old and new, on both partitions.
	producePurchases(t, brokers, 40, 60)
	waitFor(t, 30*time.Second, "A to apply the new events", func() bool { return a.Progress().Events == 60 })

	b, stopB = runStoppable(t, cfgB)
	defer stopB()
	waitFor(t, 60*time.Second, "B to get its partition back", func() bool {
		return len(a.ownedPartitions()) == 1 && len(b.ownedPartitions()) == 1 && b.ready.Load()
	})
	if got := b.ownedPartitions()[0]; got != p {
		t.Fatalf("B got partition %d back, it had %d", got, p)
	}
	end, err := (connectors.Cluster{Brokers: brokers, Security: nil}).ChangelogEnd(context.Background(), cfgA.Kafka.Topics.Changelog, int(p))
	if err != nil {
		t.Fatal(err)
	}
	restored := counterSum(t, b, "segd_restore_records_total", "", "")
	if restored == 0 || restored >= float64(end) {
		t.Fatalf("B applied %v changelog records of %d: want a catch-up, more than none and fewer than all", restored, end)
	}
	// A ran the partition last and handed it over: its store holds the
	// state B must have.
	if got, want := partitionContents(t, b, p), partitionContents(t, a, p); got != want {
		t.Fatalf("B's partition %d after catching up differs from A's:\n got %s\nwant %s", p, got, want)
	}
}

// runStoppable runs an engine until the returned stop is called (unlike
// startEngine, which runs it until the test ends).
func runStoppable(t *testing.T, cfg *Config) (*Engine, func()) {
	t.Helper()
	eng, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	return eng, func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
		eng.Close()
	}
}
