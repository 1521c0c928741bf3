package engine

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

// TestRealKafkaMatchesEmbedded runs the same generated traffic through segd
// twice, against a real Apache Kafka broker (SEGD_KAFKA_BROKERS, started by
// `make test-kafka` from Maven Central jars) and against the embedded
// broker: every segment must end with the same members, the same number
// of changes must be published, and the consumer group must show the
// committed offsets on the real broker.
func TestRealKafkaMatchesEmbedded(t *testing.T) {
	real := os.Getenv("SEGD_KAFKA_BROKERS")
	if real == "" {
		t.Skip("needs a real Apache Kafka broker: make test-kafka starts one and sets SEGD_KAFKA_BROKERS")
	}
	const partitions = 2
	prefix := fmt.Sprintf("rk%d.", time.Now().UnixNano())
	ts := topicSet{prefix + "purchases", prefix + "browses", prefix + "engagements", prefix + "profiles", prefix + "changes", prefix + "deadletter"}
	embedded, err := connectors.StartEmbeddedBroker(0, partitions)
	if err != nil {
		t.Fatal(err)
	}
	defer embedded.Close()

	var msgs []connectors.Message
	g, err := gen.New(gen.Config{Seed: 5, Customers: 300, EventsPerHour: 200, Duration: 15 * 86400_000})
	if err != nil {
		t.Fatal(err)
	}
	codecs, _ := schemas.NewCodecs()
	var e schemas.Event
	for g.Next(&e) && len(msgs) < 3000 {
		v, err := codecs[e.Type].AppendEncode(nil, &e)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, connectors.Message{Topic: ts[int(e.Type)-int(schemas.EventPurchase)], Key: []byte(e.CustomerID), Value: v, Time: time.UnixMilli(e.Time)})
	}
	run := func(name string, brokers []string) *Engine {
		ctx := context.Background()
		var specs []connectors.TopicSpec
		for _, tp := range ts {
			// The events are weeks old: without this Kafka's time
			// retention may delete them before they are read.
			specs = append(specs, connectors.TopicSpec{Name: tp, Partitions: partitions, Configs: map[string]string{"retention.ms": "-1"}})
		}
		if err := (connectors.Cluster{Brokers: brokers, Security: nil}).EnsureTopics(ctx, specs); err != nil {
			t.Fatalf("%s: create topics: %v", name, err)
		}
		prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer prod.Close()
		if err := prod.Write(ctx, msgs...); err != nil {
			t.Fatalf("%s: produce: %v", name, err)
		}
		eng := startTopicSetEngine(t, topicSetConfig(t, brokers, ts, prefix+name, "../examples/rules.yaml"))
		waitFor(t, 90*time.Second, name+" to apply and publish everything", func() bool {
			p := eng.Progress()
			return int(p.Events+p.DeadLetters) == len(msgs) && p.OutboxDepth == 0 && p.Published == p.Enters+p.Exits
		})
		return eng
	}
	onReal := run("real", strings.Split(real, ","))
	onEmbedded := run("embedded", embedded.Addrs())
	pr, pe := onReal.Progress(), onEmbedded.Progress()
	if pr.Enters != pe.Enters || pr.Exits != pe.Exits || pr.DeadLetters != 0 {
		t.Errorf("real Kafka: %+v; embedded: %+v", pr, pe)
	}
	total := 0
	for _, s := range onReal.rs.Load().Segments() {
		a, b := allMembers(t, onReal, s.ID), allMembers(t, onEmbedded, s.ID)
		total += len(a)
		if strings.Join(a, ",") != strings.Join(b, ",") {
			t.Errorf("segment %s: %d members over real Kafka, %d over the embedded broker", s.ID, len(a), len(b))
		}
	}
	if total == 0 {
		t.Fatal("no members at all: the comparison proves nothing")
	}
	changes := readAll(t, strings.Split(real, ","), ts[4], partitions, int(pr.Enters+pr.Exits), 30*time.Second)
	if len(changes) != int(pr.Enters+pr.Exits) {
		t.Errorf("read %d changes back from real Kafka, published %v", len(changes), pr.Enters+pr.Exits)
	}
	gc := (connectors.Cluster{Brokers: strings.Split(real, ","), Security: nil}).GroupOffsetCommitter(prefix + "real")
	defer gc.Close()
	waitFor(t, 15*time.Second, "group offsets on the real broker", func() bool {
		sum := int64(0)
		for p := 0; p < partitions; p++ {
			offs, err := gc.Committed(context.Background(), p, ts[:4])
			if err != nil {
				return false
			}
			for _, o := range offs {
				sum += o
			}
		}
		return sum == int64(len(msgs))
	})
	t.Logf("real Kafka at %s: %d events, %v ENTER, %v EXIT, %d members", real, len(msgs), pr.Enters, pr.Exits, total)
}
