package engine

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/schemas"
)

// registryRules count purchases, the EUR ones, and the items, so that a
// field's decoded value shows in a customer's traits.
const registryRules = `version: 1
traits:
  orders: count(purchase) over 3650d
  eur_orders: count(purchase where currency == "EUR") over 3650d
  items: sum(purchase.quantity) over 3650d
  spend: sum(purchase.amount) over 3650d
segments:
  buyer:
    when: "orders >= 1"
`

// registryTestConfig: the purchases topic in the confluent format against
// the registry at url, the other inputs JSON; two partitions, event time
// only, quick commits, the API on a free port.
func registryTestConfig(t *testing.T, brokers []string, ts topicSet, url, readerFile string) *Config {
	t.Helper()
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(registryRules), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := topicSetConfig(t, brokers, ts, "reg", rulesPath)
	for _, in := range []*InputTopic{&cfg.Kafka.Topics.Browses, &cfg.Kafka.Topics.Engagements, &cfg.Kafka.Topics.Profiles} {
		in.Format = "json"
	}
	cfg.Kafka.SchemaRegistryURL = url
	cfg.Kafka.Topics.Purchases.Format = "confluent"
	cfg.Kafka.Topics.Purchases.SchemaFile = readerFile
	cfg.Commit.Interval = 20 * time.Millisecond
	cfg.API.Addr = "127.0.0.1:0"
	return cfg
}

// confluentPurchase encodes rec with writer schema text under schema id.
func confluentPurchase(t *testing.T, id uint32, writer string, rec map[string]any) []byte {
	t.Helper()
	c, err := goavro.NewCodec(writer)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.BinaryFromNative(schemas.AppendConfluentHeader(nil, id), rec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// purchaseRecord is a purchase in goavro's native form, with every field of
// segd's schema; callers delete the ones their writer schema lacks.
func purchaseRecord(eventID, customer string, at time.Time, amount float64) map[string]any {
	return map[string]any{"event_id": eventID, "customer_id": customer, "ts": at, "channel": "web", "order_id": "o-" + eventID,
		"amount": amount, "currency": "GBP", "quantity": int64(1), "categories": []any{}, "product_ids": []any{}}
}

// A registry outage must not dead-letter anything: the partition stops at
// the first record it cannot decode, shows it in /readyz (still 200) and
// the metrics, applies nothing after it (not even records of a schema id
// it knows), and once the registry answers again applies every record
// exactly once, in order.
func TestRegistryOutageWaitsAtTheRecord(t *testing.T) {
	var down atomic.Bool
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error_code":50301,"message":"storage unavailable"}`))
			return
		}
		switch r.URL.Path {
		case "/schemas/ids/1", "/schemas/ids/2":
			json.NewEncoder(w).Encode(map[string]string{"schema": schemas.SchemaText(schemas.EventPurchase)})
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error_code":40403,"message":"Schema not found"}`))
		}
	}))
	defer srv.Close()
	ts := topicSet{"r.purchases", "r.browses", "r.engagements", "r.profiles", "r.changes", "r.deadletter"}
	broker, err := connectors.StartEmbeddedBroker(0, 1, ts[:]...)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	prod, err := connectors.NewProducer(broker.Addrs(), connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	writer := schemas.SchemaText(schemas.EventPurchase)
	at := time.UnixMilli(1_700_000_000_000)
	send := func(id uint32, n int, from int) {
		t.Helper()
		for i := from; i < from+n; i++ {
			v := confluentPurchase(t, id, writer, purchaseRecord("e"+strconv.Itoa(i), "alice", at.Add(time.Duration(i)*time.Second), 1))
			if err := prod.Write(context.Background(), connectors.Message{Topic: ts[0], Key: []byte("alice"), Value: v, Time: at}); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg := registryTestConfig(t, broker.Addrs(), ts, srv.URL, "")
	eng := startTopicSetEngine(t, cfg)
	send(1, 3, 0)
	waitFor(t, 20*time.Second, "the first 3 records applied", func() bool { return eng.Progress().Events == 3 })

	down.Store(true)
	send(2, 2, 3) // a schema id not fetched yet: waits
	send(1, 2, 5) // a known one, behind it: must wait too
	waitFor(t, 20*time.Second, "the partition waiting at offset 3", func() bool {
		w := eng.DecodeWaits()
		return len(w) == 1 && w[0].Offset == 3 && w[0].Attempts >= 3
	})
	// Still ready (it serves committed state), and says what it waits for.
	if st := eng.Status(); !st.Ready || len(st.DecodeWaiting) != 1 {
		t.Fatalf("status while waiting: %+v", st)
	}
	if p := eng.Progress(); p.Events != 3 || p.DeadLetters != 0 {
		t.Fatalf("while the registry is down: %v events applied, %v dead letters; want 3 and 0", p.Events, p.DeadLetters)
	}
	if n := metricSum(t, eng, "segd_registry_errors_total"); n < 3 {
		t.Errorf("segd_registry_errors_total %v, want >= 3", n)
	}
	if n := metricSum(t, eng, "segd_decode_waiting"); n != 1 {
		t.Errorf("segd_decode_waiting %v, want 1", n)
	}

	down.Store(false)
	waitFor(t, 20*time.Second, "all 7 records applied", func() bool { return eng.Progress().Events == 7 })
	waitFor(t, 5*time.Second, "the wait cleared", func() bool { return len(eng.DecodeWaits()) == 0 })
	if st := eng.Status(); !st.Ready || len(st.DecodeWaiting) != 0 {
		t.Errorf("status after the outage: %+v", st)
	}
	if p := eng.Progress(); p.DeadLetters != 0 {
		t.Errorf("%v dead letters, want 0", p.DeadLetters)
	}
	if n := metricSum(t, eng, "segd_decode_waiting"); n != 0 {
		t.Errorf("segd_decode_waiting %v after the outage, want 0", n)
	}
	c := customerTraits(t, eng, "alice")
	if c["orders"] != 7.0 || c["spend"] != 7.0 {
		t.Errorf("alice's traits %v, want 7 orders, spend 7", c)
	}
}

// A task waiting on the registry stops promptly when the engine stops, and
// commits nothing past the record it waits at: a new engine on the same
// state applies it (and what follows) once the registry answers.
func TestRegistryWaitEndsOnShutdown(t *testing.T) {
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"schema": schemas.SchemaText(schemas.EventPurchase)})
	}))
	defer srv.Close()
	down.Store(true)
	ts := topicSet{"s.purchases", "s.browses", "s.engagements", "s.profiles", "s.changes", "s.deadletter"}
	broker, err := connectors.StartEmbeddedBroker(0, 1, ts[:]...)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	prod, err := connectors.NewProducer(broker.Addrs(), connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	at := time.UnixMilli(1_700_000_000_000)
	for i := 0; i < 4; i++ {
		v := confluentPurchase(t, 1, schemas.SchemaText(schemas.EventPurchase), purchaseRecord("e"+strconv.Itoa(i), "bob", at, 2))
		if err := prod.Write(context.Background(), connectors.Message{Topic: ts[0], Key: []byte("bob"), Value: v, Time: at}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := registryTestConfig(t, broker.Addrs(), ts, srv.URL, "")
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	eng, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	waitFor(t, 20*time.Second, "the partition waiting", func() bool { return len(eng.DecodeWaits()) == 1 })
	// Let the backoff grow past a second: the stop must not wait it out.
	waitFor(t, 20*time.Second, "backoff over 1 s", func() bool {
		w := eng.DecodeWaits()
		return len(w) == 1 && w[0].Attempts >= 6
	})
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil && !strings.Contains(err.Error(), "context canceled") {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of the cancel")
	}
	stopped := time.Since(start)
	if p := eng.Progress(); p.Events != 0 || p.DeadLetters != 0 {
		t.Fatalf("%v events, %v dead letters while the registry was down; want 0 and 0", p.Events, p.DeadLetters)
	}
	eng.Close()
	t.Logf("a waiting engine stopped %v after the cancel", stopped)
	if stopped > 2*time.Second {
		t.Errorf("stopping took %v; the wait must end on cancel", stopped)
	}

	down.Store(false)
	eng2 := startTopicSetEngine(t, cfg)
	waitFor(t, 20*time.Second, "all 4 applied by the next engine", func() bool { return eng2.Progress().Events == 4 })
	if c := customerTraits(t, eng2, "bob"); c["orders"] != 4.0 {
		t.Errorf("bob's traits %v, want 4 orders", c)
	}
}

// metricSum sums the series of a counter or gauge family of eng's metrics.
func metricSum(t *testing.T, eng *Engine, name string) float64 {
	t.Helper()
	mfs, err := eng.m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}
