package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/segment"
)

// TestFarFutureRecordsCannotMoveTheClock: with the idle clock off (event
// time only, as the failover tests run), a profile tombstone stamped
// 2200-01-01, an event stamped in the year 9000 and a merge record
// carrying a far-future clock are dead letters; none moves the watermark,
// so a valid event after them is applied, not dropped as too late. Before,
// the tombstone's Kafka timestamp was never validated, the event bound was
// not enforced without the idle clock, and merges carried any clock over.
func TestFarFutureRecordsCannotMoveTheClock(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, _ := jsonTestConfig(t, brokers)
	cfg.Rules.WatchInterval = -1
	cfg.Kafka.Assignment = "all"
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	send := func(m connectors.Message) {
		t.Helper()
		// segd creates the merges topic when it starts: the producer may
		// see it as unknown for a moment.
		var err error
		for try := 0; try < 300; try++ {
			if err = prod.Write(context.Background(), m); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal(err)
	}
	purchase := func(id string, at time.Time) connectors.Message {
		body := fmt.Sprintf(`{"type":"purchase","event_id":%q,"customer_id":"c1","ts":%q,"amount":10}`, id, at.Format(time.RFC3339))
		return connectors.Message{Topic: DefaultPurchasesTopic, Key: []byte("c1"), Value: []byte(body), Time: at}
	}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	// kafka-go reads timestamps past 2262 as none (nanoseconds overflow);
	// a none is erased at the partition's clock. 2200 is far enough.
	far := time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)

	eng := startEngineWith(t, cfg, Options{Logger: warnLogger(t)})

	send(purchase("o1", base))
	waitFor(t, 30*time.Second, "the first purchase", func() bool { return eng.Progress().Events == 1 })
	send(connectors.Message{Topic: DefaultProfilesTopic, Key: []byte("c2"), Value: nil, Time: far})
	send(purchase("o2", time.Date(9000, 1, 1, 0, 0, 0, 0, time.UTC)))
	merge := segment.AppendMergeRecord(nil, "m1", "c3", far.UnixMilli(), nil)
	send(connectors.Message{Topic: cfg.Kafka.Topics.Merges, Key: []byte("c1"), Value: merge, Time: base})
	send(purchase("o3", base.Add(time.Hour)))
	// The partition merges its topics by record timestamp: the far-future
	// ones come last.
	waitFor(t, 30*time.Second, "the purchase after the far-future records and 3 dead letters", func() bool {
		p := eng.Progress()
		return p.Events >= 2 && p.DeadLetters >= 3
	})

	for reason, want := range map[string]float64{"future_timestamp": 2, "bad_merge": 1} {
		if got := counterSum(t, eng, "segd_dead_letters_total", "reason", reason); got != want {
			t.Errorf("dead letters %s = %v, want %v", reason, got, want)
		}
	}
	if late := counterSum(t, eng, "segd_too_late_events_total", "", ""); late != 0 {
		t.Errorf("%v events dropped as too late: the watermark moved", late)
	}
	if wm := gaugeMax(t, eng, "segd_watermark_seconds"); wm > float64(time.Now().Add(time.Hour).Unix()) {
		t.Errorf("watermark at %s, past the wall clock", time.Unix(int64(wm), 0).UTC())
	}
}

func gaugeMax(t *testing.T, eng *Engine, name string) float64 {
	t.Helper()
	mfs, err := eng.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if m.Gauge != nil {
				out = max(out, m.Gauge.GetValue())
			}
		}
	}
	return out
}

// TestNothingIsPublishedBeforeTheChangelogHoldsIt: while the changelog
// cannot take a partition's commits (here its topic refuses every record
// batch), that partition's changes stay in the outbox: published first,
// a change could be re-derived differently by the next owner restoring the
// older changelog (consumers saw EXIT seq=2 twice with different ids).
func TestNothingIsPublishedBeforeTheChangelogHoldsIt(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, _ := jsonTestConfig(t, brokers)
	cfg.Rules.WatchInterval = -1
	cfg.Kafka.Assignment = "all"
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// A changelog topic segd accepts at start (it checks the limit then),
	// made to refuse every record batch once the partition runs.
	createChangelog(t, brokers, cfg.Kafka.Topics.Changelog, 1048588)
	eng, stop := runStoppable(t, cfg)
	defer stop()
	waitFor(t, 30*time.Second, "the partition running", func() bool { return gaugeMax(t, eng, "segd_owned_partitions") > 0 })
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := cl.AlterConfigs(context.Background(), &kafka.AlterConfigsRequest{Resources: []kafka.AlterConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: cfg.Kafka.Topics.Changelog,
		Configs: []kafka.AlterConfigRequestConfig{{Name: "cleanup.policy", Value: "compact"}, {Name: "max.message.bytes", Value: "64"}},
	}}})
	if err == nil {
		for _, e := range resp.Errors {
			err = errors.Join(err, e)
		}
	}
	if err != nil {
		t.Fatalf("alter the changelog's max.message.bytes: %v", err)
	}
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	at := time.Date(2024, 1, 1, 10, 0, 0, 0, time.UTC)
	body := fmt.Sprintf(`{"type":"purchase","event_id":"o1","customer_id":"alice","ts":%q,"amount":1500}`, at.Format(time.RFC3339))
	if err := prod.Write(context.Background(), connectors.Message{Topic: DefaultPurchasesTopic, Key: []byte("alice"), Value: []byte(body), Time: at}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the purchase applied", func() bool { return eng.Progress().Events == 1 })
	waitFor(t, 30*time.Second, "the changelog write failing", func() bool { return gaugeMax(t, eng, "segd_changelog_depth") > 0 })
	// Publishing would take milliseconds; give it well over a second.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if p := counterSum(t, eng, "segd_outbox_published_total", "", ""); p != 0 {
			t.Fatalf("%v changes published while the changelog holds none of their commits", p)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d := gaugeMax(t, eng, "segd_outbox_depth"); d != 2 {
		t.Fatalf("outbox depth %v, want the 2 changes waiting", d)
	}
}
