package state

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/segd/segd/internal/handoff"
)

// Pipelined commits.
//
// A commit's cost is mostly encoding the dirty records and inserting the
// batch into Pebble's memtable: a third of a busy partition's time when
// the task does both. CommitAsync stages everything else on the task
// goroutine (counts, deletes, the outbox, offsets) and hands the records,
// the timer index writes and the batch to a writer goroutine, which
// encodes the records, adds them and the timer writes to
// the batch in key order and commits it, while the task applies the next
// events. One commit is in flight at a time: the
// next commit of either kind, and every read of Pebble whose answer the
// flight could change, wait for it first (settle).
//
// While a commit is in flight its records stay cached (not evictable) and
// its deleted ids stay known as deleted, so no read of the task goes to
// Pebble for what the flight writes. A record is the writer's to read
// until it is encoded: when the task gets a record the writer has not
// encoded yet, it encodes the record itself first (unshare), so that it
// never changes a record the writer may be reading. Each record's
// flightRec.state is the claim between the two.
//
// A flight's effects (the records evictable, their sizes, the outbox
// entries committed) are applied by the task when it settles: Settle, the
// next commit, or a read that waits. A
// flight that failed leaves the partition failed: its records are no
// longer marked dirty, so no later commit may write as if they were
// stored; every later commit returns the error and the partition must be
// opened again (from the store, which holds the last commit that landed).
//
// With the changelog on, the writer also logs the changelog entry (the
// batch, records included) before it commits the batch, as a synchronous
// commit does: the task touches none of the changelog's commit-side
// bookkeeping while a flight is out, and settling publishes it
// (changelogCommitted) or takes it back (changelogCommitFailed).

// The claim on a flight's record (flightRec.state).
const (
	flightQueued  uint32 = iota // the writer will encode it
	flightWriting               // the writer is encoding it
	flightWritten               // the writer encoded it into its arena
	flightCopying               // the task is encoding it
	flightCopied                // the task encoded it into snap
)

// flightRec is one record of a flight.
type flightRec struct {
	e     *entry
	rec   Record // the record as of the commit (e.rec may be replaced)
	state uint32 // atomic: the claim (above)
	val   [2]int // flightWritten: the encoding is arena[val[0]:val[1]]
	snap  []byte // flightCopied: the task's encoding
	size  int64  // flightWritten: entrySize measured by the writer
	pre   uint64 // idPrefix of its id, set by the writer (sortIDKeys)
}

// Prefetcher is a Record that can announce the memory its encoding reads,
// in steps: step 0 the record itself, each later step what the earlier
// ones brought into the cache points to (segment.Customer). A writer
// encoding record i has record i+k run step PrefetchSteps-k, so that the
// cache misses of the next records overlap the encoding of this one
// instead of following each other (the encoding of a commit's records was
// a chain of misses: they were last touched thousands of events before).
type Prefetcher interface {
	Prefetch(step int)
}

// PrefetchSteps is the number of Prefetch steps a writer runs ahead.
const PrefetchSteps = 5

// claimAhead claims a flight's records for the writer PrefetchSteps
// ahead of their encoding, and runs their prefetch steps. Only claimed
// records are read: the task may be changing the others (unshare).
type claimAhead struct {
	ring  [PrefetchSteps + 1]claimed
	head  int // ring index of the next record to encode
	count int
	scan  int // the next record to try to claim
}

// claimed is a record claimed ahead: its index in the flight and, when
// it is one, its Prefetcher.
type claimed struct {
	i  int32
	pf Prefetcher
}

// next returns the index of the next claimed record to encode, or false
// when there is none left.
func (a *claimAhead) next(recs []flightRec) (int, bool) {
	for a.count < len(a.ring) && a.scan < len(recs) {
		j := a.scan
		a.scan++
		if !atomic.CompareAndSwapUint32(&recs[j].state, flightQueued, flightWriting) {
			continue // the task copies it
		}
		pf, _ := recs[j].rec.(Prefetcher)
		a.ring[(a.head+a.count)%len(a.ring)] = claimed{i: int32(j), pf: pf}
		a.count++
	}
	if a.count == 0 {
		return 0, false
	}
	// The record at position k (0: next) runs step PrefetchSteps-k; a
	// record claimed late (the queue was not full) skips the first steps.
	for k := 1; k < a.count; k++ {
		if pf := a.ring[(a.head+k)%len(a.ring)].pf; pf != nil {
			pf.Prefetch(PrefetchSteps - k)
		}
	}
	i := int(a.ring[a.head].i)
	a.ring[a.head] = claimed{}
	a.head = (a.head + 1) % len(a.ring)
	a.count--
	return i, true
}

// flightGate, when set (tests only), holds the writer of every flight
// committed while it is set until it is closed: a test then works on
// while the flight is held. Anything that waits for the flight waits for
// the gate too.
var flightGate chan struct{}

// flight is a commit being written beside the task.
type flight struct {
	recs    []flightRec
	b       *pebble.Batch
	seq     uint64              // outbox sequence committed with it
	before  uint64              // the committed outbox sequence before it
	logged  bool                // the changelog is on: the writer logs it
	deleted map[string]struct{} // records it deletes
	index   detachedIndex       // its timer index writes
	out     stagedOutbox        // its outbox groups
	done    chan struct{}       // closed when the writer returns
	gate    chan struct{}       // flightGate as of the commit
	err     error               // the writer's, read after done
	took    time.Duration       // the writer's time, read after done
	// The writer's buffers.
	arena  []byte
	keys   []idKey
	keyBuf []byte
	zbuf   []byte
	// snaps holds the task's encodings (unshare).
	snaps []byte
}

// CommitAsync commits like Commit, but the records' encoding and the
// batch's write run on a goroutine of their own while the caller goes on
// (see above). It reports whether it did: with no record to write, it
// commits synchronously. Until Settle reports the flight done, the
// commit's effects are pending: its outbox entries are not committed
// (OutboxStaged) and nothing of it may be reported durable.
func (p *Partition) CommitAsync() (async bool, err error) {
	err = p.s.h.guard("commit", func() error {
		var err error
		async, err = p.commitAsync()
		return err
	})
	return async, err
}

func (p *Partition) commitAsync() (bool, error) {
	if len(p.dirty) == 0 {
		return false, p.commit()
	}
	if err := p.commitReady(); err != nil {
		return false, err
	}
	b := p.staged
	// First what may fail: nothing is the flight's yet.
	if err := p.stageCounts(b); err != nil {
		return false, err
	}
	fl := p.spare
	if fl == nil {
		fl = &flight{deleted: map[string]struct{}{}}
	}
	p.spare = nil
	// The index writes and the outbox groups go with the flight: its
	// writer sorts the ones and compresses the others.
	p.index.detach(&fl.index)
	p.out.closeGroup()
	p.out, fl.out = fl.out, p.out
	p.out.reset() // what a failed flight's writer left
	for _, e := range p.dirty {
		if !e.dirty {
			continue // deleted since it was marked
		}
		p.learn(e)
		e.dirty = false
		e.flying = true
		fl.recs = append(fl.recs, flightRec{e: e, rec: e.rec})
		e.slot = int32(len(fl.recs))
	}
	p.dirty = p.dirty[:0]
	p.dirtyBytes = 0
	for id := range p.deleted {
		p.keyBuf = customerKey(p.keyBuf[:0], p.id, id)
		b.Delete(p.keyBuf, nil)
	}
	fl.deleted, p.deleted = p.deleted, fl.deleted
	fl.seq = p.nextSeq - 1
	fl.before, fl.logged = p.committed.Load(), p.changelog
	if fl.seq > fl.before {
		b.Set(partPrefix(ksOutboxSeq, p.id), be64(p.nextSeq), nil)
	}
	p.timers.committed()
	fl.b = b
	if p.spareBatch != nil {
		p.staged, p.spareBatch = p.spareBatch, nil
	} else {
		p.staged = newStagedBatch(p.s)
	}
	fl.err = nil
	fl.gate = flightGate
	fl.done = make(chan struct{})
	p.fl = fl
	go p.writeFlight(fl)
	return true, nil
}

// writeFlight is the flight's writer goroutine; the partition owns it
// (settle and Close wait for it).
func (p *Partition) writeFlight(fl *flight) {
	defer close(fl.done)
	if fl.gate != nil {
		<-fl.gate
	}
	start := time.Now()
	// Inside guard: a Pebble Fatalf panics here instead of parking the
	// goroutine, and a panic becomes the flight's error.
	fl.err = p.s.h.guard("pipelined commit", func() error { return p.writeRecords(fl) })
	fl.took = time.Since(start)
}

func (p *Partition) writeRecords(fl *flight) error {
	// Encode first, in one pass: the sooner every record is encoded,
	// the fewer the task has to copy before changing them.
	arena := fl.arena[:0]
	var ahead claimAhead
	for {
		i, ok := ahead.next(fl.recs)
		if !ok {
			break
		}
		fr := &fl.recs[i]
		// A decoder readied by the task takes this core first
		// (internal/handoff): it shortens the task, which bounds the
		// partition; the writer has the time between commits. Every
		// 16 records is about 10 us of encoding.
		if i&15 == 0 {
			handoff.Yield()
		}
		start := len(arena)
		arena = append(arena, recordEnvelope)
		arena = fr.rec.AppendBinary(arena)
		fr.val = [2]int{start, len(arena)}
		// A record grows after it enters the cache: measured again
		// while it is at hand (applied when the task settles).
		fr.size = entrySize(fr.e.id, fr.rec)
		fr.pre = idPrefix(fr.e.id)
		atomic.StoreUint32(&fr.state, flightWritten)
	}
	fl.arena = arena
	// Writing keys in order makes the memtable inserts walk the skiplist
	// from nearby positions.
	fl.keys = flightOrder(fl.recs, fl.keys[:0])
	for n, k := range fl.keys {
		i := k.i
		if n&63 == 0 { // as above

			handoff.Yield()
		}
		fr := &fl.recs[i]
		var v []byte
		if atomic.LoadUint32(&fr.state) == flightWritten {
			v = arena[fr.val[0]:fr.val[1]]
		} else {
			for atomic.LoadUint32(&fr.state) != flightCopied {
				runtime.Gosched()
			}
			v = fr.snap
		}
		fl.keyBuf = customerKey(fl.keyBuf[:0], p.id, fr.e.id)
		fl.b.Set(fl.keyBuf, v, nil)
	}
	fl.keyBuf = fl.index.writeTo(fl.b, p.id, fl.keyBuf)
	fl.keyBuf, fl.zbuf = fl.out.writeTo(fl.b, p.id, fl.keyBuf, fl.zbuf, nil)
	// The entry is the whole batch: logged last.
	if fl.logged {
		if err := p.stageChangelog(fl.b, fl.before, fl.seq, &fl.keyBuf); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	if err := fl.b.Commit(p.s.wo); err != nil {
		if fl.logged {
			p.changelogCommitFailed()
		}
		return fmt.Errorf("commit partition %d: %w", p.id, err)
	}
	return nil
}

// flightOrder appends to keys a flight's records in the order of their
// ids, once the writer has encoded those it claimed (their idPrefix set
// then, while their entries were at hand).
func flightOrder(recs []flightRec, keys []idKey) []idKey {
	for i := range recs {
		fr := &recs[i]
		if atomic.LoadUint32(&fr.state) != flightWritten {
			fr.pre = idPrefix(fr.e.id) // the task encoded it: not seen above
		}
		keys = append(keys, idKey{pre: fr.pre, i: int32(i)})
	}
	sortIDKeys(keys, func(i int32) string { return recs[i].e.id })
	return keys
}

// unshare makes e's record the task's to change: the flight's writer
// reads it until it is encoded, so the task encodes it first unless the
// writer has (or waits while the writer does).
func (p *Partition) unshare(e *entry) {
	fr := &p.fl.recs[e.slot-1]
	e.slot = 0
	if atomic.CompareAndSwapUint32(&fr.state, flightQueued, flightCopying) {
		fl := p.fl
		start := len(fl.snaps)
		fl.snaps = append(fl.snaps, recordEnvelope)
		fl.snaps = fr.rec.AppendBinary(fl.snaps)
		// Earlier copies keep the array they were made in when snaps
		// grows: a published snap is never written again.
		fr.snap = fl.snaps[start:len(fl.snaps):len(fl.snaps)]
		atomic.StoreUint32(&fr.state, flightCopied)
		return
	}
	for atomic.LoadUint32(&fr.state) == flightWriting {
		runtime.Gosched()
	}
}

// Settle applies the effects of the commit in flight once it is done
// (with wait, after waiting for it) and reports whether a flight landed
// since the last call: also one a read or a commit settled on its own.
// Its error is the flight's. Call it from the goroutine that commits.
func (p *Partition) Settle(wait bool) (bool, error) {
	// No guard: settling calls nothing of Pebble's, and a failed store
	// must still settle a flight (its error is the news).
	_, err := p.settle(wait)
	done := p.landedUnreported
	p.landedUnreported = false
	return done, err
}

// LandedTook is how long the writer of the last flight that landed took
// (encoding, batch, write): its share of the commit's time.
func (p *Partition) LandedTook() time.Duration { return p.landedTook }

// InFlight reports whether a commit is in flight (CommitAsync) and not
// settled yet.
func (p *Partition) InFlight() bool { return p.fl != nil }

func (p *Partition) settle(wait bool) (bool, error) {
	fl := p.fl
	if fl == nil {
		return false, p.flightErr
	}
	if wait {
		p.awaitFlight(fl)
	} else {
		select {
		case <-fl.done:
		default:
			return false, nil
		}
	}
	p.fl = nil
	for i := range fl.recs {
		fr := &fl.recs[i]
		e := fr.e
		e.slot, e.flying = 0, false
		if fl.err == nil && fr.state == flightWritten && e.prev != nil && fr.size != e.size {
			p.cacheBytes.Add(fr.size - e.size)
			e.size = fr.size
		}
		*fr = flightRec{}
	}
	fl.recs = fl.recs[:0]
	fl.snaps = fl.snaps[:0]
	clear(fl.deleted)
	p.spareBatch, fl.b = p.reuseBatch(fl.b), nil
	p.spare = fl
	if fl.err != nil {
		p.flightErr = fmt.Errorf("partition %d: a pipelined commit failed (open the partition again): %w", p.id, fl.err)
		p.landedUnreported = true // reported as done, with its error
		return true, p.flightErr
	}
	// The changelog's mark first, as in commit: from the moment the
	// outbox entries count as committed, releasedOutbox must see that
	// their changelog entry is still pending.
	if fl.logged {
		p.changelogCommitted()
	}
	p.committed.Store(fl.seq)
	p.landedUnreported = true
	p.landedTook = fl.took
	p.evict()
	return true, nil
}

// awaitFlight waits for fl's writer. A writer waiting for space on a full
// disk is let go when the partition closes (AbandonDiskWait): nothing will
// commit after it.
func (p *Partition) awaitFlight(fl *flight) {
	for {
		select {
		case <-fl.done:
			return
		case <-time.After(100 * time.Millisecond):
			if p.closed.Load() && p.s.h.diskFull.Load() {
				p.s.AbandonDiskWait()
			}
		}
	}
}

// commitReady settles a flight and checks that the partition may commit.
func (p *Partition) commitReady() error {
	if p.closed.Load() {
		return ErrClosed
	}
	if _, err := p.settle(true); err != nil {
		return err
	}
	if err := p.refillErr; err != nil {
		return fmt.Errorf("partition %d: %w", p.id, err)
	}
	return nil
}
