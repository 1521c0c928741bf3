package connectors

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kfake"
)

// EmbeddedBroker is an in-process Kafka-protocol broker (franz-go's kfake)
// on a loopback port, for the demo and tests. Any Kafka client can talk to
// it. Data lives in memory.
type EmbeddedBroker struct {
	c *kfake.Cluster
}

// StartEmbeddedBroker starts a one-broker cluster on 127.0.0.1:port (0
// picks a free port) with the given topics of partitions partitions each.
func StartEmbeddedBroker(port int, partitions int32, topics ...string) (*EmbeddedBroker, error) {
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port)}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(partitions, topics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded broker: %w", err)
	}
	return &EmbeddedBroker{c: c}, nil
}

// Addrs returns the broker's host:port addresses.
func (b *EmbeddedBroker) Addrs() []string { return b.c.ListenAddrs() }

// Close stops the broker. Safe to call twice.
func (b *EmbeddedBroker) Close() {
	if b != nil && b.c != nil {
		b.c.Close()
		b.c = nil
	}
}
