package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"
)

// entry is a cached record. Entries form an intrusive LRU list; dirty
// entries stay cached until the commit that writes them.
type entry struct {
	id    string
	rec   Record
	size  int64
	dirty bool
	ref   bool // used since the eviction scan last passed (CLOCK)
	// known: the partition's customer filter already reports the id, so
	// Commit need not add it.
	known bool
	// flying: written by the commit in flight (pipeline.go), not
	// evictable until it lands; slot > 0: its record is shared with the
	// flight's writer as flight.recs[slot-1] (unshare before changing it).
	flying     bool
	slot       int32
	prev, next *entry
}

// entryID16 and entryID48 hold a cache entry and the bytes of its id in
// one allocation, the id's string pointing into them and keying the
// cache's map: a lookup compares the id it is given with the key's
// bytes, which then share the cache lines of the entry it reads next,
// instead of being a cache miss of their own.
type (
	entryID16 struct {
		e entry
		b [16]byte
	}
	entryID48 struct {
		e entry
		b [48]byte
	}
)

// newEntry returns an entry for id, its id stored with it when short
// enough (customer ids usually are).
func newEntry(id string) *entry {
	switch n := len(id); {
	case n == 0 || n > 48:
		return &entry{id: id}
	case n <= 16:
		x := new(entryID16)
		copy(x.b[:], id)
		x.e.id = unsafe.String(&x.b[0], n)
		return &x.e
	default:
		x := new(entryID48)
		copy(x.b[:], id)
		x.e.id = unsafe.String(&x.b[0], n)
		return &x.e
	}
}

// Partition is the state of one partition: owned by one task goroutine
// (see the package doc for the few concurrency-safe methods).
type Partition struct {
	s  *Store
	id int32

	// Write-back cache.
	cache        map[string]*entry
	lru          entry // sentinel: lru.next is the most recent
	dirty        []*entry
	dirtySorted  []*entry // sortDirty's other buffer
	dirtyKeys    []idKey
	dirtyBytes   int64
	deleted      map[string]struct{}
	budget       atomic.Int64
	cacheBytes   atomic.Int64
	cacheEntries atomic.Int64
	hits, misses atomic.Int64

	// filter holds every customer id the store may hold for the
	// partition (filter.go): an id it does not know is new.
	filter      *idFilter
	filterSkips atomic.Int64

	// staged holds everything but records and timer keys until Commit;
	// index holds the timer index writes, which Commit adds to it in key
	// order (sortedwrites.go).
	staged *pebble.Batch
	index  indexWrites
	// syncIndex is a synchronous commit's index writes (a pipelined
	// one's are its flight's).
	syncIndex detachedIndex

	// Timers: see timers.go.
	timers timerIndex

	// Outbox.
	nextSeq   uint64 // next sequence to append (task-owned)
	committed atomic.Uint64
	deletedTo atomic.Uint64
	outMu     sync.Mutex // serializes DeleteOutbox with itself
	// out is the outbox groups the next commit writes (outbox.go); zbuf
	// is a synchronous commit's buffer for a compressed group.
	out  stagedOutbox
	zbuf []byte
	// recent holds the latest small commits' entries for the publisher
	// (recentoutbox.go).
	recent recentOutbox
	// delKeys are the outbox keys DeleteOutbox deleted that the changelog
	// has not logged (guarded by outMu); deletes up to delBlindTo are not
	// listed there (made before a restart, or by a range tombstone) and
	// are logged for every sequence.
	delKeys    []uint64
	delBlindTo uint64
	delScratch []uint64

	// Membership counts: committed value plus staged delta per segment.
	counts map[string]*MemberCounter

	// Changelog (changelog.go): next entry sequence (task-owned), the
	// committed and confirmed ones, and how far outbox deletes are logged.
	changelog       bool
	clCommitBytes   int64 // NeedsCommit's cut (SetChangelogCommitBytes)
	clNext          uint64
	clCommitted     atomic.Uint64
	clDeletedTo     atomic.Uint64
	outboxLoggedTo  uint64
	clLoggedPending uint64
	// With the changelog on, outbox entries are released for publishing
	// only once the changelog holds their commit: a new owner restoring
	// from the changelog then re-derives nothing that was already
	// published. clMarks are the pending entries' outbox bounds (guarded
	// by outMu); clStaged is the one the current commit stages.
	clMarks  []clMark
	clStaged clMark
	// clLog holds the pending entries (entrylog.go).
	clLog *entryLog

	heapLen   atomic.Int64
	refillErr error  // a failed timer index read, reported by the next Commit
	last      *entry // the entry Get returned last: MarkDirty usually follows
	keyBuf    []byte
	valBuf    []byte
	// cold: encodings of evicted records (coldtier.go).
	cold     coldTier
	coldBuf  []byte
	coldHits atomic.Int64
	// coldBudget is the cold tier's share of Options.ColdCacheBytes.
	coldBudget atomic.Int64
	closed     atomic.Bool

	// Pipelined commits (pipeline.go): the commit in flight, the
	// settled one kept for its buffers, the spare batch, and the error
	// of a flight that failed (sticky).
	fl         *flight
	spare      *flight
	spareBatch *pebble.Batch
	flightErr  error
	// landedUnreported: a flight landed that Settle has not reported;
	// landedTook: the last landed flight's writer time.
	landedUnreported bool
	landedTook       time.Duration
}

// MemberCounter is a segment's member count in a partition. A caller
// that counts the same segments often keeps theirs (Partition.MemberCounter)
// instead of finding it by segment id at every change; it stays valid
// while the partition is open. Use it on the partition's goroutine.
type MemberCounter struct {
	committed int64
	delta     int64
}

// Count stages a customer entering the segment (entered) or leaving it,
// until the next commit. Call it on a change only.
func (c *MemberCounter) Count(entered bool) {
	if entered {
		c.delta++
	} else {
		c.delta--
	}
}

func openPartition(s *Store, n int32) (*Partition, error) {
	p := &Partition{
		s:       s,
		id:      n,
		cache:   map[string]*entry{},
		deleted: map[string]struct{}{},
		staged:  newStagedBatch(s),
		counts:  map[string]*MemberCounter{},
	}
	p.lru.next, p.lru.prev = &p.lru, &p.lru
	p.timers.init(p)
	// The next outbox sequence survives even when the outbox is empty.
	v, closer, err := s.db.Get(partPrefix(ksOutboxSeq, n))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		p.nextSeq = 1
	case err != nil:
		return nil, err
	default:
		if len(v) != 8 {
			closer.Close()
			return nil, fmt.Errorf("%w: outbox sequence is %d bytes", ErrCorrupt, len(v))
		}
		p.nextSeq = binary.BigEndian.Uint64(v)
		closer.Close()
	}
	p.committed.Store(p.nextSeq - 1)
	// Entries below the first remaining one were deleted.
	first, err := p.firstOutbox()
	if err != nil {
		return nil, err
	}
	if first == 0 {
		p.deletedTo.Store(p.nextSeq - 1)
	} else {
		p.deletedTo.Store(first - 1)
	}
	return p, nil
}

func (p *Partition) firstOutbox() (uint64, error) {
	prefix := partPrefix(ksOutbox, p.id)
	it, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	if it.First() {
		return binary.BigEndian.Uint64(it.Key()[5:]), nil
	}
	return 0, it.Error()
}

// ID returns the partition number.
func (p *Partition) ID() int32 { return p.id }

// Get returns the customer's record: the cached one, or one decoded from
// the store, or a new one (Options.Decode with nil data).
func (p *Partition) Get(customerID string) (Record, error) {
	if e, ok := p.cache[customerID]; ok {
		p.hits.Add(1)
		p.touch(e)
		p.last = e
		if e.slot != 0 {
			p.unshare(e)
		}
		return e.rec, nil
	}
	p.misses.Add(1)
	rec, known, err := p.fetch(customerID)
	if err != nil {
		return nil, err
	}
	p.last = p.insert(customerID, rec, false)
	p.last.known = known
	return rec, nil
}

// fetch finds a record the cache lacks: a new one for a deleted or new
// customer, else from the cold tier, else from Pebble. known: the store
// may hold the id (the filter need not learn it at commit).
func (p *Partition) fetch(id string) (rec Record, known bool, err error) {
	h := hashID(id)
	if _, gone := p.deleted[id]; gone || p.fl != nil && p.deletedInFlight(id) {
		rec, err = p.s.opts.Decode(id, nil)
		return rec, false, err
	}
	if data, ok := p.cold.take(id, h); ok {
		p.coldHits.Add(1)
		if rec, err = p.s.opts.Decode(id, data); err != nil {
			return nil, false, fmt.Errorf("decode customer %s: %w", id, err)
		}
		return rec, true, nil
	}
	if !p.filter.mayContain(h) {
		// Never stored: a new customer, no lookup.
		p.filterSkips.Add(1)
		rec, err = p.s.opts.Decode(id, nil)
		return rec, false, err
	}
	rec, err = p.load(id)
	return rec, err == nil, err
}

func (p *Partition) load(id string) (Record, error) {
	p.keyBuf = customerKey(p.keyBuf[:0], p.id, id)
	var rec Record
	found := false
	err := p.s.h.guard("get customer", func() error {
		v, closer, err := p.s.db.Get(p.keyBuf)
		if errors.Is(err, pebble.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		defer closer.Close()
		found = true
		data, err := openEnvelope(v)
		if err != nil {
			return err
		}
		// Decode copies what it keeps (Options.Decode).
		rec, err = p.s.opts.Decode(id, data)
		if err != nil {
			return &decodeError{err}
		}
		return nil
	})
	if !found && err == nil {
		return p.s.opts.Decode(id, nil)
	}
	var de *decodeError
	if errors.As(err, &de) {
		return nil, fmt.Errorf("decode customer %s: %w", id, de.err)
	}
	if err != nil {
		return nil, fmt.Errorf("get customer %s: %w", id, err)
	}
	return rec, nil
}

// decodeError carries Options.Decode's failure out of guard.
type decodeError struct{ err error }

func (e *decodeError) Error() string { return e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// openEnvelope checks the envelope byte and returns the record bytes.
// Older envelopes would be migrated here.
func openEnvelope(v []byte) ([]byte, error) {
	if len(v) == 0 {
		return nil, fmt.Errorf("%w: empty record", ErrCorrupt)
	}
	if v[0] != recordEnvelope {
		if v[0] > recordEnvelope {
			return nil, fmt.Errorf("%w: record envelope %d", ErrNewerFormat, v[0])
		}
		return nil, fmt.Errorf("%w: record envelope %d", ErrCorrupt, v[0])
	}
	return v[1:], nil
}

// MarkDirty makes rec the customer's cached record, to be written at the
// next Commit.
func (p *Partition) MarkDirty(customerID string, rec Record) {
	if len(p.deleted) > 0 {
		delete(p.deleted, customerID)
	}
	// p.last is dropped whenever its entry leaves the cache (unlink), so
	// when the ids match it is the cached entry: no second map lookup.
	e := p.last
	if e == nil || e.id != customerID {
		e = p.cache[customerID]
	}
	if e != nil {
		e.rec = rec
		if !e.dirty {
			e.dirty = true
			p.dirty = append(p.dirty, e)
			if !e.known {
				// A new customer's entry was measured empty, before
				// the event that made it: the commit's size
				// (NeedsCommit) counts what it holds now.
				p.resize(e)
			}
			p.dirtyBytes += e.size
		}
		return
	}
	p.cold.drop(hashID(customerID))
	p.insert(customerID, rec, true)
}

// keepCold puts an evicted record's encoding in the cold tier. Only a
// record the store holds: a new customer's record left clean was never
// written (the filter does not know the id), and one taken back from the
// cold tier counts as stored.
func (p *Partition) keepCold(e *entry) {
	if !e.known {
		return
	}
	want := p.coldBudget.Load()
	if int64(len(p.cold.ring)) != want {
		p.cold.setCapacity(want)
	}
	p.coldBuf = e.rec.AppendBinary(p.coldBuf[:0])
	p.cold.put(e.id, hashID(e.id), p.coldBuf)
}

// Delete removes the customer's record at the next Commit. Timers and
// memberships are the caller's to clear (MoveTimer, CountMember).
func (p *Partition) Delete(customerID string) {
	p.cold.drop(hashID(customerID))
	if e, ok := p.cache[customerID]; ok {
		p.unlink(e)
		delete(p.cache, customerID)
		e.dirty = false // a stale pointer in p.dirty is skipped at Commit
	}
	p.deleted[customerID] = struct{}{}
}

func (p *Partition) insert(id string, rec Record, dirty bool) *entry {
	e := newEntry(id)
	e.rec, e.size, e.dirty = rec, entrySize(id, rec), dirty
	// Room is made before e joins the list: a scan that found every
	// other entry dirty or in flight would otherwise reach e and evict
	// the record the caller is about to change (and the cold tier would
	// keep its state from before the change).
	p.cacheBytes.Add(e.size)
	p.evict()
	p.cache[e.id] = e
	p.pushFront(e)
	p.cacheEntries.Add(1)
	if dirty {
		p.dirty = append(p.dirty, e)
		p.dirtyBytes += e.size
	}
	return e
}

// entrySize is what a cached record costs: the record, its id and the
// entry with its map slot.
// resize measures e's record again, keeping the cache's total in step.
func (p *Partition) resize(e *entry) {
	if size := entrySize(e.id, e.rec); size != e.size {
		p.cacheBytes.Add(size - e.size)
		e.size = size
	}
}

func entrySize(id string, rec Record) int64 {
	return int64(rec.SizeBytes() + len(id) + 64)
}

// touch marks e as recently used. Eviction gives it a second chance
// (CLOCK) instead of moving it on every hit, which on a large cache costs
// cache misses for the pointer updates.
func (p *Partition) touch(e *entry) {
	e.ref = true
}

func (p *Partition) pushFront(e *entry) {
	e.prev = &p.lru
	e.next = p.lru.next
	p.lru.next.prev = e
	p.lru.next = e
}

func (p *Partition) unlink(e *entry) {
	if p.last == e {
		p.last = nil
	}
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	p.cacheBytes.Add(-e.size)
	p.cacheEntries.Add(-1)
}

// evict drops clean entries, oldest first, until the cache fits its
// budget; an entry used since it was last considered moves to the front
// instead (CLOCK, an LRU approximation). Dirty entries are skipped: they
// leave after Commit.
func (p *Partition) evict() {
	budget := p.budget.Load()
	// Bound the scan: every entry can be passed over at most twice.
	for n := 2 * len(p.cache); n > 0 && p.cacheBytes.Load() > budget && p.lru.prev != &p.lru; n-- {
		e := p.lru.prev
		switch {
		case e.ref || e.dirty || e.flying:
			e.ref = false
			e.prev.next, e.next.prev = e.next, e.prev
			p.pushFront(e)
		default:
			p.unlink(e)
			delete(p.cache, e.id)
			p.keepCold(e)
		}
	}
}

// NeedsCommit reports whether the next commit has grown past its bound
// (Options.CommitBytes, or the changelog's) or its dirty records hold
// over half the cache budget: the caller should commit soon, so that
// commits stay well inside Pebble's memtable, changelog entries inside
// a Kafka record batch, and dirty records become evictable.
func (p *Partition) NeedsCommit() bool {
	return p.PendingCommitBytes() > p.commitCut() || p.dirtyBytes > p.budget.Load()/2
}

// commitCut is the size of a commit NeedsCommit cuts at: Options.CommitBytes,
// or on a partition with a changelog its entries' bound when smaller.
func (p *Partition) commitCut() int64 {
	if p.changelog {
		return min(p.s.opts.CommitBytes, p.clCommitBytes)
	}
	return p.s.opts.CommitBytes
}

// DirtyRecords is the number of records marked dirty since the last
// Commit (deleted ones may be among them): those it will write.
func (p *Partition) DirtyRecords() int { return len(p.dirty) }

// SetOffset stages the next offset to read from topic.
func (p *Partition) SetOffset(topic string, next int64) {
	p.keyBuf = append(appendPartKey(p.keyBuf[:0], ksOffset, p.id), topic...)
	p.staged.Set(p.keyBuf, be64(uint64(next)), nil)
}

// SetRulesHash stages the hash of the rules the partition's state is now
// evaluated with; it commits with the next Commit (and travels in the
// changelog).
func (p *Partition) SetRulesHash(hash string) {
	p.staged.Set(partPrefix(ksRules, p.id), []byte(hash), nil)
}

// RulesHash returns the committed rules hash ("" if none was ever set).
func (p *Partition) RulesHash() (string, error) {
	return guard1(p.s.h, "read rules hash", p.rulesHash)
}

func (p *Partition) rulesHash() (string, error) {
	v, closer, err := p.s.db.Get(partPrefix(ksRules, p.id))
	if errors.Is(err, pebble.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("partition %d: rules hash: %w", p.id, err)
	}
	defer closer.Close()
	return string(v), nil
}

// HasCustomers reports whether the partition holds any committed customer
// record.
func (p *Partition) HasCustomers() (bool, error) {
	return guard1(p.s.h, "read customers", p.hasCustomers)
}

func (p *Partition) hasCustomers() (bool, error) {
	prefix := partPrefix(ksCustomer, p.id)
	it, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return false, err
	}
	defer it.Close()
	return it.First(), it.Error()
}

// Offsets returns the committed offsets of this partition by topic.
func (p *Partition) Offsets() (map[string]int64, error) {
	return guard1(p.s.h, "read offsets", p.offsets)
}

func (p *Partition) offsets() (map[string]int64, error) {
	prefix := partPrefix(ksOffset, p.id)
	it, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := map[string]int64{}
	for it.First(); it.Valid(); it.Next() {
		v := it.Value()
		if len(v) != 8 {
			return nil, fmt.Errorf("%w: offset value %d bytes", ErrCorrupt, len(v))
		}
		out[string(it.Key()[len(prefix):])] = int64(binary.BigEndian.Uint64(v))
	}
	return out, it.Error()
}

// CountMember adjusts segment's committed member count, staged until the
// next commit: entered is a customer entering it, otherwise one leaving.
// Call it on a change only. Who the members are is in the records
// themselves (Store.MembersOf reads them).
func (p *Partition) CountMember(segment string, entered bool) {
	p.MemberCounter(segment).Count(entered)
}

// MemberCounter returns segment's member count in the partition.
func (p *Partition) MemberCounter(segment string) *MemberCounter {
	c := p.counts[segment]
	if c == nil {
		c = &MemberCounter{committed: -1}
		p.counts[segment] = c
	}
	return c
}

func (p *Partition) countKey(segment string) []byte {
	return append(partPrefix(ksCount, p.id), segment...)
}

// Commit writes every staged change in one atomic batch.
func (p *Partition) Commit() error {
	return p.s.h.guard("commit", p.commit)
}

func (p *Partition) commit() error {
	if err := p.commitReady(); err != nil {
		return err
	}
	b := p.staged
	p.recent.drop() // what a failed commit staged
	// A larger commit (a busy partition's, a replay's) is read from
	// Pebble in groups at no loss: its entries are not copied.
	keep := &p.recent
	if !keeps(p.out.bytes()) {
		keep = nil
	}
	p.keyBuf, p.zbuf = p.out.writeTo(b, p.id, p.keyBuf, p.zbuf, keep)
	p.index.detach(&p.syncIndex)
	p.keyBuf = p.syncIndex.writeTo(b, p.id, p.keyBuf)
	// Writing keys in order makes the memtable inserts walk the skiplist
	// from nearby positions.
	p.sortDirty()
	for _, e := range p.dirty {
		if !e.dirty {
			continue // deleted since it was marked
		}
		p.learn(e)
		p.keyBuf = customerKey(p.keyBuf[:0], p.id, e.id)
		p.valBuf = append(p.valBuf[:0], recordEnvelope)
		p.valBuf = e.rec.AppendBinary(p.valBuf)
		b.Set(p.keyBuf, p.valBuf, nil)
		// A record grows after it enters the cache (a new customer's
		// does from nothing): its size is measured again while it is
		// at hand, or the budget would count what records were.
		p.resize(e)
	}
	for id := range p.deleted {
		p.keyBuf = customerKey(p.keyBuf[:0], p.id, id)
		b.Delete(p.keyBuf, nil)
	}
	if err := p.stageCounts(b); err != nil {
		return err
	}
	committedSeq := p.nextSeq - 1
	if committedSeq > p.committed.Load() {
		b.Set(partPrefix(ksOutboxSeq, p.id), be64(p.nextSeq), nil)
	}
	if p.changelog {
		if err := p.stageChangelog(b, p.committed.Load(), committedSeq, &p.keyBuf); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	if !b.Empty() {
		if err := b.Commit(p.s.wo); err != nil {
			if p.changelog {
				p.changelogCommitFailed()
			}
			return fmt.Errorf("commit partition %d: %w", p.id, err)
		}
		// Reuse the batch and its buffer (reuseBatch).
		p.staged = p.reuseBatch(b)
	}
	// The batch is durable: publish its effects.
	for _, e := range p.dirty {
		e.dirty = false
	}
	p.dirty = p.dirty[:0]
	p.dirtyBytes = 0
	clear(p.deleted)
	// The commit's changelog mark first: from the moment the outbox
	// entries count as committed, releasedOutbox must see that their
	// changelog entry is still pending.
	if p.changelog {
		p.changelogCommitted()
	}
	p.recent.publish()
	p.committed.Store(committedSeq)
	p.timers.committed()
	p.evict()
	return nil
}

// sortDirty sorts the dirty records by id. A few (a caught-up
// partition's commit) are compared directly; more by their ids'
// prefixes first (idPrefix), their ids read once each instead of at
// every comparison.
func (p *Partition) sortDirty() {
	if len(p.dirty) < sortDirectBelow {
		slices.SortFunc(p.dirty, func(a, b *entry) int { return strings.Compare(a.id, b.id) })
		return
	}
	keys := p.dirtyKeys[:0]
	for i, e := range p.dirty {
		keys = append(keys, idKey{pre: idPrefix(e.id), i: int32(i)})
	}
	sortIDKeys(keys, func(i int32) string { return p.dirty[i].id })
	sorted := p.dirtySorted[:0]
	for _, k := range keys {
		sorted = append(sorted, p.dirty[k.i])
	}
	clear(p.dirty) // no entry kept alive by the spare buffer
	p.dirty, p.dirtySorted, p.dirtyKeys = sorted, p.dirty[:0], keys[:0]
}

// sortDirectBelow is how few dirty records sortDirty compares directly.
const sortDirectBelow = 32

// learn adds a record being committed to the customer filter. Before the
// batch commits: the filter may know an id the store does not hold yet,
// never the reverse.
func (p *Partition) learn(e *entry) {
	if !e.known {
		p.filter.add(hashID(e.id))
		e.known = true
	}
}

// stageCounts stages the segments' changed membership counts and takes
// the deltas into the committed values: a commit that fails leaves the
// partition to be opened again, so they are not kept for a retry.
func (p *Partition) stageCounts(b *pebble.Batch) error {
	for seg, c := range p.counts {
		if c.delta == 0 {
			continue
		}
		if c.committed < 0 {
			n, err := p.committedCount(seg)
			if err != nil {
				return err
			}
			c.committed = n
		}
		c.committed += c.delta
		c.delta = 0
		b.Set(p.countKey(seg), be64(uint64(c.committed)), nil)
	}
	return nil
}

// deletedInFlight reports whether the commit in flight deletes the
// customer's record.
func (p *Partition) deletedInFlight(customerID string) bool {
	_, ok := p.fl.deleted[customerID]
	return ok
}

// A partition's staged batches keep their buffers between commits: a
// batch grown again from 1 KiB by doubling copies every byte it holds
// and touches fresh pages each time (commits of 3-5 MB kept crossing a
// fixed 4 MiB retention at 1M customers: 1-2% of the engine's CPU). They keep up to twice Options.CommitBytes, the most a
// commit stages, and give a buffer back once a commit used under a
// quarter of one past stagedBatchKeepBytes: an idle partition does not
// hold what a burst grew.
const stagedBatchKeepBytes = 4 << 20

func newStagedBatch(s *Store) *pebble.Batch {
	return s.db.NewBatch(pebble.WithMaxRetainedSizeBytes(int(max(2*s.opts.CommitBytes, stagedBatchKeepBytes))))
}

// reuseBatch readies a committed batch for the next commit: reset with
// its buffer, or a fresh one when the buffer is mostly unused (above).
func (p *Partition) reuseBatch(b *pebble.Batch) *pebble.Batch {
	if r := b.Repr(); cap(r) > stagedBatchKeepBytes && len(r) < cap(r)/4 {
		// Left to the GC, not closed: Close would pool the batch with
		// its buffer, for the next NewBatch to take.
		return newStagedBatch(p.s)
	}
	b.Reset()
	return b
}

func (p *Partition) committedCount(segment string) (int64, error) {
	v, closer, err := p.s.db.Get(p.countKey(segment))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: count %d bytes", ErrCorrupt, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// Range calls fn for every committed customer of the partition, with the
// cached record where there is one. Commit first: uncommitted new
// customers are not visited. Records decoded for Range are not cached.
func (p *Partition) Range(fn func(customerID string, rec Record) error) error {
	return p.s.h.guard("range", func() error { return p.rangeRecords(fn) })
}

func (p *Partition) rangeRecords(fn func(customerID string, rec Record) error) error {
	if p.closed.Load() {
		return ErrClosed
	}
	// The cached records are the caller's to change: none may be the
	// flight's.
	if _, err := p.settle(true); err != nil {
		return err
	}
	prefix := partPrefix(ksCustomer, p.id)
	it, err := p.s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		id := string(it.Key()[len(prefix):])
		var rec Record
		if e, ok := p.cache[id]; ok {
			rec = e.rec
		} else {
			data, err := openEnvelope(it.Value())
			if err != nil {
				return fmt.Errorf("customer %s: %w", id, err)
			}
			if rec, err = p.s.opts.Decode(id, data); err != nil {
				return fmt.Errorf("decode customer %s: %w", id, err)
			}
		}
		if err := fn(id, rec); err != nil {
			return err
		}
	}
	return it.Error()
}

// Close drops the partition's cache and staged changes (commit first) and
// releases it. Safe to call twice.
func (p *Partition) Close() error {
	if p.closeNoRelease() {
		p.s.release(p.id)
	}
	return nil
}

func (p *Partition) closeNoRelease() bool {
	if !p.closed.CompareAndSwap(false, true) {
		return false
	}
	if p.fl != nil {
		// The writer uses the flight's batch until it returns.
		p.awaitFlight(p.fl)
		p.fl.b.Close()
		p.fl = nil
	}
	p.staged.Close()
	if p.spareBatch != nil {
		p.spareBatch.Close()
	}
	if p.clLog != nil {
		p.clLog.close()
	}
	p.out = stagedOutbox{}
	p.cacheBytes.Store(0)
	p.cacheEntries.Store(0)
	p.cache = nil
	p.cold.setCapacity(0)
	return true
}
