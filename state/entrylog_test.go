package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// openChangelogPartition opens partition 0 of s with the changelog on.
func openChangelogPartition(t *testing.T, s *Store) *Partition {
	t.Helper()
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.EnableChangelog(); err != nil {
		p.Close()
		t.Fatal(err)
	}
	return p
}

// commitOffsets commits one entry per offset in [from, to], each setting
// offset i and a customer record naming i.
func commitOffsets(t *testing.T, p *Partition, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		p.SetOffset("in", int64(i))
		if err := p.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// pendingOffsets returns the pending entries as "seq:offset" words.
func pendingOffsets(t *testing.T, p *Partition) string {
	t.Helper()
	return changelogOffsets(t, p, 0, 1<<20)
}

// changelogOffsets returns up to limit pending entries after sequence
// after as "seq:offset" words (offset -1: the entry sets none).
func changelogOffsets(t *testing.T, p *Partition, after uint64, limit int) string {
	t.Helper()
	var got []string
	err := p.ReadChangelog(after, limit, func(seq uint64, entry []byte) error {
		off := int64(-1)
		err := ForEachChangelogOp(entry, func(op ChangelogOp) error {
			if op.Key[0] == ksOffset {
				off = int64(binary.BigEndian.Uint64(op.Value))
			}
			return nil
		})
		got = append(got, fmt.Sprintf("%d:%d", seq, off))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(got, " ")
}

// pendingEntries returns copies of the pending entries by sequence.
func pendingEntries(t *testing.T, p *Partition) map[uint64][]byte {
	t.Helper()
	out := map[uint64][]byte{}
	err := p.ReadChangelog(0, 1<<20, func(seq uint64, entry []byte) error {
		out[seq] = bytes.Clone(entry)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func logFiles(t *testing.T, fs vfs.FS, n int32) []string {
	t.Helper()
	names, err := fs.List(entryLogPath(fs, "db", n))
	if err != nil && !oserrNotExist(err) {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// TestChangelogEntriesSurviveReopen: pending entries are read back after
// the store is closed and opened again, those Kafka confirmed are gone,
// and the sequence goes on where it was.
func TestChangelogEntriesSurviveReopen(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	p := openChangelogPartition(t, s)
	commitOffsets(t, p, 1, 5)
	if err := p.ChangelogSent(2, 40); err != nil {
		t.Fatal(err)
	}
	p.Close()
	s.Close()

	s = openMem(t, fs, Options{})
	defer s.Close()
	p = openChangelogPartition(t, s)
	defer p.Close()
	if got, want := pendingOffsets(t, p), "3:3 4:4 5:5"; got != want {
		t.Fatalf("pending after reopen %q, want %q", got, want)
	}
	commitOffsets(t, p, 6, 6)
	if got, want := pendingOffsets(t, p), "3:3 4:4 5:5 6:6"; got != want {
		t.Fatalf("pending after a commit %q, want %q", got, want)
	}
	if got := p.ChangelogDepth(); got != 4 {
		t.Fatalf("depth %d, want 4", got)
	}
}

// TestChangelogLogCutsEntriesWhoseCommitDidNotLand: a crash after the
// log append and before Pebble's commit leaves an entry (and maybe a
// torn frame or an empty file) past the committed sequence; the next open
// removes it and the next commit takes its sequence.
func TestChangelogLogCutsEntriesWhoseCommitDidNotLand(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	p := openChangelogPartition(t, s)
	commitOffsets(t, p, 1, 3)
	p.Close()
	s.Close()

	dir := entryLogPath(fs, "db", 0)
	l, err := openEntryLog(fs, dir, 0, 3, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.append(4, []byte("not a batch: never committed")); err != nil {
		t.Fatal(err)
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	// A torn frame in a file of its own, and an empty file.
	for name, data := range map[string][]byte{entryFileName(5): {0, 0, 0, 9, 1, 2}, entryFileName(6): nil} {
		f, err := fs.Create(fs.PathJoin(dir, name), vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(data)
		f.Close()
	}

	s = openMem(t, fs, Options{})
	defer s.Close()
	p = openChangelogPartition(t, s)
	defer p.Close()
	if got, want := pendingOffsets(t, p), "1:1 2:2 3:3"; got != want {
		t.Fatalf("pending %q, want %q", got, want)
	}
	if got := logFiles(t, fs, 0); len(got) != 1 {
		t.Fatalf("log files %q, want the first alone", got)
	}
	commitOffsets(t, p, 4, 4)
	if got, want := pendingOffsets(t, p), "1:1 2:2 3:3 4:4"; got != want {
		t.Fatalf("pending %q, want %q", got, want)
	}
}

// writeStoreWithLogGap leaves in fs a closed store whose partition 0
// committed changelog entries 1 to 3 (offsets 1 to 3), Kafka confirmed 1
// (end offset 7), and whose log then lost entry 3, as an OS crash can.
func writeStoreWithLogGap(t *testing.T, fs vfs.FS) {
	t.Helper()
	s := openMem(t, fs, Options{})
	p := openChangelogPartition(t, s)
	commitOffsets(t, p, 1, 3)
	if err := p.ChangelogSent(1, 7); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if why, err := s.RepairChangelog(0); err != nil || why != "" {
		t.Fatalf("repair of a whole log: %q, %v", why, err)
	}
	s.Close()
	// Opening the log as if only 2 were committed cuts entry 3.
	l, err := openEntryLog(fs, entryLogPath(fs, "db", 0), 1, 2, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.close()
}

// TestReseedRepairsALogGap: Reseed of a partition whose log has a hole,
// called without RepairChangelog first, repairs it too: its entries are
// the whole state, from the sequence after the lost one, and the
// partition opens.
func TestReseedRepairsALogGap(t *testing.T) {
	fs := vfs.NewMem()
	writeStoreWithLogGap(t, fs)
	s := openMem(t, fs, Options{})
	defer s.Close()
	n, err := s.Reseed(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("reseed queued %d entries, want 1", n)
	}
	if _, ok, err := s.SyncedEnd(0); err != nil || ok {
		t.Fatalf("synced end still known after the reseed (ok %v, err %v)", ok, err)
	}
	p := openChangelogPartition(t, s)
	defer p.Close()
	// Entry 4 is the reseed: the state's offset (3) among its keys.
	if got, want := pendingOffsets(t, p), "4:3"; got != want {
		t.Fatalf("pending after the reseed %q, want %q", got, want)
	}
}

// TestChangelogLogGapIsRepaired: a log that lost committed entries (an
// OS crash) fails the partition's open with ErrChangelogGap until
// RepairChangelog drops the pending entries and the synced offset.
func TestChangelogLogGapIsRepaired(t *testing.T) {
	fs := vfs.NewMem()
	writeStoreWithLogGap(t, fs)
	s := openMem(t, fs, Options{})
	defer s.Close()
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.EnableChangelog(); !errors.Is(err, ErrChangelogGap) {
		t.Fatalf("EnableChangelog: %v, want ErrChangelogGap", err)
	}
	p.Close()
	why, err := s.RepairChangelog(0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(why, "entries 3 to 3 are missing") {
		t.Fatalf("repair says %q", why)
	}
	if _, ok, err := s.SyncedEnd(0); err != nil || ok {
		t.Fatalf("synced end still known after the repair (ok %v, err %v)", ok, err)
	}
	p = openChangelogPartition(t, s)
	defer p.Close()
	if got := pendingOffsets(t, p); got != "" {
		t.Fatalf("pending after the repair %q, want none", got)
	}
	commitOffsets(t, p, 4, 4)
	if got, want := pendingOffsets(t, p), "4:4"; got != want {
		t.Fatalf("pending %q, want %q", got, want)
	}
}

// TestChangelogLogReleaseRemovesFiles: with a file per entry, confirming
// entries removes their files, and only theirs.
func TestChangelogLogReleaseRemovesFiles(t *testing.T) {
	defer func(n int64) { entryLogSegmentBytes = n }(entryLogSegmentBytes)
	entryLogSegmentBytes = 1
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	defer s.Close()
	p := openChangelogPartition(t, s)
	defer p.Close()
	commitOffsets(t, p, 1, 4)
	if got := logFiles(t, fs, 0); len(got) != 4 {
		t.Fatalf("log files %q, want 4", got)
	}
	if err := p.ChangelogSent(3, 9); err != nil {
		t.Fatal(err)
	}
	if got, want := logFiles(t, fs, 0), []string{entryFileName(4)}; !slices.Equal(got, want) {
		t.Fatalf("log files %q, want %q", got, want)
	}
	if got, want := pendingOffsets(t, p), "4:4"; got != want {
		t.Fatalf("pending %q, want %q", got, want)
	}
}

// TestEntryLogUnappend: an entry taken back (its commit failed) is
// replaced by the next append, also after a reopen.
func TestEntryLogUnappend(t *testing.T) {
	fs := vfs.NewMem()
	dir := "log"
	l, err := openEntryLog(fs, dir, 0, 0, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []struct {
		seq  uint64
		data string
	}{{1, "one"}, {2, "two, not committed"}} {
		if err := l.append(e.seq, []byte(e.data)); err != nil {
			t.Fatal(err)
		}
	}
	l.unappend(2)
	if err := l.append(2, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if err := l.append(3, []byte("three")); err != nil {
		t.Fatal(err)
	}
	read := func(l *entryLog) string {
		var got []string
		if err := l.read(0, 3, 10, func(seq uint64, e []byte) error {
			got = append(got, fmt.Sprintf("%d:%s", seq, e))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return strings.Join(got, " ")
	}
	want := "1:one 2:two 3:three"
	if got := read(l); got != want {
		t.Fatalf("read %q, want %q", got, want)
	}
	l.close()
	l, err = openEntryLog(fs, dir, 0, 3, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	if got := read(l); got != want {
		t.Fatalf("read after reopen %q, want %q", got, want)
	}
}

// TestChangelogFormat1IsMigrated: a store of format 1 (pending entries
// in 'l' keys) opens with the same pending entries, now in the log.
func TestChangelogFormat1IsMigrated(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	p := openChangelogPartition(t, s)
	commitOffsets(t, p, 1, 3)
	want := pendingEntries(t, p)
	p.Close()
	// Turn it into what format 1 wrote: entries 2 and 3 pending as keys,
	// 1 confirmed (deleted), no 'L' key, no log.
	b := s.db.NewBatch()
	for seq := uint64(2); seq <= 3; seq++ {
		b.Set(changelogKey(nil, 0, seq), want[seq], nil)
	}
	b.Delete(partPrefix(ksChangelogSent, 0), nil)
	b.Set(formatKey, []byte{1}, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := fs.RemoveAll(fs.PathJoin("db", entryLogDir)); err != nil {
		t.Fatal(err)
	}

	s = openMem(t, fs, Options{})
	defer s.Close()
	p = openChangelogPartition(t, s)
	defer p.Close()
	got := pendingEntries(t, p)
	if len(got) != 2 || !bytes.Equal(got[2], want[2]) || !bytes.Equal(got[3], want[3]) {
		t.Fatalf("pending after migration: %d entries (%v), want entries 2 and 3 as committed", len(got), slices.Sorted(maps.Keys(got)))
	}
	if v, closer, err := s.db.Get(formatKey); err != nil || v[0] != FormatVersion {
		t.Fatalf("format after migration: %v %v", v, err)
	} else {
		closer.Close()
	}
	it, _ := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{ksChangelog}, UpperBound: []byte{ksChangelog + 1}})
	if it.First() {
		t.Fatalf("an 'l' key is left: %x", it.Key())
	}
	it.Close()
	commitOffsets(t, p, 4, 4)
	if got, want := pendingOffsets(t, p), "2:2 3:3 4:4"; got != want {
		t.Fatalf("pending %q, want %q", got, want)
	}
}

// TestCheckpointCarriesPendingChangelog: a checkpoint opens with the
// entries that were pending when it was taken.
func TestCheckpointCarriesPendingChangelog(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	p := openChangelogPartition(t, s)
	commitOffsets(t, p, 1, 3)
	if err := s.Checkpoint("ckpt"); err != nil {
		t.Fatal(err)
	}
	commitOffsets(t, p, 4, 4)
	p.Close()
	s.Close()
	c, err := Open("ckpt", Options{FS: fs, Decode: decodeTest})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p = openChangelogPartition(t, c)
	defer p.Close()
	if got, want := pendingOffsets(t, p), "1:1 2:2 3:3"; got != want {
		t.Fatalf("pending in the checkpoint %q, want %q", got, want)
	}
}

// TestChangelogAfterOSCrash simulates OS crashes (the unsynced part of
// every file kept at random) after a run of commits: with
// Options.Sync SyncCommit nothing committed is lost; without, the log is
// either whole, with every pending entry exactly as committed, or the
// partition reports the gap, and after RepairChangelog opens clean.
func TestChangelogAfterOSCrash(t *testing.T) {
	defer func(n int64) { entryLogSegmentBytes = n }(entryLogSegmentBytes)
	entryLogSegmentBytes = 600 // a few entries a file
	run := func(t *testing.T, sync SyncPolicy) (*vfs.MemFS, map[uint64][]byte) {
		fs := vfs.NewCrashableMem()
		s := openMem(t, fs, Options{Sync: sync})
		p := openChangelogPartition(t, s)
		for i := 1; i <= 30; i++ {
			p.SetOffset("in", int64(i))
			p.SetOffset(strings.Repeat("t", i), int64(i))
			if err := p.Commit(); err != nil {
				t.Fatal(err)
			}
			if i%7 == 0 {
				if err := p.ChangelogSent(uint64(i-3), int64(i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if sync == SyncNone {
			// Pebble's WAL synced, the log not: what an OS crash right
			// after Pebble synced its WAL (a full memtable) leaves.
			if err := s.db.LogData(nil, pebble.Sync); err != nil {
				t.Fatal(err)
			}
		}
		all := pendingEntries(t, p)
		// The clones are taken from the store still open, as at a power
		// cut.
		t.Cleanup(func() { p.Close(); s.Close() })
		return fs, all
	}
	check := func(t *testing.T, fs vfs.FS, committed map[uint64][]byte) (gap bool) {
		s := openMem(t, fs, Options{})
		defer s.Close()
		why, err := s.RepairChangelog(0)
		if err != nil {
			t.Fatal(err)
		}
		p := openChangelogPartition(t, s)
		defer p.Close()
		got := pendingEntries(t, p)
		if why != "" {
			if len(got) != 0 {
				t.Fatalf("%d entries pending after a repair", len(got))
			}
			return true
		}
		next, released, err := s.changelogBounds(0)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(got)) != next-1-released {
			t.Fatalf("%d entries pending, the store committed %d after %d", len(got), next-1-released, released)
		}
		for seq, e := range got {
			if want, ok := committed[seq]; ok && !bytes.Equal(e, want) {
				t.Fatalf("entry %d differs from what was committed", seq)
			}
		}
		return false
	}
	t.Run("sync", func(t *testing.T) {
		fs, committed := run(t, SyncCommit)
		if check(t, fs.CrashClone(vfs.CrashCloneCfg{}), committed) {
			t.Fatal("a synced commit's entry was lost")
		}
	})
	t.Run("no sync", func(t *testing.T) {
		fs, committed := run(t, SyncNone)
		// Both outcomes, each made certain: a crash that keeps every
		// unsynced write leaves the log whole; one that keeps none loses
		// the log's entries that Pebble's synced WAL committed.
		if check(t, fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(0, 1))}), committed) {
			t.Fatal("a crash that kept every write reported a gap")
		}
		if !check(t, fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0}), committed) {
			t.Fatal("a crash that kept no unsynced write left a whole log")
		}
		// Crashes between: either outcome, never wrong entries (check).
		// Which one a seed gives depends on Pebble's background writes,
		// so only the two above are required.
		outcomes := map[bool]int{}
		for seed := int64(1); seed < 20; seed++ {
			clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: int(seed * 5), RNG: rand.New(rand.NewPCG(uint64(seed), 1))})
			outcomes[check(t, clone, committed)]++
		}
		t.Logf("partial crashes: whole logs %d, gaps repaired %d", outcomes[false], outcomes[true])
	})
}

// FuzzEntryLogOpen feeds arbitrary bytes as a log file: opening never
// panics, keeps only whole frames in sequence, and reads back exactly
// the entries it reports.
func FuzzEntryLogOpen(f *testing.F) {
	good := vfs.NewMem()
	l, err := openEntryLog(good, "log", 0, 0, false, nil)
	if err != nil {
		f.Fatal(err)
	}
	l.append(1, []byte("first entry"))
	l.append(2, []byte("second"))
	l.close()
	seed, err := good.Open(good.PathJoin("log", entryFileName(1)))
	if err != nil {
		f.Fatal(err)
	}
	st, _ := seed.Stat()
	whole := make([]byte, st.Size())
	seed.ReadAt(whole, 0)
	seed.Close()
	f.Add(whole, uint8(2))
	f.Add(whole[:len(whole)-3], uint8(2))
	f.Add(whole, uint8(1))
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'x'}, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, committed uint8) {
		fs := vfs.NewMem()
		fs.MkdirAll("log", 0o755)
		w, err := fs.Create(fs.PathJoin("log", entryFileName(1)), vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
		l, err := openEntryLog(fs, "log", 0, uint64(committed), false, nil)
		if err != nil {
			if !errors.Is(err, ErrChangelogGap) {
				t.Fatalf("open: %v", err)
			}
			if committed == 0 {
				t.Fatalf("a gap with nothing committed: %v", err)
			}
			return
		}
		defer l.close()
		n := uint64(0)
		err = l.read(0, uint64(committed), 1<<20, func(seq uint64, e []byte) error {
			n++
			if seq != n || len(e) == 0 {
				t.Fatalf("entry %d read as %d (%d bytes)", n, seq, len(e))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n != uint64(committed) {
			t.Fatalf("%d entries read, %d committed", n, committed)
		}
		// Appends go on after whatever was kept.
		if err := l.append(n+1, []byte("next")); err != nil {
			t.Fatal(err)
		}
	})
}
