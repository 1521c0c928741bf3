package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/segment"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/schemas"
)

// The crash loop of huge amounts, end to end: two purchases of 1e308 with
// output.format json used to make spend_90d +Inf and panic the JSON
// encoder on every restart. Now the sum saturates, the change is
// published, records with numbers segd cannot hold are dead letters
// (bad_value), and later events are applied by the same running engine.
func TestEngineSurvivesHugeAmounts(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, rulesPath := jsonTestConfig(t, brokers)
	// whale flips on the second order, when spend_90d would be +Inf.
	const rules = `version: 1
traits:
  orders_30d: count(purchase) over 30d
  spend_90d: sum(purchase.amount) over 90d
segments:
  buyer: { when: "orders_30d >= 1" }
  whale: { when: "spend_90d >= 1000 and orders_30d >= 2" }
`
	if err := os.WriteFile(rulesPath, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Output.Format = "json"
	cfg.API.Addr = "off"
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	send := func(customer, at, body string) {
		t.Helper()
		m := connectors.Message{Topic: DefaultPurchasesTopic, Key: []byte(customer), Time: time.UnixMilli(ts(at)), Value: []byte(body)}
		if err := prod.Write(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	const p = `{"type":"purchase","event_id":"%s","customer_id":"%s","ts":"%s","amount":%s,"quantity":%s}`
	send("alice", "2024-01-01T10:00:00Z", fmt.Sprintf(p, "a1", "alice", "2024-01-01T10:00:00Z", "1e308", "1"))
	send("alice", "2024-01-01T11:00:00Z", fmt.Sprintf(p, "a2", "alice", "2024-01-01T11:00:00Z", "1e308", "1"))
	send("mallory", "2024-01-01T12:00:00Z", fmt.Sprintf(p, "m1", "mallory", "2024-01-01T12:00:00Z", "1e400", "1"))
	send("mallory", "2024-01-01T12:00:01Z", fmt.Sprintf(p, "m2", "mallory", "2024-01-01T12:00:01Z", "5", "1e30"))

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
		eng.Close()
	}()

	changeLines := func(msgs []connectors.Message) []string {
		var out []string
		for _, m := range msgs {
			var c schemas.SegmentChange
			if err := schemas.DecodeSegmentChangeJSON(m.Value, &c); err != nil {
				t.Fatalf("change %s: %v", m.Value, err)
			}
			line := fmt.Sprintf("%s %s %s", c.CustomerID, c.SegmentID, c.Kind)
			for _, tv := range c.Traits {
				line += fmt.Sprintf(" %s=%v", tv.Name, tv.Value.Num)
			}
			out = append(out, line)
		}
		return out
	}
	want := []string{
		"alice buyer ENTER orders_30d=1",
		fmt.Sprintf("alice whale ENTER orders_30d=2 spend_90d=%v", math.MaxFloat64),
	}
	got := changeLines(readTopic(t, brokers, DefaultChangesTopic, len(want), 20*time.Second))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("changes:\n got %q\nwant %q", got, want)
	}
	dl := readTopic(t, brokers, DefaultDeadLetterTopic, 2, 20*time.Second)
	var reasons []string
	for _, m := range dl {
		for _, h := range m.Headers {
			if h.Key == "segd-reason" {
				reasons = append(reasons, string(h.Value))
			}
		}
	}
	if strings.Join(reasons, ",") != "bad_value,bad_value" {
		t.Fatalf("dead-letter reasons %q, want two bad_value", reasons)
	}

	// Still running: a later event is applied.
	send("bob", "2024-01-02T10:00:00Z", fmt.Sprintf(p, "b1", "bob", "2024-01-02T10:00:00Z", "10", "1"))
	want = append(want, "bob buyer ENTER orders_30d=1")
	got = changeLines(readTopic(t, brokers, DefaultChangesTopic, len(want), 20*time.Second))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("changes after the later event:\n got %q\nwant %q", got, want)
	}
	select {
	case err := <-done:
		t.Fatalf("engine stopped: %v", err)
	default:
	}
}

// A customer at the largest attribute bounds the config allows, with every
// trait of the test rules holding state, encodes far below the changelog's
// per-record limit: no customer record can wedge the changelog.
func TestCustomerAtBoundsFitsChangelog(t *testing.T) {
	// 65,536 attributes are over the bytes bound with any value; fill the
	// bytes bound with as many attributes as fit (the worst case for
	// per-attribute overhead), then the last bytes with one long string.
	var attrs []schemas.Attribute
	used := 0
	for i := 0; len(attrs) < maxMaxAttributes-1; i++ {
		a := schemas.Attribute{Name: fmt.Sprintf("%06d", i), Value: schemas.Bool(true)}
		if used+7 > maxMaxAttributeBytes-64 {
			break
		}
		attrs = append(attrs, a)
		used += 7
	}
	attrs = append(attrs, schemas.Attribute{Name: "zz", Value: schemas.String(strings.Repeat("x", maxMaxAttributeBytes-used-2))})
	var events []schemas.Event
	for i := 0; i < len(attrs); i += maxMaxAttributes / 4 {
		batch := attrs[i:min(i+maxMaxAttributes/4, len(attrs))]
		events = append(events, profile(fmt.Sprintf("p%d", i), "alice", "2024-01-01T00:00:00Z", batch...))
	}
	for d := range 90 {
		at := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC).AddDate(0, 0, d).Format(time.RFC3339)
		events = append(events, purchase(fmt.Sprintf("o%d", d), "alice", at, 1e6))
	}
	c := customerAfter(t, maxMaxAttributes, maxMaxAttributeBytes, "alice", events)
	n, b := c.Traits().AttrUsage()
	if n != len(attrs) || b != maxMaxAttributeBytes {
		t.Fatalf("customer holds %d attributes, %d bytes; want %d, %d", n, b, len(attrs), maxMaxAttributeBytes)
	}
	size := len(c.AppendBinary(nil))
	t.Logf("customer at input.max_attribute_bytes %d with %d attributes: %d bytes encoded (changelog limit %d)", b, n, size, changelogMaxMessage)
	if size > changelogMaxMessage/4 {
		t.Fatalf("record is %d bytes, want under a quarter of the changelog's %d", size, changelogMaxMessage)
	}
	// And at the defaults.
	var def []schemas.Attribute
	per := DefaultMaxAttributeBytes / DefaultMaxAttributes
	for i := range DefaultMaxAttributes {
		name := fmt.Sprintf("%06d", i)
		def = append(def, schemas.Attribute{Name: name, Value: schemas.String(strings.Repeat("x", per-len(name)))})
	}
	c2 := customerAfter(t, DefaultMaxAttributes, DefaultMaxAttributeBytes, "bob", []schemas.Event{profile("d1", "bob", "2024-01-01T00:00:00Z", def...)})
	t.Logf("customer at the default bounds: %d bytes encoded", len(c2.AppendBinary(nil)))
}

// customerAfter applies events under the attribute bounds and returns
// customer id's record.
func customerAfter(t *testing.T, maxN, maxBytes int, id string, events []schemas.Event) *segment.Customer {
	t.Helper()
	h := newHarness(t, testRules)
	proc, err := segment.New(h.rs, h.part, segment.Options{
		ChangesTopic: DefaultChangesTopic, DeadLetterTopic: DefaultDeadLetterTopic, EncodeChange: schemas.AppendSegmentChangeJSON,
		MaxAttributes: maxN, MaxAttributeBytes: maxBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range events {
		if err := proc.Apply(&events[i]); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := h.part.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return rec.(*segment.Customer)
}
