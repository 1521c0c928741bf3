package state

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"testing"
)

// BenchmarkStateStep is the per-event state work of a task over 1M
// customers with Zipf(1.1) activity: get-or-load, mutate, mark dirty, and
// the amortised cost of committing every 10000 events (the engine's
// default commit.max_events). Records are ~100
// bytes like a real customer. It also reports the on-disk bytes per
// customer after a full compaction.
func BenchmarkStateStep(b *testing.B) {
	for _, c := range []struct {
		name string
		opts Options
	}{
		{"wal", Options{}},
		{"nowal", Options{DisableWAL: true}},
	} {
		b.Run(c.name, func(b *testing.B) { benchStateStep(b, c.opts) })
	}
}

func benchStateStep(b *testing.B, opts Options) {
	const customers = 1_000_000
	dir := b.TempDir()
	opts.Decode = decodeTest
	s, err := Open(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p, _ := s.Partition(0)
	// Incompressible payload: real records are varints and strings,
	// random bytes make the disk figure an upper bound.
	payload := make([]byte, 96)
	for i := range payload {
		payload[i] = byte(rand.Uint32())
	}
	ids := make([]string, customers)
	for i := range ids {
		ids[i] = "c" + strconv.Itoa(i)
	}
	// Load every customer once so Pebble holds 1M records.
	for i, id := range ids {
		rec, _ := p.Get(id)
		r := rec.(*testRecord)
		r.data = payload
		p.MarkDirty(id, r)
		if i%10000 == 9999 {
			if err := p.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := p.Commit(); err != nil {
		b.Fatal(err)
	}
	// Start from a settled store: the load's flushes and compactions are
	// setup, not the per-event cost.
	if err := s.Compact(); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	zipf := rand.NewZipf(rng, 1.1, 1, customers-1)
	perm := rng.Perm(customers)
	// Draw the access sequence up front: Zipf sampling costs about as
	// much as the state step and is not part of it.
	seq := make([]int32, b.N)
	for i := range seq {
		seq[i] = int32(perm[zipf.Uint64()])
	}
	b.ReportAllocs()
	if path := os.Getenv("SEGD_STATE_PROFILE"); path != "" {
		f, _ := os.Create(path)
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := ids[seq[i]]
		rec, err := p.Get(id)
		if err != nil {
			b.Fatal(err)
		}
		r := rec.(*testRecord)
		r.n++
		p.MarkDirty(id, r)
		if i%10000 == 9999 || p.NeedsCommit() {
			if err := p.Commit(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := p.Commit(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	m := s.Metrics()
	b.ReportMetric(float64(m.CacheHits)/float64(m.CacheHits+m.CacheMisses), "hit-ratio")
	if err := s.Compact(); err != nil {
		b.Fatal(err)
	}
	var sst int64
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && filepath.Ext(path) == ".sst" {
			sst += info.Size()
		}
		return nil
	})
	b.ReportMetric(float64(sst)/customers, "disk-B/customer")
	_ = fmt.Sprint
}
