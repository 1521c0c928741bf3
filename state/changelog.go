package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Changelog support (Partition.EnableChangelog).
//
// Every Partition.Commit also stores, in the same atomic batch, a copy of
// what it wrote (the batch's own representation) as one pending changelog
// entry ('l' p seq). A publisher outside this package sends each entry to
// the partition's changelog topic as ONE Kafka record batch, so a reader of
// the changelog sees whole commits or nothing, then deletes the entry and
// records the changelog's end offset after it ('K' p). A partition that
// moves to another process is rebuilt there from the changelog (Restorer);
// the end offset tells whether a local copy is still the changelog's
// latest state (see docs/operations.md).
//
// Published outbox entries are deleted outside Commit (DeleteOutbox); the
// next commit repeats those deletes as point tombstones so the changelog's
// copy of the outbox shrinks too.

// ErrChangelogKey marks a changelog record that is not a key of the
// partition being restored.
var ErrChangelogKey = errors.New("state: changelog record is not a key of this partition")

func changelogKey(dst []byte, p int32, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendPartKey(dst, ksChangelog, p), seq)
}

// EnableChangelog makes every later Commit of the partition also keep a
// pending changelog entry. Call it right after Store.Partition, before
// the first commit.
func (p *Partition) EnableChangelog() error {
	if err := p.s.h.guard("read changelog", p.initChangelog); err != nil {
		return fmt.Errorf("partition %d: changelog: %w", p.id, err)
	}
	p.changelog = true
	if p.clCommitBytes == 0 {
		p.clCommitBytes = p.s.opts.ChangelogCommitBytes
	}
	return nil
}

// SetChangelogCommitBytes makes NeedsCommit ask for a commit once the
// staged changes reach n bytes (at least 4096) instead of the store's
// Options.ChangelogCommitBytes: the changelog topic's record batch limit
// is known only once its partition runs. Call it from the goroutine that
// commits.
func (p *Partition) SetChangelogCommitBytes(n int64) {
	p.clCommitBytes = max(n, 4096)
}

// initChangelog loads the pending changelog's bounds and opens its log.
func (p *Partition) initChangelog() error {
	next, released, err := p.s.changelogBounds(p.id)
	if err != nil {
		return err
	}
	p.clNext = next
	p.clCommitted.Store(next - 1)
	p.clDeletedTo.Store(released)
	if p.clLog == nil {
		l, err := p.s.openEntryLog(p.id, released, next-1)
		if err != nil {
			return err
		}
		p.clLog = l
	}
	p.outboxLoggedTo = p.deletedTo.Load()
	p.delBlindTo = p.deletedTo.Load()
	switch v, closer, err := p.s.db.Get(partPrefix(ksOutboxLogged, p.id)); {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return err
	default:
		// Entries published after the last commit were deleted locally
		// but not in the changelog: the next commit logs their deletes.
		if len(v) == 8 {
			p.outboxLoggedTo = min(p.outboxLoggedTo, binary.BigEndian.Uint64(v))
		}
		closer.Close()
	}
	return p.loadMarks()
}

// clMark is a pending changelog entry's outbox bounds.
type clMark struct {
	cl            uint64 // changelog entry sequence
	before, after uint64 // committed outbox sequence before and after it
}

func changelogMarkKey(dst []byte, p int32, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendPartKey(dst, ksChangelogMark, p), seq)
}

// loadMarks reads the pending entries' outbox bounds: the outbox is
// released up to where the first pending entry's commit began. A store
// written before marks existed has none: everything committed is
// released, as it was then.
func (p *Partition) loadMarks() error {
	prefix := partPrefix(ksChangelogMark, p.id)
	it, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	p.clMarks = p.clMarks[:0]
	for it.First(); it.Valid(); it.Next() {
		v := it.Value()
		if len(it.Key()) != 13 || len(v) != 16 {
			return fmt.Errorf("%w: changelog mark %x = %x", ErrCorrupt, it.Key(), v)
		}
		m := clMark{cl: binary.BigEndian.Uint64(it.Key()[5:]), before: binary.BigEndian.Uint64(v), after: binary.BigEndian.Uint64(v[8:])}
		if m.cl <= p.clDeletedTo.Load() {
			continue // sent; its deletion did not land (a crash between)
		}
		p.clMarks = append(p.clMarks, m)
	}
	if err := it.Error(); err != nil {
		return err
	}
	return nil
}

// releasedOutbox is the highest outbox sequence ReadOutbox may return: the
// committed one, or, with the changelog on, where the commit of the first
// changelog entry Kafka has not acknowledged began. It is derived from the
// pending entries' marks each time, not tracked, so it cannot lag behind
// what the changelog holds. Safe to call concurrently.
func (p *Partition) releasedOutbox() uint64 {
	hi := p.committed.Load()
	if !p.changelog {
		return hi
	}
	p.outMu.Lock()
	defer p.outMu.Unlock()
	acked := p.clDeletedTo.Load()
	for _, m := range p.clMarks {
		if m.cl > acked {
			return min(hi, m.before)
		}
	}
	return hi
}

// stageChangelog adds to b the outbox deletes not logged yet (those the
// publisher made since the last logged position), then b's copy as the
// next pending changelog entry with its mark (the outbox sequence numbers
// the commit spans, outboxBefore..outboxAfter). An empty b logs nothing.
func (p *Partition) stageChangelog(b *pebble.Batch, outboxBefore, outboxAfter uint64, keyBuf *[]byte) error {
	p.outMu.Lock()
	if to := p.deletedTo.Load(); to > p.outboxLoggedTo {
		for seq := p.outboxLoggedTo + 1; seq <= min(to, p.delBlindTo); seq++ {
			*keyBuf = outboxKey((*keyBuf)[:0], p.id, seq)
			b.Delete(*keyBuf, nil)
		}
		for _, key := range p.delKeys {
			if key > p.delBlindTo {
				*keyBuf = outboxKey((*keyBuf)[:0], p.id, key)
				b.Delete(*keyBuf, nil)
			}
		}
		p.clLoggedPending = to
	}
	p.outMu.Unlock()
	if b.Empty() {
		return nil
	}
	// The entry goes to the log before the batch commits: after a crash
	// the log holds every committed entry (and maybe this one more, which
	// the next open cuts off when the batch did not land).
	seq := p.clNext
	if err := p.clLog.append(seq, b.Repr()); err != nil {
		return fmt.Errorf("partition %d: %w", p.id, err)
	}
	p.clNext++
	b.Set(partPrefix(ksChangelogSeq, p.id), be64(p.clNext), nil)
	// After the copy: the mark and the logged-deletes position are local
	// bookkeeping, not state.
	b.Set(partPrefix(ksOutboxLogged, p.id), be64(max(p.clLoggedPending, p.outboxLoggedTo)), nil)
	p.clStaged = clMark{cl: seq, before: outboxBefore, after: outboxAfter}
	var v [16]byte
	binary.BigEndian.PutUint64(v[:], outboxBefore)
	binary.BigEndian.PutUint64(v[8:], outboxAfter)
	b.Set(changelogMarkKey(nil, p.id, seq), v[:], nil)
	return nil
}

// changelogCommitFailed takes back what stageChangelog appended to the
// log for a batch that did not commit.
func (p *Partition) changelogCommitFailed() {
	if p.clStaged.cl != 0 {
		p.clLog.unappend(p.clStaged.cl)
		p.clNext = p.clStaged.cl
		p.clStaged = clMark{}
	}
}

// changelogCommitted publishes the effects of a durable commit.
func (p *Partition) changelogCommitted() {
	if p.clLoggedPending > p.outboxLoggedTo {
		p.outboxLoggedTo = p.clLoggedPending
		p.outMu.Lock()
		n := 0
		for n < len(p.delKeys) && p.delKeys[n] <= p.outboxLoggedTo {
			n++
		}
		p.delKeys = append(p.delKeys[:0], p.delKeys[n:]...)
		p.outMu.Unlock()
	}
	if p.clStaged.cl != 0 {
		p.outMu.Lock()
		p.clMarks = append(p.clMarks, p.clStaged)
		p.outMu.Unlock()
		p.clStaged = clMark{}
	}
	p.clCommitted.Store(p.clNext - 1)
}

// OutboxDeletesUnlogged reports whether published outbox entries were
// deleted since the last commit: their copies in the changelog go only
// with the next commit (which logs the deletes), and they may carry an
// erased customer's id. Call it from the goroutine that commits.
func (p *Partition) OutboxDeletesUnlogged() bool {
	return p.changelog && p.deletedTo.Load() > p.outboxLoggedTo
}

// PendingCommitBytes estimates the bytes the next commit would write
// (and log): what is staged plus the dirty records, at their in-memory
// size (an overestimate of their encoding). The task commits before it
// passes Options.CommitBytes, and on a partition with a changelog
// Options.ChangelogCommitBytes so that one commit fits in one Kafka
// record batch (see NeedsCommit).
func (p *Partition) PendingCommitBytes() int64 {
	return int64(p.staged.Len()+p.index.len()+p.out.bytes()) + p.dirtyBytes
}

// ReadChangelog calls fn for up to limit committed pending changelog
// entries with a sequence above after, in order. entry is valid only
// during fn. Safe to call concurrently with the task.
func (p *Partition) ReadChangelog(after uint64, limit int, fn func(seq uint64, entry []byte) error) error {
	return p.s.h.guard("read changelog", func() error { return p.readChangelog(after, limit, fn) })
}

func (p *Partition) readChangelog(after uint64, limit int, fn func(seq uint64, entry []byte) error) error {
	if p.closed.Load() {
		return ErrClosed
	}
	if d := p.clDeletedTo.Load(); after < d {
		after = d
	}
	hi := p.clCommitted.Load()
	if after >= hi {
		return nil
	}
	return p.clLog.read(after, hi, limit, fn)
}

// ChangelogDepth is the number of committed changelog entries not yet
// confirmed by Kafka. Safe to call concurrently.
func (p *Partition) ChangelogDepth() int64 {
	return int64(p.clCommitted.Load() - p.clDeletedTo.Load())
}

// ChangelogSent records that every pending entry up to upTo is in the
// changelog topic, which now ends at offset end: the entries are deleted
// and end is remembered (SyncedEnd). Safe to call concurrently with the
// task. It is RecordChangelogSent then, when due, RemoveSentChangelog.
func (p *Partition) ChangelogSent(upTo uint64, end int64) error {
	due, err := p.RecordChangelogSent(upTo, end)
	if err != nil || !due {
		return err
	}
	return p.RemoveSentChangelog(upTo)
}

// RecordChangelogSent is ChangelogSent without removing the log files of
// the sent entries: it remembers end, releases the outbox entries of the
// commits up to upTo (OutboxReleased) and reports whether files are due
// for removal (RemoveSentChangelog). A removal syncs the store's
// write-ahead log first, which took up to 25 ms here: a publisher that
// removes them later, or on a goroutine of its own, does not hold the
// released changes for it. Safe to call concurrently with the task.
func (p *Partition) RecordChangelogSent(upTo uint64, end int64) (filesDue bool, err error) {
	err = p.s.h.guard("record changelog sent", func() error {
		var err error
		filesDue, err = p.changelogSent(upTo, end)
		return err
	})
	return filesDue, err
}

// RemoveSentChangelog removes the log files that hold only entries up to
// upTo, which RecordChangelogSent recorded as sent, once the store's
// write-ahead log is synced: a crash must not find the entries neither in
// the log nor recorded as sent. Files left (a crash, a removal that
// failed) go at the next open. Safe to call concurrently with the task
// and the partition's publishers.
func (p *Partition) RemoveSentChangelog(upTo uint64) error {
	return p.s.h.guard("remove sent changelog", func() error {
		if p.closed.Load() {
			return ErrClosed
		}
		if err := p.clLog.removeSent(upTo); err != nil {
			return fmt.Errorf("partition %d: %w", p.id, err)
		}
		return nil
	})
}

func (p *Partition) changelogSent(upTo uint64, end int64) (bool, error) {
	if p.closed.Load() {
		return false, ErrClosed
	}
	p.outMu.Lock()
	defer p.outMu.Unlock()
	b := p.s.db.NewBatch()
	defer b.Close()
	if upTo > p.clDeletedTo.Load() {
		var k []byte
		for seq := p.clDeletedTo.Load() + 1; seq <= upTo; seq++ {
			k = changelogMarkKey(k[:0], p.id, seq)
			b.Delete(k, nil)
		}
		b.Set(partPrefix(ksChangelogSent, p.id), be64(upTo), nil)
	}
	sent := 0
	for _, m := range p.clMarks {
		if m.cl > upTo {
			break
		}
		sent++
	}
	b.Set(partPrefix(ksChangelogEnd, p.id), syncedValue(end), nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		return false, fmt.Errorf("partition %d: record changelog end %d: %w", p.id, end, err)
	}
	if upTo > p.clDeletedTo.Load() {
		p.clDeletedTo.Store(upTo)
	}
	p.clMarks = p.clMarks[sent:]
	// After the batch: a crash before the files go leaves files of sent
	// entries, which the next open removes.
	due, err := p.clLog.forget(upTo)
	if err != nil {
		return false, fmt.Errorf("partition %d: %w", p.id, err)
	}
	return due, nil
}

// SyncedEnd returns the changelog end offset recorded by the last
// ChangelogSent (or Restorer.Finish) of partition n; ok is false if there
// is none. Safe for concurrent use.
func (s *Store) SyncedEnd(n int32) (end int64, ok bool, err error) {
	end, _, ok, err = s.synced(n)
	return end, ok, err
}

// SyncedAt returns when SyncedEnd's offset was last recorded for
// partition n; ok is false if it is unknown (none, or an older store).
func (s *Store) SyncedAt(n int32) (at time.Time, ok bool, err error) {
	_, at, ok, err = s.synced(n)
	return at, ok && !at.IsZero(), err
}

// synced reads partition n's synced changelog end and, in stores that
// keep it, when it was recorded (else the zero time).
func (s *Store) synced(n int32) (end int64, at time.Time, ok bool, err error) {
	err = s.h.guard("read changelog end", func() error {
		end, at, ok, err = s.readSynced(n)
		return err
	})
	return end, at, ok, err
}

func (s *Store) readSynced(n int32) (end int64, at time.Time, ok bool, err error) {
	if s.isClosed() {
		return 0, time.Time{}, false, ErrClosed
	}
	v, closer, err := s.db.Get(partPrefix(ksChangelogEnd, n))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, time.Time{}, false, nil
	}
	if err != nil {
		return 0, time.Time{}, false, err
	}
	defer closer.Close()
	switch len(v) {
	case 16:
		at = time.UnixMilli(int64(binary.BigEndian.Uint64(v[8:])))
	case 8:
	default:
		return 0, time.Time{}, false, fmt.Errorf("%w: changelog end is %d bytes", ErrCorrupt, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), at, true, nil
}

// syncedValue is the changelog end a partition reflects and when it was
// recorded (Unix ms): 16 bytes. Stores written before the time was kept
// have 8.
func syncedValue(end int64) []byte {
	return binary.BigEndian.AppendUint64(be64(uint64(end)), uint64(time.Now().UnixMilli()))
}

// ChangelogOp is one write of a changelog entry: a key of the partition and
// its new value, or its deletion.
type ChangelogOp struct {
	Key, Value []byte
	Deleted    bool
}

// ForEachChangelogOp calls fn for every write of a changelog entry, in the
// order the commit made them. The slices alias entry. A malformed entry
// is an error wrapping ErrCorrupt (Pebble's own batch reader trusts its
// input; this one does not).
func ForEachChangelogOp(entry []byte, fn func(op ChangelogOp) error) error {
	// Pebble's batch representation: an 8-byte sequence number, a 4-byte
	// count, then per write a kind byte, a varint-prefixed key and, for
	// a set, a varint-prefixed value.
	const header = 12
	if len(entry) < header {
		return fmt.Errorf("%w: changelog entry of %d bytes has no batch header", ErrCorrupt, len(entry))
	}
	count := binary.LittleEndian.Uint32(entry[8:header])
	rest := entry[header:]
	str := func() ([]byte, bool) {
		l, w := binary.Uvarint(rest)
		if w <= 0 || l > uint64(len(rest)-w) {
			return nil, false
		}
		s := rest[w : w+int(l)]
		rest = rest[w+int(l):]
		return s, true
	}
	var n uint32
	for len(rest) > 0 {
		kind := pebble.InternalKeyKind(rest[0])
		rest = rest[1:]
		k, ok := str()
		if !ok {
			return fmt.Errorf("%w: changelog entry: truncated key of write %d", ErrCorrupt, n)
		}
		var op ChangelogOp
		switch kind {
		case pebble.InternalKeyKindSet:
			v, ok := str()
			if !ok {
				return fmt.Errorf("%w: changelog entry: truncated value of write %d", ErrCorrupt, n)
			}
			op = ChangelogOp{Key: k, Value: v}
		case pebble.InternalKeyKindDelete, pebble.InternalKeyKindSingleDelete:
			op = ChangelogOp{Key: k, Deleted: true}
		default:
			return fmt.Errorf("%w: changelog entry: write %d has kind %d", ErrCorrupt, n, kind)
		}
		n++
		if err := fn(op); err != nil {
			return err
		}
	}
	if n != count {
		return fmt.Errorf("%w: changelog entry holds %d writes, its header says %d", ErrCorrupt, n, count)
	}
	return nil
}

// partitionKeyspaces are the keyspaces that carry the partition number.
var partitionKeyspaces = []byte{ksCustomer, ksOffset, ksTimer, ksOutbox, ksOutboxSeq, ksCount, ksChangelog, ksChangelogSeq, ksChangelogEnd, ksChangelogMark, ksRules, ksCatalog, ksOutboxLogged, ksChangelogSent}

// Restorer rebuilds one partition from its changelog: Store.Restore wipes
// the partition, Apply writes each changelog record, Finish makes it
// durable. The partition must not be open meanwhile.
type Restorer struct {
	s       *Store
	n       int32
	b       *pebble.Batch
	f       *idFilter // the partition's customer filter: Apply adds ids
	applied int64
	done    bool
}

// restoreBatchBytes is how much a Restorer buffers before writing.
const restoreBatchBytes = 4 << 20

// Restore wipes partition n (every key of it, its membership index
// entries included) and returns a Restorer to rebuild it. The partition
// must not be open.
func (s *Store) Restore(n int32) (*Restorer, error) {
	if err := s.reserve(n, "restore"); err != nil {
		return nil, err
	}
	if err := s.h.guard("wipe partition", func() error { return s.wipe(n) }); err != nil {
		s.unreserve(n)
		return nil, fmt.Errorf("restore partition %d: wipe: %w", n, err)
	}
	// The partition is empty: so is its filter, without the stale ids.
	f := newIDFilter(0)
	s.mu.Lock()
	s.filters[n] = f
	s.mu.Unlock()
	return &Restorer{s: s, n: n, b: s.db.NewBatch(), f: f}, nil
}

// Drop deletes every key of partition n (its membership index entries
// included): a copy this process no longer runs and no longer needs. The
// partition must not be open or being restored.
func (s *Store) Drop(n int32) error {
	if err := s.reserve(n, "drop"); err != nil {
		return err
	}
	defer s.unreserve(n)
	if err := s.wipe(n); err != nil {
		return fmt.Errorf("drop partition %d: %w", n, err)
	}
	s.mu.Lock()
	delete(s.filters, n)
	s.mu.Unlock()
	return nil
}

// ErrPendingChangelog is returned by CatchUp for a partition with
// committed changelog entries Kafka has not confirmed: the local state is
// ahead of what it synced, so only a full restore makes it the log's.
var ErrPendingChangelog = errors.New("state: partition has unsent changelog entries")

// CatchUp returns a Restorer that applies changelog records on top of
// partition n's state as it is (no wipe): for a store that synced the
// changelog up to some offset, has nothing unsent, and is to replay what
// others appended since. The partition must not be open.
func (s *Store) CatchUp(n int32) (*Restorer, error) {
	if err := s.reserve(n, "catch up"); err != nil {
		return nil, err
	}
	var pending bool
	err := s.h.guard("catch up", func() error {
		next, released, err := s.changelogBounds(n)
		pending = next-1 > released
		return err
	})
	if err != nil {
		s.unreserve(n)
		return nil, err
	}
	if pending {
		s.unreserve(n)
		return nil, fmt.Errorf("catch up partition %d: %w", n, ErrPendingChangelog)
	}
	s.mu.Lock()
	f := s.filterLocked(n)
	s.mu.Unlock()
	return &Restorer{s: s, n: n, b: s.db.NewBatch(), f: f}, nil
}

// reserve holds partition n, which must not be open, so nobody opens it
// while it is rebuilt; unreserve releases it.
func (s *Store) reserve(n int32, what string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, open := s.parts[n]; open || s.restoring[n] {
		return fmt.Errorf("state: %s partition %d: it is open or being restored", what, n)
	}
	if s.restoring == nil {
		s.restoring = map[int32]bool{}
	}
	s.restoring[n] = true
	return nil
}

func (s *Store) unreserve(n int32) {
	s.mu.Lock()
	delete(s.restoring, n)
	s.mu.Unlock()
}

// wipe deletes every key of partition n.
func (s *Store) wipe(n int32) error {
	b := s.db.NewBatch()
	defer b.Close()
	for _, ks := range partitionKeyspaces {
		p := partPrefix(ks, n)
		b.DeleteRange(p, prefixEnd(p), nil)
	}
	if err := b.Commit(s.wo); err != nil {
		return err
	}
	// After the batch: a crash between leaves files that the partition's
	// next open finds past its (now empty) changelog and removes.
	return s.fs.RemoveAll(s.entryLogPath(n))
}

// Apply writes one changelog record. A key that is not partition n's is
// an error wrapping ErrChangelogKey.
func (r *Restorer) Apply(key, value []byte, deleted bool) error {
	if r.done {
		return ErrClosed
	}
	if len(key) > 0 && key[0] == ksMember {
		// A membership index entry of a format 3 or older segd: the
		// records hold the memberships now (Store.MembersOf).
		r.applied++
		return nil
	}
	if err := r.checkKey(key); err != nil {
		return err
	}
	if key[0] == ksCustomer && !deleted {
		// Before the write, like Commit.
		r.f.add(hashID(key[5:]))
	}
	if deleted {
		r.b.Delete(key, nil)
	} else {
		r.b.Set(key, value, nil)
	}
	r.applied++
	if r.b.Len() >= restoreBatchBytes {
		if err := r.s.h.guard("restore", func() error { return r.b.Commit(pebble.NoSync) }); err != nil {
			return fmt.Errorf("restore partition %d: %w", r.n, err)
		}
		r.b.Reset()
	}
	return nil
}

func (r *Restorer) checkKey(key []byte) error {
	if len(key) >= 5 && int32(binary.BigEndian.Uint32(key[1:5])) == r.n {
		switch key[0] {
		case ksCustomer, ksOffset, ksTimer, ksOutbox, ksOutboxSeq, ksCount, ksRules, ksCatalog:
			return nil
		}
	}
	return fmt.Errorf("%w: %q for partition %d", ErrChangelogKey, key, r.n)
}

// Applied is the number of records applied so far.
func (r *Restorer) Applied() int64 { return r.applied }

// Finish writes what is buffered and records end as the changelog end
// offset the partition now reflects, durably, and releases the partition.
func (r *Restorer) Finish(end int64) error {
	if r.done {
		return ErrClosed
	}
	r.done = true
	defer r.s.unreserve(r.n)
	defer r.b.Close()
	r.b.Set(partPrefix(ksChangelogEnd, r.n), syncedValue(end), nil)
	if err := r.s.h.guard("restore", func() error { return r.b.Commit(pebble.Sync) }); err != nil {
		return fmt.Errorf("restore partition %d: %w", r.n, err)
	}
	return r.s.h.guard("rebuild customer filter", r.resizeFilter)
}

// resizeFilter replaces a filter that grew layer by layer during the
// restore (each adds its false positives) by one sized for the partition,
// from a scan of its customer keys: a fraction of the restore's cost.
func (r *Restorer) resizeFilter() error {
	if len(r.f.layers) <= 2 {
		return nil
	}
	f, err := r.s.scanPartitionFilter(r.n)
	if err != nil {
		return fmt.Errorf("restore partition %d: %w", r.n, err)
	}
	r.s.mu.Lock()
	r.s.filters[r.n] = f
	r.s.mu.Unlock()
	r.f = f
	return nil
}

// Abort drops what is buffered and releases the partition, which is left
// partly restored: restore it again before use. Safe after Finish.
func (r *Restorer) Abort() {
	if r.done {
		return
	}
	r.done = true
	r.b.Close()
	r.s.unreserve(r.n)
}

// stateKeyspaces are the keyspaces a partition's changelog carries (its
// state), as opposed to the changelog's own bookkeeping. Catalogs come
// first, before the records that refer to them.
var stateKeyspaces = []byte{ksCatalog, ksCustomer, ksOffset, ksTimer, ksOutbox, ksOutboxSeq, ksCount, ksRules}

// Reseed queues the whole committed state of partition n as pending
// changelog entries (each under Options.ChangelogCommitBytes), for a
// changelog that lost what this store wrote (a topic deleted and created
// again: it ends before the offset this store synced to). Without it a
// later hand-over would restore whatever the new topic holds: part of the
// state. Entries are cut at entryBytes (<= 0: Options.ChangelogCommitBytes).
// The partition must not be open or being restored; it returns the
// number of entries queued.
func (s *Store) Reseed(n int32, entryBytes int64) (int, error) {
	if entryBytes <= 0 {
		entryBytes = s.opts.ChangelogCommitBytes
	}
	if err := s.reserve(n, "reseed"); err != nil {
		return 0, err
	}
	defer s.unreserve(n)
	// A log with a hole is repaired first: what is left of its pending
	// entries is superseded by the whole state queued here.
	if _, err := s.repairEntryLog(n); err != nil {
		return 0, err
	}
	next, released, err := s.changelogBounds(n)
	if err != nil {
		return 0, err
	}
	log, err := s.openEntryLog(n, released, next-1)
	if err != nil {
		return 0, err
	}
	defer log.close()
	snap := s.db.NewSnapshot()
	defer snap.Close()
	entry := s.db.NewBatch()
	defer entry.Close()
	out := s.db.NewBatch()
	defer out.Close()
	queued := 0
	flush := func() error {
		if entry.Empty() {
			return nil
		}
		if err := log.append(next, entry.Repr()); err != nil {
			return err
		}
		next++
		queued++
		out.Set(partPrefix(ksChangelogSeq, n), be64(next), nil)
		out.Set(partPrefix(ksChangelogSent, n), be64(released), nil)
		entry.Reset()
		return nil
	}
	add := func(k, v []byte) error {
		if err := entry.Set(k, v, nil); err != nil {
			return err
		}
		if int64(entry.Len()) >= entryBytes {
			return flush()
		}
		return nil
	}
	for _, ks := range stateKeyspaces {
		prefix := partPrefix(ks, n)
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
		if err != nil {
			return 0, err
		}
		for it.First(); it.Valid(); it.Next() {
			if err := add(it.Key(), it.Value()); err != nil {
				it.Close()
				return 0, err
			}
		}
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return 0, err
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	if out.Empty() {
		return 0, nil
	}
	if err := out.Commit(s.wo); err != nil {
		return 0, fmt.Errorf("reseed partition %d: %w", n, err)
	}
	return queued, nil
}

// readSeq reads an 8-byte sequence key; ok is false when it is absent.
func (s *Store) readSeq(key []byte) (v uint64, ok bool, err error) {
	b, closer, err := s.db.Get(key)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	}
	defer closer.Close()
	if len(b) != 8 {
		return 0, false, fmt.Errorf("%w: key %x holds %d bytes, not a sequence", ErrCorrupt, key, len(b))
	}
	return binary.BigEndian.Uint64(b), true, nil
}

// changelogBounds returns partition n's next changelog entry sequence and
// the last one Kafka confirmed: the pending entries are those between.
func (s *Store) changelogBounds(n int32) (next, released uint64, err error) {
	next, ok, err := s.readSeq(partPrefix(ksChangelogSeq, n))
	if err != nil {
		return 0, 0, err
	}
	if !ok {
		next = 1
	}
	released, _, err = s.readSeq(partPrefix(ksChangelogSent, n))
	if err != nil {
		return 0, 0, err
	}
	if next == 0 || released >= next {
		return 0, 0, fmt.Errorf("%w: partition %d: changelog entries confirmed up to %d, but the next is %d", ErrCorrupt, n, released, next)
	}
	return next, released, nil
}

func (s *Store) entryLogPath(n int32) string { return entryLogPath(s.fs, s.h.dir, n) }

// openEntryLog opens partition n's changelog log (entrylog.go).
func (s *Store) openEntryLog(n int32, released, committed uint64) (*entryLog, error) {
	l, err := openEntryLog(s.fs, s.entryLogPath(n), released, committed, s.opts.Sync == SyncCommit, &s.copying)
	if err != nil {
		return nil, err
	}
	l.durable = func() error { return s.db.LogData([]byte{0}, pebble.Sync) }
	return l, nil
}

// RepairChangelog checks that partition n's changelog log holds every
// committed entry Kafka has not confirmed. When an OS crash lost part of
// it (ErrChangelogGap), the changelog topic misses commits the local state
// has: RepairChangelog then drops the pending entries and forgets the
// offset the partition last synced to (SyncedEnd reports none), so that
// the caller restores the partition from the changelog, or, when the
// changelog is empty, keeps the local state and Reseeds it. It returns
// why it did that, or "" when the log is whole. The partition must not be
// open or being restored.
func (s *Store) RepairChangelog(n int32) (string, error) {
	if err := s.reserve(n, "check the changelog of"); err != nil {
		return "", err
	}
	defer s.unreserve(n)
	var why string
	err := s.h.guard("check changelog", func() (err error) {
		why, err = s.repairEntryLog(n)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("partition %d: check the changelog: %w", n, err)
	}
	return why, nil
}

// repairEntryLog is RepairChangelog's work, for a caller that reserved
// partition n: a log with a hole is removed, its pending entries are
// recorded as sent, and the synced end offset and the outbox bounds of
// the entries are forgotten. It returns why, or "" when the log is whole.
func (s *Store) repairEntryLog(n int32) (string, error) {
	next, released, err := s.changelogBounds(n)
	if err != nil {
		return "", err
	}
	l, err := s.openEntryLog(n, released, next-1)
	if err == nil {
		return "", l.close()
	}
	if !errors.Is(err, ErrChangelogGap) {
		return "", err
	}
	why := err.Error()
	if err := s.fs.RemoveAll(s.entryLogPath(n)); err != nil {
		return "", err
	}
	b := s.db.NewBatch()
	defer b.Close()
	b.Set(partPrefix(ksChangelogSent, n), be64(next-1), nil)
	b.Delete(partPrefix(ksChangelogEnd, n), nil)
	marks := partPrefix(ksChangelogMark, n)
	b.DeleteRange(marks, prefixEnd(marks), nil)
	return why, b.Commit(pebble.Sync)
}

// migrateChangelogKeys turns a format 1 store into the current format: each
// partition's pending changelog entries move from 'l' keys to its log,
// and the last confirmed entry, which format 1 derived from the first
// pending key, is recorded ('L'). It is safe to run again after a crash
// part-way: the keys go only in the batch that sets the format.
func (s *Store) migrateChangelogKeys() error {
	b := s.db.NewBatch()
	defer b.Close()
	// Every partition with a changelog: its entries up to 'k' less one
	// are confirmed unless an 'l' key is pending.
	seqs := []byte{ksChangelogSeq}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: seqs, UpperBound: prefixEnd(seqs)})
	if err != nil {
		return err
	}
	released := map[int32]uint64{}
	for it.First(); it.Valid(); it.Next() {
		if len(it.Key()) != 5 || len(it.Value()) != 8 {
			return errors.Join(fmt.Errorf("%w: changelog sequence key %x", ErrCorrupt, it.Key()), it.Close())
		}
		released[int32(binary.BigEndian.Uint32(it.Key()[1:]))] = binary.BigEndian.Uint64(it.Value()) - 1
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	entries := []byte{ksChangelog}
	it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: entries, UpperBound: prefixEnd(entries)})
	if err != nil {
		return err
	}
	defer it.Close()
	logs := map[int32]*entryLog{}
	defer func() {
		for _, l := range logs {
			l.close()
		}
	}()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 13 {
			return fmt.Errorf("%w: changelog entry key %x", ErrCorrupt, k)
		}
		n, seq := int32(binary.BigEndian.Uint32(k[1:5])), binary.BigEndian.Uint64(k[5:])
		l := logs[n]
		if l == nil {
			// A log left by a migration that did not finish goes.
			if err := s.fs.RemoveAll(s.entryLogPath(n)); err != nil {
				return err
			}
			released[n] = seq - 1
			if l, err = openEntryLog(s.fs, s.entryLogPath(n), seq-1, seq-1, true, &s.copying); err != nil {
				return err
			}
			logs[n] = l
		}
		if err := l.append(seq, it.Value()); err != nil {
			return fmt.Errorf("migrate changelog entry %d of partition %d: %w", seq, n, err)
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	for n, r := range released {
		b.Set(partPrefix(ksChangelogSent, n), be64(r), nil)
	}
	b.DeleteRange(entries, prefixEnd(entries), nil)
	b.Set(formatKey, []byte{FormatVersion}, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	s.h.log.Info().Int("partitions", len(released)).Int("with_pending_entries", len(logs)).Msg("state store migrated to format 2: pending changelog entries moved to files")
	return nil
}
