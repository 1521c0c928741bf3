package connectors

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
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

// DeleteRecords deletes the records of topic/partition below offset, as
// time retention or an operator's DeleteRecords would: the log then starts
// at offset. It shows what segd does with input that is gone before it is
// read (kafka-go has no DeleteRecords; franz-go's client does).
func (b *EmbeddedBroker) DeleteRecords(topic string, partition int32, offset int64) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs()...))
	if err != nil {
		return fmt.Errorf("delete records of %s/%d: %w", topic, partition, err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = partition, offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 5000
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("delete records of %s/%d: %w", topic, partition, err)
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				return fmt.Errorf("delete records of %s/%d: %w", topic, partition, err)
			}
		}
	}
	return nil
}
