package engine

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/schemas"
)

// TestLiveControlFieldOfWrongTypeIsDeadLettered: an erasure request whose
// delete is "true" or 1 (and an alias_of or attributes of the wrong type)
// goes to the dead-letter topic with reason bad_field; the customer stays
// until a well-typed delete erases them.
func TestLiveControlFieldOfWrongTypeIsDeadLettered(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, _ := jsonTestConfig(t, brokers)
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	send := func(topic, at, body string) {
		t.Helper()
		m := connectors.Message{Topic: topic, Key: []byte("erin"), Time: time.UnixMilli(ts(at)), Value: []byte(body)}
		if err := prod.Write(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	const head = `{"type":"profile","customer_id":"erin","ts":"2024-01-01T11:00:00Z",`
	bad := []string{
		head + `"event_id":"d1","delete":"true"}`,
		head + `"event_id":"d2","delete":1}`,
		head + `"event_id":"d3","alias_of":7}`,
		head + `"event_id":"d4","attributes":"country=FR"}`,
	}
	send(DefaultPurchasesTopic, "2024-01-01T10:00:00Z", `{"type":"purchase","event_id":"r1","customer_id":"erin","ts":"2024-01-01T10:00:00Z","amount":2000}`)
	for _, b := range bad {
		send(DefaultProfilesTopic, "2024-01-01T11:00:00Z", b)
	}
	send(DefaultProfilesTopic, "2024-01-01T12:00:00Z", `{"type":"profile","event_id":"d5","customer_id":"erin","ts":"2024-01-01T12:00:00Z","delete":true}`)
	startEngine(t, cfg)

	dl := readTopic(t, brokers, DefaultDeadLetterTopic, len(bad), 20*time.Second)
	if len(dl) != len(bad) {
		t.Fatalf("%d dead letters, want %d", len(dl), len(bad))
	}
	for i, m := range dl {
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		if h["segd-reason"] != string(schemas.ReasonBadField) || string(m.Value) != bad[i] {
			t.Errorf("dead letter %d: reason %q value %s; want bad_field %s", i, h["segd-reason"], m.Value, bad[i])
		}
	}
	// buyer and vip ENTER at 10:00, and EXIT (deletion) only at 12:00.
	msgs := readTopic(t, brokers, DefaultChangesTopic, 4, 20*time.Second)
	var got []string
	for _, m := range msgs {
		var c schemas.SegmentChange
		if err := schemas.DecodeSegmentChangeAvro(m.Value, &c); err != nil {
			t.Fatal(err)
		}
		got = append(got, schemas.FormatTime(c.Time)+" "+c.SegmentID+" "+c.Kind.String())
	}
	want := "2024-01-01T10:00:00Z buyer ENTER,2024-01-01T10:00:00Z vip ENTER,2024-01-01T12:00:00Z buyer EXIT,2024-01-01T12:00:00Z vip EXIT,2024-01-01T12:00:00Z  EXIT"
	if strings.Join(got, ",") != want {
		t.Fatalf("changes:\n got %s\nwant %s", strings.Join(got, ","), want)
	}
}
