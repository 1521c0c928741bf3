package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	iofs "io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The pending changelog entries of a partition live in an append-only log
// of their own beside Pebble, not in Pebble keys: an entry is written once
// (a Pebble key was written to the WAL and the memtable, flushed to an
// sstable, read back and deleted, roughly doubling a commit's cost to the
// store). Layout: <store dir>/changelog/<partition>/<first seq>.clog,
// each file a run of frames
//
//	payload length (4 bytes BE) | CRC-32C of seq and payload (4) | seq (8 BE) | payload
//
// with consecutive sequence numbers, the first the file's name. Pebble
// stays the authority on which entries exist: its commit batch carries the
// next sequence ('k') and the changelog publisher's batch the last one
// Kafka confirmed ('L'). A commit appends its entry here BEFORE committing
// the batch, so after a process crash the log holds every committed entry
// and at most one more (cut off when the partition reopens). An OS crash
// can lose the log's tail (writes are not synced unless Options.Sync is
// SyncCommit) while Pebble kept the commits: openEntryLog reports that as
// ErrChangelogGap and Store.RepairChangelog turns it into a restore (or a
// reseed) of the partition.

// ErrChangelogGap means a partition's changelog log lost committed entries
// that Kafka has not confirmed (the tail of a file lost in an OS crash, or
// files deleted by hand): the partition's changelog topic misses commits
// the local state has. See Store.RepairChangelog.
var ErrChangelogGap = errors.New("state: the changelog log lost committed entries")

const (
	// entryLogDir is the directory, inside the store's, of every
	// partition's log.
	entryLogDir = "changelog"
	// entryLogExt names a log file.
	entryLogExt = ".clog"
	// entryHeaderBytes is a frame's header.
	entryHeaderBytes = 16
	// maxEntryBytes bounds a frame's payload: larger lengths are damage.
	// A commit's entry is cut at a few MiB (ChangelogCommitBytes).
	maxEntryBytes = 256 << 20
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// entryLogSegmentBytes is the size after which appends go to a new file,
// so that released entries leave the disk a file at a time. A variable
// for tests.
var entryLogSegmentBytes int64 = 64 << 20

// releaseFilesEvery is how often a log removes a lone file of sent
// entries (each removal costs a sync of the store); two or more go at
// once.
const releaseFilesEvery = 5 * time.Second

// entryLog is one partition's log. Appends come from the goroutine that
// commits; reads and releases from the changelog publisher; mu guards
// everything.
type entryLog struct {
	fs   vfs.FS
	dir  string
	sync bool // SyncData after each append (Options.Sync == SyncCommit)
	// copying, shared by the store, is write-locked while a checkpoint
	// copies the logs: files are deleted only under its read lock.
	copying *sync.RWMutex
	// durable, if set, makes the store's last commits durable (release).
	durable    func() error
	lastRemove time.Time

	mu      sync.Mutex
	files   []*logFile // in sequence order; the last may be active
	entries []logEntry // the entries after the released ones
	next    uint64     // the sequence the next append must carry
	// active is the file appends go to; nil until the first append after
	// an open or a roll.
	active *logFile
	broken error // an append failed half-way: the file's tail is unknown
	closed bool
	wbuf   []byte // appends' (under mu)
	buf    []byte // reads' (under mu)
}

// readBufRetainBytes is the largest read buffer a log keeps.
const readBufRetainBytes = 8 << 20

type logFile struct {
	name        string
	first, last uint64 // sequences it holds; last < first when empty
	f           vfs.File
	size        int64
}

type logEntry struct {
	seq  uint64
	file *logFile
	off  int64 // of the payload
	n    int32
}

func entryLogPath(fs vfs.FS, storeDir string, p int32) string {
	return fs.PathJoin(storeDir, entryLogDir, strconv.Itoa(int(p)))
}

func entryFileName(first uint64) string {
	return fmt.Sprintf("%020d%s", first, entryLogExt)
}

// openEntryLog opens the log in dir for a partition whose entries up to
// released are confirmed and up to committed exist (Pebble's view). It
// cuts off entries after committed (appended by a commit that did not
// land) and returns an error wrapping ErrChangelogGap when an entry in
// (released, committed] is missing or damaged.
func openEntryLog(fs vfs.FS, dir string, released, committed uint64, sync bool, copying *sync.RWMutex) (*entryLog, error) {
	l := &entryLog{fs: fs, dir: dir, sync: sync, copying: copying, next: committed + 1}
	if err := l.load(released, committed); err != nil {
		l.closeFiles()
		return nil, fmt.Errorf("changelog log %s: %w", dir, err)
	}
	return l, nil
}

// load scans the files, keeps the entries in (released, committed] and
// removes everything else.
func (l *entryLog) load(released, committed uint64) error {
	names, err := l.fs.List(l.dir)
	if err != nil {
		if oserrNotExist(err) {
			names = nil
		} else {
			return err
		}
	}
	type named struct {
		first uint64
		name  string
	}
	var found []named
	for _, name := range names {
		if strings.HasSuffix(name, ".tmp") {
			// A rewrite that did not finish.
			if err := l.fs.Remove(l.fs.PathJoin(l.dir, name)); err != nil {
				return err
			}
			continue
		}
		first, ok := parseEntryFileName(name)
		if !ok {
			return fmt.Errorf("%w: unexpected file %q", ErrCorrupt, name)
		}
		found = append(found, named{first, name})
	}
	slices.SortFunc(found, func(a, b named) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	// Walk the frames while they are whole and consecutive; whatever
	// follows the first damage is lost.
	var expect uint64 // 0: the first file's name
	stop := false
	var remove []string
	for _, nf := range found {
		path := l.fs.PathJoin(l.dir, nf.name)
		if stop || (expect != 0 && nf.first != expect) || nf.first > committed {
			stop = stop || (expect != 0 && nf.first != expect)
			remove = append(remove, path)
			continue
		}
		f, err := l.fs.Open(path)
		if err != nil {
			return err
		}
		lf := &logFile{name: nf.name, first: nf.first, last: nf.first - 1, f: f}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		fileSize := st.Size()
		whole := fileSize > 0 // an empty file: created, then a crash
		for lf.size < fileSize {
			seq, n, ok, err := l.readFrame(f, lf.size, fileSize)
			if err != nil {
				return err
			}
			if !ok || seq != lf.last+1 {
				whole = false
				break
			}
			if seq > committed {
				whole = false // a commit that did not land: cut here
				break
			}
			if seq > released {
				l.entries = append(l.entries, logEntry{seq: seq, file: lf, off: lf.size + entryHeaderBytes, n: int32(n)})
			}
			lf.last = seq
			lf.size += entryHeaderBytes + int64(n)
		}
		l.files = append(l.files, lf)
		expect = lf.last + 1
		if !whole {
			// Damage ends a file, not the log: a later file whose
			// name is the next sequence goes on (an entry taken back
			// by unappend is followed by a new file).
			if err := l.cut(lf); err != nil {
				return err
			}
		}
	}
	for _, path := range remove {
		if err := l.fs.Remove(path); err != nil {
			return err
		}
	}
	if cap(l.buf) > readBufRetainBytes {
		l.buf = nil // the scan's, sized by the largest entry
	}
	// Files that hold only released entries go now.
	if err := l.releaseFiles(released); err != nil {
		return err
	}
	if committed > released {
		switch {
		case len(l.entries) == 0:
			return fmt.Errorf("%w: entries %d to %d are missing", ErrChangelogGap, released+1, committed)
		case l.entries[0].seq != released+1:
			return fmt.Errorf("%w: entries %d to %d are missing", ErrChangelogGap, released+1, l.entries[0].seq-1)
		case l.entries[len(l.entries)-1].seq != committed:
			return fmt.Errorf("%w: entries %d to %d are missing", ErrChangelogGap, l.entries[len(l.entries)-1].seq+1, committed)
		}
	}
	return nil
}

func parseEntryFileName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, entryLogExt)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil && n > 0
}

func oserrNotExist(err error) bool {
	return errors.Is(err, iofs.ErrNotExist)
}

// readFrame reads the frame at off of a file of size bytes: ok is false
// when it is incomplete or damaged.
func (l *entryLog) readFrame(f vfs.File, off, size int64) (seq uint64, n int, ok bool, err error) {
	var hdr [entryHeaderBytes]byte
	if size-off < entryHeaderBytes {
		return 0, 0, false, nil
	}
	if _, err := f.ReadAt(hdr[:], off); err != nil {
		return 0, 0, false, err
	}
	n64 := int64(binary.BigEndian.Uint32(hdr[:4]))
	if n64 == 0 || n64 > maxEntryBytes || size-off-entryHeaderBytes < n64 {
		return 0, 0, false, nil
	}
	if int64(cap(l.buf)) < n64 {
		l.buf = make([]byte, n64)
	}
	payload := l.buf[:n64]
	if _, err := f.ReadAt(payload, off+entryHeaderBytes); err != nil {
		return 0, 0, false, err
	}
	crc := crc32.Update(crc32.Checksum(hdr[8:16], crc32c), crc32c, payload)
	if crc != binary.BigEndian.Uint32(hdr[4:8]) {
		return 0, 0, false, nil
	}
	return binary.BigEndian.Uint64(hdr[8:16]), int(n64), true, nil
}

// cut rewrites lf to hold only its first lf.size bytes (its whole frames
// up to lf.last), through a temporary file renamed over it: the
// filesystem abstraction has no truncate. An emptied file is removed.
func (l *entryLog) cut(lf *logFile) error {
	path := l.fs.PathJoin(l.dir, lf.name)
	if lf.size == 0 {
		l.files = l.files[:len(l.files)-1]
		return errors.Join(lf.f.Close(), l.fs.Remove(path))
	}
	tmp := path + ".tmp"
	out, err := l.fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, io.NewSectionReader(lf.f, 0, lf.size)); err != nil {
		out.Close()
		return err
	}
	if err := errors.Join(out.Sync(), out.Close(), lf.f.Close()); err != nil {
		return err
	}
	if err := l.fs.Rename(tmp, path); err != nil {
		return err
	}
	if lf.f, err = l.fs.Open(path); err != nil {
		return err
	}
	return l.syncDir()
}

func (l *entryLog) syncDir() error { return syncDir(l.fs, l.dir) }

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// append writes the entry seq, which must be the next one. On an error
// the log takes no more appends (the partition's commit fails).
func (l *entryLog) append(seq uint64, payload []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return ErrClosed
	case l.broken != nil:
		return l.broken
	case seq != l.next:
		return fmt.Errorf("changelog log %s: append of entry %d, expected %d", l.dir, seq, l.next)
	case len(payload) == 0 || len(payload) > maxEntryBytes:
		return fmt.Errorf("changelog log %s: entry %d is %d bytes", l.dir, seq, len(payload))
	}
	err := l.appendLocked(seq, payload)
	if err != nil {
		l.broken = fmt.Errorf("changelog log %s: %w", l.dir, err)
		return l.broken
	}
	return nil
}

func (l *entryLog) appendLocked(seq uint64, payload []byte) error {
	if l.active != nil && l.active.size+entryHeaderBytes+int64(len(payload)) > entryLogSegmentBytes && l.active.size > 0 {
		l.active = nil
	}
	if l.active == nil {
		if err := l.fs.MkdirAll(l.dir, 0o755); err != nil {
			return err
		}
		name := entryFileName(seq)
		f, err := l.fs.Create(l.fs.PathJoin(l.dir, name), vfs.WriteCategoryUnspecified)
		if err != nil {
			return err
		}
		l.active = &logFile{name: name, first: seq, last: seq - 1, f: f}
		l.files = append(l.files, l.active)
		if l.sync {
			// The file's name, and the directories' own (MkdirAll
			// may have just made them), must outlive an OS crash.
			for _, d := range []string{l.dir, l.fs.PathDir(l.dir), l.fs.PathDir(l.fs.PathDir(l.dir))} {
				if err := syncDir(l.fs, d); err != nil {
					return err
				}
			}
		}
	}
	a := l.active
	// The frame is built in a buffer of the log's: a vfs.File may
	// scribble over what it was given to write (Pebble's in-memory file
	// system does, in its invariants builds), and the payload is the
	// commit's batch, still to be committed.
	if cap(l.wbuf) > readBufRetainBytes {
		l.wbuf = nil
	}
	frame := append(l.wbuf[:0], make([]byte, entryHeaderBytes)...)
	frame = append(frame, payload...)
	binary.BigEndian.PutUint32(frame[:4], uint32(len(payload)))
	binary.BigEndian.PutUint64(frame[8:16], seq)
	binary.BigEndian.PutUint32(frame[4:8], crc32.Update(crc32.Checksum(frame[8:16], crc32c), crc32c, payload))
	l.wbuf = frame
	if _, err := a.f.Write(frame); err != nil {
		return err
	}
	if l.sync {
		if err := a.f.SyncData(); err != nil {
			return err
		}
	}
	l.entries = append(l.entries, logEntry{seq: seq, file: a, off: a.size + entryHeaderBytes, n: int32(len(payload))})
	a.size += entryHeaderBytes + int64(len(payload))
	a.last = seq
	l.next = seq + 1
	return nil
}

// unappend takes back the last entry, seq, whose commit failed: its frame
// is overwritten with zeroes (so a later scan stops there) and the next
// append starts a new file.
func (l *entryLog) unappend(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) == 0 || l.entries[len(l.entries)-1].seq != seq || l.active == nil {
		return
	}
	e := l.entries[len(l.entries)-1]
	l.entries = l.entries[:len(l.entries)-1]
	l.next = seq
	var zero [entryHeaderBytes]byte
	if _, err := e.file.f.WriteAt(zero[:], e.off-entryHeaderBytes); err != nil && l.broken == nil {
		l.broken = fmt.Errorf("changelog log %s: take back entry %d: %w", l.dir, seq, err)
	}
	e.file.last = seq - 1
	l.active = nil
}

// read calls fn for up to limit entries with a sequence in (after, upTo],
// in order. entry is valid only during fn.
func (l *entryLog) read(after, upTo uint64, limit int, fn func(seq uint64, entry []byte) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	defer func() {
		if cap(l.buf) > readBufRetainBytes {
			l.buf = nil
		}
	}()
	i, _ := slices.BinarySearchFunc(l.entries, after+1, func(e logEntry, seq uint64) int {
		switch {
		case e.seq < seq:
			return -1
		case e.seq > seq:
			return 1
		}
		return 0
	})
	for n := 0; i < len(l.entries) && n < limit && l.entries[i].seq <= upTo; i, n = i+1, n+1 {
		e := l.entries[i]
		if cap(l.buf) < int(e.n) {
			l.buf = make([]byte, e.n)
		}
		buf := l.buf[:e.n]
		if _, err := e.file.f.ReadAt(buf, e.off); err != nil {
			return fmt.Errorf("changelog log %s: read entry %d: %w", l.dir, e.seq, err)
		}
		if err := fn(e.seq, buf); err != nil {
			return err
		}
	}
	return nil
}

// removeSent deletes the files that hold only entries up to upTo, which
// forget dropped (Kafka has them).
func (l *entryLog) removeSent(upTo uint64) error {
	// Files go only once the record that their entries were sent is
	// durable: Pebble's commits are not synced, and a crash that lost
	// that record would find the entries neither in the log nor
	// confirmed. One sync (outside the lock: commits go on) per removal.
	if l.durable != nil {
		if err := l.durable(); err != nil {
			return fmt.Errorf("changelog log %s: sync before removing sent entries: %w", l.dir, err)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.lastRemove = time.Now()
	return l.releaseFiles(upTo)
}

// forget drops the entries up to upTo from the index and reports whether
// files of them are due for removal.
func (l *entryLog) forget(upTo uint64) (due bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false, ErrClosed
	}
	n := 0
	for n < len(l.entries) && l.entries[n].seq <= upTo {
		n++
	}
	l.entries = slices.Delete(l.entries, 0, n)
	deletable := 0
	for _, lf := range l.files {
		if lf.last > upTo || lf.last < lf.first {
			break
		}
		deletable++
	}
	return deletable > 1 || (deletable == 1 && time.Since(l.lastRemove) >= releaseFilesEvery), nil
}

func (l *entryLog) releaseFiles(upTo uint64) error {
	if l.copying != nil {
		if !l.copying.TryRLock() {
			return nil // a checkpoint is copying the files: later
		}
		defer l.copying.RUnlock()
	}
	n := 0
	for n < len(l.files) && l.files[n].last <= upTo && l.files[n].last >= l.files[n].first {
		lf := l.files[n]
		if lf == l.active {
			l.active = nil
		}
		if err := errors.Join(lf.f.Close(), l.fs.Remove(l.fs.PathJoin(l.dir, lf.name))); err != nil {
			return fmt.Errorf("changelog log %s: remove %s: %w", l.dir, lf.name, err)
		}
		n++
	}
	l.files = slices.Delete(l.files, 0, n)
	return nil
}

// copyLogFiles copies the log files in from (none if it does not exist)
// into to.
func copyLogFiles(src vfs.FS, from string, dst vfs.FS, to string) error {
	names, err := src.List(from)
	if err != nil {
		if oserrNotExist(err) {
			return nil
		}
		return err
	}
	if err := dst.MkdirAll(to, 0o755); err != nil {
		return err
	}
	for _, name := range names {
		if _, ok := parseEntryFileName(name); !ok {
			continue
		}
		if err := vfs.CopyAcrossFS(src, src.PathJoin(from, name), dst, dst.PathJoin(to, name)); err != nil {
			return err
		}
	}
	return nil
}

func (l *entryLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return l.closeFiles()
}

func (l *entryLog) closeFiles() error {
	var err error
	for _, lf := range l.files {
		err = errors.Join(err, lf.f.Close())
	}
	l.files, l.entries, l.active = nil, nil, nil
	return err
}
