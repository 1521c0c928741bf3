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

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/schemas"
)

// A change the output encoding refuses (here: a trait that is NaN, as
// state written before segd checked numbers could hold) is set aside as a
// dead letter; the event is not an error, so the partition never stops on
// it, the transition stands and later changes flow.
func TestProcessorUnencodableChangeIsDeadLettered(t *testing.T) {
	h := newHarness(t, testRules)
	h.proc.opt.encodeChange = func(dst []byte, c *schemas.SegmentChange) ([]byte, error) {
		if c.SegmentID == "vip" && c.Kind == schemas.Enter {
			for i := range c.Traits {
				c.Traits[i].Value = schemas.Number(math.NaN())
			}
		}
		return schemas.AppendSegmentChangeJSON(dst, c)
	}
	h.apply(purchase("e1", "alice", "2024-01-01T10:00:00Z", 2000))
	h.expect(
		"2024-01-01T10:00:00Z alice buyer ENTER event e1",
		"DEADLETTER segd.deadletter",
	)
	if n := h.proc.stats.deadLetter[reasonUnencodableChange]; n != 1 {
		t.Fatalf("dead letters %s = %d, want 1", reasonUnencodableChange, n)
	}
	// alice is in vip (the transition stood), so a cancellation takes her
	// out with an EXIT that encodes.
	h.apply(purchase("e2", "alice", "2024-01-02T10:00:00Z", -1500))
	h.expect("2024-01-02T10:00:00Z alice vip EXIT event e2")
}

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

func profile(id, customer, at string, attrs ...schemas.Attribute) schemas.Event {
	return schemas.Event{Type: schemas.EventProfile, EventID: id, CustomerID: customer, Time: ts(at), Attributes: attrs}
}

// Profile attributes are bounded per event and per customer, in count and
// bytes; an update past a bound is refused whole with too_many_attributes
// (the task dead-letters it), and a customer past a bound may shrink.
func TestProcessorAttributeBounds(t *testing.T) {
	h := newHarness(t, testRules)
	h.proc.opt.maxAttributes, h.proc.opt.maxAttributeBytes = 4, 100
	str := func(name, v string) schemas.Attribute { return schemas.Attribute{Name: name, Value: schemas.String(v)} }
	refused := func(e schemas.Event, want string) {
		t.Helper()
		err := h.proc.apply(&e)
		var rej *rejectedError
		if !errors.As(err, &rej) || rej.reason != schemas.ReasonTooManyAttributes || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want too_many_attributes with %q", err, want)
		}
	}
	h.apply(profile("p1", "alice", "2024-01-01T00:00:00Z", str("a", "1"), str("b", "2"), str("c", "3")))
	refused(profile("p2", "alice", "2024-01-01T00:00:01Z", str("d", "4"), str("e", "5")), "customer would have 5 attributes, limit 4")
	refused(profile("p3", "alice", "2024-01-01T00:00:02Z", str("a", "1"), str("b", "1"), str("c", "1"), str("d", "1"), str("e", "1")),
		"the event carries 5 attributes, limit 4")
	refused(profile("p4", "alice", "2024-01-01T00:00:03Z", str("d", strings.Repeat("x", 100))), "would take 107 bytes, limit 100")
	if v, ok := h.proc.load("alice", ""); ok == nil {
		if n, _ := v.traits.AttrUsage(); n != 3 {
			t.Fatalf("refused updates applied: %d attributes", n)
		}
	}
	// Replacing and removing within the bounds is fine.
	h.apply(profile("p5", "alice", "2024-01-01T00:00:04Z", str("a", "new"), schemas.Attribute{Name: "b"}, str("d", "4"), str("e", "5")))
	// Lowered bounds: the customer is past them, and may still shrink.
	h.proc.opt.maxAttributes = 2
	h.apply(profile("p6", "alice", "2024-01-01T00:00:05Z", schemas.Attribute{Name: "a"}))
	refused(profile("p7", "alice", "2024-01-01T00:00:06Z", str("z", "1")), "customer would have 4 attributes, limit 2")
}

// A customer at the largest attribute bounds the config allows, with every
// trait of the test rules holding state, encodes far below the changelog's
// per-record limit: no customer record can wedge the changelog.
func TestCustomerAtBoundsFitsChangelog(t *testing.T) {
	h := newHarness(t, testRules)
	h.proc.opt.maxAttributes, h.proc.opt.maxAttributeBytes = maxMaxAttributes, maxMaxAttributeBytes
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
	for i := 0; i < len(attrs); i += maxMaxAttributes / 4 {
		batch := attrs[i:min(i+maxMaxAttributes/4, len(attrs))]
		h.apply(profile(fmt.Sprintf("p%d", i), "alice", "2024-01-01T00:00:00Z", batch...))
	}
	for d := range 90 {
		at := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC).AddDate(0, 0, d).Format(time.RFC3339)
		h.apply(purchase(fmt.Sprintf("o%d", d), "alice", at, 1e6))
	}
	c, err := h.proc.load("alice", "")
	if err != nil {
		t.Fatal(err)
	}
	n, b := c.traits.AttrUsage()
	if n != len(attrs) || b != maxMaxAttributeBytes {
		t.Fatalf("customer holds %d attributes, %d bytes; want %d, %d", n, b, len(attrs), maxMaxAttributeBytes)
	}
	size := len(c.AppendBinary(nil))
	t.Logf("customer at input.max_attribute_bytes %d with %d attributes: %d bytes encoded (changelog limit %d)", b, n, size, changelogMaxMessage)
	if size > changelogMaxMessage/4 {
		t.Fatalf("record is %d bytes, want under a quarter of the changelog's %d", size, changelogMaxMessage)
	}
	// And at the defaults.
	h2 := newHarness(t, testRules)
	h2.proc.opt.maxAttributes, h2.proc.opt.maxAttributeBytes = DefaultMaxAttributes, DefaultMaxAttributeBytes
	var def []schemas.Attribute
	per := DefaultMaxAttributeBytes / DefaultMaxAttributes
	for i := range DefaultMaxAttributes {
		name := fmt.Sprintf("%06d", i)
		def = append(def, schemas.Attribute{Name: name, Value: schemas.String(strings.Repeat("x", per-len(name)))})
	}
	h2.apply(profile("d1", "bob", "2024-01-01T00:00:00Z", def...))
	c2, _ := h2.proc.load("bob", "")
	t.Logf("customer at the default bounds: %d bytes encoded", len(c2.AppendBinary(nil)))
}
