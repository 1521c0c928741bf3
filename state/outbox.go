package state

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
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
//	a group:  0x00 { uvarint len(value) value }...   values seq, seq+1, ...
//	one value, as segd wrote every entry before groups (an envelope,
//	          whose first byte, the length of a non-empty topic, is never 0)
//
// A group never spans two commits, so every committed sequence and every
// changelog mark is the last value of a group, and deletes take whole
// groups only (DeleteOutbox): the first entry left always begins right
// after the last deleted value.

// outboxGroupMark is the first byte of a group.
const outboxGroupMark = 0x00

// outboxGroupBytes is the size past which a commit starts a new group:
// large enough to make a key per value rare, small enough that the
// publisher's reads (whole groups) stay small.
const outboxGroupBytes = 64 << 10

// AppendOutbox stages value (copied) for publication and returns its
// sequence number, monotonic across restarts.
func (p *Partition) AppendOutbox(value []byte) uint64 {
	seq := p.nextSeq
	p.nextSeq++
	if len(p.outGroup) > 0 && len(p.outGroup)+binary.MaxVarintLen64+len(value) > outboxGroupBytes {
		p.stageOutboxGroup()
	}
	if len(p.outGroup) == 0 {
		p.outGroupSeq = seq
		p.outGroup = append(p.outGroup, outboxGroupMark)
	}
	p.outGroup = binary.AppendUvarint(p.outGroup, uint64(len(value)))
	p.outGroup = append(p.outGroup, value...)
	return seq
}

// stageOutboxGroup moves the open group into the staged batch.
func (p *Partition) stageOutboxGroup() {
	if len(p.outGroup) == 0 {
		return
	}
	p.keyBuf = outboxKey(p.keyBuf[:0], p.id, p.outGroupSeq)
	p.staged.Set(p.keyBuf, p.outGroup, nil)
	if cap(p.outGroup) > 2*outboxGroupBytes {
		p.outGroup = nil // one large value: not kept for every commit
	} else {
		p.outGroup = p.outGroup[:0]
	}
}

// forEachOutboxValue calls fn for every value of the entry stored under
// sequence key, and returns the sequence of its last value.
func forEachOutboxValue(key uint64, entry []byte, fn func(seq uint64, value []byte) error) (uint64, error) {
	if len(entry) == 0 || entry[0] != outboxGroupMark {
		if fn == nil {
			return key, nil
		}
		return key, fn(key, entry)
	}
	seq := key - 1
	for b := entry[1:]; len(b) > 0; {
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
	for ; ok && n < limit; ok = it.Next() {
		_, err := forEachOutboxValue(binary.BigEndian.Uint64(it.Key()[5:]), it.Value(), func(seq uint64, v []byte) error {
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
	it, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: outboxKey(nil, p.id, from), UpperBound: outboxKey(nil, p.id, upTo+1)})
	if err != nil {
		return fmt.Errorf("delete outbox to %d: %w", upTo, err)
	}
	// Entries are read before they are deleted: a group's key does not
	// say where it ends.
	to := upTo
	keys := p.delScratch[:0]
	for ok := it.First(); ok; ok = it.Next() {
		key := binary.BigEndian.Uint64(it.Key()[5:])
		last, err := forEachOutboxValue(key, it.Value(), nil)
		if err != nil {
			it.Close()
			return fmt.Errorf("delete outbox to %d: %w", upTo, err)
		}
		if last > upTo {
			to = key - 1
			break
		}
		keys = append(keys, key)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("delete outbox to %d: %w", upTo, err)
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

// outboxPointDeletes is the most entries DeleteOutbox deletes with point
// tombstones; more (a replay's whole outbox) take one range tombstone.
const outboxPointDeletes = 4096

// OutboxReleased is the highest outbox sequence ReadOutbox may return:
// the committed one, or, with the changelog on, the last one whose commit
// the changelog acknowledged. Safe to call concurrently.
func (p *Partition) OutboxReleased() uint64 {
	return p.releasedOutbox()
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
