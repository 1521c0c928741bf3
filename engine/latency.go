package engine

import (
	"sync"
	"time"

	"github.com/segd/segd/schemas"
	"github.com/segd/segd/segment"
)

// latencyTracker connects a change in the outbox to the input record that
// caused it, so that the publisher, once Kafka acknowledged the change,
// can observe the event-to-change latency. The task adds, the publisher
// acknowledges; entries are bounded and lost on restart (metrics only).
type latencyTracker struct {
	mu    sync.Mutex
	marks []latencyMark // in outbox sequence order
}

type latencyMark struct {
	seq      uint64
	recordAt time.Time // the input record's Kafka timestamp
	readAt   time.Time // when segd read it
}

// maxLatencyMarks bounds memory while the publisher is stuck.
const maxLatencyMarks = 1 << 16

func (l *latencyTracker) add(seq uint64, recordAt, readAt time.Time) {
	if l == nil || readAt.IsZero() {
		return
	}
	l.mu.Lock()
	if len(l.marks) < maxLatencyMarks {
		l.marks = append(l.marks, latencyMark{seq: seq, recordAt: recordAt, readAt: readAt})
	}
	l.mu.Unlock()
}

// ack observes every mark up to seq at now. Record timestamps more than
// a day old (backfills, producers that stamp event time) are left out of
// the event-to-change histogram; consume-to-change covers them.
func (l *latencyTracker) ack(seq uint64, now time.Time, m *partitionMetrics) {
	if l == nil {
		return
	}
	l.mu.Lock()
	n := 0
	for n < len(l.marks) && l.marks[n].seq <= seq {
		mk := l.marks[n]
		if m != nil {
			m.consumeToChange.Observe(now.Sub(mk.readAt).Seconds())
			if d := now.Sub(mk.recordAt); !mk.recordAt.IsZero() && d >= 0 && d < 24*time.Hour {
				m.eventToChange.Observe(d.Seconds())
			}
		}
		n++
	}
	l.marks = append(l.marks[:0], l.marks[n:]...)
	l.mu.Unlock()
}

// changeObserver is a partition's segment.Options.OnChange: it feeds the
// API's per-segment rates and, for changes an input record caused, the
// latency tracker with that record's times (set by the task around
// Handle).
type changeObserver struct {
	rates            *segmentRates
	lat              *latencyTracker
	recordAt, readAt time.Time
	// pending counts the changes per segment (enters, exits) since the
	// last flush: the shared rates take them once per commit, not under
	// their lock and a clock read per change (a tenth of the per-change
	// cost with 1000 segments). Entries stay, zeroed, for reuse.
	pending map[string]*[2]uint32
}

func (o *changeObserver) observe(c segment.Change) {
	if o.rates != nil {
		n := o.pending[c.Segment]
		if n == nil {
			if o.pending == nil {
				o.pending = map[string]*[2]uint32{}
			}
			n = &[2]uint32{}
			o.pending[c.Segment] = n
		}
		if c.Enter {
			n[0]++
		} else {
			n[1]++
		}
	}
	if c.Cause == schemas.CauseEvent && c.OutboxSeq != 0 {
		o.lat.add(c.OutboxSeq, o.recordAt, o.readAt)
	}
}

// flush adds the pending counts to the shared rates, at now. The task
// calls it after each commit.
func (o *changeObserver) flush(now time.Time) {
	if o == nil || o.rates == nil {
		return
	}
	for seg, n := range o.pending {
		if n[0] == 0 && n[1] == 0 {
			continue
		}
		o.rates.addN(seg, n[0], n[1], now)
		*n = [2]uint32{}
	}
	if len(o.pending) > maxPendingSegments {
		// Segments of earlier rules: drop the zeroed entries.
		clear(o.pending)
	}
}

// maxPendingSegments bounds the zeroed entries a changeObserver keeps
// between flushes.
const maxPendingSegments = 4096
