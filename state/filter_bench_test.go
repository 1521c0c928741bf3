package state

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// Benchmarks of the customer-id filter's targets: the load of a customer
// the store never held, a restart over 2M active customers, and a commit
// of 10,000 dirty customers.
//
// Their stores take seconds to build, so each is built once per process
// (or once for good: set SEGD_BENCH_DIR to a directory to keep them there
// and reuse them across runs) and shared by every run of the benchmark.

// benchFixtures are the stores built by this process, removed at exit
// unless SEGD_BENCH_DIR keeps them.
var benchFixtures struct {
	sync.Mutex
	dirs map[string]string
	tmp  string
}

// benchFixture returns the directory of the named store, building it with
// build the first time.
func benchFixture(b *testing.B, name string, build func(dir string) error) string {
	b.Helper()
	benchFixtures.Lock()
	defer benchFixtures.Unlock()
	if dir, ok := benchFixtures.dirs[name]; ok {
		return dir
	}
	root := os.Getenv("SEGD_BENCH_DIR")
	if root == "" {
		if benchFixtures.tmp == "" {
			tmp, err := os.MkdirTemp("", "segd-state-bench-")
			if err != nil {
				b.Fatal(err)
			}
			benchFixtures.tmp = tmp
		}
		root = benchFixtures.tmp
	}
	dir := filepath.Join(root, name)
	// A fixture is complete once its "built" file exists: a run killed
	// half way through building starts over.
	done := filepath.Join(root, name+".built")
	if _, err := os.Stat(done); err != nil {
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		b.Logf("building fixture %s (once)", dir)
		if err := build(dir); err != nil {
			b.Fatalf("build fixture %s: %v", name, err)
		}
		if err := os.WriteFile(done, nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if benchFixtures.dirs == nil {
		benchFixtures.dirs = map[string]string{}
	}
	benchFixtures.dirs[name] = dir
	return dir
}

// removeBenchFixtures removes the stores built in a temporary directory
// (TestMain calls it).
func removeBenchFixtures() {
	benchFixtures.Lock()
	defer benchFixtures.Unlock()
	if benchFixtures.tmp != "" {
		os.RemoveAll(benchFixtures.tmp)
	}
}

func benchID(i int) string { return "c" + strconv.Itoa(i) }

// benchPayload is a record's payload: incompressible, ~100 bytes like a
// real customer (see BenchmarkStateStep).
func benchPayload(r *rand.Rand) []byte {
	p := make([]byte, 96)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// buildCustomers writes perPart customers into each of parts partitions
// of a new store in dir, committing every 10,000. An active customer also
// has a pending timer and a segment membership, as an engine customer
// with a time-windowed trait has.
func buildCustomers(dir string, parts, perPart int, active bool) error {
	s, err := Open(dir, Options{Decode: decodeTest, SkipVerify: true})
	if err != nil {
		return err
	}
	defer s.Close()
	r := rand.New(rand.NewPCG(7, 7))
	segments := []string{"big_spenders", "churn_risk", "new_this_week"}
	for n := range int32(parts) {
		p, err := s.Partition(n)
		if err != nil {
			return err
		}
		for i := range perPart {
			id := benchID(int(n)*perPart + i)
			p.MarkDirty(id, &testRecord{n: uint64(i), data: benchPayload(r)})
			if active {
				p.MoveTimer(id, 0, 1_700_000_000_000+int64(r.IntN(90*86_400_000)))
				p.CountMember(segments[i%len(segments)], true)
			}
			if i%10_000 == 9_999 || i == perPart-1 {
				p.SetOffset("events", int64(i))
				if err := p.Commit(); err != nil {
					return err
				}
			}
		}
		if err := p.Close(); err != nil {
			return err
		}
	}
	return s.Close()
}

// BenchmarkGetNewCustomer is Partition.Get of a customer id the partition
// never stored, next to one of a stored customer not in the cache, over
// 1M stored customers in a settled (compacted) store.
func BenchmarkGetNewCustomer(b *testing.B) {
	const stored = 1_000_000
	dir := benchFixture(b, "get1m", func(dir string) error {
		if err := buildCustomers(dir, 1, stored, false); err != nil {
			return err
		}
		s, err := Open(dir, Options{Decode: decodeTest, SkipVerify: true})
		if err != nil {
			return err
		}
		defer s.Close()
		return s.Compact()
	})
	// The smallest cache: a stored customer is never a cache hit twice.
	s, err := Open(dir, Options{Decode: decodeTest, CacheBytes: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		name string
		id   func(i int) string
	}{
		{"new", func(i int) string { return "n" + strconv.Itoa(i) }},
		{"stored", func(i int) string { return benchID(int(uint64(i) * 7919 % stored)) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			p, err := s.Partition(0)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			ids := make([]string, b.N)
			for i := range ids {
				ids[i] = c.id(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := p.Get(ids[i]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpenStore2M is a restart: Open (Pebble, the verify pass unless
// skipped, the customer filters) and opening every partition of a store
// holding 2M active customers (4 partitions of 500,000, each with a record
// of ~100 bytes, a timer and a membership). The page cache is warm: it
// measures the CPU cost, not the disk. Close is not timed.
//
//	verify             the default Options
//	skipverify         SkipVerify (a clean shutdown left a filter file)
//	skipverify-nofile  SkipVerify, the filter file removed first
func BenchmarkOpenStore2M(b *testing.B) {
	const parts, perPart = 4, 500_000
	dir := benchFixture(b, "open2m", func(dir string) error {
		return buildCustomers(dir, parts, perPart, true)
	})
	for _, c := range []struct {
		name   string
		opts   Options
		noFile bool
	}{
		{"verify", Options{Decode: decodeTest}, false},
		{"skipverify", Options{Decode: decodeTest, SkipVerify: true}, false},
		{"skipverify-nofile", Options{Decode: decodeTest, SkipVerify: true}, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			restart := func() {
				s, err := Open(dir, c.opts)
				if err != nil {
					b.Fatal(err)
				}
				for n := range int32(parts) {
					p, err := s.Partition(n)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := p.Get("someone-new"); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				if c.noFile {
					removeFilterFile(b, dir)
				}
				b.StartTimer()
			}
			// Settle: the first open after the build replays its log,
			// and the first close writes the filter file.
			b.StopTimer()
			restart()
			b.StartTimer()
			for i := 0; i < b.N; i++ {
				restart()
			}
		})
	}
}

// BenchmarkCommit10k is Partition.Commit of 10,000 dirty cached customers
// (~100-byte records, updates of stored ones) with the changelog off and
// on. Marking them dirty is not timed.
func BenchmarkCommit10k(b *testing.B) {
	const customers, batch = 100_000, 10_000
	for _, changelog := range []bool{false, true} {
		name := "plain"
		if changelog {
			name = "changelog"
		}
		b.Run(name, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{Decode: decodeTest, CacheBytes: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			p, err := s.Partition(0)
			if err != nil {
				b.Fatal(err)
			}
			if changelog {
				if err := p.EnableChangelog(); err != nil {
					b.Fatal(err)
				}
			}
			payload := benchPayload(rand.New(rand.NewPCG(3, 3)))
			recs := make([]*testRecord, customers)
			ids := make([]string, customers)
			for i := range recs {
				ids[i] = benchID(i)
				recs[i] = &testRecord{data: payload}
				p.MarkDirty(ids[i], recs[i])
			}
			commit := func() {
				if err := p.Commit(); err != nil {
					b.Fatal(err)
				}
				if changelog {
					// The publisher's part: the entry reached Kafka.
					if err := p.ChangelogSent(p.clCommitted.Load(), 0); err != nil {
						b.Fatal(err)
					}
				}
			}
			commit()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for j := range batch {
					k := (i*batch + j) % customers
					recs[k].n++
					p.MarkDirty(ids[k], recs[k])
				}
				p.SetOffset("events", int64(i))
				b.StartTimer()
				if err := p.Commit(); err != nil {
					b.Fatal(err)
				}
				if changelog {
					b.StopTimer()
					if err := p.ChangelogSent(p.clCommitted.Load(), int64(i)); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			}
		})
	}
}

// removeFilterFile removes the store's persisted customer filter, if any.
func removeFilterFile(b *testing.B, dir string) {
	b.Helper()
	if err := os.Remove(filepath.Join(dir, FilterFile)); err != nil && !os.IsNotExist(err) {
		b.Fatal(err)
	}
}
