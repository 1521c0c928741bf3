package state

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// BenchmarkCachedGet is the cache's lookup of a customer it holds, as a
// task's Get of an active customer: 200k cached customers (more than the
// CPU's caches hold) read in Zipf(1.1) order (the benchmark workload's)
// or uniformly, each read touching the record as a processor would. It
// measures the cache's index and the memory a lookup walks through,
// nothing of Pebble's.
func BenchmarkCachedGet(b *testing.B) {
	b.Run("zipf", func(b *testing.B) { benchCachedGet(b, true) })
	b.Run("uniform", func(b *testing.B) { benchCachedGet(b, false) })
}

func benchCachedGet(b *testing.B, zipfian bool) {
	const customers = 200_000
	s := openMem(b, vfs.NewMem(), Options{CacheBytes: 1 << 30})
	defer s.Close()
	p, err := s.Partition(0)
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, customers)
	for i := range ids {
		ids[i] = fmt.Sprintf("c%07d", i)
		if _, err := p.Get(ids[i]); err != nil {
			b.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rng, 1.1, 1, customers-1)
	perm := rng.Perm(customers)
	// Looked up by copies of the ids, as a decoded event's id is.
	seq := make([]string, 1<<20)
	for i := range seq {
		k := rng.IntN(customers)
		if zipfian {
			k = perm[zipf.Uint64()]
		}
		seq[i] = string([]byte(ids[k]))
	}
	b.ReportAllocs()
	b.ResetTimer()
	var sum uint64
	for i := 0; i < b.N; i++ {
		rec, err := p.Get(seq[i&(len(seq)-1)])
		if err != nil {
			b.Fatal(err)
		}
		r := rec.(*testRecord)
		r.n++
		sum += r.n
	}
	if sum == 0 {
		b.Fatal("no record read")
	}
}
