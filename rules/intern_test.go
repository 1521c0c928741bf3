package rules

import (
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/segd/segd/schemas"
)

func sameBytes(a, b string) bool {
	return len(a) == len(b) && unsafe.StringData(a) == unsafe.StringData(b)
}

// TestInternSharesShortValues: equal short values share one copy, which
// states do not count; long values and values that left the table are
// their own and counted.
func TestInternSharesShortValues(t *testing.T) {
	a := internBytes([]byte("shoes"))
	b := internBytes([]byte("shoes"))
	if !sameBytes(a, b) {
		t.Fatal("two decodes of the same short value hold two copies")
	}
	c := intern(strings.Clone("shoes"))
	if !sameBytes(a, c) {
		t.Fatal("an event's value is not replaced by the table's copy")
	}
	if n := ownBytes(a); n != 0 {
		t.Fatalf("the table's copy counts %d bytes to a state", n)
	}
	if n := ownBytes(strings.Clone("shoes")); n != 5 {
		t.Fatalf("a private copy counts %d bytes, want 5", n)
	}
	long := strings.Repeat("x", internMaxLen+1)
	l1, l2 := internBytes([]byte(long)), internBytes([]byte(long))
	if sameBytes(l1, l2) || ownBytes(l1) != len(long) {
		t.Fatal("a long value is shared or not counted")
	}
	// Another value takes the slot: the old copy, still held by states,
	// then counts in full.
	slot := &internTable[maphash.String(internSeed, "shoes")&(internSlots-1)]
	slot.Store(new(string))
	if n := ownBytes(a); n != 5 {
		t.Fatalf("a copy that left the table counts %d bytes, want 5", n)
	}
	if again := internBytes([]byte("shoes")); sameBytes(again, a) || !sameBytes(again, internBytes([]byte("shoes"))) {
		t.Fatal("a value whose slot was taken is not interned again")
	}
}

// TestDecodedStatesShareValues: two customers' decoded states hold the
// same bytes for the same category, and SizeBytes leaves them out.
func TestDecodedStatesShareValues(t *testing.T) {
	rs := mustCompile(t, `
version: 1
traits:
  top: most_frequent(browse.category) over 30d
segments:
  fan: { when: "top == \"garden furniture\"" }
`)
	s1, s2 := rs.NewState(), rs.NewState()
	for _, s := range []*State{s1, s2} {
		e := &schemas.Event{Type: schemas.EventBrowse, CustomerID: "c", Time: at("2024-01-01T10:00:00Z"), Category: strings.Clone("garden furniture")}
		rs.Apply(s, e, e.Time)
	}
	enc := s1.AppendBinary(nil)
	d1, d2 := rs.NewState(), rs.NewState()
	if err := rs.DecodeState(enc, d1); err != nil {
		t.Fatal(err)
	}
	if err := rs.DecodeState(enc, d2); err != nil {
		t.Fatal(err)
	}
	v1, v2 := d1.get(0).buckets[0].values()[0].v, d2.get(0).buckets[0].values()[0].v
	if v1 != "garden furniture" || !sameBytes(v1, v2) {
		t.Fatalf("decoded values %q and %q are not one copy", v1, v2)
	}
	if !sameBytes(s1.get(0).buckets[0].values()[0].v, s2.get(0).buckets[0].values()[0].v) {
		t.Fatal("two events' equal values are kept as two copies")
	}
}

// TestInternConcurrently: partitions intern on their own goroutines
// (run under -race by make test).
func TestInternConcurrently(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20000 {
				v := fmt.Sprintf("c%d", (i*7+g)%300)
				if got := internBytes([]byte(v)); got != v {
					t.Errorf("interned %q as %q", v, got)
					return
				}
				_ = ownBytes(v)
			}
		}()
	}
	wg.Wait()
}

// TestInternHitAllocatesNothing: a value the table holds costs no
// allocation, from a string or from bytes (an escaping parameter once
// made every intern call allocate).
func TestInternHitAllocatesNothing(t *testing.T) {
	v := strings.Clone("loyalty_tier")
	intern(v)
	b := []byte("country")
	internBytes(b)
	if n := testing.AllocsPerRun(100, func() { intern(v) }); n != 0 {
		t.Errorf("intern of a held value: %.0f allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { internBytes(b) }); n != 0 {
		t.Errorf("internBytes of a held value: %.0f allocations, want 0", n)
	}
}
