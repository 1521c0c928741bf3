package state

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/klauspost/compress/s2"
)

// The outbox holds what a commit publishes (segment changes, dead
// letters): values numbered by a sequence that never goes back, across
// restarts. A commit stores its values in groups, each under the key of
// its first value's sequence ('x' p seq), so that a value costs no Pebble
// key of its own: with 1000 segments an event causes about ten changes,
// and a key per change (inserted at commit, flushed, read and deleted by
// the publisher, its delete logged to the changelog) was a sixth of the
// engine's time. An entry is either
//
//	a group:      0x00 { uvarint len(value) value }...   values seq, seq+1, ...
//	a compressed  ff ff ff ff 7f, uvarint(number of values), S2(the
//	group:        group's values, framed as above)
//	one value, as segd wrote every entry before groups: an envelope,
//	              whose first byte, the start of its topic's length (at
//	              most 249), is neither 0x00 nor 0xff
//
// A compressed group's first five bytes read as a topic length of 2^35-1
// to a segd that predates them: its publisher cannot take the entry for a
// record (it skips it as corrupt, loudly) instead of sending garbage.
//
// Groups are compressed (store format 3) because consecutive changes
// repeat most of their bytes (the topic, the rules hash, the segment
// ids, the customer of the event that caused them): with 1000 segments
// a group shrank about twelvefold, and every byte of it was written to
// Pebble's WAL and memtable, flushed, compacted and, with the changelog
// on, sent to Kafka. The group is compressed by whoever writes the
// commit's batch: a pipelined commit's writer, beside the task. A group
// that does not shrink by an eighth is stored as it is.
//
// A group never spans two commits, so every committed sequence and every
// changelog mark is the last value of a group, and deletes take whole
// groups only (DeleteOutbox): the first entry left always begins right
// after the last deleted value.

// The first byte of a group, and the first bytes of a compressed one.
const (
	outboxGroupMark           = 0x00
	outboxCompressedGroupMark = "\xff\xff\xff\xff\x7f"
)

// outboxGroupBytes is the size past which a commit starts a new group:
// large enough to make a key per value rare, small enough that the
// publisher's reads (whole groups) stay small.
const outboxGroupBytes = 64 << 10

// maxCompressedGroupBytes bounds the group a compressed entry may claim
// to hold: larger groups (a value that large is not something segd
// writes) are stored as they are, so that a damaged entry's claim cannot
// make a reader allocate more.
const maxCompressedGroupBytes = 16 << 20

// stagedGroup is an outbox group staged for the next commit: its bytes
// (a group as stored uncompressed) are its stagedOutbox's arena[off:end].
type stagedGroup struct {
	seq      uint64 // its first value's sequence
	n        uint64 // its number of values
	off, end int
}

// stagedOutbox is the outbox groups a commit writes: those of a
// synchronous commit, or of a flight (which its writer writes).
type stagedOutbox struct {
	arena  []byte // the groups, back to back; the open one last
	groups []stagedGroup
	// The open group: arena[openOff:] holds its openN values.
	openOff int
	openN   uint64
	openSeq uint64
}

// stagedOutboxRetainBytes is the largest arena a partition keeps between
// commits: a commit of 10,000 events with 1000 segments stages about 20
// MiB of changes, which an arena regrown by doubling at every commit would
// copy again.
const stagedOutboxRetainBytes = 32 << 20

// AppendOutbox stages value (copied) for publication and returns its
// sequence number, monotonic across restarts.
func (p *Partition) AppendOutbox(value []byte) uint64 {
	seq := p.nextSeq
	p.nextSeq++
	o := &p.out
	if o.openN > 0 && len(o.arena)-o.openOff+binary.MaxVarintLen64+len(value) > outboxGroupBytes {
		o.closeGroup()
	}
	if o.openN == 0 {
		o.openOff, o.openSeq = len(o.arena), seq
		o.arena = append(o.arena, outboxGroupMark)
	}
	o.openN++
	o.arena = binary.AppendUvarint(o.arena, uint64(len(value)))
	o.arena = append(o.arena, value...)
	return seq
}

// closeGroup ends the open group: later values start a new one.
func (o *stagedOutbox) closeGroup() {
	if o.openN == 0 {
		return
	}
	o.groups = append(o.groups, stagedGroup{seq: o.openSeq, n: o.openN, off: o.openOff, end: len(o.arena)})
	o.openN = 0
}

// reset empties o, keeping its buffers.
func (o *stagedOutbox) reset() {
	o.arena, o.groups, o.openN = o.arena[:0], o.groups[:0], 0
}

// bytes is the size of the staged groups, uncompressed.
func (o *stagedOutbox) bytes() int { return len(o.arena) }

// writeTo writes the staged groups into b, compressed where that pays,
// and empties o. key and zbuf are scratch buffers, returned for reuse.
// keep, if not nil, stages a copy of each entry for the publisher
// (recentOutbox).
func (o *stagedOutbox) writeTo(b *pebble.Batch, part int32, key, zbuf []byte, keep *recentOutbox) ([]byte, []byte) {
	o.closeGroup()
	for _, g := range o.groups {
		key = outboxKey(key[:0], part, g.seq)
		zbuf = appendOutboxEntry(zbuf[:0], g.n, o.arena[g.off:g.end])
		b.Set(key, zbuf, nil)
		if keep != nil {
			keep.stage(g.seq, g.seq+g.n-1, zbuf)
		}
	}
	o.reset()
	if cap(o.arena) > stagedOutboxRetainBytes {
		o.arena = nil
	}
	return key, zbuf
}

// appendOutboxEntry appends the entry that stores group (an uncompressed
// group of n values): compressed, unless that saves less than an eighth.
func appendOutboxEntry(dst []byte, n uint64, group []byte) []byte {
	if len(group) > maxCompressedGroupBytes || len(group) < 64 {
		return append(dst, group...)
	}
	start := len(dst)
	dst = append(dst, outboxCompressedGroupMark...)
	dst = binary.AppendUvarint(dst, n)
	hdr := len(dst) - start
	need := s2.MaxEncodedLen(len(group) - 1)
	dst = slices.Grow(dst, need)
	z := s2.Encode(dst[len(dst):len(dst)+need], group[1:])
	if hdr+len(z) > len(group)-len(group)/8 {
		return append(dst[:start], group...)
	}
	return dst[:len(dst)+len(z)]
}

// forEachOutboxValue calls fn for every value of the entry stored under
// sequence key, and returns the sequence of its last value. A compressed
// group is decompressed into *scratch (grown as needed). With fn nil it
// only finds the last sequence, which a compressed group's header gives.
func forEachOutboxValue(key uint64, entry []byte, scratch *[]byte, fn func(seq uint64, value []byte) error) (uint64, error) {
	if len(entry) == 0 || entry[0] != outboxGroupMark && entry[0] != outboxCompressedGroupMark[0] {
		if fn == nil {
			return key, nil
		}
		return key, fn(key, entry)
	}
	group := entry[1:]
	var want uint64
	if entry[0] != outboxGroupMark {
		// Compared as a string of the mark's length: a conversion of the
		// whole entry would copy it.
		m := len(outboxCompressedGroupMark)
		if len(entry) < m || string(entry[:m]) != outboxCompressedGroupMark {
			return key, fmt.Errorf("%w: outbox group %d: bad compressed header", ErrCorrupt, key)
		}
		group = entry[len(outboxCompressedGroupMark):]
		n, k := binary.Uvarint(group)
		if k <= 0 || n == 0 || n > maxCompressedGroupBytes || key+n < key {
			return key, fmt.Errorf("%w: outbox group %d: bad compressed header", ErrCorrupt, key)
		}
		if fn == nil {
			return key + n - 1, nil
		}
		z := group[k:]
		size, err := s2.DecodedLen(z)
		if err != nil || size > maxCompressedGroupBytes {
			return key, fmt.Errorf("%w: outbox group %d: compressed values: bad length", ErrCorrupt, key)
		}
		if cap(*scratch) < size {
			*scratch = make([]byte, size)
		}
		group, err = s2.Decode((*scratch)[:size], z)
		if err != nil {
			return key, fmt.Errorf("%w: outbox group %d: compressed values: %v", ErrCorrupt, key, err)
		}
		want = n
	}
	seq := key - 1
	for b := group; len(b) > 0; {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return seq, fmt.Errorf("%w: outbox group %d: value %d runs past its end", ErrCorrupt, key, seq+1)
		}
		seq++
		if fn != nil {
			// Capped: a caller's append must not run into the next value.
			end := k + int(n)
			if err := fn(seq, b[k:end:end]); err != nil {
				return seq, err
			}
		}
		b = b[k+int(n):]
	}
	if seq < key {
		return key, fmt.Errorf("%w: outbox group %d is empty", ErrCorrupt, key)
	}
	if want != 0 && seq-key+1 != want {
		return seq, fmt.Errorf("%w: outbox group %d holds %d values, its header says %d", ErrCorrupt, key, seq-key+1, want)
	}
	return seq, nil
}

// ReadOutbox calls fn for up to limit committed entries with a sequence
// above after, in order, up to OutboxReleased. value is valid only during
// fn. Safe to call concurrently with the task.
func (p *Partition) ReadOutbox(after uint64, limit int, fn func(seq uint64, value []byte) error) error {
	return p.ReadOutboxTo(after, p.releasedOutbox(), limit, fn)
}

// ReadOutboxTo is ReadOutbox up to hi (at most OutboxReleased): a caller
// that found nothing in (after, hi] knows no entry is there. Values are
// read a stored group at a time: the call may return up to a group's
// values (a commit's, at most outboxGroupBytes) past limit.
func (p *Partition) ReadOutboxTo(after, hi uint64, limit int, fn func(seq uint64, value []byte) error) error {
	return p.s.h.guard("read outbox", func() error { return p.readOutbox(after, hi, limit, fn) })
}

func (p *Partition) readOutbox(after, hi uint64, limit int, fn func(seq uint64, value []byte) error) error {
	if p.closed.Load() {
		return ErrClosed
	}
	hi = min(hi, p.releasedOutbox())
	if after >= hi {
		return nil
	}
	var held [8]recentGroup
	if gs := p.recent.from(after+1, hi, held[:0]); gs != nil {
		n, last, err := readHeld(gs, after, hi, limit, fn)
		if err != nil || n >= limit || last >= hi {
			return err
		}
		// The rest (a pipelined commit's) is in the store only.
		after, limit = last, limit-n
	}
	return p.readStored(after, hi, limit, fn)
}

// readStored is readOutbox from Pebble.
func (p *Partition) readStored(after, hi uint64, limit int, fn func(seq uint64, value []byte) error) error {
	// Every entry left begins after the last deleted value, so the bound
	// keeps the seek below off the deleted entries' tombstones.
	lower := outboxKey(nil, p.id, p.deletedTo.Load()+1)
	upper := outboxKey(nil, p.id, hi+1)
	it, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	// The entry holding after+1 may begin before it.
	ok := it.SeekLT(outboxKey(nil, p.id, after+1))
	if !ok {
		ok = it.First()
	}
	n := 0
	var scratch []byte
	for ; ok && n < limit; ok = it.Next() {
		_, err := forEachOutboxValue(binary.BigEndian.Uint64(it.Key()[5:]), it.Value(), &scratch, func(seq uint64, v []byte) error {
			if seq <= after || seq > hi {
				return nil
			}
			n++
			return fn(seq, v)
		})
		if err != nil {
			return err
		}
	}
	return it.Error()
}

// readHeld is readOutbox over entries the partition holds in memory
// (consecutive groups): it returns how many values it passed to fn and
// the last sequence it read.
func readHeld(gs []recentGroup, after, hi uint64, limit int, fn func(seq uint64, value []byte) error) (n int, last uint64, err error) {
	last = after
	var scratch []byte
	for _, g := range gs {
		if n >= limit {
			break
		}
		_, err := forEachOutboxValue(g.key, g.entry, &scratch, func(seq uint64, v []byte) error {
			if seq <= after || seq > hi {
				return nil
			}
			n++
			last = seq
			return fn(seq, v)
		})
		if err != nil {
			return n, last, err
		}
	}
	return n, last, nil
}

// DeleteOutbox deletes every entry up to and including upTo, once the sink
// confirmed them. A group that holds upTo and later values stays whole
// until a later call passes its end (ReadOutbox's callers delete up to
// the last value they were given, which ends a group). Safe to call
// concurrently with the task.
func (p *Partition) DeleteOutbox(upTo uint64) error {
	return p.s.h.guard("delete outbox", func() error { return p.deleteOutbox(upTo) })
}

func (p *Partition) deleteOutbox(upTo uint64) error {
	if p.closed.Load() {
		return ErrClosed
	}
	p.outMu.Lock()
	defer p.outMu.Unlock()
	from := p.deletedTo.Load() + 1
	if upTo < from {
		return nil
	}
	keys, to, held := p.recent.deletable(from, upTo, p.delScratch[:0])
	if !held {
		var err error
		if keys, to, err = p.outboxKeysTo(from, upTo); err != nil {
			return err
		}
		p.recent.forget(to)
	}
	p.delScratch = keys[:0]
	if len(keys) == 0 {
		p.deletedTo.Store(max(to, p.deletedTo.Load()))
		return nil
	}
	if len(keys) < outboxPointDeletes {
		// A live publisher deletes a few entries many times a second.
		// Range tombstones that frequent would pile up in the memtable
		// and make every new iterator (the next ReadOutbox) re-fragment
		// all of them; point tombstones below the reader's lower bound
		// cost nothing.
		b := p.s.db.NewBatch()
		defer b.Close()
		var k []byte
		for _, key := range keys {
			k = outboxKey(k[:0], p.id, key)
			if err := b.Delete(k, nil); err != nil {
				return fmt.Errorf("delete outbox to %d: %w", upTo, err)
			}
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			return fmt.Errorf("delete outbox to %d: %w", upTo, err)
		}
		if p.changelog {
			p.delKeys = append(p.delKeys, keys...)
		}
	} else {
		if err := p.s.db.DeleteRange(outboxKey(nil, p.id, 0), outboxKey(nil, p.id, to+1), pebble.NoSync); err != nil {
			return fmt.Errorf("delete outbox to %d: %w", upTo, err)
		}
		// Too many keys to list: the changelog logs every sequence.
		p.delBlindTo = to
	}
	p.deletedTo.Store(to)
	return nil
}

// outboxKeysTo reads the keys of the stored entries from from (where the
// first one left begins) that end at or before upTo, appended to
// p.delScratch, and the last sequence they cover. Entries are read
// before they are deleted: a group's key does not say where it ends.
func (p *Partition) outboxKeysTo(from, upTo uint64) ([]uint64, uint64, error) {
	it, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: outboxKey(nil, p.id, from), UpperBound: outboxKey(nil, p.id, upTo+1)})
	if err != nil {
		return nil, 0, fmt.Errorf("delete outbox to %d: %w", upTo, err)
	}
	to := upTo
	keys := p.delScratch[:0]
	for ok := it.First(); ok; ok = it.Next() {
		key := binary.BigEndian.Uint64(it.Key()[5:])
		last, err := forEachOutboxValue(key, it.Value(), nil, nil)
		if err != nil {
			it.Close()
			return nil, 0, fmt.Errorf("delete outbox to %d: %w", upTo, err)
		}
		if last > upTo {
			to = key - 1
			break
		}
		keys = append(keys, key)
	}
	if err := it.Close(); err != nil {
		return nil, 0, fmt.Errorf("delete outbox to %d: %w", upTo, err)
	}
	return keys, to, nil
}

// outboxPointDeletes is the most entries DeleteOutbox deletes with point
// tombstones; more (a replay's whole outbox) take one range tombstone.
const outboxPointDeletes = 4096

// OutboxReleased is the highest outbox sequence ReadOutbox may return:
// the committed one, or, with the changelog on, the last one whose commit
// the changelog acknowledged. Safe to call concurrently.
func (p *Partition) OutboxReleased() uint64 {
	return p.releasedOutbox()
}

// OutboxCommitted is the highest outbox sequence committed: what
// OutboxReleased returns once the changelog acknowledged every commit.
// Safe to call concurrently.
func (p *Partition) OutboxCommitted() uint64 {
	return p.committed.Load()
}

// OutboxStaged reports whether outbox entries were appended since the
// last commit.
func (p *Partition) OutboxStaged() bool {
	return p.nextSeq-1 > p.committed.Load()
}

// OutboxDepth is the number of committed values not yet deleted. Safe to
// call concurrently.
func (p *Partition) OutboxDepth() int64 {
	return int64(p.committed.Load() - p.deletedTo.Load())
}
