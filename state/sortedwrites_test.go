package state

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestIndexWritesReachTheBatchInOrderLastWins: timer index writes staged
// in any order reach the batch sorted by key bytes, one per
// key, and that one is the last staged: what a batch holding every write
// in staging order would leave visible; none for a key first set and
// last deleted, which the store never held.
func TestIndexWritesReachTheBatchInOrderLastWins(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{})
	defer s.Close()
	b := s.db.NewBatch()
	defer b.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	type want struct {
		del      bool
		val      string
		setFirst bool
	}
	var w indexWrites
	for round := 0; round < 3; round++ { // writeTo empties w for the next commit
		last := map[string]want{}
		for i := 0; i < 3000; i++ {
			// Ids of different lengths, and ids equal in more than
			// their first 8 bytes (compared past their prefix).
			id := fmt.Sprintf("c%d", rng.IntN(100))
			if rng.IntN(2) == 0 {
				id = fmt.Sprintf("customer-%d", rng.IntN(100))
			}
			del := rng.IntN(3) == 0
			at := int64(rng.IntN(20)) << (8 * rng.IntN(4)) // times differing in any byte
			w.timer(at, id, del)
			k := string(timerKey(nil, 7, at, id))
			setFirst := !del
			if prev, ok := last[k]; ok {
				setFirst = prev.setFirst
			}
			last[k] = want{del: del, setFirst: setFirst}
		}
		elided := 0
		for k, exp := range last {
			if exp.setFirst && exp.del {
				delete(last, k)
				elided++
			}
		}
		if elided == 0 {
			t.Fatalf("round %d: no key set and then deleted: the case is not exercised", round)
		}
		b.Reset()
		var d detachedIndex
		w.detach(&d)
		if w.len() != 0 || len(w.timers) != 0 {
			t.Fatalf("round %d: writes left staged", round)
		}
		// Writes staged after the detach (while a pipelined commit's
		// writer writes d) belong to the next commit, not to this one.
		w.timer(1, "after-detach", false)
		d.writeTo(b, 7, nil)
		if len(d.timers) != 0 {
			t.Fatalf("round %d: detached writes left after writeTo", round)
		}
		w.detach(&d) // drop them: the next round stages its own
		drop := s.db.NewBatch()
		d.writeTo(drop, 7, nil)
		drop.Close()
		r := b.Reader()
		var prev []byte
		n := 0
		for {
			kind, key, val, ok, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			n++
			if prev != nil && bytes.Compare(prev, key) >= 0 {
				t.Fatalf("round %d: key %q after %q: not in strictly increasing order", round, key, prev)
			}
			prev = append(prev[:0], key...)
			exp, found := last[string(key)]
			switch {
			case !found:
				t.Fatalf("round %d: key %q was never staged, or was set and then deleted", round, key)
			case exp.del && kind != pebble.InternalKeyKindDelete:
				t.Fatalf("round %d: key %q: kind %v, want a delete (the last write)", round, key, kind)
			case !exp.del && (kind != pebble.InternalKeyKindSet || string(val) != exp.val):
				t.Fatalf("round %d: key %q: kind %v value %q, want set %q (the last write)", round, key, kind, val, exp.val)
			}
		}
		if n != len(last) {
			t.Fatalf("round %d: %d writes in the batch, want %d (one per key)", round, n, len(last))
		}
	}
}

// BenchmarkIndexWrites is the timer index and member count work of an
// event: a timer moved and a membership changed for one of 200k
// customers (the active customers of the 1M-customer benchmark), every
// 10,000 events committed. Compare with the writes staged straight into
// the batch in event order (before indexWrites).
func BenchmarkIndexWrites(b *testing.B) {
	s, err := Open(b.TempDir(), Options{Decode: decodeTest})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p, err := s.Partition(0)
	if err != nil {
		b.Fatal(err)
	}
	const customers = 200_000
	ids := make([]string, customers)
	timerAt := make([]int64, customers)
	member := make([]uint32, customers) // a bit per segment
	for i := range ids {
		ids[i] = "c" + fmt.Sprint(i)
	}
	segs := make([]string, 20)
	for i := range segs {
		segs[i] = fmt.Sprintf("segment_%d", i)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	const day = int64(86_400_000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := rng.IntN(customers)
		// Timers a few days ahead of a clock that moves with the events.
		now := int64(1_700_000_000_000) + int64(i)*1000
		to := now + rng.Int64N(30*day) + 1
		p.MoveTimer(ids[c], timerAt[c], to)
		timerAt[c] = to
		sg := rng.IntN(len(segs))
		in := member[c]&(1<<sg) == 0
		member[c] ^= 1 << sg
		p.CountMember(segs[sg], in)
		if i%10_000 == 9_999 {
			if err := p.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := p.Commit(); err != nil {
		b.Fatal(err)
	}
}
