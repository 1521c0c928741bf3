package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/schemas"
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

// inputDecoder decodes one input topic's values.
type inputDecoder interface {
	Decode(value []byte, e *schemas.Event) error
}

// topicInput says how to read one input topic.
type topicInput struct {
	typ     schemas.EventType
	decoder inputDecoder
}

// taskOptions configures a task.
type taskOptions struct {
	inputs         map[string]topicInput
	commitInterval time.Duration
	commitEvents   int
	maxRecordBytes int
	maxFutureSkew  time.Duration
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
	id   int32
	opt  taskOptions
	proc *processor
	src  source
	bsrc bufferedSource // src, if it reports its buffer; else nil
	pub  *publisher
	cl   *changelogPublisher // nil without a changelog
	log  zerolog.Logger
	m    *partitionMetrics

	next       map[string]int64 // next offsets not yet committed
	committed  map[string]int64 // next offsets committed to the store
	lastGroup  time.Time        // last report to the consumer group
	groupOut   chan<- partitionOffsets
	control    chan pauseReq // rule reloads pause the task here
	done       chan struct{} // closed when run returns
	pending    int           // records since the last commit
	lastCommit time.Time
	lag        map[string]prometheus.Gauge // consumer lag by topic
	lags       map[string]int64            // records behind, by topic
	maxLag     atomic.Int64                // the worst of lags, for /readyz
	lastInput  time.Time
	event      schemas.Event
	buf        []connectors.Message
	reported   processorStats
	// decodeWaiting is set while the task waits on a record it cannot
	// decode yet (decodewait.go), for /readyz.
	decodeWaiting atomic.Pointer[DecodeWait]
}

// run consumes until ctx is done or the source ends (io.EOF, replays), then
// commits what it applied.
func (t *task) run(ctx context.Context) error {
	defer close(t.done)
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
		if t.m != nil && t.bsrc != nil {
			t.m.reportBuffered(t.bsrc.Buffered())
		}
		for i := range msgs {
			if herr := t.handleOrWait(ctx, &msgs[i]); herr != nil {
				if errors.Is(herr, errDecodeStopped) {
					return t.commit()
				}
				return herr
			}
		}
		if len(msgs) > 0 {
			t.lastInput = t.opt.now()
		}
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return t.commit()
			}
			return fmt.Errorf("partition %d: poll: %w", t.id, err)
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
		if t.pending >= t.opt.commitEvents || (due && (t.pending > 0 || t.proc.part.OutboxDeletesUnlogged())) || t.proc.part.NeedsCommit() {
			if err := t.commit(); err != nil {
				return err
			}
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
	if target <= t.proc.clock {
		return nil
	}
	before := t.proc.stats.enters + t.proc.stats.exits
	if err := t.proc.advance(target); err != nil {
		return fmt.Errorf("partition %d: advance idle clock: %w", t.id, err)
	}
	// A clock move with no change costs no commit; one with changes must
	// commit so they get published.
	if t.proc.stats.enters+t.proc.stats.exits != before {
		t.pending++
	}
	return nil
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
			g = t.m.all.lag.WithLabelValues(topic, strconv.Itoa(int(t.id)))
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

// handle applies one input record. Only state failures are returned; a bad
// record is dead-lettered and the partition moves on. A decode error marked
// connectors.ErrTransient is returned too, with the record neither applied
// nor counted as read.
func (t *task) handle(m *connectors.Message) error {
	t.next[m.Topic] = m.Offset + 1
	t.pending++
	if m.HighWaterMark > 0 {
		t.setLag(m.Topic, m.HighWaterMark-m.Offset-1)
	}
	// Every record kind's time is held to one bound, whatever the idle
	// clock does: one far-future record would otherwise move the
	// watermark for good and fire every timer at once.
	wall := t.wall()
	maxSkew := t.opt.maxFutureSkew.Milliseconds()
	if m.Topic == t.proc.opt.mergesTopic && m.Topic != "" {
		t.proc.maxTime = wall + maxSkew
		err := t.proc.merge(string(m.Key), m.Value)
		if errors.Is(err, errBadMerge) {
			t.proc.deadLetter(m.Topic, int32(m.Partition), m.Offset, m.Key, m.Value, "bad_merge", err)
			return nil
		}
		if err != nil {
			return fmt.Errorf("partition %d: merge at %s offset %d: %w", t.id, m.Topic, m.Offset, err)
		}
		return nil
	}
	in, ok := t.opt.inputs[m.Topic]
	if !ok {
		t.proc.deadLetter(m.Topic, int32(m.Partition), m.Offset, m.Key, m.Value, "unknown_topic", fmt.Errorf("topic %q is not an input topic", m.Topic))
		return nil
	}
	e := &t.event
	e.Reset()
	switch {
	case m.Value == nil && in.typ == schemas.EventProfile:
		// A tombstone on the (compacted) profile topic erases the customer.
		e.Type = schemas.EventProfile
		e.CustomerID = string(m.Key)
		e.Delete = true
		e.Time = m.Time.UnixMilli()
		if m.Time.IsZero() || e.Time <= 0 {
			// No timestamp (an old producer): erase at the partition's clock.
			e.Time = max(t.proc.clock, wall)
		}
		if e.CustomerID == "" {
			t.proc.deadLetter(m.Topic, int32(m.Partition), m.Offset, m.Key, m.Value, string(schemas.ReasonMissingCustomerID), errors.New("tombstone without a key"))
			return nil
		}
		if err := e.Validate(wall, maxSkew); err != nil {
			t.proc.deadLetter(m.Topic, int32(m.Partition), m.Offset, m.Key, m.Value, reasonOf(err), fmt.Errorf("tombstone: %w", err))
			return nil
		}
	case len(m.Value) > t.opt.maxRecordBytes:
		t.proc.deadLetter(m.Topic, int32(m.Partition), m.Offset, m.Key, m.Value, string(schemas.ReasonTooLarge), fmt.Errorf("value is %d bytes, limit %d", len(m.Value), t.opt.maxRecordBytes))
		return nil
	default:
		if err := in.decoder.Decode(m.Value, e); err != nil {
			if errors.Is(err, connectors.ErrTransient) {
				// Not the record's fault: not applied, not skipped;
				// handleOrWait tries it again.
				t.next[m.Topic] = m.Offset
				t.pending--
				return err
			}
			t.proc.deadLetter(m.Topic, int32(m.Partition), m.Offset, m.Key, m.Value, reasonOf(err), err)
			return nil
		}
		if e.Type == schemas.EventUnknown {
			e.Type = in.typ
		}
		if e.Type != in.typ {
			t.proc.deadLetter(m.Topic, int32(m.Partition), m.Offset, m.Key, m.Value, string(schemas.ReasonUnknownEventType), fmt.Errorf("a %s event on the %s topic", e.Type, in.typ))
			return nil
		}
		if e.CustomerID == "" {
			e.CustomerID = string(m.Key)
		}
		if err := e.Validate(wall, maxSkew); err != nil {
			t.proc.deadLetter(m.Topic, int32(m.Partition), m.Offset, m.Key, m.Value, reasonOf(err), err)
			return nil
		}
	}
	if t.proc.lat != nil {
		t.proc.recordAt, t.proc.readAt = m.Time, t.opt.now()
		defer func() { t.proc.recordAt, t.proc.readAt = time.Time{}, time.Time{} }()
	}
	if err := t.proc.apply(e); err != nil {
		var rej *rejectedError
		if errors.As(err, &rej) {
			t.proc.deadLetter(m.Topic, int32(m.Partition), m.Offset, m.Key, m.Value, string(rej.reason), rej.err)
			return nil
		}
		return fmt.Errorf("partition %d: apply %s offset %d: %w", t.id, m.Topic, m.Offset, err)
	}
	return nil
}

// wall is the wall clock event times are held to: now, or, in a backfill
// (wallAtStart set), the wall clock when it started, so that a backfill
// stays deterministic.
func (t *task) wall() int64 {
	if t.opt.wallAtStart > 0 {
		return t.opt.wallAtStart
	}
	return t.opt.now().UnixMilli()
}

// reasonOf extracts the machine-readable reason of a decode or validation
// error.
func reasonOf(err error) string {
	var de *schemas.DecodeError
	if errors.As(err, &de) {
		return string(de.Reason)
	}
	return "invalid"
}

// commit stages the offsets and commits everything in one batch, then wakes
// the publisher.
func (t *task) commit() error {
	start := t.opt.now()
	for topic, off := range t.next {
		t.proc.part.SetOffset(topic, off)
	}
	if err := t.proc.commit(); err != nil {
		return fmt.Errorf("partition %d: %w", t.id, err)
	}
	for topic, off := range t.next {
		t.committed[topic] = off
	}
	clear(t.next)
	t.reportGroupOffsets()
	t.pending = 0
	t.lastCommit = t.opt.now()
	if t.m != nil {
		t.m.report(t.proc, &t.reported, t.lastCommit.Sub(start))
	}
	if t.pub != nil {
		t.pub.poke()
	}
	if t.cl != nil {
		t.cl.poke()
	}
	return nil
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
	case t.groupOut <- partitionOffsets{partition: int(t.id), next: cp}:
		t.lastGroup = t.opt.now()
	default:
	}
}

// groupCommitInterval paces consumer-group offset commits.
const groupCommitInterval = time.Second

// openTask builds a task for partition id, resuming from its stored offsets.
func openTask(id int32, part *state.Partition, proc *processor, src source, pub *publisher, opt taskOptions, log zerolog.Logger, m *partitionMetrics) *task {
	t := &task{id: id, opt: opt, proc: proc, src: src, pub: pub, log: log, m: m, next: map[string]int64{}, committed: map[string]int64{},
		control: make(chan pauseReq, 1), done: make(chan struct{})}
	t.bsrc, _ = src.(bufferedSource)
	return t
}
