package state

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestColdTierAgainstAMap drives the ring with random puts, takes and
// drops over a small capacity (so that it wraps and pads often) and
// checks every take against a map of what was put last: a take returns
// the latest bytes put for the id or nothing, never an older or another
// id's record, and the ring's byte count matches what its index holds.
func TestColdTierAgainstAMap(t *testing.T) {
	for _, capacity := range []int64{512, 2057, 8192} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(capacity)))
			var c coldTier
			c.setCapacity(capacity)
			model := map[string][]byte{}
			takes, found := 0, 0
			for i := range 200000 {
				id := fmt.Sprintf("c%d", rng.IntN(40))
				h := hashID(id)
				switch op := rng.IntN(10); {
				case op < 5:
					rec := bytes.Repeat([]byte{byte(i)}, rng.IntN(int(capacity)/8))
					c.put(id, h, rec)
					if int64(len(rec))+int64(len(id))+11 <= capacity/8 {
						model[id] = rec
					} else {
						delete(model, id)
					}
				case op < 9:
					takes++
					got, ok := c.take(id, h)
					want, had := model[id]
					delete(model, id)
					if ok {
						found++
						if !had || !bytes.Equal(got, want) {
							t.Fatalf("op %d: take(%s) = %x, want %x (held: %v)", i, id, got, want, had)
						}
					}
				default:
					c.drop(h)
					delete(model, id)
				}
				if i%100 == 0 {
					checkColdBytes(t, &c)
				}
			}
			if found == 0 {
				t.Fatalf("none of %d takes found its record", takes)
			}
		})
	}
}

func checkColdBytes(t *testing.T, c *coldTier) {
	t.Helper()
	var sum int64
	for _, off := range c.index {
		if off < c.tail || off >= c.head {
			t.Fatalf("index holds offset %d outside the ring's records [%d, %d)", off, c.tail, c.head)
		}
		sum += int64(c.sizeAt(off))
	}
	if sum != c.bytes {
		t.Fatalf("byte count %d, the index's records hold %d", c.bytes, sum)
	}
}

// TestColdTierKeepsWhatFits: with room for all, every record put is
// found once; a record over an eighth of the ring is not kept and drops
// the id's older one.
func TestColdTierKeepsWhatFits(t *testing.T) {
	var c coldTier
	c.setCapacity(1 << 20)
	for i := range 1000 {
		id := fmt.Sprintf("customer-%d", i)
		c.put(id, hashID(id), []byte(id+"-state"))
	}
	for i := range 1000 {
		id := fmt.Sprintf("customer-%d", i)
		got, ok := c.take(id, hashID(id))
		if !ok || string(got) != id+"-state" {
			t.Fatalf("take(%s) = %q, %v", id, got, ok)
		}
		if _, ok := c.take(id, hashID(id)); ok {
			t.Fatalf("%s taken twice", id)
		}
	}
	c.put("big", hashID("big"), []byte("small"))
	c.put("big", hashID("big"), make([]byte, 1<<17+1))
	if _, ok := c.take("big", hashID("big")); ok {
		t.Fatal("a record over an eighth of the ring was kept, or the older one survived it")
	}
	// A collision: another id under the same hash is a miss.
	c.put("a", 42, []byte("a's"))
	if _, ok := c.take("b", 42); ok {
		t.Fatal("an id took another id's record with the same hash")
	}
}

// TestColdTierServesWhatPebbleHolds: customers evicted from a small cache
// come back from the cold tier with their latest state, through changes,
// deletions, synchronous and pipelined commits; every read is checked
// against a model, and the cold tier must have served some of them.
// After a reopen (no cold tier) the store holds the same states.
func TestColdTierServesWhatPebbleHolds(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{CacheBytes: 1 << 20})
	p, _ := s.Partition(0)
	rng := rand.New(rand.NewPCG(7, 7))
	model := map[string]uint64{}
	for i := range 150000 {
		id := fmt.Sprintf("c%d", rng.IntN(20000))
		switch op := rng.IntN(20); {
		case op == 0:
			p.Delete(id)
			delete(model, id)
		default:
			rec, err := p.Get(id)
			if err != nil {
				t.Fatal(err)
			}
			r := rec.(*testRecord)
			if r.n != model[id] {
				t.Fatalf("op %d: %s reads n=%d, want %d", i, id, r.n, model[id])
			}
			if op < 15 {
				r.n++
				r.data = bytes.Repeat([]byte{byte(r.n)}, 1+rng.IntN(400))
				p.MarkDirty(id, r)
				model[id] = r.n
			}
		}
		switch {
		case i%500 == 499:
			if err := p.Commit(); err != nil {
				t.Fatal(err)
			}
		case i%500 == 249:
			if _, err := p.CommitAsync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if p.coldHits.Load() == 0 {
		t.Fatal("the cold tier served no read")
	}
	t.Logf("cold hits %d, misses %d", p.coldHits.Load(), p.misses.Load())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openMem(t, fs, Options{CacheBytes: 1 << 20})
	defer s.Close()
	p, _ = s.Partition(0)
	for id, n := range model {
		rec, err := p.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if got := rec.(*testRecord).n; got != n {
			t.Fatalf("after reopen %s reads n=%d, want %d", id, got, n)
		}
	}
}

// TestInsertIsNotItsOwnEviction: with every cached record dirty and the
// cache over its budget, a customer just read stays cached until the
// caller has changed it. Evicted at once, its clean record went to the
// cold tier as it was before the change the caller then made.
func TestInsertIsNotItsOwnEviction(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{CacheBytes: 1 << 20})
	defer s.Close()
	p, _ := s.Partition(0)
	payload := bytes.Repeat([]byte("x"), 1000)
	for i := range 2000 { // about 2 MB of dirty records, no commit
		setData(t, p, fmt.Sprintf("d%d", i), payload)
	}
	if p.cacheBytes.Load() <= p.budget.Load() {
		t.Fatalf("cache holds %d bytes, want over its budget %d", p.cacheBytes.Load(), p.budget.Load())
	}
	if _, err := p.Get("x"); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.cache["x"]; !ok {
		t.Fatal("the record just read was evicted by its own insert")
	}
}
