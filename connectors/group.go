package connectors

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// GroupOptions configure a consumer group membership.
type GroupOptions struct {
	Brokers []string
	// Group is the consumer group id. Required.
	Group string
	// Topics are the co-partitioned topics whose partitions are shared
	// out. Required.
	Topics []string
	// SessionTimeout: a member that sends no heartbeat for this long is
	// dropped and its partitions move. Default 10s.
	SessionTimeout time.Duration
	// RebalanceTimeout bounds how long members may take to give up their
	// partitions in a rebalance. Default 60s.
	RebalanceTimeout time.Duration
	// HeartbeatInterval. Default 1s.
	HeartbeatInterval time.Duration
	// Security: TLS and SASL; nil is plaintext.
	Security *Security
	// Logf, if set, receives the group client's own logs.
	Logf func(format string, args ...any)
	// Prefer, if set, returns the partition numbers this member would
	// rather get in its first generation (those it has local state of);
	// later joins prefer the previous generation's. The assignor keeps
	// preferences as far as an even split allows. Called from the group
	// client's goroutine.
	Prefer func() []int
}

// Group is this process's membership of a consumer group. Its assignor
// (coPartitionBalancer) gives a member the same partition numbers of every
// topic, so a member owns whole partition numbers (Generation.Partitions).
type Group struct {
	cg     *kafka.ConsumerGroup
	topics []string
	once   sync.Once
	last   atomic.Pointer[[]int] // the last generation's partitions, longest held first
	since  map[int]int32         // generation since which each is held; Next only
}

// JoinGroup starts a membership; Next returns its generations.
func JoinGroup(opts GroupOptions) (*Group, error) {
	if opts.Group == "" || len(opts.Topics) == 0 || len(opts.Brokers) == 0 {
		return nil, errors.New("connectors: a consumer group needs brokers, a group id and topics")
	}
	if opts.SessionTimeout == 0 {
		opts.SessionTimeout = 10 * time.Second
	}
	if opts.RebalanceTimeout == 0 {
		opts.RebalanceTimeout = 60 * time.Second
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = time.Second
	}
	g := &Group{topics: append([]string(nil), opts.Topics...)}
	prefer := func() []int {
		if last := g.last.Load(); last != nil {
			return *last
		}
		if opts.Prefer != nil {
			return opts.Prefer()
		}
		return nil
	}
	cfg := kafka.ConsumerGroupConfig{
		ID:                opts.Group,
		Brokers:           opts.Brokers,
		Dialer:            opts.Security.dialer(),
		Topics:            opts.Topics,
		GroupBalancers:    []kafka.GroupBalancer{coPartitionBalancer{prefer: prefer}},
		HeartbeatInterval: opts.HeartbeatInterval,
		SessionTimeout:    opts.SessionTimeout,
		RebalanceTimeout:  opts.RebalanceTimeout,
		JoinGroupBackoff:  time.Second,
		StartOffset:       kafka.FirstOffset,
		Timeout:           10 * time.Second,
	}
	if opts.Logf != nil {
		cfg.ErrorLogger = kafka.LoggerFunc(opts.Logf)
	}
	cg, err := kafka.NewConsumerGroup(cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer group %s: %w", opts.Group, err)
	}
	g.cg = cg
	return g, nil
}

// Generation is one assignment of partitions to this member, valid until
// the next rebalance.
type Generation struct {
	ID       int32
	MemberID string
	// Partitions are the partition numbers assigned, in order.
	Partitions []int
	gen        *kafka.Generation
}

// Next waits for the next generation. The previous one must have ended
// (its Run function returned).
func (g *Group) Next(ctx context.Context) (*Generation, error) {
	gen, err := g.cg.Next(ctx)
	if err != nil {
		return nil, err
	}
	parts, err := coPartitioned(g.topics, gen.Assignments)
	if err != nil {
		return &Generation{ID: gen.ID, MemberID: gen.MemberID, gen: gen}, err
	}
	// Partitions held longest come first in the next join's preferences:
	// the assignor keeps preferences in order, so a partition this
	// member only stood in for (a neighbour restarting) is the one it
	// gives back.
	since := make(map[int]int32, len(parts))
	for _, p := range parts {
		if s, ok := g.since[p]; ok {
			since[p] = s
		} else {
			since[p] = gen.ID
		}
	}
	g.since = since
	prefs := append([]int(nil), parts...)
	sort.SliceStable(prefs, func(i, j int) bool { return since[prefs[i]] < since[prefs[j]] })
	g.last.Store(&prefs)
	return &Generation{ID: gen.ID, MemberID: gen.MemberID, Partitions: parts, gen: gen}, nil
}

// coPartitioned checks that every topic got the same partition numbers
// and returns them.
func coPartitioned(topics []string, assigned map[string][]kafka.PartitionAssignment) ([]int, error) {
	numbers := func(t string) []int {
		var ps []int
		for _, a := range assigned[t] {
			ps = append(ps, a.ID)
		}
		sort.Ints(ps)
		return ps
	}
	want := numbers(topics[0])
	for _, t := range topics[1:] {
		if fmt.Sprint(numbers(t)) != fmt.Sprint(want) {
			desc := make([]string, len(topics))
			for i, t := range topics {
				desc[i] = fmt.Sprintf("%s %v", t, numbers(t))
			}
			return nil, fmt.Errorf("the group assigned different partition numbers of the co-partitioned topics (%s): are other consumers with another assignor in this group?", strings.Join(desc, ", "))
		}
	}
	return want, nil
}

// Run runs fn for the generation and returns when fn does. fn's context
// ends when the group rebalances (or the group closes); the group does not
// hand the partitions to anyone else before fn returns, up to the
// rebalance timeout.
func (gn *Generation) Run(fn func(ctx context.Context)) {
	done := make(chan struct{})
	gn.gen.Start(func(ctx context.Context) {
		defer close(done)
		fn(ctx)
	})
	<-done
}

// CommitOffsets commits next offsets (topic -> next offset) of one
// partition for this generation, so lag tools see the group's progress.
func (gn *Generation) CommitOffsets(partition int, next map[string]int64) error {
	offs := map[string]map[int]int64{}
	for t, o := range next {
		offs[t] = map[int]int64{partition: o}
	}
	return gn.gen.CommitOffsets(offs)
}

// Close leaves the group. Safe to call twice.
func (g *Group) Close() error {
	var err error
	g.once.Do(func() { err = g.cg.Close() })
	return err
}
