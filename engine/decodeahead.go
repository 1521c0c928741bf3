package engine

import (
	"runtime"
	"sync/atomic"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/internal/handoff"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/segment"
)

// Decoding ahead: while the process runs fewer partitions than it has
// cores, a task hands each poll to a decoder goroutine of its own, which
// decodes the poll's records in order while the task applies those
// before them. Decoding is a fifth of a task's time, and with one
// partition per core or more every core is busy anyway; with fewer, a
// partition's throughput would otherwise stop at one core (and the
// pipelined commit's writer) while the others idle.
//
// Each record's slot is claimed once: by the decoder (queued ->
// decoding -> done) or, when the task reaches a record the decoder has
// not finished, by the task (queued or decoding -> taken), which then
// decodes it itself as it would without the decoder: the task never
// waits for the decoder. The result is the same event and the same
// error whoever decodes: Decode reads nothing the task
// changes but the clock, and records that need it (tombstones) and
// merges are left to the task.

// runningTasks counts the partitions this process runs (live and
// backfill tasks, and the partitions of open Locals): decoding ahead pays
// only while it is below GOMAXPROCS.
var runningTasks atomic.Int32

// decodeAheadMode overrides the rule above in tests: 0 the rule, 1
// always (for polls of two records or more), -1 never.
var decodeAheadMode int

// decodedAhead counts the records the decoders decoded, decodedAheadBig
// those of them over aheadKeepBytes (tests).
var decodedAhead, decodedAheadBig atomic.Int64

const (
	slotQueued uint32 = iota
	slotDecoding
	slotDone
	slotTaken
)

type aheadSlot struct {
	state atomic.Uint32
	ev    schemas.Event
	err   error
	// big: the record decoded into ev was over aheadKeepBytes. Its event
	// is dropped once the poll is through, not kept for reuse: an event
	// keeps the strings of the last record decoded into it in its
	// slices' arrays, and a poll of 512 records of 1 MiB would otherwise
	// stay in memory per partition.
	big bool
}

// aheadKeepBytes is the largest record whose event a slot keeps.
const aheadKeepBytes = 4 << 10

// aheadPoll is a poll handed to the decoder.
type aheadPoll struct {
	msgs []connectors.Message
	wall int64
}

// decodeAhead is a task's decoder. The task owns it: beginAhead, take,
// end and close are called from the task's goroutine only.
type decodeAhead struct {
	slots    []aheadSlot
	polls    chan aheadPoll
	finished chan struct{} // the decoder went through the poll it was given
	stop     chan struct{}
	done     chan struct{}
	busy     bool // a poll was handed over and not yet finished
	cur      int  // the record the task handles next (at)
}

// beginAhead hands the poll to the decoder when decoding ahead pays. The
// poll's messages must stay unchanged until the next beginAhead or end.
func (t *task) beginAhead(msgs []connectors.Message, wall int64) {
	a := &t.ahead
	a.end()
	switch {
	case len(msgs) < 2 || decodeAheadMode < 0:
		return
	case decodeAheadMode == 0 && int(runningTasks.Load()) >= runtime.GOMAXPROCS(0):
		return
	}
	if a.polls == nil {
		a.polls = make(chan aheadPoll, 1)
		a.finished = make(chan struct{}, 1)
		a.stop = make(chan struct{})
		a.done = make(chan struct{})
		go a.run(t.proc)
	}
	if cap(a.slots) < len(msgs) {
		a.slots = make([]aheadSlot, len(msgs))
	}
	a.slots = a.slots[:len(msgs)]
	merges := t.proc.MergesTopic()
	for i := range msgs {
		s := &a.slots[i]
		s.err = nil
		if msgs[i].Value == nil || (merges != "" && msgs[i].Topic == merges) {
			s.state.Store(slotTaken) // the task's (see above)
			continue
		}
		s.state.Store(slotQueued)
	}
	a.busy = true
	handoff.Expect()
	a.polls <- aheadPoll{msgs: msgs, wall: wall}
}

// take returns record i's event and decoding error if the decoder has
// decoded it; ok false when the task is to decode it itself: the decoder
// has not started it, or is decoding it (the task does not wait: the
// decoder may be descheduled on a busy machine, and a task spinning for
// it burnt a core). Each record is taken once: a second take (a retry
// after a transient error) returns ok false.
func (a *decodeAhead) take(i int) (ev *schemas.Event, err error, ok bool) {
	if !a.busy || i >= len(a.slots) {
		return nil, nil, false
	}
	s := &a.slots[i]
	for {
		switch st := s.state.Load(); st {
		case slotDone:
			s.state.Store(slotTaken)
			return &s.ev, s.err, true
		case slotTaken:
			return nil, nil, false
		default: // queued or decoding: the task's now
			if s.state.CompareAndSwap(st, slotTaken) {
				return nil, nil, false
			}
		}
	}
}

// end waits until the decoder is through the poll it was given (every
// slot is then done or taken: the task handled them all, or it stops),
// so the slots can be reused, and drops the events of big records. Call
// it once the poll's records are handled.
func (a *decodeAhead) end() {
	if !a.busy {
		return
	}
	for i := range a.slots {
		a.slots[i].state.CompareAndSwap(slotQueued, slotTaken)
	}
	<-a.finished
	a.busy = false
	for i := range a.slots {
		if s := &a.slots[i]; s.big {
			s.ev, s.big = schemas.Event{}, false
		}
	}
}

// close stops the decoder and waits for it. Safe to call twice.
func (a *decodeAhead) close() {
	a.end()
	if a.polls == nil {
		return
	}
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	<-a.done
}

// run is the decoder goroutine; the task owns it (close stops it).
func (a *decodeAhead) run(proc *segment.Processor) {
	defer close(a.done)
	for {
		select {
		case <-a.stop:
			return
		case p := <-a.polls:
			handoff.Started()
			for i := range p.msgs {
				s := &a.slots[i]
				if !s.state.CompareAndSwap(slotQueued, slotDecoding) {
					continue
				}
				a.decode(proc, &p.msgs[i], p.wall, s)
			}
			a.finished <- struct{}{}
		}
	}
}

// decode decodes one record into its slot. A panic leaves the record to
// the task, whose decoding reports it as it would have.
func (a *decodeAhead) decode(proc *segment.Processor, m *connectors.Message, wall int64, s *aheadSlot) {
	defer func() {
		if recover() != nil {
			s.state.Store(slotTaken)
		}
	}()
	r := recordOf(m)
	s.big = len(m.Value) > aheadKeepBytes
	s.err = proc.DecodeRecord(&r, wall, &s.ev)
	// The task may have given up on it meanwhile (take): then it is the
	// task's, decoded again.
	if s.state.CompareAndSwap(slotDecoding, slotDone) {
		decodedAhead.Add(1)
		if s.big {
			decodedAheadBig.Add(1)
		}
	}
}
