package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/segment"
	"github.com/segd/segd/state"
)

// source is the stream of input records of one partition number across all
// input topics. connectors.PartitionConsumer is one.
type source interface {
	Poll(ctx context.Context, dst []connectors.Message, maxWait time.Duration) ([]connectors.Message, error)
	Close() error
}

// bufferedSource is a source that reports what it holds fetched but not
// yet polled (connectors.PartitionConsumer does), for the buffer gauges.
type bufferedSource interface {
	Buffered() connectors.BufferStats
}

// taskOptions configures a task.
type taskOptions struct {
	commitInterval time.Duration
	commitEvents   int
	// commitCaughtUp commits as soon as a poll drained the input and the
	// outbox holds staged changes (commit.when_caught_up).
	commitCaughtUp bool
	// idleAfter < 0 means event time only (replays).
	idleAfter time.Duration
	// wallAtStart, in a backfill, is the wall clock (Unix ms) the future
	// check compares with: the backfill's start. 0: the live wall clock.
	wallAtStart int64
	idleLag     time.Duration
	maxWait     time.Duration
	now         func() time.Time
}

// task consumes one partition number of every input topic, applies it to
// that partition's customers, and commits state, offsets, clock and outbox
// atomically. It is the only goroutine touching its processor and state
// partition (the publisher only reads and deletes committed outbox entries).
type task struct {
	partition int32
	opt       taskOptions
	proc      *segment.Processor
	part      *state.Partition // proc's
	obs       *changeObserver  // proc's OnChange; nil in a backfill
	src       source
	bsrc      bufferedSource // src, if it reports its buffer; else nil
	pub       *publisher
	cl        *changelogPublisher // nil without a changelog
	log       zerolog.Logger
	m         *partitionMetrics

	// polledAt is when the records being handled were polled: their read
	// time and the wall clock they are held to, read once per poll rather
	// than twice per record. Zero (engine.Local): read per record, since a
	// caller may feed records far apart in time.
	polledAt time.Time

	next      topicOffsets     // next offsets not yet committed
	committed map[string]int64 // next offsets committed to the store
	lastGroup time.Time        // last report to the consumer group
	groupOut  chan<- partitionOffsets
	control   chan pauseReq // rule reloads pause the task here
	done      chan struct{} // closed when run returns
	pending   int           // records since the last commit
	// flightNext are the offsets of the commit in flight (commitAsync),
	// started at flightStart (zero: none in flight).
	flightNext   topicOffsets
	flightStart  time.Time
	flightStaged time.Duration // the task's part of the flight's time
	lastCommit   time.Time
	lag          map[string]prometheus.Gauge // consumer lag by topic
	lags         map[string]int64            // records behind, by topic
	maxLag       atomic.Int64                // the worst of lags, for /readyz
	lastInput    time.Time
	rec          segment.Record
	buf          []connectors.Message
	reported     segment.Stats
	// decodeWaiting is set while the task waits on a record it cannot
	// decode yet (decodewait.go), for /readyz.
	decodeWaiting atomic.Pointer[DecodeWait]
	// ahead decodes a poll's records beside the task (decodeahead.go).
	ahead decodeAhead
}

// run consumes until ctx is done or the source ends (io.EOF, replays), then
// commits what it applied.
func (t *task) run(ctx context.Context) error {
	defer close(t.done)
	runningTasks.Add(1)
	defer runningTasks.Add(-1)
	defer t.ahead.close()
	t.lastCommit = t.opt.now()
	t.lastInput = t.lastCommit
	if t.buf == nil {
		t.buf = make([]connectors.Message, 0, 512)
	}
	for {
		if !t.pauseForSpace(ctx) {
			return nil
		}
		wait := t.opt.maxWait
		if t.pending > 0 {
			if left := t.opt.commitInterval - t.opt.now().Sub(t.lastCommit); left < wait {
				wait = max(left, time.Millisecond)
			}
		}
		msgs, err := t.src.Poll(ctx, t.buf[:0], wait)
		t.polledAt = t.opt.now()
		if t.m != nil && t.bsrc != nil {
			t.m.reportBuffered(t.bsrc.Buffered())
		}
		t.beginAhead(msgs, t.wall(t.polledAt))
		for i := range msgs {
			t.ahead.cur = i
			if herr := t.handleOrWait(ctx, &msgs[i]); herr != nil {
				if errors.Is(herr, errDecodeStopped) {
					return t.commit()
				}
				return herr
			}
			// Within the poll's records too: a poll holds up to 512
			// of them, enough to take a commit past the changelog
			// topic's record batch limit.
			if t.part.NeedsCommit() {
				if err := t.commitAsync(); err != nil {
					return err
				}
			}
		}
		t.ahead.end()
		// A poll that did not fill the buffer took everything deliverable.
		caughtUp := len(msgs) < cap(t.buf)
		t.polledAt = time.Time{}
		if len(msgs) > 0 {
			t.lastInput = t.opt.now()
			t.reportLag(msgs)
		}
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return t.commit()
			}
			return fmt.Errorf("partition %d: poll: %w", t.partition, err)
		}
		if err := t.maybeAdvanceIdle(); err != nil {
			return err
		}
		t.reportGroupOffsets()
		select {
		case req := <-t.control:
			if err := t.pause(req); err != nil {
				return err
			}
		default:
		}
		due := t.opt.now().Sub(t.lastCommit) >= t.opt.commitInterval
		// Published outbox entries leave the changelog only with a commit
		// (it logs their deletes): an idle partition commits for them too.
		early := t.opt.commitCaughtUp && caughtUp && t.part.OutboxStaged()
		if early || t.pending >= t.opt.commitEvents || (due && (t.pending > 0 || t.part.OutboxDeletesUnlogged())) || t.part.NeedsCommit() {
			// A busy partition pipelines its commits; one that caught
			// up has nothing to overlap them with and lands them now,
			// so its changes publish without waiting for a next poll.
			commit := t.commitAsync
			if caughtUp {
				commit = t.commit
			}
			if err := commit(); err != nil {
				return err
			}
		}
		if err := t.settle(caughtUp); err != nil {
			return err
		}
	}
}

// maybeAdvanceIdle lets the watermark follow the wall clock while the
// partition is idle, so time-based exits happen without new events.
func (t *task) maybeAdvanceIdle() error {
	if t.opt.idleAfter < 0 {
		return nil
	}
	now := t.opt.now()
	if now.Sub(t.lastInput) < t.opt.idleAfter {
		return nil
	}
	target := now.Add(-t.opt.idleLag).UnixMilli()
	if target <= t.proc.Clock() {
		return nil
	}
	st := t.proc.Stats()
	before := st.Enters + st.Exits
	if err := t.proc.Advance(target); err != nil {
		return fmt.Errorf("partition %d: advance idle clock: %w", t.partition, err)
	}
	// A clock move with no change costs no commit; one with changes must
	// commit so they get published.
	if st.Enters+st.Exits != before {
		t.pending++
	}
	return nil
}

// reportLag records the lag of each topic in a polled batch once, from the
// last record of the topic in it: the batch is handled by then.
func (t *task) reportLag(msgs []connectors.Message) {
	var done [8]string // topics reported; a partition reads a handful
	n := 0
	for i := len(msgs) - 1; i >= 0 && n < len(done); i-- {
		m := &msgs[i]
		if m.HighWaterMark <= 0 || slices.Contains(done[:n], m.Topic) {
			continue
		}
		done[n] = m.Topic
		n++
		t.setLag(m.Topic, m.HighWaterMark-m.Offset-1)
	}
}

// setLag records how many records of topic the partition is behind, for
// the lag gauge and /readyz.
func (t *task) setLag(topic string, lag int64) {
	lag = max(0, lag)
	if t.m != nil {
		g := t.lag[topic]
		if g == nil {
			if t.lag == nil {
				t.lag = map[string]prometheus.Gauge{}
			}
			g = t.m.all.lag.WithLabelValues(topic, strconv.Itoa(int(t.partition)))
			t.lag[topic] = g
		}
		g.Set(float64(lag))
	}
	if t.lags == nil {
		t.lags = map[string]int64{}
	}
	t.lags[topic] = lag
	var worst int64
	for _, l := range t.lags {
		worst = max(worst, l)
	}
	t.maxLag.Store(worst)
}

// handle applies one input record through the processor's entry point.
// Only state failures are returned; a bad record is dead-lettered and the
// partition moves on. A decode error marked connectors.ErrTransient is
// returned too, with the record neither applied nor counted as read.
func (t *task) handle(m *connectors.Message) error {
	t.rec = recordOf(m)
	now := t.polledAt
	if now.IsZero() {
		now = t.opt.now()
	}
	if t.obs != nil && t.obs.lat != nil {
		t.obs.recordAt, t.obs.readAt = m.Time, now
	}
	var err error
	if ev, derr, ok := t.ahead.take(t.ahead.cur); ok {
		err = t.proc.HandleDecoded(&t.rec, ev, derr)
	} else {
		err = t.proc.Handle(&t.rec, t.wall(now))
	}
	if t.obs != nil {
		t.obs.recordAt, t.obs.readAt = time.Time{}, time.Time{}
	}
	if errors.Is(err, connectors.ErrTransient) {
		// Not the record's fault: not applied, not skipped; handleOrWait
		// tries it again.
		return err
	}
	t.next.set(m.Topic, m.Offset+1)
	t.pending++
	if err != nil {
		return fmt.Errorf("partition %d: %s offset %d: %w", t.partition, m.Topic, m.Offset, err)
	}
	return nil
}

// recordOf is the processor's view of a polled message.
func recordOf(m *connectors.Message) segment.Record {
	return segment.Record{Topic: m.Topic, Partition: int32(m.Partition), Offset: m.Offset, Key: m.Key, Value: m.Value, Time: m.Time}
}

// wall is the wall clock event times are held to: now, or, in a backfill
// (wallAtStart set), the wall clock when it started, so that a backfill
// stays deterministic.
func (t *task) wall(now time.Time) int64 {
	if t.opt.wallAtStart > 0 {
		return t.opt.wallAtStart
	}
	return now.UnixMilli()
}

// commit stages the offsets and commits everything in one batch, then wakes
// the publisher. A commit in flight lands first.
func (t *task) commit() error {
	if err := t.settle(true); err != nil {
		return err
	}
	start := t.opt.now()
	for _, o := range t.next {
		t.part.SetOffset(o.topic, o.next)
	}
	if err := t.proc.Commit(); err != nil {
		return fmt.Errorf("partition %d: %w", t.partition, err)
	}
	t.landed(t.next, start)
	t.next.reset()
	t.pending = 0
	t.lastCommit = t.opt.now()
	return nil
}

// commitAsync commits with the state's write pipelined: the task goes on
// applying records while its commit is written (state.Partition
// .CommitAsync); settle publishes its effects once it landed. For a busy
// partition: nothing of the commit is reported durable (offsets, the
// publisher's wake-up) until it lands.
func (t *task) commitAsync() error {
	if err := t.settle(true); err != nil {
		return err
	}
	start := t.opt.now()
	for _, o := range t.next {
		t.part.SetOffset(o.topic, o.next)
	}
	async, err := t.proc.CommitAsync()
	if err != nil {
		return fmt.Errorf("partition %d: %w", t.partition, err)
	}
	if async {
		// The flight's offsets wait for it in flightNext; t.next starts
		// over (the slices swap, so neither is reallocated).
		t.flightNext, t.next = t.next, t.flightNext
		t.flightStart = start
		t.flightStaged = t.opt.now().Sub(start)
	} else {
		t.landed(t.next, start)
	}
	t.next.reset()
	t.pending = 0
	t.lastCommit = t.opt.now()
	return nil
}

// settle publishes the effects of the commit in flight once it landed;
// with wait it waits for it.
func (t *task) settle(wait bool) error {
	if !t.part.InFlight() && t.flightStart.IsZero() {
		return nil
	}
	done, err := t.proc.Settle(wait)
	if err != nil {
		return fmt.Errorf("partition %d: %w", t.partition, err)
	}
	if done && !t.flightStart.IsZero() {
		// Its time is its staging plus its writer's, not the time until
		// the task settled it.
		took := t.flightStaged + t.part.LandedTook()
		t.landed(t.flightNext, t.opt.now().Add(-took))
		t.flightNext.reset()
		t.flightStart = time.Time{}
	}
	return nil
}

// landed publishes a commit that landed: the offsets it stored, started
// at start.
func (t *task) landed(offsets topicOffsets, start time.Time) {
	// The publishers first: the commit's changes wait for nothing else,
	// and the reporting below took 0.01 ms at the median, 0.05 at p99,
	// of the latency benchmark's event-to-change time.
	if t.cl == nil {
		if t.pub != nil {
			t.pub.poke()
		}
	} else {
		t.cl.poke()
		// With the changelog on, its acknowledgement releases the
		// commit's changes and wakes the outbox publisher
		// (changelogPublisher.sent): woken by every commit too, it
		// found nothing released once per commit. But an
		// acknowledgement that came before this commit counted as
		// committed woke it to find nothing either, and no later one
		// may come: when everything committed is released by now, the
		// commit wakes it.
		if t.pub != nil && t.part.OutboxReleased() >= t.part.OutboxCommitted() {
			t.pub.poke()
		}
	}
	for _, o := range offsets {
		t.committed[o.topic] = o.next
	}
	t.reportGroupOffsets()
	now := t.opt.now()
	t.obs.flush(now, t.proc.Stats())
	if t.m != nil {
		t.m.report(t.proc, &t.reported, now.Sub(start))
	}
}

// pause commits, then holds still while the engine works on this
// partition from its own goroutine (rule reload), until req.resume.
func (t *task) pause(req pauseReq) error {
	if err := t.commit(); err != nil {
		close(req.paused)
		return err
	}
	close(req.paused)
	<-req.resume
	t.lastCommit = t.opt.now()
	return nil
}

// pauseReq asks a task to commit and wait: paused is closed once it
// waits, and it resumes when resume is closed.
type pauseReq struct {
	paused chan struct{}
	resume chan struct{}
}

// partitionOffsets are a partition's committed offsets, for the consumer
// group (lag monitoring).
type partitionOffsets struct {
	partition int
	next      map[string]int64
}

// reportGroupOffsets hands the committed offsets to the engine's group
// committer at most every few seconds, never blocking the task.
func (t *task) reportGroupOffsets() {
	if t.groupOut == nil || len(t.committed) == 0 || t.opt.now().Sub(t.lastGroup) < groupCommitInterval {
		return
	}
	cp := make(map[string]int64, len(t.committed))
	for k, v := range t.committed {
		cp[k] = v
	}
	select {
	case t.groupOut <- partitionOffsets{partition: int(t.partition), next: cp}:
		t.lastGroup = t.opt.now()
	default:
	}
}

// groupCommitInterval paces consumer-group offset commits.
const groupCommitInterval = time.Second

// openTask builds a task for partition p over proc. The source starts
// where the caller positioned it (startPartition: the stored offsets). src
// is nil for Local; pub is nil for Local and backfills; obs is nil for
// backfills.
func openTask(p int32, proc *segment.Processor, src source, pub *publisher, obs *changeObserver, opt taskOptions, log zerolog.Logger, m *partitionMetrics) *task {
	t := &task{partition: p, opt: opt, proc: proc, part: proc.Partition(), src: src, pub: pub, obs: obs, log: log, m: m, committed: map[string]int64{},
		control: make(chan pauseReq, 1), done: make(chan struct{})}
	t.bsrc, _ = src.(bufferedSource)
	return t
}

// topicOffsets holds the next offset to read per input topic, in the
// order the topics were first seen. A task reads a handful of topics: a
// search of a short slice costs less per record than the map assignment
// it replaced (2% of the task's time at 1M customers).
type topicOffsets []topicOffset

type topicOffset struct {
	topic string
	next  int64
}

func (o *topicOffsets) set(topic string, next int64) {
	for i := range *o {
		if (*o)[i].topic == topic {
			(*o)[i].next = next
			return
		}
	}
	*o = append(*o, topicOffset{topic, next})
}

// reset empties o, keeping its memory.
func (o *topicOffsets) reset() {
	clear(*o)
	*o = (*o)[:0]
}
