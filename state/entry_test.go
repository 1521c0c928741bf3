package state

import (
	"strings"
	"testing"
	"unsafe"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestCachedEntryKeepsItsOwnID: a customer cached under an id of any
// length around the 16- and 48-byte inline buffers is found again by
// another copy of the id, and an id of up to 48 bytes is kept in the
// entry's own allocation (not the bytes of the string it was first
// looked up with), a longer one as given.
func TestCachedEntryKeepsItsOwnID(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{CacheBytes: 1 << 30})
	defer s.Close()
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 60; n++ {
		id := strings.Repeat("x", n-1) + string(rune('A'+n%26))
		rec, err := p.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		rec.(*testRecord).n = uint64(n)
		e := p.last
		if e.id != id {
			t.Fatalf("id of %d bytes: the entry's id is %q, want %q", n, e.id, id)
		}
		shared := unsafe.StringData(e.id) == unsafe.StringData(id)
		if inline := n <= 48; shared == inline {
			t.Fatalf("id of %d bytes: shares the caller's bytes %v, want %v", n, shared, !inline)
		}
		got, err := p.Get(strings.Clone(id))
		if err != nil {
			t.Fatal(err)
		}
		if got.(*testRecord).n != uint64(n) {
			t.Fatalf("id of %d bytes: a copy of it found another record (n=%d)", n, got.(*testRecord).n)
		}
	}
	for i := 1; i <= 60; i++ {
		id := strings.Repeat("x", i-1) + string(rune('A'+i%26))
		if rec, _ := p.Get(id); rec.(*testRecord).n != uint64(i) {
			t.Fatalf("id of %d bytes: lost after the others were cached", i)
		}
	}
}
