package tool

import (
	"errors"
	"fmt"
	"sync"

	"github.com/segd/segd/internal/kpart"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/segment"
)

// appliers apply a file replay's events to its partitions on several
// goroutines. Each worker owns the partitions p with p % workers == w, so
// a partition's events are applied by one goroutine in input order and the
// result is the same for any number of workers. An alias event (it folds a
// customer into another partition's) is applied at a barrier, every worker
// idle, in its place in the input: the same order as one goroutine gives.
type appliers struct {
	procs        []*segment.Processor
	ws           []*applier
	pool         *sync.Pool
	commitEvents int
	wg           sync.WaitGroup
	closed       bool
}

// applier is one worker. Its counters and rejections are read after a
// barrier or after close, which order them before the read.
type applier struct {
	as          *appliers
	in          chan []*pendingEvent // a nil batch is a barrier
	ack         chan struct{}
	batch       []*pendingEvent // being filled by the reader
	events      int64
	last        int64
	sinceCommit int
	rejected    []skippedEvent
	err         error // the first state failure; nothing is applied after it
}

// skippedEvent is a line or event the replay skips, in input order (seq).
type skippedEvent struct {
	seq    int64
	file   string
	line   int
	reason string
	err    error
}

// applyBatch is how many events the reader hands a worker at once.
const applyBatch = 256

func newAppliers(procs []*segment.Processor, workers, commitEvents int, pool *sync.Pool) *appliers {
	as := &appliers{procs: procs, pool: pool, commitEvents: commitEvents}
	for range max(1, min(workers, len(procs))) {
		a := &applier{as: as, in: make(chan []*pendingEvent, 4), ack: make(chan struct{})}
		as.ws = append(as.ws, a)
		as.wg.Add(1)
		go a.run()
	}
	return as
}

func (a *applier) run() {
	defer a.as.wg.Done()
	for batch := range a.in {
		if batch == nil {
			a.ack <- struct{}{}
			continue
		}
		for _, pe := range batch {
			a.apply(pe)
		}
	}
}

// apply applies one event and gives it back to the pool.
func (a *applier) apply(pe *pendingEvent) {
	defer a.as.pool.Put(pe)
	if a.err != nil {
		return
	}
	procs := a.as.procs
	proc := procs[kpart.For([]byte(pe.e.CustomerID), len(procs))]
	err := proc.Apply(&pe.e)
	var rej *segment.Rejected
	switch {
	case errors.As(err, &rej):
		// Refused by a bound (input.max_attributes): skipped like any
		// bad line, as live dead-letters it.
		a.rejected = append(a.rejected, skippedEvent{seq: pe.seq, file: pe.file, line: pe.line, reason: rej.Reason, err: rej.Err})
		return
	case err != nil:
		a.err = fmt.Errorf("replay %s:%d: %w", pe.file, pe.line, err)
		return
	}
	a.events++
	a.last = max(a.last, pe.e.Time)
	// The cache's dirty budget bounds memory whatever CommitEvents says.
	if a.sinceCommit++; a.sinceCommit >= a.as.commitEvents || proc.Partition().NeedsCommit() {
		a.sinceCommit = 0
		a.err = a.commit()
	}
}

// commit commits the partitions the worker owns.
func (a *applier) commit() error {
	n := len(a.as.ws)
	for p := a.index(); p < len(a.as.procs); p += n {
		if err := a.as.procs[p].Commit(); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) index() int {
	for i, w := range a.as.ws {
		if w == a {
			return i
		}
	}
	panic("applier not among its appliers")
}

// add queues an event for its partition's worker, or applies an alias at
// a barrier. It returns a worker's state failure, if one happened by the
// last barrier.
func (as *appliers) add(pe *pendingEvent) error {
	a := as.ws[kpart.For([]byte(pe.e.CustomerID), len(as.procs))%len(as.ws)]
	if pe.e.Type == schemas.EventProfile && pe.e.AliasOf != "" && !pe.e.Delete {
		if err := as.barrier(); err != nil {
			return err
		}
		a.apply(pe)
		return a.err
	}
	a.batch = append(a.batch, pe)
	if len(a.batch) == applyBatch {
		a.in <- a.batch
		a.batch = make([]*pendingEvent, 0, applyBatch)
	}
	return nil
}

// barrier waits until every queued event is applied.
func (as *appliers) barrier() error {
	for _, a := range as.ws {
		if len(a.batch) > 0 {
			a.in <- a.batch
			a.batch = make([]*pendingEvent, 0, applyBatch)
		}
		a.in <- nil
	}
	for _, a := range as.ws {
		<-a.ack
	}
	return as.err()
}

func (as *appliers) err() error {
	for _, a := range as.ws {
		if a.err != nil {
			return a.err
		}
	}
	return nil
}

// close applies what is queued, stops the workers and commits. Safe to
// call twice.
func (as *appliers) close() error {
	if as.closed {
		return as.err()
	}
	as.closed = true
	for _, a := range as.ws {
		if len(a.batch) > 0 {
			a.in <- a.batch
			a.batch = nil
		}
		close(a.in)
	}
	as.wg.Wait()
	if err := as.err(); err != nil {
		return err
	}
	for _, a := range as.ws {
		if err := a.commit(); err != nil {
			return err
		}
	}
	return nil
}

// totals are the events applied, the last event time and the rejections
// of every worker; valid after close.
func (as *appliers) totals() (events, last int64, rejected []skippedEvent) {
	for _, a := range as.ws {
		events += a.events
		last = max(last, a.last)
		rejected = append(rejected, a.rejected...)
	}
	return events, last, rejected
}
