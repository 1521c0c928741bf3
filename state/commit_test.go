package state

import (
	"math"
	"runtime"
	"strconv"
	"testing"
)

// TestCommitReusesItsBuffers: once warm, a commit of 10,000 dirty
// customers (changelog on: a batch over the 1 MB Pebble pools) allocates
// far less than the batch it writes, because the staged batch and the
// changelog copy keep their buffers. A new batch per commit allocates its
// buffer again, growing it by doubling, and the copy once more: ~9.6 MB.
func TestCommitReusesItsBuffers(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation figures do not hold under the race detector")
	}
	// On disk: an in-memory file system allocates as its log grows.
	s, err := Open(t.TempDir(), Options{Decode: decodeTest, CacheBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.EnableChangelog(); err != nil {
		t.Fatal(err)
	}
	const customers = 10_000
	recs := make([]*testRecord, customers)
	ids := make([]string, customers)
	for i := range recs {
		ids[i] = "c" + strconv.Itoa(i)
		recs[i] = &testRecord{data: make([]byte, 96)}
	}
	var batchLen int
	commit := func() {
		for i, r := range recs {
			r.n++
			p.MarkDirty(ids[i], r)
		}
		p.SetOffset("events", int64(recs[0].n))
		if err := p.Commit(); err != nil {
			t.Fatal(err)
		}
		err := p.ReadChangelog(0, 1, func(_ uint64, entry []byte) error {
			batchLen = len(entry)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.ChangelogSent(p.clCommitted.Load(), 1); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		commit() // warm: buffers at size, entries cached
	}
	// The least of three windows: Pebble's background flushes allocate
	// in the same process, and one may fall in a window.
	const rounds = 10
	perCommit := uint64(math.MaxUint64)
	for range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range rounds {
			commit()
		}
		runtime.ReadMemStats(&after)
		perCommit = min(perCommit, (after.TotalAlloc-before.TotalAlloc)/rounds)
	}
	t.Logf("%d bytes allocated per commit of a %d-byte batch", perCommit, batchLen)
	if batchLen < customers*100 {
		t.Fatalf("batch of %d bytes: the records are not in it", batchLen)
	}
	if perCommit > uint64(batchLen)/4 {
		t.Fatalf("a commit allocates %d bytes for a %d-byte batch: its buffers are not reused", perCommit, batchLen)
	}
}
