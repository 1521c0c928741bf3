// Package segdtest holds the helpers segd's tests share: polling with a
// deadline, an embedded broker per test, reading a topic to its end.
// Only tests import it.
package segdtest

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/segd/segd/connectors"
)

// WaitFor polls cond every 20 ms until it holds, and fails the test naming
// what it waited for once timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartBroker starts an embedded Kafka-protocol broker on a free loopback
// port with topics of partitions partitions each, closed when the test
// ends, and returns it and its addresses.
func StartBroker(t testing.TB, partitions int32, topics ...string) (*connectors.EmbeddedBroker, []string) {
	t.Helper()
	b, err := connectors.StartEmbeddedBroker(0, partitions, topics...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b, b.Addrs()
}

// ReadTopic reads every partition of topic to its end, again until it
// holds at least want records. A read error fails the test, and so does
// want not reached within timeout.
func ReadTopic(t testing.TB, brokers []string, topic string, partitions, want int, timeout time.Duration) []connectors.Message {
	t.Helper()
	return ReadTopicSecure(t, brokers, nil, topic, partitions, want, timeout)
}

// ReadTopicSecure is ReadTopic over a connection with sec's TLS and SASL.
func ReadTopicSecure(t testing.TB, brokers []string, sec *connectors.Security, topic string, partitions, want int, timeout time.Duration) []connectors.Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var out []connectors.Message
		for p := 0; p < partitions; p++ {
			out = append(out, readPartition(t, brokers, sec, topic, p)...)
		}
		if len(out) >= want {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d records after %s, want at least %d", topic, len(out), timeout, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readPartition(t testing.TB, brokers []string, sec *connectors.Security, topic string, p int) []connectors.Message {
	t.Helper()
	c, err := connectors.NewPartitionConsumer(connectors.PartitionConsumerOptions{
		Brokers: brokers, Topics: []string{topic}, Partition: p, StopAtEnd: true, FetchMaxWait: 100 * time.Millisecond, Security: sec,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []connectors.Message
	for {
		msgs, err := c.Poll(context.Background(), make([]connectors.Message, 0, 512), time.Second)
		out = append(out, msgs...)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read %s/%d: %v", topic, p, err)
		}
	}
}
