package engine

import (
	"fmt"
	"math"
	"time"

	"github.com/segd/segd/segment"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/state"
)

// Local is segd's per-partition processing with the caller as the source:
// records are handed in one by one (Handle) or a poll at a time
// (HandlePoll) and go through exactly what a running
// engine does with a record read from Kafka (decode, validate, dead-letter,
// de-duplicate, apply, evaluate, timers, outbox, atomic commits), minus the
// Kafka consumer and producer. The benchmarks use it to measure the engine
// alone; it also suits embedding segd behind another transport.
//
// A Local is not safe for concurrent use. Changes and dead letters stay in
// each partition's outbox until Drain hands them out.
type Local struct {
	e      *Engine
	tasks  []*task
	closed bool
}

// OpenLocal opens partitions 0..partitions-1 of the engine's state for
// in-process feeding, in event time only (the clock never follows the wall
// clock, as in a replay). The engine must not also Run.
func (e *Engine) OpenLocal(partitions int) (*Local, error) {
	if partitions < 1 || partitions > math.MaxInt32 {
		return nil, fmt.Errorf("local: partitions %d, want >= 1", partitions)
	}
	inputs, err := e.inputs()
	if err != nil {
		return nil, err
	}
	enc, err := e.encoder()
	if err != nil {
		return nil, err
	}
	l := &Local{e: e}
	for p := int32(0); p < int32(partitions); p++ {
		part, err := e.st.Partition(p)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("local: open partition %d: %w", p, err)
		}
		obs := &changeObserver{rates: &e.rates}
		// No latency to track: the observer needs no call per change.
		proc, err := segment.New(e.rs.Load(), part, e.processorOptions(inputs, enc, nil))
		if err != nil {
			part.Close()
			l.Close()
			return nil, fmt.Errorf("local: partition %d: %w", p, err)
		}
		l.tasks = append(l.tasks, openTask(p, proc, nil, nil, obs, taskOptions{
			commitInterval: e.cfg.Commit.Interval,
			commitEvents:   e.cfg.Commit.MaxEvents,
			idleAfter:      -1,
			now:            e.opt.Now,
		}, e.log, nil))
	}
	runningTasks.Add(int32(len(l.tasks)))
	e.mu.Lock()
	if e.procs == nil {
		e.procs = map[int32]*segment.Processor{}
	}
	for _, t := range l.tasks {
		e.localParts = append(e.localParts, t.partition)
		e.procs[t.partition] = t.proc
	}
	e.mu.Unlock()
	return l, nil
}

// Handle processes one input record of partition p, committing when the
// engine would (commit.max_events records, or the cache's dirty budget).
// A bad record is dead-lettered, not returned; an error means the state
// store failed.
func (l *Local) Handle(p int32, topic string, offset int64, key, value []byte, ts time.Time) error {
	if l.closed {
		return state.ErrClosed
	}
	if p < 0 || int(p) >= len(l.tasks) {
		return fmt.Errorf("local: partition %d not open (have %d)", p, len(l.tasks))
	}
	t := l.tasks[p]
	m := connectors.Message{Topic: topic, Partition: int(p), Offset: offset, Key: key, Value: value, Time: ts}
	return t.handleLocal(&m)
}

// HandlePoll processes msgs, records of partition p (their Partition
// fields are set to p), in order, as Handle does each but the way a
// running engine handles a poll: the wall clock (the bound of an event's
// time) is read once for all of them, not per record (2% of the work).
// Handle suits records that arrive one at a time; HandlePoll, a batch at
// hand.
func (l *Local) HandlePoll(p int32, msgs []connectors.Message) error {
	if l.closed {
		return state.ErrClosed
	}
	if p < 0 || int(p) >= len(l.tasks) {
		return fmt.Errorf("local: partition %d not open (have %d)", p, len(l.tasks))
	}
	t := l.tasks[p]
	t.polledAt = t.opt.now()
	defer func() { t.polledAt = time.Time{} }()
	for i := range msgs {
		msgs[i].Partition = int(p)
	}
	t.beginAhead(msgs, t.wall(t.polledAt))
	// The caller may reuse msgs once HandlePoll returns.
	defer t.ahead.end()
	for i := range msgs {
		t.ahead.cur = i
		if err := t.handleLocal(&msgs[i]); err != nil {
			return err
		}
	}
	return nil
}

// handleLocal handles one record of a Local and commits when the engine
// would.
func (t *task) handleLocal(m *connectors.Message) error {
	if err := t.handle(m); err != nil {
		return err
	}
	if t.pending >= t.opt.commitEvents || t.part.NeedsCommit() {
		// Pipelined, as a busy live partition's: Commit, Drain and
		// Close land it.
		return t.commitAsync()
	}
	return t.settle(false)
}

// Advance moves partition p's clock to t (Unix ms), firing due timers, as
// an idle partition's watermark would.
func (l *Local) Advance(p int32, t int64) error {
	if l.closed {
		return state.ErrClosed
	}
	if p < 0 || int(p) >= len(l.tasks) {
		return fmt.Errorf("local: partition %d not open (have %d)", p, len(l.tasks))
	}
	return l.tasks[p].proc.Advance(t)
}

// Commit commits every partition.
func (l *Local) Commit() error {
	if l.closed {
		return state.ErrClosed
	}
	for _, t := range l.tasks {
		if err := t.commit(); err != nil {
			return err
		}
	}
	return nil
}

// Drain hands every committed outbox entry (segment changes and dead
// letters) to fn in order, partition by partition, then deletes them.
func (l *Local) Drain(fn func(topic string, key, value []byte) error) error {
	if l.closed {
		return state.ErrClosed
	}
	for _, t := range l.tasks {
		if err := t.settle(true); err != nil {
			return err
		}
		var last uint64
		err := t.part.ReadOutbox(0, 1<<62, func(seq uint64, v []byte) error {
			last = seq
			env, err := segment.DecodeEnvelope(v)
			if err != nil {
				return err
			}
			return fn(env.Topic, env.Key, env.Value)
		})
		if err != nil {
			return fmt.Errorf("local: partition %d outbox: %w", t.partition, err)
		}
		if last > 0 {
			if err := t.part.DeleteOutbox(last); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close commits and closes the partitions (not the engine). Safe to call
// twice.
func (l *Local) Close() error {
	if l.closed {
		return nil
	}
	l.closed = true
	runningTasks.Add(-int32(len(l.tasks)))
	for _, t := range l.tasks {
		t.ahead.close()
	}
	l.e.mu.Lock()
	for _, t := range l.tasks {
		delete(l.e.procs, t.partition)
	}
	l.e.localParts = nil
	l.e.mu.Unlock()
	var first error
	for _, t := range l.tasks {
		if err := t.commit(); err != nil && first == nil {
			first = err
		}
		if err := t.part.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Memberships calls fn with every committed membership in the store, in
// one pass over the records (a listing per segment reads every record
// once per segment): customer by customer, within a customer in the
// rules' segment order.
func (l *Local) Memberships(fn func(customerID, segmentID string)) error {
	if l.closed {
		return state.ErrClosed
	}
	st, rs := l.e.st, l.e.rs.Load()
	lists := segment.NewSegmentLists(st)
	parts, err := st.PartitionsWithCustomers()
	if err != nil {
		return fmt.Errorf("local: memberships: %w", err)
	}
	for _, p := range parts {
		err := st.RangeCommitted(p, func(id string, data []byte) error {
			c, err := segment.DecodeCustomer(rs, lists, data)
			if err != nil {
				return fmt.Errorf("customer %q: %w", id, err)
			}
			for i, s := range rs.Segments() {
				if in, _, _ := c.Member(i); in {
					fn(id, s.ID)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("local: memberships of partition %d: %w", p, err)
		}
	}
	return nil
}

// Members returns every committed member of segment across the open
// partitions, in id order.
func (l *Local) Members(segmentID string) ([]string, error) {
	if l.closed {
		return nil, state.ErrClosed
	}
	ids, err := segment.AllMembers(l.e.st, l.e.rs.Load(), segmentID, nil)
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	return ids, nil
}
