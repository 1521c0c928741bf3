package state

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// idShapes makes ids of the shapes that break a prefix comparison done
// wrong: shorter than 8 bytes, equal in their first 8 bytes and more,
// one a prefix of another, zero bytes (the padding's value), bytes over
// 0x7f (signedness) and the empty id.
func idShapes(rng *rand.Rand, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		switch rng.IntN(7) {
		case 0:
			ids[i] = fmt.Sprintf("c%d", rng.IntN(50))
		case 1:
			ids[i] = fmt.Sprintf("customer-%d", rng.IntN(50))
		case 2:
			ids[i] = fmt.Sprintf("customer-%d\x00", rng.IntN(50))
		case 3:
			ids[i] = string([]byte{byte(rng.IntN(256)), 0, byte(rng.IntN(2))})
		case 4:
			ids[i] = fmt.Sprintf("émile.%d@example.com", rng.IntN(50))
		case 5:
			ids[i] = ""
		default:
			ids[i] = fmt.Sprintf("%08x-%04x", rng.Uint32(), rng.IntN(16))
		}
	}
	return ids
}

func TestSortIDKeysMatchesStringOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{0, 1, 2, 31, 32, 33, 500} {
		for round := 0; round < 20; round++ {
			ids := idShapes(rng, n)
			keys := make([]idKey, n)
			for i, id := range ids {
				keys[i] = idKey{pre: idPrefix(id), i: int32(i)}
			}
			sortIDKeys(keys, func(i int32) string { return ids[i] })
			got := make([]string, n)
			for j, k := range keys {
				got[j] = ids[k.i]
			}
			if want := slices.Sorted(slices.Values(ids)); !slices.Equal(got, want) {
				t.Fatalf("n=%d: sorted by prefix then id:\n%q\nwant\n%q", n, got, want)
			}
		}
	}
}

// TestSortDirtyOrdersByID: a synchronous commit writes its dirty records
// in id order, by either path (a few compared directly, more by prefix),
// and the buffer it swaps out keeps no entry alive.
func TestSortDirtyOrdersByID(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var p Partition
	for _, n := range []int{3, sortDirectBelow - 1, sortDirectBelow, 400} {
		for round := 0; round < 3; round++ {
			ids := idShapes(rng, n)
			p.dirty = p.dirty[:0]
			for _, id := range ids {
				p.dirty = append(p.dirty, &entry{id: id})
			}
			p.sortDirty()
			got := make([]string, 0, n)
			for _, e := range p.dirty {
				got = append(got, e.id)
			}
			if want := slices.Sorted(slices.Values(ids)); !slices.Equal(got, want) {
				t.Fatalf("n=%d: dirty records in the order\n%q\nwant\n%q", n, got, want)
			}
			for i, e := range p.dirtySorted[:cap(p.dirtySorted)] {
				if e != nil {
					t.Fatalf("n=%d: the spare buffer keeps entry %d (%q) alive", n, i, e.id)
				}
			}
		}
	}
}

// TestFlightOrderCoversCopiedRecords: a flight's records are written in
// id order whether the writer encoded them (their prefix set then) or
// the task copied them first (the writer never saw their entry).
func TestFlightOrderCoversCopiedRecords(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{1, 2, 33, 300} {
		ids := idShapes(rng, n)
		recs := make([]flightRec, n)
		for i, id := range ids {
			recs[i].e = &entry{id: id}
			if rng.IntN(3) == 0 {
				recs[i].state = flightCopied
			} else {
				recs[i].state = flightWritten
				recs[i].pre = idPrefix(id)
			}
		}
		keys := flightOrder(recs, nil)
		got := make([]string, 0, n)
		for _, k := range keys {
			got = append(got, recs[k.i].e.id)
		}
		if want := slices.Sorted(slices.Values(ids)); !slices.Equal(got, want) {
			t.Fatalf("n=%d: flight records in the order\n%q\nwant\n%q", n, got, want)
		}
	}
}

// BenchmarkSortCommitRecords sorts a commit's 30,000 dirty records (a
// 50,000-event commit at 1M customers) picked from 200k cached entries,
// by comparing their ids (how commits sorted them before idPrefix) and by
// prefix first (sortDirty's path for more than a few).
func BenchmarkSortCommitRecords(b *testing.B) {
	const cached, dirty = 200_000, 30_000
	rng := rand.New(rand.NewPCG(11, 12))
	entries := make([]*entry, cached)
	for i := range entries {
		// Ids the workload's shape ("c" and 7 digits), allocated in
		// another order than theirs, as customers arrive.
		entries[i] = newEntry(fmt.Sprintf("c%07d", rng.IntN(1_000_000)))
	}
	pick := make([]*entry, dirty)
	for i := range pick {
		pick[i] = entries[rng.IntN(cached)]
	}
	b.Run("ids", func(b *testing.B) {
		var p Partition
		for i := 0; i < b.N; i++ {
			p.dirty = append(p.dirty[:0], pick...)
			slices.SortFunc(p.dirty, func(a, b *entry) int { return strings.Compare(a.id, b.id) })
		}
	})
	b.Run("prefix", func(b *testing.B) {
		var p Partition
		for i := 0; i < b.N; i++ {
			p.dirty = append(p.dirty[:0], pick...)
			p.sortDirty()
		}
	})
}
