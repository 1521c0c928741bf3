package state

import (
	"cmp"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// indexWrites holds the timer index writes that events stage in no
// particular order, and writes them into the commit's batch
// sorted by key with only the last write of each key.
//
// Pebble applies a batch to its memtable in batch order, and each insert
// starts its skiplist search from where the previous one ended: keys in
// order cost a short walk each, keys in random order a full descent (the
// memtable inserts were a tenth of the engine's time, most of it
// searching). A key written twice in one commit (a timer moved and moved
// back) keeps only the write a batch would have left visible: the last
// one, and none when the key was set and then deleted (a timer moved
// twice between commits, a new customer's first timer fired).
//
// The writes are kept as what their keys are made of, not as key bytes:
// timers sort by (time, customer), so that sorting compares integers and
// short ids instead of whole keys.
type indexWrites struct {
	seq    int32 // staging order: the later write of a key wins
	timers []timerWrite
	bytes  int // len's running total
}

type timerWrite struct {
	at  int64
	id  string
	seq int32
	del bool
}

func (w *indexWrites) timer(at int64, id string, del bool) {
	w.timers = append(w.timers, timerWrite{at: at, id: id, seq: w.seq, del: del})
	w.seq++
	w.bytes += 16 + len(id) // kind, lengths, partition prefix, time
}

// len is about the bytes the staged writes add to a batch, at most: the
// writes a later one replaces are counted.
func (w *indexWrites) len() int { return w.bytes }

// detach moves the staged writes into d, emptying w: a commit writes
// them (detachedIndex.writeTo) on its own time, possibly on another
// goroutine (a pipelined commit's writer), while new ones are staged.
func (w *indexWrites) detach(d *detachedIndex) {
	d.timers, w.timers = w.timers, d.timers[:0]
	w.seq, w.bytes = 0, 0
}

// detachedIndex is a commit's index writes (indexWrites.detach).
type detachedIndex struct {
	timers []timerWrite
}

// writeTo writes the writes into b in key order, the last write of each
// key only, and empties d.
func (d *detachedIndex) writeTo(b *pebble.Batch, part int32, key []byte) []byte {
	ts := d.timers
	slices.SortFunc(ts, func(x, y timerWrite) int {
		if x.at != y.at {
			return cmp.Compare(x.at, y.at)
		}
		if c := strings.Compare(x.id, y.id); c != 0 {
			return c
		}
		return cmp.Compare(x.seq, y.seq)
	})
	first := 0 // the first write of the key at i
	for i := range ts {
		if i+1 < len(ts) && ts[i+1].at == ts[i].at && ts[i+1].id == ts[i].id {
			continue
		}
		setFirst := !ts[first].del
		first = i + 1
		if setFirst && ts[i].del {
			// Set, then deleted in this commit: a key the store did
			// not hold (a timer is set only where its customer had
			// none, and the index matches the records), and need not
			// hold a tombstone of.
			continue
		}
		key = timerKey(key[:0], part, ts[i].at, ts[i].id)
		if ts[i].del {
			b.Delete(key, nil)
		} else {
			b.Set(key, nil, nil)
		}
	}
	if cap(ts) > indexWritesRetain {
		ts = nil
	}
	clear(ts)
	d.timers = ts[:0]
	return key
}

// indexWritesRetain bounds the timer writes an emptied indexWrites keeps
// room for, like the staged batch's buffer.
const indexWritesRetain = 1 << 17
