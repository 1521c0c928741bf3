package state

import (
	"cmp"
	"encoding/binary"
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
	pre uint64 // idPrefix(id)
	id  string
	seq int32
	del bool
}

func (w *indexWrites) timer(at int64, id string, del bool) {
	w.timers = append(w.timers, timerWrite{at: at, pre: idPrefix(id), id: id, seq: w.seq, del: del})
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
		if x.pre != y.pre {
			return cmp.Compare(x.pre, y.pre)
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

// idPrefix is an id's first 8 bytes, big-endian, zero-padded: two ids
// whose prefixes differ compare as their prefixes do, and only ids
// whose prefixes are equal need their bytes compared (strings.Compare).
// Sorting a commit's records or timer writes by id read each id's bytes
// at every comparison, a cache miss each: the ids live in the cache
// entries, scattered over the heap and last touched thousands of
// events before.
func idPrefix(id string) uint64 {
	var b [8]byte
	copy(b[:], id)
	return binary.BigEndian.Uint64(b[:])
}

// idKey is one of a commit's records in a sort by customer id: its
// idPrefix and its index in whatever holds the records.
type idKey struct {
	pre uint64
	i   int32
}

// sortIDKeys sorts keys into their ids' order; id returns the id of the
// record at an index, read only for keys whose prefixes are equal.
func sortIDKeys(keys []idKey, id func(i int32) string) {
	slices.SortFunc(keys, func(a, b idKey) int {
		if a.pre != b.pre {
			return cmp.Compare(a.pre, b.pre)
		}
		return strings.Compare(id(a.i), id(b.i))
	})
}
