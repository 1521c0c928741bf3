package state

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestCatalogCommitsWithTheRecords: a catalog is staged like a record
// (invisible until the commit), then found by its partition and, through
// the store, by any reader; it goes with its partition when that is
// dropped, and another partition's copy still answers.
func TestCatalogCommitsWithTheRecords(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{})
	defer s.Close()
	p0, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	p1, err := s.Partition(1)
	if err != nil {
		t.Fatal(err)
	}
	has := func(p *Partition, id uint64) bool {
		t.Helper()
		ok, err := p.HasCatalog(id)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	value := func(id uint64) (string, bool) {
		t.Helper()
		v, ok, err := s.Catalog(id)
		if err != nil {
			t.Fatal(err)
		}
		return string(v), ok
	}
	p0.SetCatalog(42, []byte("a,b,c"))
	p0.MarkDirty("c1", &testRecord{n: 1})
	if has(p0, 42) {
		t.Fatal("a staged catalog is visible before the commit")
	}
	if _, ok := value(42); ok {
		t.Fatal("the store finds a staged catalog before the commit")
	}
	if err := p0.Commit(); err != nil {
		t.Fatal(err)
	}
	if !has(p0, 42) || has(p1, 42) {
		t.Fatalf("after the commit: partition 0 has it %v, partition 1 %v; want true, false", has(p0, 42), has(p1, 42))
	}
	if v, ok := value(42); !ok || v != "a,b,c" {
		t.Fatalf("Catalog(42) = %q %v", v, ok)
	}
	if _, ok := value(43); ok {
		t.Fatal("Catalog(43) found a catalog never written")
	}
	// Partition 1 stores the same catalog; partition 0 goes.
	p1.SetCatalog(42, []byte("a,b,c"))
	p1.MarkDirty("c2", &testRecord{n: 1})
	if err := p1.Commit(); err != nil {
		t.Fatal(err)
	}
	p0.Close()
	if err := s.Drop(0); err != nil {
		t.Fatal(err)
	}
	if p0, err = s.Partition(0); err != nil {
		t.Fatal(err)
	}
	if has(p0, 42) {
		t.Fatal("a dropped partition still has its catalog")
	}
	if v, ok := value(42); !ok || v != "a,b,c" {
		t.Fatalf("Catalog(42) after partition 0 was dropped = %q %v, want partition 1's copy", v, ok)
	}
}
