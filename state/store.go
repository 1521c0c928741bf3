package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rs/zerolog"
)

// FormatVersion is the store layout this code writes. A store written by a
// newer version is refused (ErrNewerFormat).
//
// Format 2 keeps the pending changelog entries in files (entrylog.go)
// instead of 'l' keys; a format 1 store is migrated when opened. Format 3
// may hold compressed outbox groups (outbox.go), which a format 2 reader
// would take for values: a format 2 store is opened as it is and marked
// 3, so that an older segd refuses it from then on. Format 4 keeps no
// membership index ('m' keys; the records hold the memberships,
// Store.MembersOf): an older store's index is deleted when it is opened,
// and an older segd, which would list no members, refuses the store.
const FormatVersion = 4

// recordEnvelope is the first byte of every stored customer record: the
// version of the envelope around the engine's record bytes.
const recordEnvelope = 1

var (
	// ErrClosed is returned by operations on a closed Store or Partition.
	ErrClosed = errors.New("state: closed")
	// ErrNewerFormat is returned by Open for a store written by a newer segd.
	ErrNewerFormat = errors.New("state: store format is newer than this segd")
	// ErrCorrupt marks stored data that cannot be decoded.
	ErrCorrupt = errors.New("state: corrupt data")
	// ErrNotStore is returned by Open with ReadOnly for a directory that
	// holds no segd store.
	ErrNotStore = errors.New("state: not a segd state directory")
)

// Record is a decoded customer record held in the write-back cache. The
// engine supplies the type.
type Record interface {
	// AppendBinary appends the record's encoding to dst.
	AppendBinary(dst []byte) []byte
	// SizeBytes estimates the heap bytes the record holds, for the cache
	// budget.
	SizeBytes() int
}

// SyncPolicy says when a commit waits for the disk.
type SyncPolicy int

const (
	// SyncNone (default) writes every commit to the WAL without fsync. A
	// process crash loses nothing (the OS has the bytes); a machine crash
	// may lose the last commits, which Kafka replays from the stored
	// offsets since they are lost together with the state.
	SyncNone SyncPolicy = iota + 1
	// SyncCommit fsyncs the WAL on every commit.
	SyncCommit
)

// Options configure a Store. Zero values mean the documented default.
type Options struct {
	// FS is the file system. Default vfs.Default (the OS).
	FS vfs.FS
	// CacheBytes bounds the write-back cache of decoded records, shared
	// by the open partitions. Default 256 MiB; at least 1 MiB.
	CacheBytes int64
	// MemTableBytes is Pebble's memtable size. Default 64 MiB; 1 MiB..4 GiB.
	MemTableBytes int64
	// BlockCacheBytes is Pebble's block cache: the store's blocks read
	// back from files. Default 128 MiB.
	BlockCacheBytes int64
	// ColdCacheBytes is the cold tier (coldtier.go), shared by the open
	// partitions like CacheBytes: the encodings of the records the
	// write-back cache evicted, so that a customer seen again is decoded
	// from memory without a Pebble read. Default 128 MiB; 1 MiB at least.
	ColdCacheBytes int64
	// Sync is the commit durability. Default SyncNone.
	Sync SyncPolicy
	// DisableWAL turns Pebble's write-ahead log off. Default false: see
	// docs/state.md for why the WAL stays on.
	DisableWAL bool
	// ChangelogCommitBytes: on a partition with its changelog enabled
	// (Partition.EnableChangelog), NeedsCommit asks for a commit
	// once the staged changes reach this size, so every entry fits in
	// one Kafka record batch (Partition.SetChangelogCommitBytes sets it
	// per partition). Default 4 MiB: half of the 8 MiB record batches
	// segd's changelog topic takes. Larger commits rewrite a customer's
	// record less often (at 1 MiB a 10,000-event commit was cut in
	// three, and the records written twice as often cost end to end
	// throughput a tenth).
	ChangelogCommitBytes int64
	// CommitBytes: NeedsCommit asks for a commit once what the next
	// commit would write (Partition.PendingCommitBytes: its staged
	// changes and index entries plus the in-memory size of its dirty
	// records) passes this size, changelog or not. Default 32 MiB. It
	// bounds a commit by what it holds rather than by its events: with a
	// thousand segments 10,000 events stage 20-40 MiB of changes, with
	// twenty 50,000 stage 10-27 MiB, and a batch past Pebble's memtable
	// (64 MiB) became a flush of its own per commit (1000 segments,
	// 50,000 events per commit: 23-31% of the Go-map limit against
	// 45-49% at 10,000).
	CommitBytes int64
	// Decode builds a record from its stored bytes; data is nil for a
	// customer not in the store. Required. It must not retain data.
	Decode func(customerID string, data []byte) (Record, error)
	// ReadOnly opens an existing store for reading only: no file of the
	// directory is created, written or removed (Pebble replays its
	// write-ahead log in memory), writes fail, and a directory without a
	// segd store is refused with ErrNotStore. Default false.
	ReadOnly bool
	// Logger receives Pebble's logs and events and the store's failures
	// (corruption, full disk). Default: none.
	Logger zerolog.Logger
	// SkipVerify skips the checksum check of every block that Open makes
	// (a full read of the store) to find corruption before any partition
	// runs. Default false.
	SkipVerify bool
	// DiskFullProbeBytes is the size of the probe file that must fit
	// before writes stopped by a full disk resume. Default 1 MiB; at least
	// 4096.
	DiskFullProbeBytes int64
}

// EnsureDefaults fills zero fields.
func (o *Options) EnsureDefaults() {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 256 << 20
	}
	if o.MemTableBytes == 0 {
		o.MemTableBytes = 64 << 20
	}
	if o.BlockCacheBytes == 0 {
		o.BlockCacheBytes = 128 << 20
	}
	if o.ColdCacheBytes == 0 {
		o.ColdCacheBytes = 128 << 20
	}
	if o.Sync == 0 {
		o.Sync = SyncNone
	}
	if o.ChangelogCommitBytes == 0 {
		o.ChangelogCommitBytes = 4 << 20
	}
	if o.CommitBytes == 0 {
		o.CommitBytes = 32 << 20
	}
	if o.DiskFullProbeBytes == 0 {
		o.DiskFullProbeBytes = 1 << 20
	}
}

// Validate reports every invalid field.
func (o *Options) Validate() error {
	var p []string
	if o.CacheBytes < 1<<20 {
		p = append(p, fmt.Sprintf("CacheBytes (%d) must be >= 1048576", o.CacheBytes))
	}
	if o.MemTableBytes < 1<<20 || o.MemTableBytes > 4<<30 {
		p = append(p, fmt.Sprintf("MemTableBytes (%d) must be between 1048576 and 4294967296", o.MemTableBytes))
	}
	if o.ColdCacheBytes < 1<<20 {
		p = append(p, fmt.Sprintf("ColdCacheBytes (%d) must be >= 1048576", o.ColdCacheBytes))
	}
	if o.BlockCacheBytes < 0 {
		p = append(p, fmt.Sprintf("BlockCacheBytes (%d) must be >= 0", o.BlockCacheBytes))
	}
	if o.Sync != SyncNone && o.Sync != SyncCommit {
		p = append(p, fmt.Sprintf("Sync (%d) must be SyncNone or SyncCommit", o.Sync))
	}
	if o.CommitBytes < 4096 {
		p = append(p, fmt.Sprintf("CommitBytes (%d) must be >= 4096", o.CommitBytes))
	}
	if o.ChangelogCommitBytes < 4096 {
		p = append(p, fmt.Sprintf("ChangelogCommitBytes (%d) must be >= 4096", o.ChangelogCommitBytes))
	}
	if o.DiskFullProbeBytes < 4096 {
		p = append(p, fmt.Sprintf("DiskFullProbeBytes (%d) must be >= 4096", o.DiskFullProbeBytes))
	}
	if o.Decode == nil {
		p = append(p, "Decode is nil: the store needs the record decoder")
	}
	if len(p) > 0 {
		return fmt.Errorf("state options: %s", strings.Join(p, "; "))
	}
	return nil
}

// Store is one Pebble database holding the state of every partition this
// process owns. Safe for concurrent use.
type Store struct {
	opts Options
	db   *pebble.DB
	// fs is opts.FS as Pebble sees it (with the disk-full handling): the
	// changelog logs use it too.
	fs vfs.FS
	// copying is held by Checkpoint while it copies the changelog logs.
	copying sync.RWMutex
	wo      *pebble.WriteOptions
	h       *health

	mu        sync.Mutex
	parts     map[int32]*Partition
	restoring map[int32]bool // partitions a Restorer holds
	closed    bool
	// filters are the customer-id filters (filter.go) of every partition
	// with customers: a partition without one holds none. Each filter is
	// used by its partition's owner; the map is guarded by mu.
	filters map[int32]*idFilter
	// filterNonce is this session's filter marker (filterfile.go); nil
	// when read-only.
	filterNonce []byte
}

// Open opens (creating if needed, unless opts.ReadOnly) the store in dir.
// A store that is corrupt (a checksum mismatch, or the CorruptMarker an
// earlier run left) is refused with an error wrapping ErrCorrupt; a full
// disk fails it with ErrDiskFull.
func Open(dir string, opts Options) (*Store, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.ReadOnly {
		// Pebble would create its LOCK file even read-only: look first.
		ls, err := opts.FS.List(dir)
		if err != nil {
			return nil, fmt.Errorf("open state %s: %w", dir, err)
		}
		manifest := false
		for _, name := range ls {
			manifest = manifest || strings.HasPrefix(name, "MANIFEST-")
		}
		if !manifest {
			return nil, fmt.Errorf("open state %s: %w (no Pebble store in it)", dir, ErrNotStore)
		}
	}
	if b, err := readMarker(opts.FS, dir); err == nil {
		return nil, fmt.Errorf("open state %s: %w: a run found corruption (%s says %q): rebuild the directory", dir, ErrCorrupt, CorruptMarker, b)
	}
	h := &health{dir: dir, fs: opts.FS, log: opts.Logger, probe: opts.DiskFullProbeBytes, abandon: make(chan struct{})}
	h.opening.Store(true)
	defer h.opening.Store(false)
	fs := opts.FS
	if !opts.ReadOnly {
		fs = vfs.OnDiskFull(fs, h.onDiskFull)
	}
	cache := pebble.NewCache(opts.BlockCacheBytes)
	defer cache.Unref()
	po := &pebble.Options{
		FS:            fs,
		Cache:         cache,
		MemTableSize:  uint64(opts.MemTableBytes),
		DisableWAL:    opts.DisableWAL,
		Logger:        pebbleLogger{h},
		EventListener: h.eventListener(),
		// A small threshold lets Pebble start a fresh MANIFEST once the
		// edits since the last one outweigh the live files (its own rule
		// bounds the cost), so the file boundaries of erased customers do
		// not linger in a 128 MiB manifest for months. See Scrub.
		MaxManifestFileSize: 1,
		ReadOnly:            opts.ReadOnly,
		// Commits do not fsync (SyncNone), so without this the WAL's
		// dirty pages piled up until the memtable was full; the switch to
		// a new WAL then synced all of them (tens of MiB) while every
		// partition's commit waited: the handful of 4-40 ms stalls that
		// made the latency p99. Writing back every 1 MiB in the
		// background leaves that sync little to do.
		WALBytesPerSync: 1 << 20,
	}
	// Bloom filters make the load of a customer that is not in the store
	// (every new customer) skip the data blocks.
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	po.EnsureDefaults()
	start := time.Now()
	h.log.Info().Str("state_dir", dir).Msg("opening state store (Pebble replays its write-ahead log)")
	var db *pebble.DB
	err := h.guard("open", func() error {
		var err error
		db, err = pebble.Open(dir, po)
		return err
	})
	if err != nil {
		return nil, openError(dir, err)
	}
	s := &Store{opts: opts, db: db, fs: fs, wo: pebble.NoSync, h: h, parts: map[int32]*Partition{}}
	if opts.Sync == SyncCommit {
		s.wo = pebble.Sync
	}
	err = h.guard("check format", s.checkFormat)
	var verified map[int32]*idFilter
	if err == nil && !opts.SkipVerify {
		err = h.guard("verify", func() (err error) {
			verified, err = s.verify()
			return err
		})
	}
	if err == nil {
		err = h.guard("customer filters", func() error { return s.initFilters(verified) })
	}
	if err != nil {
		s.closeDB()
		return nil, openError(dir, err)
	}
	h.log.Info().Str("state_dir", dir).Dur("took", time.Since(start)).Msg("state store open")
	return s, nil
}

// openError names the directory and, for a full disk, what to do.
func openError(dir string, err error) error {
	if vfs.IsNoSpaceError(err) || errors.Is(err, ErrDiskFull) {
		if !errors.Is(err, ErrDiskFull) {
			err = fmt.Errorf("%w: %w", ErrDiskFull, err)
		}
		return fmt.Errorf("open state %s: %w (free space on its volume and start again)", dir, err)
	}
	return fmt.Errorf("open state %s: %w", dir, err)
}

// readMarker returns the content of dir's CorruptMarker, or an error if
// there is none.
func readMarker(fs vfs.FS, dir string) (string, error) {
	f, err := fs.Open(fs.PathJoin(dir, CorruptMarker))
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1024))
	return strings.TrimSpace(string(b)), err
}

// verify reads every key of the store, which checks the checksum of every
// data and index block Pebble reads on the way. The customer filters are
// built on the way (hashing the ids costs a fraction of the read).
func (s *Store) verify() (map[int32]*idFilter, error) {
	it, err := s.db.NewIter(nil)
	if err != nil {
		return nil, err
	}
	fb := newFilterBuilder()
	for it.First(); it.Valid(); it.Next() {
		if k := it.Key(); len(k) > 0 && k[0] == ksCustomer {
			fb.addKey(k)
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, err
	}
	return fb.finish(), nil
}

// Wipe removes the store in dir (every file of the directory) so that the
// next Open starts an empty one: for a corrupt store whose state can be
// rebuilt (the engine restores it from the changelog). fs nil means the
// OS. The store must not be open.
func Wipe(fs vfs.FS, dir string) error {
	if fs == nil {
		fs = vfs.Default
	}
	if err := fs.RemoveAll(dir); err != nil {
		return fmt.Errorf("wipe state %s: %w", dir, err)
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("wipe state %s: %w", dir, err)
	}
	return nil
}

func (s *Store) checkFormat() error {
	v, closer, err := s.db.Get(formatKey)
	if errors.Is(err, pebble.ErrNotFound) {
		if s.opts.ReadOnly {
			return fmt.Errorf("%w (a Pebble store without segd's format key)", ErrNotStore)
		}
		if s.opts.DisableWAL {
			if err := s.db.Set(formatKey, []byte{FormatVersion}, pebble.NoSync); err != nil {
				return err
			}
			return s.db.Flush()
		}
		return s.db.Set(formatKey, []byte{FormatVersion}, pebble.Sync)
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	if len(v) != 1 {
		return fmt.Errorf("%w: format key is %d bytes", ErrCorrupt, len(v))
	}
	if v[0] > FormatVersion {
		return fmt.Errorf("%w: store has format %d, this segd writes %d; upgrade segd", ErrNewerFormat, v[0], FormatVersion)
	}
	if s.opts.ReadOnly || v[0] == FormatVersion {
		return nil
	}
	// First, so that a crash before the format is marked does it again.
	if err := s.dropMemberIndex(); err != nil {
		return err
	}
	if v[0] < 2 {
		return s.migrateChangelogKeys() // sets the current format
	}
	return s.db.Set(formatKey, []byte{FormatVersion}, pebble.Sync)
}

// dropMemberIndex deletes the membership index a format 3 or older store
// kept ('m' keys): Store.MembersOf reads the records instead.
func (s *Store) dropMemberIndex() error {
	if err := s.db.DeleteRange([]byte{ksMember}, []byte{ksMember + 1}, pebble.Sync); err != nil {
		return fmt.Errorf("delete the membership index of an older store: %w", err)
	}
	return nil
}

// Partition opens the state of partition n. A partition can be open once
// at a time; Close it when the partition is revoked.
func (s *Store) Partition(n int32) (*Partition, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if _, ok := s.parts[n]; ok {
		return nil, fmt.Errorf("state: partition %d is already open", n)
	}
	if s.restoring[n] {
		return nil, fmt.Errorf("state: partition %d is being restored", n)
	}
	var p *Partition
	err := s.h.guard("open partition", func() error {
		var err error
		p, err = openPartition(s, n)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open partition %d: %w", n, err)
	}
	p.filter = s.filterLocked(n)
	s.parts[n] = p
	s.rebudgetLocked()
	return p, nil
}

// filterLocked returns partition n's customer filter, a new empty one
// if it has none. s.mu is held.
func (s *Store) filterLocked(n int32) *idFilter {
	f := s.filters[n]
	if f == nil {
		f = newIDFilter(0)
		s.filters[n] = f
	}
	return f
}

// rebudgetLocked splits the cache budget evenly over open partitions.
func (s *Store) rebudgetLocked() {
	if len(s.parts) == 0 {
		return
	}
	per := s.opts.CacheBytes / int64(len(s.parts))
	cold := s.opts.ColdCacheBytes / int64(len(s.parts))
	for _, p := range s.parts {
		p.budget.Store(per)
		p.coldBudget.Store(cold)
	}
}

func (s *Store) release(n int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.parts, n)
	s.rebudgetLocked()
}

// Close commits nothing (uncommitted changes are dropped, as after a
// crash: the offsets they would have advanced were not written either),
// closes every partition and the database. Safe to call twice.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	parts := make([]*Partition, 0, len(s.parts))
	for _, p := range s.parts {
		parts = append(parts, p)
	}
	s.mu.Unlock()
	for _, p := range parts {
		p.closeNoRelease()
	}
	// Every commit is done: the filters are complete.
	s.saveFilters()
	// Writes still waiting for space give up: nobody will commit again.
	s.AbandonDiskWait()
	return s.closeDB()
}

// closeDB closes Pebble, unless one of its goroutines is parked after a
// fatal error (Close would wait for it forever): the process must exit.
func (s *Store) closeDB() error {
	if s.h.parked.Load() {
		return fmt.Errorf("close pebble: not closed: %w", s.h.err())
	}
	failed := s.h.err()
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("pebble close panicked: %v", r)
			}
		}()
		return s.db.Close()
	}()
	if failed != nil {
		// Pebble's Close may report the failure again, or panic on it:
		// neither is news.
		return nil
	}
	if err != nil {
		return fmt.Errorf("close pebble: %w", err)
	}
	return nil
}

// Err returns the store's failure (wrapping ErrStoreFailed, and
// ErrCorrupt or ErrDiskFull when that was the cause), or nil while it
// works. Safe for concurrent use.
func (s *Store) Err() error { return s.h.err() }

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// CountMembers returns the committed number of members of a segment across
// every partition in the store, from the per-partition counters (no record
// is decoded).
func (s *Store) CountMembers(segment string) (int64, error) {
	return s.CountMembersOf(segment, nil)
}

// CountMembersOf is CountMembers over the partitions for which include
// returns true (all when include is nil): a process sharing partitions
// with others keeps the state of partitions it ran before, which it must
// not count.
func (s *Store) CountMembersOf(segment string, include func(partition int32) bool) (int64, error) {
	return guard1(s.h, "count members", func() (int64, error) { return s.countMembersOf(segment, include) })
}

func (s *Store) countMembersOf(segment string, include func(partition int32) bool) (int64, error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{ksCount}, UpperBound: []byte{ksCount + 1}})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	var n int64
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) < 5 || string(k[5:]) != segment {
			continue
		}
		if include != nil && !include(int32(binary.BigEndian.Uint32(k[1:5]))) {
			continue
		}
		v := it.Value()
		if len(v) != 8 {
			return 0, fmt.Errorf("%w: count value %d bytes", ErrCorrupt, len(v))
		}
		n += int64(binary.BigEndian.Uint64(v))
	}
	return n, it.Error()
}

// MemberMatch reports whether a committed customer record of partition
// part (the engine's bytes, without the store's envelope) is a member of
// the segment being listed.
type MemberMatch func(part int32, record []byte) (bool, error)

// membersScanRecords bounds the records one MembersOf call reads, so a
// page of a sparse segment in a large store answers in about a tenth of a
// second instead of reading the whole store.
const membersScanRecords = 250_000

// MembersOf returns up to limit ids of the committed customers for which
// match is true, in the partitions for which include (nil: all) is true,
// in id order across them, starting after cursor ("" for the first
// page), and the cursor of the next page ("" when there is none).
//
// The memberships are read from the records themselves: the store keeps
// no index of them, which cost a Pebble key per change at every commit.
// A call reads at most membersScanRecords records, so a page of a
// sparse segment may hold fewer than limit ids, even none, with a cursor
// to go on from: only an empty next means the end.
func (s *Store) MembersOf(match MemberMatch, cursor string, limit int, include func(partition int32) bool) (ids []string, next string, err error) {
	err = s.h.guard("list members", func() error {
		ids, next, err = s.membersOf(match, cursor, limit, include, membersScanRecords)
		return err
	})
	return ids, next, err
}

func (s *Store) membersOf(match MemberMatch, cursor string, limit int, include func(partition int32) bool, budget int) (ids []string, next string, err error) {
	if s.isClosed() {
		return nil, "", ErrClosed
	}
	if limit <= 0 {
		return nil, "", fmt.Errorf("state: members limit (%d) must be >= 1", limit)
	}
	parts, err := s.partitionsWithCustomers()
	if err != nil {
		return nil, "", err
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	var h recordMerge
	defer h.close()
	for _, n := range parts {
		if include != nil && !include(n) {
			continue
		}
		prefix := partPrefix(ksCustomer, n)
		lower := prefix
		if cursor != "" {
			lower = append(append(append([]byte(nil), prefix...), cursor...), 0)
		}
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(prefix)})
		if err != nil {
			return nil, "", err
		}
		h.add(n, it)
	}
	if err := h.init(); err != nil {
		return nil, "", err
	}
	last := ""
	for scanned := 0; h.len() > 0; scanned++ {
		if scanned == budget {
			return ids, last, nil
		}
		top := h.top()
		id := top.it.Key()[5:]
		if len(ids) == limit {
			return ids, ids[len(ids)-1], nil
		}
		data, err := openEnvelope(top.it.Value())
		if err != nil {
			return nil, "", fmt.Errorf("customer %q: %w", id, err)
		}
		in, err := match(top.part, data)
		if err != nil {
			return nil, "", fmt.Errorf("customer %q: %w", id, err)
		}
		last = string(id)
		if in {
			ids = append(ids, last)
		}
		if err := h.next(); err != nil {
			return nil, "", err
		}
	}
	return ids, "", nil
}

// recordMerge merges the customer records of several partitions into id
// order (a customer lives in one partition: ids do not repeat). A heap of
// iterators, the smallest id first.
type recordMerge struct {
	its []partIter
}

type partIter struct {
	part int32
	it   *pebble.Iterator
}

func (m *recordMerge) add(part int32, it *pebble.Iterator) {
	m.its = append(m.its, partIter{part: part, it: it})
}

// init positions every iterator on its first record and drops the empty.
func (m *recordMerge) init() error {
	live := m.its[:0]
	var err error
	for _, pi := range m.its {
		if pi.it.First() {
			live = append(live, pi)
			continue
		}
		err = errors.Join(err, pi.it.Error(), pi.it.Close())
	}
	m.its = live
	if err != nil {
		return err
	}
	for i := len(m.its)/2 - 1; i >= 0; i-- {
		m.down(i)
	}
	return nil
}

func (m *recordMerge) len() int       { return len(m.its) }
func (m *recordMerge) top() *partIter { return &m.its[0] }

// next moves the smallest iterator on.
func (m *recordMerge) next() error {
	top := &m.its[0]
	if !top.it.Next() {
		err := errors.Join(top.it.Error(), top.it.Close())
		last := len(m.its) - 1
		m.its[0] = m.its[last]
		m.its = m.its[:last]
		if err != nil {
			return err
		}
	}
	if len(m.its) > 0 {
		m.down(0)
	}
	return nil
}

func (m *recordMerge) less(i, j int) bool {
	return bytes.Compare(m.its[i].it.Key()[5:], m.its[j].it.Key()[5:]) < 0
}

func (m *recordMerge) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(m.its) {
			return
		}
		if r := l + 1; r < len(m.its) && m.less(r, l) {
			l = r
		}
		if !m.less(l, i) {
			return
		}
		m.its[i], m.its[l] = m.its[l], m.its[i]
		i = l
	}
}

// close closes the iterators still open.
func (m *recordMerge) close() {
	for _, pi := range m.its {
		pi.it.Close()
	}
	m.its = nil
}

// Checkpoint writes a consistent copy of the store to dir (which must not
// exist), for backups.
func (s *Store) Checkpoint(dir string) error {
	return s.h.guard("checkpoint", func() error { return s.checkpoint(dir) })
}

func (s *Store) checkpoint(dir string) error {
	if s.isClosed() {
		return ErrClosed
	}
	// The changelog logs after Pebble's copy: they then hold every entry
	// the copy committed (and maybe later ones, cut off when it opens),
	// and none of their files is deleted meanwhile.
	s.copying.Lock()
	defer s.copying.Unlock()
	if err := s.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	from := s.fs.PathJoin(s.h.dir, entryLogDir)
	parts, err := s.fs.List(from)
	if err != nil && !oserrNotExist(err) {
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	for _, part := range parts {
		if err := copyLogFiles(s.fs, s.fs.PathJoin(from, part), s.fs, s.fs.PathJoin(dir, entryLogDir, part)); err != nil {
			return fmt.Errorf("checkpoint %s: changelog log %s: %w", dir, part, err)
		}
	}
	return nil
}

// Compact flushes the memtable and compacts the whole key space, so that
// deleted data no longer exists in any file.
func (s *Store) Compact() error {
	return s.h.guard("compact", s.compact)
}

func (s *Store) compact() error {
	if s.isClosed() {
		return ErrClosed
	}
	if err := s.h.check(s.db.Flush()); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	if err := s.db.Compact(context.Background(), []byte{0}, []byte{0xff, 0xff}, true); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	return nil
}

// Metrics are store-level statistics for monitoring.
type Metrics struct {
	CacheHits, CacheMisses int64
	// ColdHits are the cache misses the cold tier served (no Pebble read).
	ColdHits      int64
	CacheBytes    int64 // decoded records held
	CacheEntries  int64
	DiskBytes     uint64
	ReadAmp       int
	Compactions   int64
	TimersPending int64 // committed timers in the near-horizon heaps
	// FilterSkips counts cache misses the customer filter answered
	// without reading the store (new customers).
	FilterSkips int64
	// FilterBytes is the memory of the customer filters.
	FilterBytes int64
}

// Metrics returns current statistics.
func (s *Store) Metrics() Metrics {
	var m Metrics
	s.mu.Lock()
	for _, p := range s.parts {
		m.CacheHits += p.hits.Load()
		m.CacheMisses += p.misses.Load()
		m.ColdHits += p.coldHits.Load()
		m.CacheBytes += p.cacheBytes.Load()
		m.CacheEntries += p.cacheEntries.Load()
		m.TimersPending += p.heapLen.Load()
		m.FilterSkips += p.filterSkips.Load()
	}
	m.FilterBytes = s.filterBytesLocked()
	closed := s.closed
	s.mu.Unlock()
	if closed || s.h.err() != nil {
		return m
	}
	var pm *pebble.Metrics
	if s.h.guard("metrics", func() error { pm = s.db.Metrics(); return nil }) != nil {
		return m
	}
	m.DiskBytes = pm.DiskSpaceUsage()
	m.ReadAmp = pm.ReadAmp()
	m.Compactions = pm.Compact.Count
	return m
}

// Lookup returns the committed record bytes of a customer of partition n
// (without the envelope), for readers outside the partition's task such as
// the HTTP API. It reads Pebble, not the cache, so it is safe for
// concurrent use and as fresh as the last commit.
func (s *Store) Lookup(n int32, customerID string) (data []byte, found bool, err error) {
	err = s.h.guard("lookup", func() error {
		data, found, err = s.lookup(n, customerID)
		return err
	})
	return data, found, err
}

func (s *Store) lookup(n int32, customerID string) ([]byte, bool, error) {
	if s.isClosed() {
		return nil, false, ErrClosed
	}
	v, closer, err := s.db.Get(customerKey(nil, n, customerID))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer closer.Close()
	data, err := openEnvelope(v)
	if err != nil {
		return nil, false, err
	}
	return append([]byte(nil), data...), true, nil
}

// CommittedOffsets returns partition n's committed offsets, like
// Partition.Offsets, from any goroutine.
func (s *Store) CommittedOffsets(n int32) (map[string]int64, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	p := &Partition{s: s, id: n}
	return p.Offsets()
}

// CountCustomers returns the number of committed customer records of
// partition n.
func (s *Store) CountCustomers(n int32) (int64, error) {
	return guard1(s.h, "count customers", func() (int64, error) { return s.countCustomers(n) })
}

func (s *Store) countCustomers(n int32) (int64, error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	prefix := partPrefix(ksCustomer, n)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	var c int64
	for it.First(); it.Valid(); it.Next() {
		c++
	}
	return c, it.Error()
}

// PartitionsWithCustomers lists the partitions that hold customer records.
func (s *Store) PartitionsWithCustomers() ([]int32, error) {
	return guard1(s.h, "list partitions", s.partitionsWithCustomers)
}

func (s *Store) partitionsWithCustomers() ([]int32, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{ksCustomer}, UpperBound: []byte{ksCustomer + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []int32
	for ok := it.First(); ok; {
		k := it.Key()
		if len(k) < 5 {
			return nil, fmt.Errorf("%w: customer key %x", ErrCorrupt, k)
		}
		p := int32(binary.BigEndian.Uint32(k[1:5]))
		out = append(out, p)
		// Jump to the next partition.
		ok = it.SeekGE(partPrefix(ksCustomer, p+1))
	}
	return out, it.Error()
}

// Scrub rewrites the store so that deleted data leaves the data files and
// the manifest: it flushes the memtable and compacts everything, three
// times, which makes Pebble roll the MANIFEST over twice (it keeps one
// previous manifest). Write-ahead log segments that held the data are
// obsolete afterwards; Pebble keeps a few for reuse until the store is
// closed and opened again, which removes them. So: delete, Scrub, Close,
// Open leaves no byte of a deleted customer in the directory (tested).
// It costs three full compactions; run it as maintenance, not per delete.
func (s *Store) Scrub() error {
	if s.isClosed() {
		return ErrClosed
	}
	for i := 0; i < 3; i++ {
		if err := s.Compact(); err != nil {
			return fmt.Errorf("scrub: %w", err)
		}
	}
	return nil
}

// DiskUsage is the estimated on-disk bytes of each part of the store.
type DiskUsage struct {
	Customers, Timers, Outbox, Other uint64
}

// DiskUsage estimates the bytes each keyspace takes in the store's files
// (Pebble's estimate: whole sstables, prorated where they span keyspaces).
func (s *Store) DiskUsage() (DiskUsage, error) {
	return guard1(s.h, "disk usage", s.diskUsage)
}

func (s *Store) diskUsage() (DiskUsage, error) {
	if s.isClosed() {
		return DiskUsage{}, ErrClosed
	}
	var u DiskUsage
	total, err := s.db.EstimateDiskUsage([]byte{0}, []byte{0xff, 0xff})
	if err != nil {
		return u, fmt.Errorf("estimate disk usage: %w", err)
	}
	for _, ks := range []struct {
		b   byte
		dst *uint64
	}{{ksCustomer, &u.Customers}, {ksTimer, &u.Timers}, {ksOutbox, &u.Outbox}} {
		n, err := s.db.EstimateDiskUsage([]byte{ks.b}, []byte{ks.b + 1})
		if err != nil {
			return u, fmt.Errorf("estimate disk usage of %q: %w", ks.b, err)
		}
		*ks.dst = n
	}
	if sum := u.Customers + u.Timers + u.Outbox; total > sum {
		u.Other = total - sum
	}
	return u, nil
}

// RangeCommitted calls fn with every committed customer record of
// partition n, undecoded, in id order, from a consistent snapshot. Safe to
// call from any goroutine while the partition's task runs (it sees the
// last commit, not the cache). data is valid only during fn.
func (s *Store) RangeCommitted(n int32, fn func(customerID string, data []byte) error) error {
	return s.h.guard("range", func() error { return s.rangeCommitted(n, fn) })
}

func (s *Store) rangeCommitted(n int32, fn func(customerID string, data []byte) error) error {
	if s.isClosed() {
		return ErrClosed
	}
	prefix := partPrefix(ksCustomer, n)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		data, err := openEnvelope(it.Value())
		if err != nil {
			return fmt.Errorf("customer %q: %w", it.Key()[len(prefix):], err)
		}
		if err := fn(string(it.Key()[len(prefix):]), data); err != nil {
			return err
		}
	}
	return it.Error()
}
