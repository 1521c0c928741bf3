package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/internal/segdtest"

	"github.com/hamba/avro/v2"
	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
)

// waitFor polls cond until it is true or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	segdtest.WaitFor(t, timeout, what, cond)
}

// readTopic reads partition 0 of topic until it holds want records
// (segdtest.ReadTopic).
func readTopic(t *testing.T, brokers []string, topic string, want int, timeout time.Duration) []connectors.Message {
	t.Helper()
	return segdtest.ReadTopic(t, brokers, topic, 1, want, timeout)
}

// startTestBroker starts an embedded broker, closed when the test ends,
// with the default topics of one partition.
func startTestBroker(t *testing.T) (*connectors.EmbeddedBroker, []string) {
	t.Helper()
	topics := []string{DefaultPurchasesTopic, DefaultBrowsesTopic, DefaultEngagementsTopic, DefaultProfilesTopic, DefaultChangesTopic, DefaultDeadLetterTopic}
	return segdtest.StartBroker(t, 1, topics...)
}

// jsonTestConfig is the config of the tests over the embedded broker:
// JSON inputs, testRules in a file (its path returned), state in a temp
// dir, quick commits, event time only (the test controls the clock).
// Callers adjust it, then EnsureDefaults and Validate.
func jsonTestConfig(t *testing.T, brokers []string) (*Config, string) {
	t.Helper()
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(testRules), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{}
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.MaxWait = 50 * time.Millisecond
	for _, in := range []*InputTopic{&cfg.Kafka.Topics.Purchases, &cfg.Kafka.Topics.Browses, &cfg.Kafka.Topics.Engagements, &cfg.Kafka.Topics.Profiles} {
		in.Format = "json"
	}
	cfg.Rules.File = rulesPath
	cfg.State.Dir = filepath.Join(dir, "state")
	cfg.Commit.Interval = 20 * time.Millisecond
	cfg.Clock.IdleAfter = -1
	// Not the default 127.0.0.1:8080: another test (or a demo) may hold it.
	cfg.API.Addr = "off"
	return cfg, rulesPath
}

// TestEngineEndToEndOverKafka runs the engine against the in-process Kafka
// broker: JSON events in, Avro SegmentChanges out, decoded with hamba/avro
// (not the goavro the engine uses) and the schema in schemas/.
func TestEngineEndToEndOverKafka(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, rulesPath := jsonTestConfig(t, brokers)
	cfg.API.Addr = "127.0.0.1:0"
	cfg.API.Token = "s3cret"
	cfg.Rules.WatchInterval = -1 // this test reloads over HTTP
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// The input is all in Kafka before the engine starts (a backlog), so
	// the partition's merge order is deterministic.
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	send := func(topic, customer, at, body string) {
		t.Helper()
		m := connectors.Message{Topic: topic, Key: []byte(customer), Time: time.UnixMilli(ts(at))}
		if body != "" {
			m.Value = []byte(body)
		}
		if err := prod.Write(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	send(DefaultPurchasesTopic, "alice", "2024-01-01T10:00:00Z", `{"type":"purchase","event_id":"e1","customer_id":"alice","ts":"2024-01-01T10:00:00Z","amount":1200}`)
	send(DefaultPurchasesTopic, "mallory", "2024-01-02T00:00:00Z", `{"type":"purchase", this is not json`)
	send(DefaultEngagementsTopic, "carol", "2024-01-03T00:00:00Z", `{"type":"engagement","event_id":"k1","customer_id":"carol","ts":"2024-01-03T00:00:00Z","channel":"email","action":"click"}`)
	// Bob's event moves the partition's watermark past alice's window:
	// her EXITs fire at their exact instants, with no event of hers.
	send(DefaultPurchasesTopic, "bob", "2024-02-10T12:00:00Z", `{"type":"purchase","event_id":"b1","customer_id":"bob","ts":"2024-02-10T12:00:00Z","amount":5}`)
	// A tombstone on the profile topic erases erin: EXIT with cause DELETION.
	send(DefaultPurchasesTopic, "erin", "2024-02-10T12:00:01Z", `{"type":"purchase","event_id":"r1","customer_id":"erin","ts":"2024-02-10T12:00:01Z","amount":2000}`)
	send(DefaultProfilesTopic, "erin", "2024-02-10T12:00:02Z", "")

	eng, err := New(cfg, Options{Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		if err := eng.Close(); err != nil {
			t.Error(err)
		}
		if err := eng.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}()

	schema, err := avro.Parse(schemas.SegmentChangeSchema())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"2024-01-01T10:00:00Z alice buyer ENTER seq=1 EVENT e1 [orders_30d=1]",
		"2024-01-01T10:00:00Z alice vip ENTER seq=1 EVENT e1 [spend_90d=1200]",
		"2024-01-03T00:00:00Z carol clicker ENTER seq=1 EVENT k1 [email_clicks_14d=1]",
		"2024-01-17T00:00:00Z carol clicker EXIT seq=2 TIMER - [email_clicks_14d=0]",
		"2024-01-31T00:00:00Z alice buyer EXIT seq=2 TIMER - [orders_30d=0]",
		"2024-02-10T12:00:00Z bob buyer ENTER seq=1 EVENT b1 [orders_30d=1]",
		"2024-02-10T12:00:01Z erin buyer ENTER seq=1 EVENT r1 [orders_30d=1]",
		"2024-02-10T12:00:01Z erin vip ENTER seq=1 EVENT r1 [spend_90d=2000]",
		"2024-02-10T12:00:02Z erin buyer EXIT seq=2 DELETION - []",
		"2024-02-10T12:00:02Z erin vip EXIT seq=2 DELETION - []",
		"2024-02-10T12:00:02Z erin  EXIT seq=0 DELETION - []", // the erasure notice
	}
	msgs := readTopic(t, brokers, DefaultChangesTopic, len(want), 20*time.Second)
	var got []string
	for _, m := range msgs {
		var c struct {
			ID           string    `avro:"id"`
			CustomerID   string    `avro:"customer_id"`
			SegmentID    string    `avro:"segment_id"`
			Kind         string    `avro:"kind"`
			Seq          int64     `avro:"seq"`
			Ts           time.Time `avro:"ts"`
			Cause        string    `avro:"cause"`
			CauseEventID *string   `avro:"cause_event_id"`
			RulesVersion int64     `avro:"rules_version"`
			RulesHash    string    `avro:"rules_hash"`
			Traits       []struct {
				Name  string `avro:"name"`
				Value any    `avro:"value"`
			} `avro:"traits"`
		}
		if err := avro.Unmarshal(schema, m.Value, &c); err != nil {
			t.Fatalf("hamba/avro cannot decode a change: %v", err)
		}
		if string(m.Key) != c.CustomerID || c.RulesVersion != 3 || !strings.HasPrefix(c.ID, fmt.Sprintf("%s:%s:%d:%d:", c.CustomerID, c.SegmentID, c.Seq, c.Ts.UnixMilli())) {
			t.Errorf("bad change envelope: key %q %+v", m.Key, c)
		}
		cause := "-"
		if c.CauseEventID != nil {
			cause = *c.CauseEventID
		}
		var tv []string
		for _, tr := range c.Traits {
			tv = append(tv, fmt.Sprintf("%s=%v", tr.Name, tr.Value))
		}
		got = append(got, fmt.Sprintf("%s %s %s %s seq=%d %s %s [%s]", c.Ts.UTC().Format(time.RFC3339Nano), c.CustomerID, c.SegmentID, c.Kind, c.Seq, c.Cause, cause, strings.Join(tv, " ")))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("segment changes:\ngot:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}

	dl := readTopic(t, brokers, DefaultDeadLetterTopic, 1, 10*time.Second)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	headers := map[string]string{}
	for _, h := range dl[0].Headers {
		headers[h.Key] = string(h.Value)
	}
	if headers["segd-reason"] != "json_decode" || headers["segd-topic"] != DefaultPurchasesTopic || headers["segd-offset"] != "1" || string(dl[0].Key) != "mallory" || !strings.Contains(string(dl[0].Value), "this is not json") {
		t.Fatalf("dead letter: key %q value %q headers %v", dl[0].Key, dl[0].Value, headers)
	}
	waitFor(t, 5*time.Second, "metrics", func() bool {
		p := eng.Progress()
		return p.Events == 5 && p.DeadLetters == 1 && p.Enters == 6 && p.Exits == 4
	})
	// Six changes were caused by events; their records carry 2024 event
	// times as Kafka timestamps, so only consume-to-change observes them.
	waitFor(t, 5*time.Second, "latency histograms", func() bool {
		return histogramCount(t, eng, "segd_consume_to_change_seconds") == 6
	})
	if n := histogramCount(t, eng, "segd_event_to_change_seconds"); n != 0 {
		t.Errorf("event-to-change observed %d changes of records stamped in 2024", n)
	}
	// Per-segment transitions, segment sizes, evaluations and consumer lag.
	mfs, gerr := eng.Registry().Gather()
	if gerr != nil {
		t.Fatal(gerr)
	}
	mv := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			key := mf.GetName()
			for _, l := range m.Label {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				mv[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				mv[key] = m.Gauge.GetValue()
			}
		}
	}
	for key, want := range map[string]float64{
		"segd_segment_transitions_total,kind=ENTER,segment=buyer":      3,
		"segd_segment_transitions_total,kind=EXIT,segment=buyer":       2,
		"segd_segment_size,segment=vip":                                1,
		"segd_segment_size,segment=buyer":                              1,
		"segd_consumer_lag,partition=0,topic=" + DefaultPurchasesTopic: 0,
	} {
		if v, ok := mv[key]; !ok || v != want {
			t.Errorf("metric %s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	if mv["segd_rule_evaluations_total"] < 5 {
		t.Errorf("segd_rule_evaluations_total = %v", mv["segd_rule_evaluations_total"])
	}
	// The consumer group sees the committed offsets (lag monitoring).
	gc := (connectors.Cluster{Brokers: brokers, Security: nil}).GroupOffsetCommitter(cfg.Kafka.Group)
	defer gc.Close()
	waitFor(t, 10*time.Second, "group offsets", func() bool {
		offs, err := gc.Committed(context.Background(), 0, []string{DefaultPurchasesTopic, DefaultEngagementsTopic, DefaultProfilesTopic})
		return err == nil && offs[DefaultPurchasesTopic] == 4 && offs[DefaultEngagementsTopic] == 1 && offs[DefaultProfilesTopic] == 1
	})
	testReadModel(t, eng)
	testPreview(t, eng)
	// The status reports consumer lag (the API compares it with
	// api.ready_max_lag).
	eng.mu.Lock()
	tk := eng.parts[0].task
	eng.mu.Unlock()
	tk.maxLag.Store(250000)
	if st := eng.Status(); !st.Ready || len(st.Lags) != 1 || st.Lags[0] != (PartitionLag{Partition: 0, Lag: 250000}) {
		t.Errorf("status with a lagging partition: %+v", st)
	}
	tk.maxLag.Store(0)
	if st := eng.Status(); !st.Ready || len(st.Lags) != 1 || st.Lags[0].Lag != 0 || st.Restoring != -1 {
		t.Errorf("status caught up: %+v", st)
	}
	testReload(t, eng, rulesPath, brokers, len(want))
	testDelete(t, eng, brokers)
}

// TestIdleWatermarkFollowsWallClock: in live mode a partition with no
// traffic still moves its clock, so a time-based EXIT happens on time with
// no further event.
func TestIdleWatermarkFollowsWallClock(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, rulesPath := jsonTestConfig(t, brokers)
	if err := os.WriteFile(rulesPath, []byte("version: 1\ntraits:\n  last_order_at: last(purchase.ts)\nsegments:\n  recent: { when: \"last_order_at is not null and since(last_order_at) <= 2s\" }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Output.Format = "json"
	cfg.Clock.IdleAfter = 200 * time.Millisecond
	cfg.Clock.IdleLag = time.Millisecond
	cfg.API.Addr = "off"
	cfg.EnsureDefaults()
	startEngine(t, cfg)
	prod, _ := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	defer prod.Close()
	now := time.Now().UTC()
	body := fmt.Sprintf(`{"type":"purchase","event_id":"p1","customer_id":"dana","ts":%d,"amount":3}`, now.UnixMilli())
	if err := prod.Write(context.Background(), connectors.Message{Topic: DefaultPurchasesTopic, Key: []byte("dana"), Value: []byte(body), Time: now}); err != nil {
		t.Fatal(err)
	}
	msgs := readTopic(t, brokers, DefaultChangesTopic, 2, 15*time.Second)
	if len(msgs) != 2 {
		t.Fatalf("%d changes, want ENTER and EXIT", len(msgs))
	}
	var enter, exit schemas.SegmentChange
	if err := schemas.DecodeSegmentChangeJSON(msgs[0].Value, &enter); err != nil {
		t.Fatal(err)
	}
	if err := schemas.DecodeSegmentChangeJSON(msgs[1].Value, &exit); err != nil {
		t.Fatal(err)
	}
	if enter.Kind != schemas.Enter || exit.Kind != schemas.Exit || exit.Cause != schemas.CauseTimer {
		t.Fatalf("got %+v then %+v", enter, exit)
	}
	// The EXIT carries the instant the rule flipped, not when it was noticed.
	if want := now.UnixMilli() + 2001; exit.Time != want {
		t.Fatalf("EXIT at %s, want %s", schemas.FormatTime(exit.Time), schemas.FormatTime(want))
	}
}

// testReadModel checks what the API reads (the read model) of the live
// engine: customers at their partition's committed clock, segment sizes
// and rates, members, rules, metrics.
func testReadModel(t *testing.T, eng *Engine) {
	t.Helper()
	if st := eng.Status(); !st.Ready {
		t.Errorf("status: %+v", st)
	}
	if v := eng.Rules().Version(); v != 3 {
		t.Errorf("rules version %d, want 3", v)
	}
	if err := eng.LastReloadError(); err != nil {
		t.Errorf("last reload error: %v", err)
	}
	waitFor(t, 5*time.Second, "alice's committed state", func() bool {
		b := customerMap(t, eng, "alice")
		if b == nil {
			return false
		}
		segs := b["segments"].([]any)
		traits := b["traits"].(map[string]any)
		return len(segs) == 1 && segs[0].(map[string]any)["id"] == "vip" && segs[0].(map[string]any)["entered_at"] == "2024-01-01T10:00:00Z" &&
			traits["orders_30d"] == 0.0 && traits["spend_90d"] == 1200.0 && b["clock"] == "2024-02-10T12:00:02Z"
	})
	for _, id := range []string{"nobody", "erin"} {
		if c := customerMap(t, eng, id); c != nil {
			t.Errorf("%s: %v, want unknown", id, c)
		}
	}
	waitFor(t, 5*time.Second, "segment sizes and rates", func() bool {
		all, err := eng.SegmentSizes()
		if err != nil {
			t.Fatal(err)
		}
		sizes := map[string]int64{}
		rates := map[string][4]int64{}
		for _, s := range all {
			sizes[s.Segment.ID] = s.Size
			rates[s.Segment.ID] = [4]int64{s.Enters1h, s.Exits1h, s.Enters24h, s.Exits24h}
		}
		// buyer: alice, bob, erin entered; alice (timer) and erin (deletion) left.
		return sizes["vip"] == 1 && sizes["buyer"] == 1 && sizes["clicker"] == 0 &&
			rates["buyer"] == [4]int64{3, 2, 3, 2} && rates["clicker"] == [4]int64{1, 1, 1, 1}
	})
	ids, next, err := eng.Members("buyer", "", 100)
	if err != nil || len(ids) != 1 || ids[0] != "bob" || next != "" {
		t.Errorf("members of buyer: %v %q %v", ids, next, err)
	}
	mfs, err := eng.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	mv := map[string]float64{}
	for _, mf := range mfs {
		mv[mf.GetName()] = 0
		for _, m := range mf.Metric {
			key := mf.GetName()
			for _, l := range m.Label {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			mv[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	for key, want := range map[string]float64{"segd_events_applied_total,type=purchase": 3, "segd_dead_letters_total,reason=json_decode": 1, "segd_segment_changes_total,kind=ENTER": 6} {
		if mv[key] != want {
			t.Errorf("metric %s = %v, want %v", key, mv[key], want)
		}
	}
	for _, name := range []string{"segd_cache_hits_total", "segd_state_disk_bytes", "segd_commit_seconds"} {
		if _, ok := mv[name]; !ok {
			t.Errorf("no metric %s", name)
		}
	}
	// The customers were new to a fresh store: the filter answered their
	// first lookups without Pebble.
	if mv["segd_state_filter_skips_total"] < 1 || mv["segd_state_filter_bytes"] <= 0 {
		t.Errorf("filter metrics: skips %v, bytes %v", mv["segd_state_filter_skips_total"], mv["segd_state_filter_bytes"])
	}
}

// testReload edits the rules file and reloads: a broken file changes
// nothing and says where it is broken; a good one re-evaluates every
// customer, so a removed segment's members EXIT at once.
func testReload(t *testing.T, eng *Engine, rulesPath string, brokers []string, before int) {
	t.Helper()
	os.WriteFile(rulesPath, []byte("version: 4\ntraits:\n  n: count(purchase)\nsegments:\n  x: { when: \"m > 1\" }\n"), 0o644)
	if _, err := eng.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "rules.yaml:5:15: segment x: unknown trait \"m\"") {
		t.Fatalf("broken reload: %v", err)
	}
	if v := eng.Rules().Version(); v != 3 {
		t.Fatalf("version %d after a broken reload", v)
	}
	noVIP := strings.Replace(testRules, "  vip:\n    when: \"spend_90d >= 1000\"\n", "", 1)
	noVIP = strings.Replace(noVIP, "version: 3", "version: 4", 1)
	os.WriteFile(rulesPath, []byte(noVIP), 0o644)
	res, err := eng.Reload(context.Background())
	if err != nil || res.Version != 4 || res.Changes != 1 {
		t.Fatalf("reload: %+v %v", res, err)
	}
	msgs := readTopic(t, brokers, DefaultChangesTopic, before+1, 10*time.Second)
	if len(msgs) != before+1 {
		t.Fatalf("%d changes after reload, want %d", len(msgs), before+1)
	}
	schema, _ := avro.Parse(schemas.SegmentChangeSchema())
	var m map[string]any
	if err := avro.Unmarshal(schema, msgs[before].Value, &m); err != nil {
		t.Fatal(err)
	}
	if m["customer_id"] != "alice" || m["segment_id"] != "vip" || m["kind"] != "EXIT" || m["cause"] != "RULE_CHANGE" || m["rules_version"] != int64(4) {
		t.Fatalf("change after reload: %v", m)
	}
}

// testDelete erases bob: the request goes through his partition as a
// tombstone; he EXITs with cause DELETION and is gone.
func testDelete(t *testing.T, eng *Engine, brokers []string) {
	t.Helper()
	if err := eng.EraseCustomer(context.Background(), "bob"); err != nil {
		t.Fatalf("erase: %v", err)
	}
	schema, _ := avro.Parse(schemas.SegmentChangeSchema())
	waitFor(t, 10*time.Second, "bob's DELETION exit", func() bool {
		for _, m := range readTopic(t, brokers, DefaultChangesTopic, 0, 0) { // what is there now
			var c map[string]any
			if avro.Unmarshal(schema, m.Value, &c) == nil && c["customer_id"] == "bob" && c["cause"] == "DELETION" && c["kind"] == "EXIT" {
				return true
			}
		}
		return false
	})
	waitFor(t, 5*time.Second, "bob gone from the read model", func() bool { return customerMap(t, eng, "bob") == nil })
}

// TestRulesFileWatch: editing the rules file of a running engine reloads
// it; a broken edit is refused and reported, the running rules stay.
func TestRulesFileWatch(t *testing.T) {
	broker, err := connectors.StartEmbeddedBroker(0, 1, DefaultPurchasesTopic, DefaultBrowsesTopic, DefaultEngagementsTopic, DefaultProfilesTopic, DefaultChangesTopic, DefaultDeadLetterTopic)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rulesPath, []byte(testRules), 0o644)
	cfg := &Config{}
	cfg.Kafka.Brokers = broker.Addrs()
	cfg.Rules.File = rulesPath
	cfg.Rules.WatchInterval = 50 * time.Millisecond
	cfg.State.Dir = filepath.Join(dir, "state")
	cfg.API.Addr = "off"
	cfg.EnsureDefaults()
	eng := startEngine(t, cfg)
	waitFor(t, 10*time.Second, "ready", eng.ready.Load)
	os.WriteFile(rulesPath, []byte(strings.Replace(testRules, "version: 3", "version: 5", 1)), 0o644)
	waitFor(t, 10*time.Second, "reload of version 5", func() bool { return eng.rs.Load().Version() == 5 })
	os.WriteFile(rulesPath, []byte("version: 6\nsegments:\n  x: { when: \"nope > 1\" }\n"), 0o644)
	waitFor(t, 10*time.Second, "the broken edit reported", func() bool {
		eng.mu.Lock()
		defer eng.mu.Unlock()
		return eng.lastReloadErr != nil && strings.Contains(eng.lastReloadErr.Error(), "rules.yaml:3:")
	})
	if v := eng.rs.Load().Version(); v != 5 {
		t.Fatalf("running version %d after a broken edit, want 5", v)
	}
}

// startEngine runs an engine until the test ends.
func startEngine(t *testing.T, cfg *Config) *Engine {
	t.Helper()
	return startEngineWith(t, cfg, Options{})
}

// startEngineWith runs an engine with opt until the test ends, then
// stops it (Run must end with nothing but the cancel) and closes it.
func startEngineWith(t *testing.T, cfg *Config, opt Options) *Engine {
	t.Helper()
	eng, err := New(cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		if err := eng.Close(); err != nil {
			t.Error(err)
		}
	})
	return eng
}

// warnLogger logs warnings and errors to the test's output.
func warnLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

// testPreview: a candidate rules file previewed over the live engine's
// state changes nothing.
func testPreview(t *testing.T, eng *Engine) {
	t.Helper()
	candidate := strings.Replace(testRules, `when: "spend_90d >= 1000"`, `when: "spend_90d >= 2000"`, 1) +
		"  small:\n    when: \"spend_90d > 0 and spend_90d < 100\"\n"
	rs, err := rules.Compile("candidate.yaml", []byte(candidate))
	if err != nil {
		t.Fatal(err)
	}
	p, err := eng.PreviewRules(rs, 5)
	if err != nil {
		t.Fatalf("preview: %v", err)
	}
	got := map[string]string{}
	for _, s := range p.Segments {
		got[s.ID] = fmt.Sprintf("%v/%v +%v -%v %v %v", s.SizeNow, s.SizeNew, s.WouldEnter, s.WouldExit, s.SampleEnter, s.SampleExit)
	}
	want := map[string]string{
		"vip":   "1/0 +0 -1 [] [alice]",
		"small": "0/1 +1 -0 [bob] []",
		"buyer": "1/1 +0 -0 [] []",
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("preview of %s: %s, want %s", id, got[id], w)
		}
	}
	// Nothing changed: vip still has alice.
	if n, _ := eng.st.CountMembers("vip"); n != 1 {
		t.Errorf("preview changed the state: vip has %d members", n)
	}
}
