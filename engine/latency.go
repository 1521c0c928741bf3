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

// changeObserver is a partition's segment.Options.OnChange: it feeds,
// for changes an input record caused, the latency tracker with that
// record's times (set by the task around Handle); and, at each commit
// (flush), the API's per-segment rates with the transitions the
// processor counted since the last flush.
type changeObserver struct {
	rates            *segmentRates
	lat              *latencyTracker
	recordAt, readAt time.Time
	// counted is the processor's transitions per segment (enters,
	// exits) as of the last flush: the shared rates take the difference
	// once per commit, not a map update per change (a fifth of the
	// per-change cost with 1000 segments once the processor's own count
	// moved off its map).
	counted map[string][2]uint64
}

func (o *changeObserver) observe(c segment.Change) {
	if c.Cause == schemas.CauseEvent && c.OutboxSeq != 0 {
		o.lat.add(c.OutboxSeq, o.recordAt, o.readAt)
	}
}

// flush adds the transitions the processor's stats counted since the
// last flush to the shared rates, at now. The task calls it after each
// commit.
func (o *changeObserver) flush(now time.Time, s *segment.Stats) {
	if o == nil || o.rates == nil {
		return
	}
	if o.counted == nil {
		o.counted = map[string][2]uint64{}
	}
	for seg, n := range s.SegmentChanges {
		last := o.counted[seg]
		if n == last {
			continue
		}
		o.rates.addN(seg, uint32(n[0]-last[0]), uint32(n[1]-last[1]), now)
		o.counted[seg] = n
	}
}
