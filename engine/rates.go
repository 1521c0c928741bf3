package engine

import (
	"sync"
	"time"
)

// segmentRates counts ENTER and EXIT changes per segment in one-minute
// wall-clock buckets over the last day, for GET /v1/segments. Counted when
// a change is produced (committed moments later); process-local, so a
// restart starts from zero. Safe for concurrent use.
type segmentRates struct {
	mu   sync.Mutex
	segs map[string]*minuteRing
}

const ringMinutes = 24 * 60

type minuteRing struct {
	minute [ringMinutes]int64 // the minute (Unix minutes) each slot holds
	enter  [ringMinutes]uint32
	exit   [ringMinutes]uint32
}

// addN counts enters and exits of segment at now.
func (r *segmentRates) addN(segment string, enters, exits uint32, now time.Time) {
	if r == nil {
		return
	}
	m := now.Unix() / 60
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.segs == nil {
		r.segs = map[string]*minuteRing{}
	}
	ring := r.segs[segment]
	if ring == nil {
		ring = &minuteRing{}
		r.segs[segment] = ring
	}
	i := m % ringMinutes
	if ring.minute[i] != m {
		ring.minute[i], ring.enter[i], ring.exit[i] = m, 0, 0
	}
	ring.enter[i] += enters
	ring.exit[i] += exits
}

// counts returns the enters and exits of the last hour and the last day
// (the current minute included).
func (r *segmentRates) counts(segment string, now time.Time) (enter1h, exit1h, enter24h, exit24h int64) {
	if r == nil {
		return
	}
	m := now.Unix() / 60
	r.mu.Lock()
	defer r.mu.Unlock()
	ring := r.segs[segment]
	if ring == nil {
		return
	}
	for i := range ring.minute {
		age := m - ring.minute[i]
		if age < 0 || age >= ringMinutes || ring.minute[i] == 0 {
			continue
		}
		enter24h += int64(ring.enter[i])
		exit24h += int64(ring.exit[i])
		if age < 60 {
			enter1h += int64(ring.enter[i])
			exit1h += int64(ring.exit[i])
		}
	}
	return
}
