package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/connectors"
)

// TestCommitWhenCaughtUpPublishesAtOnce: with commit.interval at a minute,
// a change caused by a live event is still published within seconds,
// because the partition has caught up with its input and commits at once
// (commit.when_caught_up, the default). Off, the change would wait for
// the interval (seen failing with the early commit removed).
func TestCommitWhenCaughtUpPublishesAtOnce(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, _ := jsonTestConfig(t, brokers)
	cfg.Commit.Interval = time.Minute
	cfg.EnsureDefaults()
	if cfg.Commit.WhenCaughtUp != "on" {
		t.Fatalf("commit.when_caught_up defaults to %q, want on", cfg.Commit.WhenCaughtUp)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// Far less than the commit interval: only an early commit gets the
	// change out in time.
	checkLivePurchasePublished(t, cfg, brokers)
}

// TestCommitWhenCaughtUpValidated: the option takes on or off only.
func TestCommitWhenCaughtUpValidated(t *testing.T) {
	for _, v := range []string{"on", "off", "yes", "ON"} {
		cfg := &Config{}
		cfg.Kafka.Brokers = []string{"127.0.0.1:9092"}
		cfg.Rules.File = "rules.yaml"
		cfg.Commit.WhenCaughtUp = v
		cfg.EnsureDefaults()
		err := cfg.Validate()
		bad := err != nil && strings.Contains(err.Error(), "commit.when_caught_up")
		if want := v != "on" && v != "off"; bad != want {
			t.Errorf("when_caught_up %q: Validate() = %v, want rejected %v", v, err, want)
		}
	}
}

// TestCommitWhenCaughtUpKeepsBacklogCommitsLarge: a backlog is worked off
// in commits of commit.max_events, not one per poll: early commits happen
// only once the input is drained. 20,000 purchases that each change a
// segment, max_events 5000, interval a minute: a handful of commits (seen
// failing with every poll counted as caught up: 40).
func TestCommitWhenCaughtUpKeepsBacklogCommitsLarge(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, _ := jsonTestConfig(t, brokers)
	cfg.Commit.Interval = time.Minute
	cfg.Commit.MaxEvents = 5000
	// The changelog cuts commits at 1 MiB of changes: off, commits come
	// from max_events and the input alone.
	cfg.State.Changelog = "off"
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	const n = 20000
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	msgs := make([]connectors.Message, 0, 1000)
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("c%05d", i)
		body := fmt.Sprintf(`{"type":"purchase","event_id":"b-%d","customer_id":"%s","ts":"2024-01-01T10:00:00Z","amount":20}`, i, id)
		msgs = append(msgs, connectors.Message{Topic: DefaultPurchasesTopic, Key: []byte(id), Value: []byte(body), Time: time.UnixMilli(ts("2024-01-01T10:00:00Z"))})
		if len(msgs) == cap(msgs) {
			if err := prod.Write(context.Background(), msgs...); err != nil {
				t.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	eng, stop := runStoppable(t, cfg)
	defer stop()
	waitFor(t, 60*time.Second, "the backlog applied and its changes published", func() bool {
		p := eng.Progress()
		return p.Events >= n && p.OutboxDepth == 0 && p.Published >= p.Enters+p.Exits && p.Enters > 0
	})
	commits := int(histogramCount(t, eng, "segd_commit_seconds"))
	// n/max_events commits for the events, plus a few early ones when a
	// poll found the fetched records used up (5-6 seen, 9 with two CPU
	// hogs beside; 4 with early commits off); one per poll would be n/512
	// or more.
	if commits < n/5000 || commits > n/5000+16 {
		t.Fatalf("%d commits for a backlog of %d events with max_events 5000", commits, n)
	}
	t.Logf("%d commits for %d events", commits, n)
}
