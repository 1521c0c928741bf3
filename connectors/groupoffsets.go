package connectors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// GroupOffsetCommitter commits offsets for a consumer group without
// joining it (generation -1), so that the usual lag tools (kafka-consumer-
// groups, Burrow, exporters) see how far segd is. segd's own offsets live
// in its store; these are for monitoring only. Safe for concurrent use.
type GroupOffsetCommitter struct {
	client *kafka.Client
	tr     *kafka.Transport
	group  string
}

// NewGroupOffsetCommitter returns a committer for group. Close it.
func (c Cluster) GroupOffsetCommitter(group string) *GroupOffsetCommitter {
	brokers, sec := c.Brokers, c.Security
	tr := sec.transport()
	return &GroupOffsetCommitter{
		client: &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr},
		tr:     tr,
		group:  group,
	}
}

// Close releases the committer's connections (and the transport's
// metadata goroutines, which would otherwise run forever). Safe to call
// twice.
func (g *GroupOffsetCommitter) Close() error {
	g.tr.CloseIdleConnections()
	return nil
}

// Commit commits next offsets (topic -> next offset) of one partition.
func (g *GroupOffsetCommitter) Commit(ctx context.Context, partition int, next map[string]int64) error {
	req := &kafka.OffsetCommitRequest{GroupID: g.group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{}}
	for topic, off := range next {
		req.Topics[topic] = []kafka.OffsetCommit{{Partition: partition, Offset: off}}
	}
	resp, err := g.client.OffsetCommit(ctx, req)
	if err != nil {
		return fmt.Errorf("commit group %s offsets: %w", g.group, err)
	}
	var errs []error
	for topic, parts := range resp.Topics {
		for _, p := range parts {
			if p.Error != nil {
				errs = append(errs, fmt.Errorf("%s/%d: %w", topic, p.Partition, p.Error))
			}
		}
	}
	return errors.Join(errs...)
}

// Committed returns the group's committed offsets of one partition.
func (g *GroupOffsetCommitter) Committed(ctx context.Context, partition int, topics []string) (map[string]int64, error) {
	req := &kafka.OffsetFetchRequest{GroupID: g.group, Topics: map[string][]int{}}
	for _, t := range topics {
		req.Topics[t] = []int{partition}
	}
	resp, err := g.client.OffsetFetch(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("fetch group %s offsets: %w", g.group, err)
	}
	out := map[string]int64{}
	for topic, parts := range resp.Topics {
		for _, p := range parts {
			if p.Error == nil && p.CommittedOffset >= 0 {
				out[topic] = p.CommittedOffset
			}
		}
	}
	return out, nil
}
