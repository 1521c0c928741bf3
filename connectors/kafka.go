package connectors

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/segd/segd/internal/kpart"

	"github.com/segmentio/kafka-go"
)

// Header is a Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Message is a Kafka record.
type Message struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	Time      time.Time
	// HighWaterMark is the partition's end offset when the record was
	// fetched (0 for records written by this process).
	HighWaterMark int64
}

func fromKafka(m *kafka.Message) Message {
	out := Message{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value, Time: m.Time, HighWaterMark: m.HighWaterMark}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, Header{Key: h.Key, Value: h.Value})
	}
	return out
}

func toKafka(m *Message) kafka.Message {
	out := kafka.Message{Topic: m.Topic, Key: m.Key, Value: m.Value, Time: m.Time}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, kafka.Header{Key: h.Key, Value: h.Value})
	}
	return out
}

// dialAny connects to the first reachable broker.
func dialAny(ctx context.Context, brokers []string, sec *Security) (*kafka.Conn, error) {
	var errs []string
	for _, b := range brokers {
		d := sec.dialer()
		conn, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, fmt.Sprintf("%s: %v", b, err))
	}
	return nil, fmt.Errorf("cannot connect to any broker (%s)", strings.Join(errs, "; "))
}

// PartitionCounts returns the number of partitions of each topic. A topic
// that does not exist is an error naming it.
func (c Cluster) PartitionCounts(ctx context.Context, topics []string) (map[string]int, error) {
	brokers, sec := c.Brokers, c.Security
	conn, err := dialAny(ctx, brokers, sec)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topics...)
	if err != nil {
		return nil, fmt.Errorf("read partitions of %s: %w", strings.Join(topics, ", "), err)
	}
	counts := map[string]int{}
	for _, p := range parts {
		if p.Error != nil {
			continue
		}
		counts[p.Topic]++
	}
	var missing []string
	for _, t := range topics {
		if counts[t] == 0 {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return counts, fmt.Errorf("topic(s) %s do not exist: create them (co-partitioned, keyed by customer id)", strings.Join(missing, ", "))
	}
	return counts, nil
}

// MissingTopics returns those of topics that do not exist, in their order.
func (c Cluster) MissingTopics(ctx context.Context, topics []string) ([]string, error) {
	brokers, sec := c.Brokers, c.Security
	conn, err := dialAny(ctx, brokers, sec)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var missing []string
	for _, t := range topics {
		parts, err := conn.ReadPartitions(t)
		switch {
		case errors.Is(err, kafka.UnknownTopicOrPartition):
			missing = append(missing, t)
		case err != nil:
			return nil, fmt.Errorf("read partitions of %s: %w", t, err)
		case len(parts) == 0:
			missing = append(missing, t)
		}
	}
	return missing, nil
}

// CheckCoPartitioned verifies that every topic has the same number of
// partitions (customer state is owned per partition number, so a customer
// must land on the same partition number in every input topic) and returns it.
func (c Cluster) CheckCoPartitioned(ctx context.Context, topics []string) (int, error) {
	counts, err := c.PartitionCounts(ctx, topics)
	if err != nil {
		return 0, err
	}
	n := counts[topics[0]]
	same := true
	var desc []string
	for _, t := range topics {
		desc = append(desc, fmt.Sprintf("%s=%d", t, counts[t]))
		if counts[t] != n {
			same = false
		}
	}
	if !same {
		return 0, fmt.Errorf("input topics are not co-partitioned (%s): every input topic needs the same partition count, keyed by customer id with murmur2", strings.Join(desc, ", "))
	}
	return n, nil
}

// TopicSpec describes a topic to create.
type TopicSpec struct {
	Name       string
	Partitions int
	// Replication defaults to 1.
	Replication int
	// Compacted sets cleanup.policy=compact (the profile topic, the
	// changelog).
	Compacted bool
	// Configs are further topic configs (e.g. max.message.bytes).
	Configs map[string]string
}

// EnsureTopics creates the topics that do not exist yet. Existing topics
// are left alone, whatever their settings.
func (c Cluster) EnsureTopics(ctx context.Context, specs []TopicSpec) error {
	brokers, sec := c.Brokers, c.Security
	conn, err := dialAny(ctx, brokers, sec)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("find controller: %w", err)
	}
	cc, err := sec.dialer().DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return fmt.Errorf("dial controller: %w", err)
	}
	defer cc.Close()
	var cfgs []kafka.TopicConfig
	for _, s := range specs {
		rf := s.Replication
		if rf == 0 {
			rf = 1
		}
		tc := kafka.TopicConfig{Topic: s.Name, NumPartitions: s.Partitions, ReplicationFactor: rf}
		if s.Compacted {
			tc.ConfigEntries = []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}}
		}
		names := make([]string, 0, len(s.Configs))
		for k := range s.Configs {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: s.Configs[k]})
		}
		cfgs = append(cfgs, tc)
	}
	if err := cc.CreateTopics(cfgs...); err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topics: %w", err)
	}
	// A new topic reaches the other brokers' metadata a moment later:
	// wait for it, so the caller's next request does not see it missing.
	names := make([]string, len(specs))
	for i := range specs {
		names[i] = specs[i].Name
	}
	giveUp := time.Now().Add(30 * time.Second)
	for {
		_, err := c.PartitionCounts(ctx, names)
		if err == nil || time.Now().After(giveUp) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// BrokerCount returns the number of brokers in the cluster's metadata.
func (c Cluster) BrokerCount(ctx context.Context) (int, error) {
	brokers, sec := c.Brokers, c.Security
	conn, err := dialAny(ctx, brokers, sec)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	bs, err := conn.Brokers()
	if err != nil {
		return 0, fmt.Errorf("list brokers: %w", err)
	}
	return len(bs), nil
}

// EndOffsets returns the first and end (high-water mark) offsets of one
// partition of each topic. While a partition has no reachable leader (a
// broker just died, an election is under way) it retries for up to a
// minute, or until ctx ends.
func (c Cluster) EndOffsets(ctx context.Context, topics []string, partition int) (first, end map[string]int64, err error) {
	backoff := 200 * time.Millisecond
	giveUp := time.Now().Add(time.Minute)
	for {
		first, end, err = c.endOffsetsOnce(ctx, topics, partition)
		if err == nil || ctx.Err() != nil || time.Now().After(giveUp) {
			return first, end, err
		}
		select {
		case <-ctx.Done():
			return nil, nil, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (c Cluster) endOffsetsOnce(ctx context.Context, topics []string, partition int) (first, end map[string]int64, err error) {
	brokers, sec := c.Brokers, c.Security
	first, end = map[string]int64{}, map[string]int64{}
	for _, t := range topics {
		var lastErr error
		for _, b := range brokers {
			conn, err := sec.dialer().DialLeader(ctx, "tcp", b, t, partition)
			if err != nil {
				lastErr = err
				continue
			}
			f, e, err := conn.ReadOffsets()
			conn.Close()
			if err != nil {
				lastErr = err
				continue
			}
			first[t], end[t], lastErr = f, e, nil
			break
		}
		if lastErr != nil {
			return nil, nil, fmt.Errorf("offsets of %s/%d: %w", t, partition, lastErr)
		}
	}
	return first, end, nil
}

// PartitionFor returns the partition a record with this key lands on
// among n partitions with murmur2 (the Java client's default, and the
// producer segd uses).
func PartitionFor(key []byte, n int) int {
	return kpart.For(key, n)
}

// Cluster is a Kafka cluster as segd reaches it: the bootstrap brokers and
// how to connect (TLS, SASL; nil Security is plaintext). Its methods are
// the admin and changelog operations; each dials what it needs.
type Cluster struct {
	Brokers  []string
	Security *Security
}

// TopicMaxMessageBytes returns the largest record batch the topic accepts
// (its max.message.bytes, the broker's message.max.bytes unless the topic
// overrides it).
func (c Cluster) TopicMaxMessageBytes(ctx context.Context, topic string) (int64, error) {
	tr := c.Security.transport()
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 10 * time.Second, Transport: tr}
	resp, err := cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"max.message.bytes"},
	}}})
	if err != nil {
		return 0, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	for _, r := range resp.Resources {
		if r.Error != nil {
			return 0, fmt.Errorf("describe topic %s: %w", topic, r.Error)
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName != "max.message.bytes" {
				continue
			}
			n, err := strconv.ParseInt(e.ConfigValue, 10, 64)
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("topic %s: max.message.bytes is %q", topic, e.ConfigValue)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("topic %s: the broker did not report max.message.bytes", topic)
}
