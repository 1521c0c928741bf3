package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/segd/segd/segment"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

// dirtyRules reads every input type, so a bad record that slipped through
// would show in the memberships.
const dirtyRules = `version: 1
traits:
  orders_7d: count(purchase) over 7d
  spend_30d: sum(purchase.amount) over 30d
  views_24h: count(browse) over 24h
  clicks_14d: count(engagement where action == "click") over 14d
  opens_14d: count(engagement where action == "open") over 14d
segments:
  buyer: { when: "orders_7d >= 1" }
  spender: { when: "spend_30d >= 200" }
  browser: { when: "views_24h >= 3" }
  clicker: { when: "clicks_14d >= 1 or opens_14d >= 2" }
  uk: { when: "profile.country == \"United Kingdom\"" }
`

// TestDirtyInputDeadLettersExactlyTheBadOnes feeds 10,000 records over the
// embedded broker, about one in ten bad in every way the issue lists (bad
// magic byte, unknown schema id, Avro and JSON that do not decode, missing
// customer id, a timestamp before 2000 or too far in the future, an event
// of the wrong type, a value over the size limit), in three input formats
// (Confluent-framed Avro with a registry over HTTP, plain Avro, JSON). The
// dead-letter topic must hold exactly the bad records with the right
// reason and their original bytes, every offset must be accounted for, and
// the memberships must equal those of a run over the good records alone.
func TestDirtyInputDeadLettersExactlyTheBadOnes(t *testing.T) {
	const total = 10_000
	const partitions = 2
	registry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/schemas/ids/1" {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error_code":40403,"message":"Schema not found"}`))
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"schema": schemas.SchemaText(schemas.EventPurchase)})
	}))
	defer registry.Close()
	dirtyTopics := topicSet{"dirty.purchases", "dirty.browses", "dirty.engagements", "dirty.profiles", "dirty.changes", "dirty.deadletter"}
	cleanTopics := topicSet{"clean.purchases", "clean.browses", "clean.engagements", "clean.profiles", "clean.changes", "clean.deadletter"}
	broker, err := connectors.StartEmbeddedBroker(0, partitions, append(dirtyTopics[:], cleanTopics[:]...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	brokers := broker.Addrs()

	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	// Good records: purchases Confluent-framed (schema id 1), browses and
	// profiles plain Avro, engagements JSON.
	encode := func(e *schemas.Event) []byte {
		switch e.Type {
		case schemas.EventPurchase:
			b, err := codecs[e.Type].AppendEncode(schemas.AppendConfluentHeader(nil, 1), e)
			if err != nil {
				t.Fatal(err)
			}
			return b
		case schemas.EventEngagement:
			return schemas.AppendJSON(nil, e)
		}
		b, err := codecs[e.Type].AppendEncode(nil, e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	type badKind struct {
		reason schemas.Reason
		topic  int // index into a topicSet
		make   func(i int, at time.Time) (key, value []byte)
	}
	future := time.Now().Add(30 * 24 * time.Hour)
	kinds := []badKind{
		{schemas.ReasonBadMagic, 0, func(i int, _ time.Time) ([]byte, []byte) {
			return []byte(fmt.Sprintf("bad%d", i)), []byte(fmt.Sprintf("\x07not confluent %d", i))
		}},
		{schemas.ReasonUnknownSchemaID, 0, func(i int, at time.Time) ([]byte, []byte) {
			e := schemas.Event{Type: schemas.EventPurchase, EventID: fmt.Sprintf("x%d", i), CustomerID: fmt.Sprintf("bad%d", i), Time: at.UnixMilli(), Amount: 5000}
			b, _ := codecs[e.Type].AppendEncode(schemas.AppendConfluentHeader(nil, 99), &e)
			return []byte(e.CustomerID), b
		}},
		{schemas.ReasonAvroDecode, 1, func(i int, _ time.Time) ([]byte, []byte) {
			return []byte(fmt.Sprintf("bad%d", i)), []byte(fmt.Sprintf("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage %d", i))
		}},
		{schemas.ReasonJSONDecode, 2, func(i int, _ time.Time) ([]byte, []byte) {
			return []byte(fmt.Sprintf("bad%d", i)), []byte(fmt.Sprintf(`{"type":"engagement","event_id":"x%d", oops`, i))
		}},
		{schemas.ReasonMissingCustomerID, 2, func(i int, at time.Time) ([]byte, []byte) {
			return nil, []byte(fmt.Sprintf(`{"type":"engagement","event_id":"x%d","ts":%d,"channel":"email","action":"click"}`, i, at.UnixMilli()))
		}},
		{schemas.ReasonBadTimestamp, 2, func(i int, _ time.Time) ([]byte, []byte) {
			return []byte(fmt.Sprintf("bad%d", i)), []byte(fmt.Sprintf(`{"type":"engagement","event_id":"x%d","customer_id":"bad%d","ts":"1999-12-31T23:59:59Z","channel":"email","action":"click"}`, i, i))
		}},
		{schemas.ReasonFutureTimestamp, 2, func(i int, _ time.Time) ([]byte, []byte) {
			return []byte(fmt.Sprintf("bad%d", i)), []byte(fmt.Sprintf(`{"type":"engagement","event_id":"x%d","customer_id":"bad%d","ts":%d,"channel":"email","action":"click"}`, i, i, future.UnixMilli()))
		}},
		{schemas.ReasonUnknownEventType, 2, func(i int, at time.Time) ([]byte, []byte) {
			return []byte(fmt.Sprintf("bad%d", i)), []byte(fmt.Sprintf(`{"type":"purchase","event_id":"x%d","customer_id":"bad%d","ts":%d,"amount":5000}`, i, i, at.UnixMilli()))
		}},
		{schemas.ReasonTooLarge, 2, func(i int, at time.Time) ([]byte, []byte) {
			pad := strings.Repeat("z", 5000)
			return []byte(fmt.Sprintf("bad%d", i)), []byte(fmt.Sprintf(`{"type":"engagement","event_id":"x%d","customer_id":"bad%d","ts":%d,"channel":"%s","action":"click"}`, i, i, at.UnixMilli(), pad))
		}},
	}

	g, err := gen.New(gen.Config{Seed: 7, Customers: 400, EventsPerHour: 30, Duration: 400 * 3600_000})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	rng := rand.New(rand.NewPCG(3, 3))
	wantBad := map[string]schemas.Reason{} // value -> reason
	var dirty, clean []connectors.Message
	var e schemas.Event
	good := 0
	for len(dirty) < total {
		if rng.IntN(10) == 0 && len(clean) > 0 {
			k := kinds[len(wantBad)%len(kinds)]
			at := dirty[len(dirty)-1].Time
			key, value := k.make(len(wantBad), at)
			wantBad[string(value)] = k.reason
			dirty = append(dirty, connectors.Message{Topic: dirtyTopics[k.topic], Key: key, Value: value, Time: at})
			continue
		}
		if !g.Next(&e) {
			t.Fatalf("generator ended after %d events", good)
		}
		v := encode(&e)
		ti := int(e.Type) - int(schemas.EventPurchase)
		at := time.UnixMilli(e.Time)
		dirty = append(dirty, connectors.Message{Topic: dirtyTopics[ti], Key: []byte(e.CustomerID), Value: v, Time: at})
		clean = append(clean, connectors.Message{Topic: cleanTopics[ti], Key: []byte(e.CustomerID), Value: v, Time: at})
		good++
	}
	for _, batch := range [][]connectors.Message{dirty, clean} {
		if err := prod.Write(context.Background(), batch...); err != nil {
			t.Fatal(err)
		}
	}
	if len(wantBad) < 900 {
		t.Fatalf("only %d bad records", len(wantBad))
	}

	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(dirtyRules), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(name string, ts topicSet, records int) *Engine {
		cfg := topicSetConfig(t, brokers, ts, name, rulesPath)
		cfg.Kafka.SchemaRegistryURL = registry.URL
		cfg.Kafka.Topics.Purchases.Format = "confluent"
		cfg.Kafka.Topics.Engagements.Format = "json"
		cfg.Input.MaxRecordBytes = 4096
		// The wall clock is checked for future timestamps, but an idle
		// partition's watermark never follows it within the test.
		cfg.Clock.IdleAfter = time.Hour
		eng := startTopicSetEngine(t, cfg)
		waitFor(t, 60*time.Second, name+" to apply everything", func() bool {
			p := eng.Progress()
			return int(p.Events+p.DeadLetters) == records && p.OutboxDepth == 0
		})
		return eng
	}
	dirtyEng := run("dirty", dirtyTopics, total)
	cleanEng := run("clean", cleanTopics, good)

	if p := dirtyEng.Progress(); int(p.Events) != good || int(p.DeadLetters) != len(wantBad) {
		t.Fatalf("dirty run: %v events applied, %v dead letters; want %d and %d", p.Events, p.DeadLetters, good, len(wantBad))
	}
	dls := readAll(t, brokers, dirtyTopics[5], partitions, len(wantBad), 30*time.Second)
	if len(dls) != len(wantBad) {
		t.Fatalf("%d dead letters, want %d", len(dls), len(wantBad))
	}
	byReason := map[schemas.Reason]int{}
	for _, m := range dls {
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		want, ok := wantBad[string(m.Value)]
		if !ok {
			t.Fatalf("dead letter %q (reason %s) is not one of the bad records", truncateForTest(m.Value), h["segd-reason"])
		}
		if h["segd-reason"] != string(want) {
			t.Errorf("dead letter %q: reason %q, want %q (error %q)", truncateForTest(m.Value), h["segd-reason"], want, h["segd-error"])
		}
		if h["segd-topic"] == "" || h["segd-partition"] == "" || h["segd-offset"] == "" {
			t.Errorf("dead letter %q lacks its origin headers: %v", truncateForTest(m.Value), h)
		}
		byReason[want]++
		delete(wantBad, string(m.Value))
	}
	if len(wantBad) != 0 {
		t.Fatalf("%d bad records never dead-lettered", len(wantBad))
	}
	for _, k := range kinds {
		if byReason[k.reason] < 50 {
			t.Errorf("only %d dead letters with reason %s", byReason[k.reason], k.reason)
		}
	}
	t.Logf("%d good records, dead letters by reason: %v", good, byReason)
	// The good records give the same memberships as the clean run.
	rs := dirtyEng.rs.Load()
	for _, s := range rs.Segments() {
		a := allMembers(t, dirtyEng, s.ID)
		b := allMembers(t, cleanEng, s.ID)
		if len(b) == 0 {
			t.Errorf("segment %s is empty in the clean run: the test checks nothing there", s.ID)
		}
		t.Logf("segment %s: %d members", s.ID, len(b))
		if strings.Join(a, ",") != strings.Join(b, ",") {
			t.Errorf("segment %s: dirty run has %d members, clean run %d", s.ID, len(a), len(b))
		}
	}
}

// topicSet names purchases, browses, engagements, profiles, changes and
// dead letters.
type topicSet [6]string

// topicSetConfig is a test engine's config over the topics of ts with its
// own group, merges topic and state dir, in event time only, without the
// API; the caller adjusts it and calls startTopicSetEngine.
func topicSetConfig(t *testing.T, brokers []string, ts topicSet, name, rulesFile string) *Config {
	cfg := &Config{}
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.Group = name
	cfg.Kafka.MaxWait = 50 * time.Millisecond
	for i, in := range []*InputTopic{&cfg.Kafka.Topics.Purchases, &cfg.Kafka.Topics.Browses, &cfg.Kafka.Topics.Engagements, &cfg.Kafka.Topics.Profiles} {
		in.Name = ts[i]
	}
	cfg.Kafka.Topics.Changes, cfg.Kafka.Topics.DeadLetter, cfg.Kafka.Topics.Merges = ts[4], ts[5], name+".merges"
	cfg.Rules.File = rulesFile
	cfg.State.Dir = filepath.Join(t.TempDir(), name)
	cfg.Clock.IdleAfter = -1
	cfg.API.Addr = "off"
	return cfg
}

// startTopicSetEngine validates cfg and runs an engine on it until the
// test ends.
func startTopicSetEngine(t *testing.T, cfg *Config) *Engine {
	t.Helper()
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return startEngine(t, cfg)
}

func allMembers(t *testing.T, eng *Engine, segmentID string) []string {
	t.Helper()
	all, err := segment.AllMembers(eng.st, eng.rs.Load(), segmentID, nil)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func truncateForTest(b []byte) string {
	if len(b) > 60 {
		return string(b[:60]) + "..."
	}
	return string(b)
}
