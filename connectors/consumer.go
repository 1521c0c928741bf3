package connectors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// PartitionConsumerOptions configure a PartitionConsumer.
type PartitionConsumerOptions struct {
	Brokers []string
	// Topics are read at partition Partition each. Their order breaks
	// timestamp ties in the merge.
	Topics    []string
	Partition int
	// Offsets are the next offsets to read by topic; a topic without one
	// starts at its earliest offset, or its latest with Latest.
	Offsets map[string]int64
	Latest  bool
	// MaxIdle bounds how long records of caught-up topics wait for a topic
	// that is behind but has no record buffered yet. Default 500ms.
	MaxIdle time.Duration
	// StopAtEnd makes Poll return io.EOF once every topic has been read up
	// to the end offset it had when the consumer started (replays).
	StopAtEnd bool
	// FetchMaxWait bounds a broker fetch. Default 250ms.
	FetchMaxWait time.Duration
	// Security: TLS and SASL; nil is plaintext.
	Security *Security
	// OnFetchError, if set, hears of every failed fetch; the consumer
	// retries them itself. It runs on the consumer's goroutines.
	OnFetchError func(topic string, err error)
	// OnRecordsLost, if set, hears of records [from, to) of a topic that
	// Kafka deleted (time or size retention, DeleteRecords) before this
	// consumer read them: a stored offset below the log start, or a jump
	// in offsets while reading that the log start explains. Readers skip
	// such records on their own (kafka-go does so silently); this is how
	// the loss becomes visible. It runs on the consumer's goroutines.
	OnRecordsLost func(topic string, from, to int64)
}

// PartitionConsumer reads one partition number of several topics and
// merges them into one stream ordered by record timestamp (ties by topic
// order, then offset), the way Kafka Streams merges a task's partitions:
// while a topic is behind and has nothing buffered, the others wait up to
// MaxIdle. With all records already in Kafka (a replay, a restart under
// backlog) the order is therefore deterministic. Poll is for one goroutine;
// Close may be called from any.
type PartitionConsumer struct {
	opts    PartitionConsumerOptions
	in      chan fetched
	queues  [][]Message
	caught  []bool
	end     []int64 // StopAtEnd: end offsets at start
	next    []int64 // next offset each topic will deliver
	startAt []int64 // the offset each topic started at
	blocked time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

type fetched struct {
	topic int
	msg   kafka.Message
	err   error
}

// NewPartitionConsumer starts a reader per topic at the given offsets.
func NewPartitionConsumer(opts PartitionConsumerOptions) (*PartitionConsumer, error) {
	if len(opts.Brokers) == 0 || len(opts.Topics) == 0 {
		return nil, errors.New("connectors: partition consumer needs brokers and topics")
	}
	if opts.MaxIdle == 0 {
		opts.MaxIdle = 500 * time.Millisecond
	}
	if opts.FetchMaxWait == 0 {
		opts.FetchMaxWait = 250 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &PartitionConsumer{
		opts: opts, in: make(chan fetched, 4096), ctx: ctx, cancel: cancel,
		queues: make([][]Message, len(opts.Topics)), caught: make([]bool, len(opts.Topics)),
		end: make([]int64, len(opts.Topics)), next: make([]int64, len(opts.Topics)),
		startAt: make([]int64, len(opts.Topics)),
	}
	startCtx, startCancel := context.WithTimeout(ctx, 30*time.Second)
	defer startCancel()
	first, end, err := EndOffsets(startCtx, opts.Brokers, opts.Security, opts.Topics, opts.Partition)
	if err != nil {
		cancel()
		return nil, err
	}
	for i, t := range opts.Topics {
		start, ok := opts.Offsets[t]
		switch {
		case !ok && opts.Latest:
			start = end[t]
		case !ok:
			start = first[t]
		case start < first[t]:
			// Retention deleted records the store never applied; they
			// are gone, so start where Kafka starts, and say so.
			if opts.OnRecordsLost != nil {
				opts.OnRecordsLost(t, start, first[t])
			}
			start = first[t]
		}
		c.next[i], c.startAt[i] = start, start
		c.end[i] = end[t]
		c.caught[i] = start >= end[t]
		r, err := c.newReader(t, start)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.wg.Add(1)
		go c.fetch(i, r, start)
	}
	return c, nil
}

func (c *PartitionConsumer) newReader(topic string, offset int64) (*kafka.Reader, error) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:         c.opts.Brokers,
		Topic:           topic,
		Partition:       c.opts.Partition,
		MinBytes:        1,
		MaxBytes:        8 << 20,
		MaxWait:         c.opts.FetchMaxWait,
		ReadLagInterval: -1,
		Dialer:          c.opts.Security.dialer(),
	})
	if err := r.SetOffset(offset); err != nil {
		r.Close()
		return nil, fmt.Errorf("seek %s/%d to %d: %w", topic, c.opts.Partition, offset, err)
	}
	return r, nil
}

// fetch reads topic i into c.in until the consumer closes. A failed fetch
// (a broker down, a leader moving) is reported to OnFetchError and retried
// from the next offset with a new reader, with backoff: losing a broker
// must not stop the partition.
func (c *PartitionConsumer) fetch(i int, r *kafka.Reader, next int64) {
	defer c.wg.Done()
	defer func() {
		if r != nil {
			r.Close()
		}
	}()
	backoff := 100 * time.Millisecond
	var lastGapCheck time.Time
	for {
		m, err := r.FetchMessage(c.ctx)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			if c.opts.OnFetchError != nil {
				c.opts.OnFetchError(c.opts.Topics[i], err)
			}
			r.Close()
			for {
				select {
				case <-c.ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 5*time.Second)
				if r, err = c.newReader(c.opts.Topics[i], next); err == nil {
					break
				}
				r = nil
				if c.opts.OnFetchError != nil {
					c.opts.OnFetchError(c.opts.Topics[i], err)
				}
			}
			continue
		}
		backoff = 100 * time.Millisecond
		if m.Offset > next {
			c.checkGap(i, next, m.Offset, &lastGapCheck)
		}
		next = m.Offset + 1
		select {
		case c.in <- fetched{topic: i, msg: m}:
		case <-c.ctx.Done():
			return
		}
	}
}

// bigGap is a jump in offsets checked against the log start however
// recently the last check ran.
const bigGap = 1024

// checkGap finds out whether records [from, to) of topic i, which the
// reader jumped over, were deleted before they were read: they were if the
// log now starts past from. Jumps are normal on compacted topics and after
// transaction markers, so small ones are checked at most once a second
// per topic (a loss within that second goes unreported); a big jump always
// is.
func (c *PartitionConsumer) checkGap(i int, from, to int64, last *time.Time) {
	if c.opts.OnRecordsLost == nil || (to-from < bigGap && time.Since(*last) < time.Second) {
		return
	}
	*last = time.Now()
	topic := c.opts.Topics[i]
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	first, _, err := endOffsetsOnce(ctx, c.opts.Brokers, c.opts.Security, []string{topic}, c.opts.Partition)
	if err != nil {
		if c.opts.OnFetchError != nil && c.ctx.Err() == nil {
			c.opts.OnFetchError(topic, fmt.Errorf("check a jump from offset %d to %d against the log start: %w", from, to, err))
		}
		return
	}
	if f := first[topic]; f > from {
		c.opts.OnRecordsLost(topic, from, min(f, to))
	}
}

func (c *PartitionConsumer) accept(f fetched) error {
	if f.err != nil {
		return fmt.Errorf("fetch %s/%d: %w", c.opts.Topics[f.topic], c.opts.Partition, f.err)
	}
	m := fromKafka(&f.msg)
	c.queues[f.topic] = append(c.queues[f.topic], m)
	if m.HighWaterMark > 0 && m.Offset+1 >= m.HighWaterMark {
		c.caught[f.topic] = true
	} else if m.HighWaterMark > m.Offset+1 {
		c.caught[f.topic] = false
	}
	return nil
}

// done reports whether topic i has delivered everything up to its end
// offset at start (StopAtEnd).
func (c *PartitionConsumer) done(i int) bool {
	return c.opts.StopAtEnd && c.next[i] >= c.end[i]
}

// pick returns the topic whose head goes next, or -1 to wait.
func (c *PartitionConsumer) pick(now time.Time) int {
	best := -1
	waiting := false
	for i := range c.queues {
		if len(c.queues[i]) == 0 {
			if !c.caught[i] && !c.done(i) {
				waiting = true
			}
			continue
		}
		if c.opts.StopAtEnd && c.queues[i][0].Offset >= c.end[i] {
			continue // past the replay's end
		}
		if best < 0 || c.queues[i][0].Time.Before(c.queues[best][0].Time) {
			best = i
		}
	}
	if best < 0 {
		c.blocked = time.Time{}
		return -1
	}
	if waiting {
		if c.blocked.IsZero() {
			c.blocked = now
		}
		if now.Sub(c.blocked) < c.opts.MaxIdle {
			return -1
		}
	} else {
		c.blocked = time.Time{}
	}
	return best
}

// Poll returns the next records, in merge order, appended to dst (up to
// its capacity, at least 64). It waits up to maxWait for the first one; it
// returns io.EOF with StopAtEnd once everything up to the end is delivered.
func (c *PartitionConsumer) Poll(ctx context.Context, dst []Message, maxWait time.Duration) ([]Message, error) {
	limit := max(cap(dst), 64)
	deadline := time.Now().Add(maxWait)
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	for {
		for drained := false; !drained; {
			select {
			case f := <-c.in:
				if err := c.accept(f); err != nil {
					return dst, err
				}
			default:
				drained = true
			}
		}
		now := time.Now()
		for len(dst) < limit {
			i := c.pick(now)
			if i < 0 {
				break
			}
			m := c.queues[i][0]
			c.queues[i][0] = Message{}
			c.queues[i] = c.queues[i][1:]
			c.next[i] = m.Offset + 1
			dst = append(dst, m)
		}
		if len(dst) > 0 {
			return dst, nil
		}
		if c.opts.StopAtEnd {
			all := true
			for i := range c.queues {
				if !c.done(i) {
					all = false
				}
			}
			if all {
				return dst, io.EOF
			}
		}
		if !now.Before(deadline) {
			return dst, nil
		}
		wait := deadline.Sub(now)
		if !c.blocked.IsZero() {
			wait = min(wait, c.opts.MaxIdle-now.Sub(c.blocked)+time.Millisecond)
		}
		timer.Reset(max(wait, time.Millisecond))
		select {
		case f := <-c.in:
			if err := c.accept(f); err != nil {
				return dst, err
			}
		case <-timer.C:
		case <-ctx.Done():
			return dst, ctx.Err()
		case <-c.ctx.Done():
			return dst, errors.New("connectors: consumer closed")
		}
	}
}

// StartLag returns, by topic, how many records the consumer was behind
// the end when it started: lag is known before the first record arrives
// (or if none can be fetched).
func (c *PartitionConsumer) StartLag() map[string]int64 {
	out := make(map[string]int64, len(c.opts.Topics))
	for i, t := range c.opts.Topics {
		out[t] = max(0, c.end[i]-c.startAt[i])
	}
	return out
}

// Close stops the readers and waits for their goroutines. Safe to call twice.
func (c *PartitionConsumer) Close() error {
	var err error
	c.once.Do(func() {
		// Each fetch goroutine closes its own reader as it returns.
		c.cancel()
		c.wg.Wait()
	})
	return err
}
