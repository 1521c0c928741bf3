package state

import "sync"

// recentOutbox keeps the outbox entries of a partition's latest small
// synchronous commits in memory, as they are stored, for its publisher:
// a partition that keeps up with its input commits each poll's few
// changes at once (commit.when_caught_up), and its publisher read them
// back through a Pebble iterator (a seek backwards over the memtable,
// whose deleted entries are tombstones) and iterated them again to find
// the keys to delete. In the latency benchmark at 10,000 events/s those
// two iterators were about 0.8 s of CPU in 20 s, and every read was in
// the path from an event to its change.
//
// The groups held are consecutive (each begins right after the previous
// one's last value) and are copies: an entry never changes once
// committed, so a copy is as good as Pebble's until the entry is
// deleted, and deletes drop it here first. Pipelined commits, and
// commits whose entries exceed recentCommitBytes, are not kept: their
// values are read from Pebble, and the next kept commit, not following
// on from what is held, starts the list again.
type recentOutbox struct {
	mu     sync.Mutex
	groups []recentGroup
	bytes  int
	// staged are the current synchronous commit's entries (task-owned),
	// held once its batch is durable (publish) or dropped (drop).
	staged      []recentGroup
	stagedBytes int
}

// recentGroup is one stored outbox entry: its key (its first value's
// sequence), its last value's sequence and its bytes.
type recentGroup struct {
	key, last uint64
	entry     []byte
}

const (
	// recentOutboxBytes bounds the entries a partition holds; the oldest
	// are let go first (the publisher then reads them from Pebble).
	recentOutboxBytes = 1 << 20
	// recentCommitBytes is the largest commit whose entries are kept: a
	// partition that keeps up commits a few changes at a time, and a
	// larger commit (a busy partition's, a replay's) is read in groups
	// from Pebble at no loss.
	recentCommitBytes = 256 << 10
)

// keeps reports whether a commit staging outboxBytes of groups
// (uncompressed: what is stored is no larger) has its entries held.
func keeps(outboxBytes int) bool { return outboxBytes <= recentCommitBytes }

// stage copies a synchronous commit's entry (key..last, as stored) to be
// held once the commit is durable. Task-owned.
func (r *recentOutbox) stage(key, last uint64, entry []byte) {
	r.staged = append(r.staged, recentGroup{key: key, last: last, entry: append([]byte(nil), entry...)})
	r.stagedBytes += len(entry)
}

// drop forgets what the current commit staged (its batch did not land).
func (r *recentOutbox) drop() {
	clear(r.staged)
	r.staged, r.stagedBytes = r.staged[:0], 0
}

// publish holds what the commit staged: called once its batch is
// durable, before the commit's sequence counts as committed (a reader
// that sees it committed may then find it here).
func (r *recentOutbox) publish() {
	if len(r.staged) == 0 {
		r.drop()
		return
	}
	r.mu.Lock()
	if n := len(r.groups); n > 0 && r.groups[n-1].last+1 != r.staged[0].key {
		r.reset()
	}
	r.groups = append(r.groups, r.staged...)
	r.bytes += r.stagedBytes
	for r.bytes > recentOutboxBytes && len(r.groups) > 0 {
		r.popFront()
	}
	r.mu.Unlock()
	r.drop()
}

// reset lets every held entry go. Called with r.mu held.
func (r *recentOutbox) reset() {
	clear(r.groups)
	r.groups, r.bytes = r.groups[:0], 0
}

// popFront lets the oldest held entry go. Called with r.mu held.
func (r *recentOutbox) popFront() {
	r.bytes -= len(r.groups[0].entry)
	r.groups[0] = recentGroup{}
	r.groups = r.groups[1:]
	if len(r.groups) == 0 {
		r.groups = r.groups[:0:0] // let the spent array go
	}
}

// from returns, in dst, the held entries from the one holding seq on, up
// to one beginning after hi, or nil when seq is not held. The entries'
// bytes never change: the caller reads them without the lock.
func (r *recentOutbox) from(seq, hi uint64, dst []recentGroup) []recentGroup {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.groups)
	if n == 0 || seq < r.groups[0].key || seq > r.groups[n-1].last {
		return nil
	}
	i := 0
	for r.groups[i].last < seq {
		i++
	}
	for ; i < n && r.groups[i].key <= hi; i++ {
		dst = append(dst, r.groups[i])
	}
	return dst
}

// deletable returns, appended to keys, the keys of the held entries that
// begin at from and end at or before upTo, and the last sequence they
// cover; ok is false when the entry beginning at from is not held, or
// the entries held end before upTo (the caller then looks in Pebble).
// The entries are let go: the caller deletes them.
func (r *recentOutbox) deletable(from, upTo uint64, keys []uint64) (_ []uint64, to uint64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.groups)
	if n == 0 || r.groups[0].key != from || r.groups[n-1].last < upTo {
		return keys, 0, false
	}
	to = from - 1
	for len(r.groups) > 0 && r.groups[0].last <= upTo {
		keys = append(keys, r.groups[0].key)
		to = r.groups[0].last
		r.popFront()
	}
	return keys, to, true
}

// forget lets go every held entry that ends at or before upTo (deleted
// by other means).
func (r *recentOutbox) forget(upTo uint64) {
	r.mu.Lock()
	for len(r.groups) > 0 && r.groups[0].last <= upTo {
		r.popFront()
	}
	r.mu.Unlock()
}
