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
