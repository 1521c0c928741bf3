package state

import (
	"cmp"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// indexWrites holds the timer and membership index writes that events
// stage in no particular order, and writes them into the commit's batch
// sorted by key with only the last write of each key.
//
// Pebble applies a batch to its memtable in batch order, and each insert
// starts its skiplist search from where the previous one ended: keys in
// order cost a short walk each, keys in random order a full descent (the
// memtable inserts were a tenth of the engine's time, most of it
// searching). A key written twice in one commit (a timer moved and moved
// back, a customer entering and leaving) keeps only the write a batch
// would have left visible: the last one.
//
// The writes are kept as what their keys are made of, not as key bytes:
// timers sort by (time, customer) and a segment's members by customer,
// so that sorting compares integers and short ids instead of whole keys
// (sorting the encoded keys cost more than the inserts it saved with
// 1000 segments).
type indexWrites struct {
	seq    int32 // staging order: the later write of a key wins
	timers []timerWrite
	// members: the segments with writes since the last commit; each
	// segment's writes are in its segCount.
	members []*segCount
	bytes   int // len's running total
}

type timerWrite struct {
	at  int64
	id  string
	seq int32
	del bool
}

type memberWrite struct {
	id  string
	seq int32
	del bool
}

func (w *indexWrites) timer(at int64, id string, del bool) {
	w.timers = append(w.timers, timerWrite{at: at, id: id, seq: w.seq, del: del})
	w.seq++
	w.bytes += 16 + len(id) // kind, lengths, partition prefix, time
}

func (w *indexWrites) member(c *segCount, segment, id string, del bool) {
	if len(c.writes) == 0 {
		if c.prefix == nil {
			c.prefix = memberPrefix(segment)
		}
		w.members = append(w.members, c)
	}
	c.writes = append(c.writes, memberWrite{id: id, seq: w.seq, del: del})
	w.seq++
	w.bytes += len(c.prefix) + len(id) + 8 // kind, lengths, value
}

// len is about the bytes the staged writes add to a batch, at most: the
// writes a later one replaces are counted.
func (w *indexWrites) len() int { return w.bytes }

// detach moves the staged writes into d, emptying w: a commit writes
// them (detachedIndex.writeTo) on its own time, possibly on another
// goroutine (a pipelined commit's writer), while new ones are staged.
func (w *indexWrites) detach(d *detachedIndex) {
	for _, c := range w.members {
		d.members = append(d.members, memberBatch{prefix: c.prefix, writes: c.writes})
		c.writes = nil
	}
	clear(w.members)
	w.members = w.members[:0]
	d.timers, w.timers = w.timers, d.timers[:0]
	w.seq, w.bytes = 0, 0
}

// detachedIndex is a commit's index writes (indexWrites.detach).
type detachedIndex struct {
	members []memberBatch
	timers  []timerWrite
}

// memberBatch is one segment's membership writes of a commit.
type memberBatch struct {
	prefix []byte
	writes []memberWrite
}

// writeTo writes the writes into b in key order, the last write of each
// key only, and empties d. memberVal is the value of a membership.
func (d *detachedIndex) writeTo(b *pebble.Batch, part int32, memberVal []byte, key []byte) []byte {
	// Memberships ('m') sort before timers ('t').
	slices.SortFunc(d.members, func(x, y memberBatch) int { return strings.Compare(string(x.prefix), string(y.prefix)) })
	for _, mb := range d.members {
		ws := mb.writes
		slices.SortFunc(ws, func(x, y memberWrite) int {
			if c := strings.Compare(x.id, y.id); c != 0 {
				return c
			}
			return cmp.Compare(x.seq, y.seq)
		})
		for i := range ws {
			if i+1 < len(ws) && ws[i+1].id == ws[i].id {
				continue // a later write of the same key replaces it
			}
			key = append(append(key[:0], mb.prefix...), ws[i].id...)
			if ws[i].del {
				b.Delete(key, nil)
			} else {
				b.Set(key, memberVal, nil)
			}
		}
	}
	clear(d.members) // drop the ids
	d.members = d.members[:0]

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
	for i := range ts {
		if i+1 < len(ts) && ts[i+1].at == ts[i].at && ts[i+1].id == ts[i].id {
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
