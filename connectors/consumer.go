package connectors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
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
	// MaxBufferedRecords bounds the records fetched but not yet returned
	// by Poll, over all topics: each topic gets an equal share (at least
	// one record), and a topic whose share is full stops fetching until
	// Poll takes its records; the others go on. Default 10000
	// (DefaultMaxBufferedRecords).
	MaxBufferedRecords int
	// MaxBufferedBytes bounds the keys, values and headers of the same
	// records, shared out the same way. A record larger than a topic's
	// share is still taken when the topic has nothing else buffered, or
	// the merge could wait for it forever. Default 64 MiB
	// (DefaultMaxBufferedBytes).
	MaxBufferedBytes int64
	// Security: TLS and SASL; nil is plaintext.
	Security *Security
	// OnFetchError, if set, hears of every failed fetch, including those
	// kafka-go's reader retries on its own; the consumer retries them
	// all itself. It runs on the consumer's goroutines, possibly several
	// at once.
	OnFetchError func(topic string, err error)
	// OnRecordsLost, if set, hears of records [from, to) of a topic that
	// Kafka deleted (time or size retention, DeleteRecords) before this
	// consumer read them: a stored offset below the log start, or a jump
	// in offsets while reading that the log start explains. Readers skip
	// such records on their own (kafka-go does so silently); this is how
	// the loss becomes visible. It runs on the consumer's goroutines.
	OnRecordsLost func(topic string, from, to int64)
}

// Default bounds of what a PartitionConsumer buffers.
const (
	DefaultMaxBufferedRecords       = 10000
	DefaultMaxBufferedBytes   int64 = 64 << 20
)

// maxFetchBytes is the most one broker fetch of a topic asks for.
const maxFetchBytes = 8 << 20

// PartitionConsumer reads one partition number of several topics and
// merges them into one stream ordered by record timestamp (ties by topic
// order, then offset), the way Kafka Streams merges a task's partitions:
// while a topic is behind and has nothing buffered, the others wait up to
// MaxIdle. With all records already in Kafka (a replay, a restart under
// backlog) the order is therefore deterministic. Poll is for one goroutine;
// Close and Buffered may be called from any.
//
// # Back-pressure
//
// Each topic has its own queue, bounded by its share of MaxBufferedRecords
// and MaxBufferedBytes. A topic whose queue is full (it is ahead of the
// others in time, or the caller is slow) stops fetching until Poll takes
// from it; topics that are behind keep fetching, and a topic with an empty
// queue always takes the next record it fetches, so the merge never waits
// for a record that back-pressure keeps out. The bounds decide when records
// arrive, never which goes next: the merge order is the same whatever they
// are. Beyond the queues, kafka-go's reader of each topic holds the records
// it decoded ahead (readAhead) and the record batch it is decoding.
type PartitionConsumer struct {
	opts         PartitionConsumerOptions
	shareRecords int   // per topic
	shareBytes   int64 // per topic

	mu      sync.Mutex
	topics  []topicBuffer // guarded by mu
	arrived chan struct{} // a fetcher queued a record; capacity 1

	// Totals over the queues, written under mu, read by Buffered.
	records, bytes, paused atomic.Int64
	peakRecords, peakBytes atomic.Int64

	// Poll's own.
	end     []int64 // StopAtEnd: end offsets at start
	next    []int64 // next offset each topic will deliver
	startAt []int64 // the offset each topic started at
	blocked time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// topicBuffer is one topic's queue of fetched records.
type topicBuffer struct {
	q      ring
	bytes  int64
	caught bool          // the last record queued was the end of the partition
	paused bool          // the fetcher waits for room
	room   chan struct{} // Poll took records while paused; capacity 1
}

// BufferStats describe what a PartitionConsumer holds fetched but not yet
// returned by Poll.
type BufferStats struct {
	Records, Bytes int64 // buffered now
	// PeakRecords and PeakBytes are the most buffered at any moment since
	// the consumer started.
	PeakRecords, PeakBytes int64
	// PausedTopics are the topics whose fetching waits for Poll to take
	// records from their full queue.
	PausedTopics int
}

// Buffered returns the consumer's buffer statistics. Safe for concurrent
// use.
func (c *PartitionConsumer) Buffered() BufferStats {
	return BufferStats{Records: c.records.Load(), Bytes: c.bytes.Load(),
		PeakRecords: c.peakRecords.Load(), PeakBytes: c.peakBytes.Load(), PausedTopics: int(c.paused.Load())}
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
	if opts.MaxBufferedRecords <= 0 {
		opts.MaxBufferedRecords = DefaultMaxBufferedRecords
	}
	if opts.MaxBufferedBytes <= 0 {
		opts.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	n := len(opts.Topics)
	ctx, cancel := context.WithCancel(context.Background())
	c := &PartitionConsumer{
		opts: opts, ctx: ctx, cancel: cancel,
		shareRecords: max(1, opts.MaxBufferedRecords/n), shareBytes: max(1, opts.MaxBufferedBytes/int64(n)),
		topics: make([]topicBuffer, n), arrived: make(chan struct{}, 1),
		end: make([]int64, n), next: make([]int64, n), startAt: make([]int64, n),
	}
	for i := range c.topics {
		c.topics[i].room = make(chan struct{}, 1)
	}
	startCtx, startCancel := context.WithTimeout(ctx, 30*time.Second)
	defer startCancel()
	first, end, err := Cluster{Brokers: opts.Brokers, Security: opts.Security}.EndOffsets(startCtx, opts.Topics, opts.Partition)
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
		c.topics[i].caught = start >= end[t]
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

// readAhead is how many records kafka-go's reader of a topic may decode
// ahead of the topic's queue: a few, so that back-pressure reaches the
// broker soon, yet enough to keep the reader busy while Poll runs.
func (c *PartitionConsumer) readAhead() int {
	return min(100, max(1, c.shareRecords/16))
}

func (c *PartitionConsumer) newReader(topic string, offset int64) (*kafka.Reader, error) {
	// A fetch asks for no more than the topic's share of the byte bound
	// (Kafka still returns a first record batch that is larger).
	fetchMax := int(min(maxFetchBytes, max(64<<10, c.shareBytes)))
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:         c.opts.Brokers,
		Topic:           topic,
		Partition:       c.opts.Partition,
		MinBytes:        1,
		MaxBytes:        fetchMax,
		MaxWait:         c.opts.FetchMaxWait,
		QueueCapacity:   c.readAhead(),
		ReadLagInterval: -1,
		Dialer:          c.opts.Security.dialer(),
		// kafka-go's reader retries most failed fetches itself (a
		// response that did not start arriving within MaxWait, a broker
		// it cannot reach) and tells only its error logger: without
		// this, a partition can retry the same fetch forever in silence.
		ErrorLogger: kafka.LoggerFunc(func(format string, args ...any) {
			if c.opts.OnFetchError != nil && c.ctx.Err() == nil {
				c.opts.OnFetchError(topic, fmt.Errorf(format, args...))
			}
		}),
		// Never past an open transaction (the last stable offset). kafka-go
		// does not drop the records of aborted transactions below it
		// (its issue 1332): docs/operations.md says what that means.
		IsolationLevel: kafka.ReadCommitted,
	})
	if err := r.SetOffset(offset); err != nil {
		r.Close()
		return nil, fmt.Errorf("seek %s/%d to %d: %w", topic, c.opts.Partition, offset, err)
	}
	return r, nil
}

// fetch reads topic i into its queue until the consumer closes, waiting
// while the queue is full. A failed fetch
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
		if !c.put(i, fromKafka(&m)) {
			return
		}
	}
}

// recordBytes is what a record counts against MaxBufferedBytes.
func recordBytes(m *Message) int64 {
	n := len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}

// put queues m, fetched from topic i, once the topic's queue has room for
// it: fewer records than its share and room for m's bytes, or nothing at
// all (a record is never kept out of an empty queue, so the merge cannot
// wait for a record that back-pressure holds back). It returns false if
// the consumer closed meanwhile.
func (c *PartitionConsumer) put(i int, m Message) bool {
	size := recordBytes(&m)
	t := &c.topics[i]
	for {
		c.mu.Lock()
		if n := t.q.len(); n == 0 || (n < c.shareRecords && t.bytes+size <= c.shareBytes) {
			if t.paused {
				t.paused = false
				c.paused.Add(-1)
			}
			t.q.push(m)
			t.bytes += size
			if m.HighWaterMark > 0 && m.Offset+1 >= m.HighWaterMark {
				t.caught = true
			} else if m.HighWaterMark > m.Offset+1 {
				t.caught = false
			}
			if r := c.records.Add(1); r > c.peakRecords.Load() {
				c.peakRecords.Store(r)
			}
			if b := c.bytes.Add(size); b > c.peakBytes.Load() {
				c.peakBytes.Store(b)
			}
			c.mu.Unlock()
			select {
			case c.arrived <- struct{}{}:
			default:
			}
			return true
		}
		if !t.paused {
			t.paused = true
			c.paused.Add(1)
		}
		c.mu.Unlock()
		select {
		case <-t.room:
		case <-c.ctx.Done():
			return false
		}
	}
}

// take removes the head of topic i's queue, under c.mu, and wakes the
// topic's fetcher if it waits for room.
func (c *PartitionConsumer) take(i int) Message {
	t := &c.topics[i]
	m := t.q.pop()
	size := recordBytes(&m)
	t.bytes -= size
	c.records.Add(-1)
	c.bytes.Add(-size)
	if t.paused {
		select {
		case t.room <- struct{}{}:
		default:
		}
	}
	return m
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
	first, _, err := Cluster{Brokers: c.opts.Brokers, Security: c.opts.Security}.endOffsetsOnce(ctx, []string{topic}, c.opts.Partition)
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

// done reports whether topic i has delivered everything up to its end
// offset at start (StopAtEnd).
func (c *PartitionConsumer) done(i int) bool {
	return c.opts.StopAtEnd && c.next[i] >= c.end[i]
}

// pick returns the topic whose head goes next, or -1 to wait. It runs
// under c.mu.
func (c *PartitionConsumer) pick(now time.Time) int {
	best := -1
	var bestTime time.Time
	waiting := false
	for i := range c.topics {
		t := &c.topics[i]
		if t.q.len() == 0 {
			if !t.caught && !c.done(i) {
				waiting = true
			}
			continue
		}
		head := t.q.front()
		if c.opts.StopAtEnd && head.Offset >= c.end[i] {
			continue // past the replay's end
		}
		if best < 0 || head.Time.Before(bestTime) {
			best, bestTime = i, head.Time
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
// Records it returns no longer count against the buffer bounds.
func (c *PartitionConsumer) Poll(ctx context.Context, dst []Message, maxWait time.Duration) ([]Message, error) {
	limit := max(cap(dst), 64)
	deadline := time.Now().Add(maxWait)
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	for {
		now := time.Now()
		c.mu.Lock()
		for len(dst) < limit {
			i := c.pick(now)
			if i < 0 {
				break
			}
			m := c.take(i)
			c.next[i] = m.Offset + 1
			dst = append(dst, m)
		}
		c.mu.Unlock()
		if len(dst) > 0 {
			return dst, nil
		}
		if c.opts.StopAtEnd {
			all := true
			for i := range c.topics {
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
		case <-c.arrived:
		case <-timer.C:
		case <-ctx.Done():
			return dst, ctx.Err()
		case <-c.ctx.Done():
			return dst, errors.New("connectors: consumer closed")
		}
	}
}

// ring is a FIFO of records that grows by doubling and never shrinks: a
// queue's memory follows its bound, not the backlog.
type ring struct {
	buf     []Message
	head, n int
}

func (r *ring) len() int { return r.n }

func (r *ring) front() *Message { return &r.buf[r.head] }

func (r *ring) push(m Message) {
	if r.n == len(r.buf) {
		grown := make([]Message, max(16, 2*len(r.buf)))
		for k := 0; k < r.n; k++ {
			grown[k] = r.buf[(r.head+k)%len(r.buf)]
		}
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = m
	r.n++
}

func (r *ring) pop() Message {
	m := r.buf[r.head]
	r.buf[r.head] = Message{} // let the record's bytes go
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return m
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
