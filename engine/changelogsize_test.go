package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/internal/segdtest"
)

func TestChangelogLimitsFollowTheTopic(t *testing.T) {
	for _, c := range []struct {
		name            string
		maxMessage      int64
		attrBytes       int
		commit, request int64
		err             string
	}{
		{"segd's topic", 8 << 20, 64 << 10, 4 << 20, 1 << 20, ""},
		{"a broker's default", 1048588, 64 << 10, 524294, 524294, ""},
		{"just under a MiB", 1<<20 - 1, 0, 0, 0, "at most 1048575 bytes (max.message.bytes), segd needs at least 1048576"},
		{"attributes over a quarter", 1048588, 512 << 10, 0, 0, "input.max_attribute_bytes 524288"},
		{"attributes at a quarter", 4 << 20, 1 << 20, 2 << 20, 1 << 20, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			lim, err := limitsFor(c.maxMessage, c.attrBytes)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "max.message.bytes=8388608") {
					t.Fatalf("err = %v, want one containing %q and the fix", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if lim.maxMessage != c.maxMessage || lim.commitBytes != c.commit || lim.request != c.request {
				t.Fatalf("limits = %+v, want max %d commit %d request %d", lim, c.maxMessage, c.commit, c.request)
			}
		})
	}
}

// createChangelog creates the changelog topic before segd runs, as an
// operator may, with max.message.bytes set to maxMessage.
func createChangelog(t *testing.T, brokers []string, topic string, maxMessage int) {
	t.Helper()
	err := connectors.Cluster{Brokers: brokers}.EnsureTopics(context.Background(), []connectors.TopicSpec{{
		Name: topic, Partitions: 1, Compacted: true, Configs: map[string]string{"max.message.bytes": fmt.Sprint(maxMessage)},
	}})
	if err != nil {
		t.Fatal(err)
	}
}

// TestChangelogCommitsFitAnExistingTopic: a changelog topic created
// beforehand with a broker's default limit (about 1 MB, where segd
// creates its own with 8 MiB) still takes every commit: segd reads the
// limit and cuts commits at half of it. Cut for 8 MiB, the first commit
// (1,500 customers of about 4 KB) is a record batch the topic refuses,
// and the changelog stays empty.
func TestChangelogCommitsFitAnExistingTopic(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, _ := jsonTestConfig(t, brokers)
	// Commits cut by size alone: the backlog is read well within the
	// interval, which then commits the rest.
	cfg.Commit.Interval = 3 * time.Second
	cfg.Commit.MaxEvents = 100_000
	// kafka-go gives a fetch's response max_wait to start arriving (less
	// an RTT allowance). Fetches here carry megabytes, which the
	// in-process broker takes longer than the tests' 50ms to build under
	// the race detector: every fetch would time out and be retried.
	cfg.Kafka.MaxWait = time.Second
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	createChangelog(t, brokers, cfg.Kafka.Topics.Changelog, 1048588)
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const customers = 1500
	bio := strings.Repeat("b", 4000)
	msgs := make([]connectors.Message, 0, customers)
	for i := range customers {
		id := fmt.Sprintf("c%04d", i)
		body := fmt.Sprintf(`{"type":"profile","event_id":"p%d","customer_id":%q,"ts":"2024-01-01T10:00:00Z","attributes":{"bio":%q}}`, i, id, bio)
		msgs = append(msgs, connectors.Message{Topic: DefaultProfilesTopic, Key: []byte(id), Value: []byte(body), Time: time.UnixMilli(ts("2024-01-01T10:00:00Z"))})
	}
	if err := prod.Write(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	var logs segdtest.SyncBuffer
	startEngineWith(t, cfg, Options{Logger: zerolog.New(io.MultiWriter(&logs, zerolog.NewTestWriter(t))).Level(zerolog.WarnLevel)})
	// The changelog holds other keys too (offsets, counts): as many
	// records as customers can be there before the last commits are, so
	// read until every customer's record is (or the deadline).
	deadline := time.Now().Add(60 * time.Second)
	seen := map[string]bool{}
	for {
		recs := readTopic(t, brokers, cfg.Kafka.Topics.Changelog, customers, time.Until(deadline))
		clear(seen)
		for _, m := range recs {
			if len(m.Key) > 5 && m.Key[0] == 'c' && m.Value != nil {
				seen[string(m.Key[5:])] = true
			}
		}
		if len(seen) >= customers || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(seen) != customers {
		t.Fatalf("the changelog holds the records of %d customers, want %d", len(seen), customers)
	}
	// Each commit one record batch: none was cut in parts (which a
	// reader could see half of).
	if strings.Contains(logs.String(), "outgrew") {
		t.Fatalf("a commit outgrew a record batch:\n%s", logs.String())
	}
}

// TestChangelogTopicTooSmallIsRefused: a changelog topic that cannot take
// a commit of a few customers stops segd at start with the fix, instead
// of wedging the partition on its first commit.
func TestChangelogTopicTooSmallIsRefused(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, _ := jsonTestConfig(t, brokers)
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	createChangelog(t, brokers, cfg.Kafka.Topics.Changelog, 512<<10)
	eng, err := New(cfg, Options{Logger: warnLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = eng.Run(ctx)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "max.message.bytes") || !strings.Contains(err.Error(), cfg.Kafka.Topics.Changelog) {
		t.Fatalf("Run = %v, want a refusal naming the topic and max.message.bytes", err)
	}
}
