package state

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/segd/segd/internal/faultfs"
)

// fillStore writes n customers to partition 0 of a store on fs and closes
// it, with everything flushed to sstables.
func fillStore(t *testing.T, fs vfs.FS, n int) {
	t.Helper()
	s := openMem(t, fs, Options{})
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("c%05d", i)
		rec, err := p.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		rec.(*testRecord).n = uint64(i)
		rec.(*testRecord).data = []byte(strings.Repeat("x", 100))
		p.MarkDirty(id, rec)
	}
	p.SetOffset("in", int64(n))
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// flipSSTByte flips one byte in the middle of the store's largest sstable
// (in its data blocks).
func flipSSTByte(t *testing.T, fs vfs.FS, dir string) string {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var best string
	var bestSize int64
	for _, name := range names {
		if !strings.HasSuffix(name, ".sst") {
			continue
		}
		st, err := fs.Stat(fs.PathJoin(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > bestSize {
			best, bestSize = name, st.Size()
		}
	}
	if best == "" {
		t.Fatalf("no sstable in %s: %v", dir, names)
	}
	path := fs.PathJoin(dir, best)
	f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off := bestSize / 3
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCorruptSSTableIsAnError flips one byte of an sstable: reading the
// store must return an error marked ErrCorrupt, never panic (Pebble's
// default reaction to corruption is a Fatalf).
func TestCorruptSSTableIsAnError(t *testing.T) {
	fs := vfs.NewMem()
	fillStore(t, fs, 2000)
	flipSSTByte(t, fs, "db")

	s, err := Open("db", Options{FS: fs, Decode: decodeTest, SkipVerify: true})
	if err != nil {
		t.Fatalf("open with SkipVerify: %v", err)
	}
	p, err := s.Partition(0)
	if err != nil {
		t.Fatalf("partition: %v", err)
	}
	var readErr error
	for i := 0; i < 2000 && readErr == nil; i++ {
		_, readErr = p.Get(fmt.Sprintf("c%05d", i))
	}
	if readErr == nil {
		readErr = p.Range(func(string, Record) error { return nil })
	}
	if !errors.Is(readErr, ErrCorrupt) {
		t.Fatalf("read a corrupt store: got %v, want an error wrapping ErrCorrupt", readErr)
	}
	t.Logf("read error: %v", readErr)
	// The store stays failed: no more reads of bad data.
	if _, _, err := s.Lookup(0, "c00001"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Lookup after corruption: got %v, want ErrCorrupt", err)
	}
	p.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("close a failed store: %v", err)
	}
	// The marker it left refuses the directory even without a check.
	if _, err := Open("db", Options{FS: fs, Decode: decodeTest, SkipVerify: true}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reopen after corruption: got %v, want ErrCorrupt", err)
	}
	if err := Wipe(fs, "db"); err != nil {
		t.Fatal(err)
	}
	s2 := openMem(t, fs, Options{})
	defer s2.Close()
	if n, err := s2.CountCustomers(0); err != nil || n != 0 {
		t.Fatalf("wiped store: %d customers, %v; want 0, nil", n, err)
	}
}

// TestOpenDetectsCorruptSSTable: Open verifies every block's checksum, so
// a flipped byte is found before any partition runs, named with the
// directory and how to recover.
func TestOpenDetectsCorruptSSTable(t *testing.T) {
	fs := vfs.NewMem()
	fillStore(t, fs, 2000)
	flipSSTByte(t, fs, "db")
	_, err := Open("db", Options{FS: fs, Decode: decodeTest})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open a corrupt store: got %v, want ErrCorrupt", err)
	}
	if !strings.Contains(err.Error(), "db") {
		t.Errorf("error %q does not name the directory", err)
	}
}

// TestFatalfNeverCrashes: Pebble's Fatalf fails the store instead of
// ending the process, on a goroutine inside a store operation (an error)
// and on one of Pebble's own (parked; the store reports the failure).
func TestFatalfNeverCrashes(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{})
	err := s.h.guard("test", func() error {
		pebbleLogger{s.h}.Fatalf("fatal commit error: %v", io.ErrShortWrite)
		return nil
	})
	if !errors.Is(err, ErrStoreFailed) || !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("Fatalf inside an operation: got %v, want ErrStoreFailed wrapping the cause", err)
	}
	if _, err := s.Partition(1); !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("an operation after a failure: got %v, want ErrStoreFailed", err)
	}

	s2 := openMem(t, vfs.NewMem(), Options{})
	go pebbleLogger{s2.h}.Fatalf("background failure") // parks for good
	deadline := time.Now().Add(10 * time.Second)
	for s2.Err() == nil || !s2.h.parked.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the store did not fail after a background Fatalf")
		}
		time.Sleep(time.Millisecond)
	}
	if err := s2.Close(); err == nil {
		t.Fatal("Close of a store with a parked Pebble goroutine reported success")
	}
}

// TestOpenOnFullDiskFailsClearly: opening a store (replaying its
// write-ahead log) on a full disk returns ErrDiskFull at once instead of
// waiting or spinning.
func TestOpenOnFullDiskFailsClearly(t *testing.T) {
	mem := vfs.NewMem()
	s := openMem(t, mem, Options{})
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	p.SetOffset("in", 7)
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fs := faultfs.NewDiskFull(mem)
	fs.SetFull(true)
	done := make(chan error, 1)
	go func() {
		s, err := Open("db", Options{FS: fs, Decode: decodeTest})
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "free space") {
			t.Fatalf("open on a full disk: got %v, want ErrDiskFull saying to free space", err)
		}
		t.Logf("open error: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("open on a full disk did not return within 20 s")
	}
	fs.SetFull(false)
	s = openMem(t, fs, Options{})
	defer s.Close()
	if offs, err := s.CommittedOffsets(0); err != nil || offs["in"] != 7 {
		t.Fatalf("after space returned: offsets %v, %v; want in=7", offs, err)
	}
}
