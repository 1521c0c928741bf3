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
		case "segd_outbox_depth", "segd_changelog_depth", "segd_watermark_seconds", "segd_consumer_lag":
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
	bDone := make(chan struct{})
	bFirst, err := New(cfgB, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { defer close(bDone); bFirst.Run(ctx) }()
	waitFor(t, 30*time.Second, "B to apply every event", func() bool { return bFirst.Progress().Events == 40 })
	a := startEngine(t, cfgA)
	waitFor(t, 60*time.Second, "A and B to run one partition each", func() bool {
		return len(a.ownedPartitions()) == 1 && len(bFirst.ownedPartitions()) == 1
	})
	first := bFirst.ownedPartitions()[0]
	aKeeps := fmt.Sprint([]int32{1 - first})
	cancel()
	<-bDone
	bFirst.Close()
	waitFor(t, 30*time.Second, "A to run both partitions", func() bool { return len(a.ownedPartitions()) == 2 })
	// runB runs B until A and B own one partition each and returns B's
	// partition and how many changelog records B restored.
	runB := func() (int32, float64) {
		t.Helper()
		b, err := New(cfgB, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- b.Run(ctx) }()
		waitFor(t, 60*time.Second, "A and B to run one partition each", func() bool {
			return len(a.ownedPartitions()) == 1 && len(b.ownedPartitions()) == 1
		})
		waitFor(t, 10*time.Second, "B ready", func() bool { return b.ready.Load() })
		p := b.ownedPartitions()[0]
		if got := fmt.Sprint(a.ownedPartitions()); got != aKeeps {
			t.Fatalf("A runs %s while B runs %d, it ran %s", got, p, aKeeps)
		}
		restored := counterSum(t, b, "segd_restore_records_total", "", "")
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("B: %v", err)
		}
		b.Close()
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

	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	var msgs []connectors.Message
	for i := 0; i < 40; i++ {
		at := base.Add(time.Duration(i) * time.Minute)
		id := fmt.Sprintf("c%d", i)
		msgs = append(msgs, connectors.Message{Topic: DefaultPurchasesTopic, Key: []byte(id), Time: at,
			Value: []byte(fmt.Sprintf(`{"type":"purchase","event_id":"p%d","customer_id":%q,"ts":%q,"amount":2000}`, i, id, at.Format(time.RFC3339)))})
	}
	if err := prod.Write(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}

	return cfgA, &cfgB
}
