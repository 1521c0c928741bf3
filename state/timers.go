package state

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
)

// timerRefill is how many timers one refill loads from the index into the
// in-memory heap.
const timerRefill = 4096

type timerItem struct {
	at int64
	// pre is the id's first 8 bytes, big-endian, zero-padded: ordered as
	// the ids are where they differ. Timers share their time often (a
	// window's leave time is a bucket boundary), and a tie compared the
	// ids' bytes, a cache miss each in a heap of scattered strings.
	pre uint64
	id  string
}

func newTimerItem(at int64, id string) timerItem {
	return timerItem{at: at, pre: idPrefix(id), id: id}
}

func (a timerItem) less(b timerItem) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	if a.pre != b.pre {
		return a.pre < b.pre
	}
	return a.id < b.id
}

// timerIndex is the durable timer index ('t' keys) fronted by an in-memory
// min-heap of its near horizon.
//
// Invariant: every timer with at < horizon that exists in the committed
// index or was staged since is in the heap, except those counted in
// removed (lazily deleted). Timers at or past the horizon live only in
// Pebble, plus the staged-but-uncommitted ones in far, which a refill merges.
type timerIndex struct {
	p       *Partition
	heap    []timerItem
	removed map[timerItem]int
	horizon int64              // math.MinInt64: nothing loaded yet; MaxInt64: everything loaded
	far     map[timerItem]bool // staged at >= horizon: true added, false removed
	// topLive says heap[0] was checked against removed and is live:
	// peek, once per event, then skips the map lookup (a hash of the id)
	// until a pop or a removal of that timer. A push that becomes the
	// top keeps it: the pushed copy is live whatever removed counts for
	// equal timers deeper in the heap.
	topLive bool
}

func (t *timerIndex) init(p *Partition) {
	t.p = p
	t.removed = map[timerItem]int{}
	t.far = map[timerItem]bool{}
	t.horizon = math.MinInt64
}

// MoveTimer moves the customer's timer from one time to another: from 0
// means it had none, to 0 cancels it. The engine keeps the current timer
// time in its record, so moving costs no read. Times must be positive.
func (p *Partition) MoveTimer(customerID string, from, to int64) {
	if from == to {
		return
	}
	t := &p.timers
	if from > 0 {
		p.index.timer(from, customerID, true)
		it := newTimerItem(from, customerID)
		if from < t.horizon {
			t.removed[it]++
			if t.topLive && t.heap[0] == it {
				t.topLive = false
			}
		} else {
			t.far[it] = false
		}
	}
	if to > 0 {
		p.index.timer(to, customerID, false)
		it := newTimerItem(to, customerID)
		if to < t.horizon {
			t.push(it)
		} else {
			t.far[it] = true
		}
	}
}

// NextTimer returns the earliest pending timer.
func (p *Partition) NextTimer() (at int64, ok bool) {
	it, ok := p.timers.peek()
	return it.at, ok
}

// PopDue removes every timer due at or before now, in (time, customer)
// order, and calls fn for each. Timers fn schedules at or before now are
// popped in the same call.
func (p *Partition) PopDue(now int64, fn func(customerID string, at int64) error) error {
	t := &p.timers
	for {
		it, ok := t.peek()
		if !ok || it.at > now {
			return nil
		}
		t.pop()
		p.index.timer(it.at, it.id, true)
		if err := fn(it.id, it.at); err != nil {
			return err
		}
	}
}

func (t *timerIndex) peek() (timerItem, bool) {
	if t.topLive {
		return t.heap[0], true
	}
	for {
		for len(t.heap) > 0 {
			top := t.heap[0]
			if n := t.removed[top]; n > 0 {
				t.pop()
				if n == 1 {
					delete(t.removed, top)
				} else {
					t.removed[top] = n - 1
				}
				continue
			}
			t.topLive = true
			return top, true
		}
		if t.horizon == math.MaxInt64 {
			return timerItem{}, false
		}
		if err := t.p.s.h.guard("read timers", t.refill); err != nil {
			// Reads of the index fail only when the store is broken;
			// report no timer and let the next commit surface it.
			t.p.refillErr = err
			return timerItem{}, false
		}
	}
}

// refill loads the next timerRefill timers at or past the horizon.
func (t *timerIndex) refill() error {
	p := t.p
	// Pebble must hold what a commit in flight stages (far timers
	// included: CommitAsync hands them to the flight): settle it.
	if _, err := p.settle(true); err != nil {
		return err
	}
	prefix := partPrefix(ksTimer, p.id)
	lower := prefix
	if t.horizon != math.MinInt64 {
		lower = binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), uint64(t.horizon))
	}
	iter, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("timer index: %w", err)
	}
	defer iter.Close()
	newHorizon := int64(math.MaxInt64)
	var loaded []timerItem
	var last int64
	for iter.First(); iter.Valid(); iter.Next() {
		k := iter.Key()
		if len(k) < 13 {
			return fmt.Errorf("%w: timer key %x", ErrCorrupt, k)
		}
		it := newTimerItem(int64(binary.BigEndian.Uint64(k[5:13])), string(k[13:]))
		if len(loaded) >= timerRefill && it.at != last {
			newHorizon = it.at
			break
		}
		last = it.at
		if added, staged := t.far[it]; staged && !added {
			continue
		}
		loaded = append(loaded, it)
	}
	if err := iter.Error(); err != nil {
		return fmt.Errorf("timer index: %w", err)
	}
	for it, added := range t.far {
		if it.at < newHorizon {
			if added {
				loaded = append(loaded, it)
			}
			delete(t.far, it)
		}
	}
	for _, it := range loaded {
		t.push(it)
	}
	t.horizon = newHorizon
	return nil
}

// committed is called after a commit, or when one goes in flight: the
// staged far timers are in its batch, which a refill lets land first.
func (t *timerIndex) committed() {
	clear(t.far)
}

func (t *timerIndex) push(it timerItem) {
	t.heap = append(t.heap, it)
	i := len(t.heap) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !t.heap[i].less(t.heap[parent]) {
			break
		}
		t.heap[i], t.heap[parent] = t.heap[parent], t.heap[i]
		i = parent
	}
	t.p.heapLen.Store(int64(len(t.heap)))
}

func (t *timerIndex) pop() timerItem {
	t.topLive = false
	h := t.heap
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h[n] = timerItem{}
	h = h[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h[r].less(h[l]) {
			m = r
		}
		if !h[m].less(h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	t.heap = h
	t.p.heapLen.Store(int64(n))
	return top
}
