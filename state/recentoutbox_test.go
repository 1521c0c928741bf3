package state

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// forgetHeld lets go every outbox entry the partition holds in memory, so
// that reads and deletes go to the store.
func forgetHeld(p *Partition) { p.recent.forget(math.MaxUint64) }

type readValue struct {
	seq uint64
	v   string
}

func readOutboxFrom(t *testing.T, read func(after, hi uint64, limit int, fn func(uint64, []byte) error) error, after, hi uint64, limit int) []readValue {
	t.Helper()
	var got []readValue
	if err := read(after, hi, limit, func(seq uint64, v []byte) error {
		got = append(got, readValue{seq, string(v)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestHeldOutboxMatchesTheStore: a partition whose publisher reads and
// deletes small commits' entries from memory returns the same values,
// leaves the same stored keys and the same deleted position as a twin
// that reads everything from the store, through synchronous and
// pipelined commits, commits too large to hold, holds past its bound and
// deletes that stop inside a group. It also checks that memory served
// most of the reads, or the comparison would prove nothing.
func TestHeldOutboxMatchesTheStore(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			held := openMem(t, vfs.NewMem(), Options{})
			defer held.Close()
			twin := openMem(t, vfs.NewMem(), Options{})
			defer twin.Close()
			p, err := held.Partition(0)
			if err != nil {
				t.Fatal(err)
			}
			q, err := twin.Partition(0)
			if err != nil {
				t.Fatal(err)
			}
			var after uint64 // the publisher's position, as in engine.publisher
			reads, fromMemory, flights := 0, 0, 0
			for step := range 3000 {
				switch op := rng.IntN(10); {
				case op < 5: // a commit: mostly a few small values
					n := 1 + rng.IntN(4)
					size := 10 + rng.IntN(200)
					switch rng.IntN(20) {
					case 0:
						n, size = 40, 10<<10 // 400 KiB: past recentCommitBytes
					case 1:
						n = 300 // several groups... of one small commit
					}
					for i := range n {
						v := bytes.Repeat([]byte{byte('a' + (step+i)%26)}, size)
						p.AppendOutbox(v)
						q.AppendOutbox(v)
					}
					if rng.IntN(4) == 0 {
						// A dirty record makes the commit a pipelined one.
						rec, err := p.Get("c")
						if err != nil {
							t.Fatal(err)
						}
						p.MarkDirty("c", rec)
						async, err := p.CommitAsync()
						if err != nil {
							t.Fatal(err)
						}
						if !async {
							t.Fatal("CommitAsync committed synchronously")
						}
						flights++
						if _, err := p.Settle(true); err != nil {
							t.Fatal(err)
						}
					} else if err := p.Commit(); err != nil {
						t.Fatal(err)
					}
					if err := q.Commit(); err != nil {
						t.Fatal(err)
					}
					forgetHeld(q)
				case op < 8: // the publisher reads a batch
					hi := p.OutboxReleased()
					if hi != q.OutboxReleased() {
						t.Fatalf("step %d: released %d vs %d", step, hi, q.OutboxReleased())
					}
					if after >= hi {
						continue
					}
					limit := 1 + rng.IntN(600)
					var scratch [8]recentGroup
					if p.recent.from(after+1, hi, scratch[:0]) != nil {
						fromMemory++
					}
					reads++
					got := readOutboxFrom(t, p.ReadOutboxTo, after, hi, limit)
					want := readOutboxFrom(t, q.readStored, after, hi, limit)
					if !slices.Equal(got, want) {
						t.Fatalf("step %d: read after %d to %d limit %d: %d values (%v...), the store %d (%v...)", step, after, hi, limit, len(got), got[:min(2, len(got))], len(want), want[:min(2, len(want))])
					}
					if len(got) > 0 {
						after = got[len(got)-1].seq
					}
				default: // it deletes what it published, or a little less
					upTo := after
					if rng.IntN(4) == 0 && upTo > 0 {
						upTo -= uint64(rng.IntN(3))
					}
					if err := p.DeleteOutbox(upTo); err != nil {
						t.Fatal(err)
					}
					if err := q.DeleteOutbox(upTo); err != nil {
						t.Fatal(err)
					}
					forgetHeld(q)
					if p.deletedTo.Load() != q.deletedTo.Load() {
						t.Fatalf("step %d: deleted to %d, the store's twin %d", step, p.deletedTo.Load(), q.deletedTo.Load())
					}
					if a, b := outboxKeys(t, held, 0), outboxKeys(t, twin, 0); !slices.Equal(a, b) {
						t.Fatalf("step %d: stored keys %v, the twin's %v", step, a, b)
					}
				}
			}
			if reads < 500 || fromMemory < reads/2 || flights < 100 {
				t.Fatalf("%d of %d reads from memory, %d pipelined commits: the test did not exercise the held entries", fromMemory, reads, flights)
			}
			p.recent.mu.Lock()
			defer p.recent.mu.Unlock()
			if p.recent.bytes > recentOutboxBytes {
				t.Fatalf("holding %d bytes, more than %d", p.recent.bytes, recentOutboxBytes)
			}
		})
	}
}

// TestHeldOutboxIsDroppedWithAFailedCommit: entries staged by a commit
// whose batch did not land are not held (a later commit's would
// otherwise be preceded by values the store never took).
func TestHeldOutboxIsDroppedWithAFailedCommit(t *testing.T) {
	var r recentOutbox
	r.stage(1, 2, []byte("first"))
	r.drop()
	r.stage(1, 1, []byte("again"))
	r.publish()
	gs := r.from(1, 10, nil)
	if len(gs) != 1 || gs[0].last != 1 || string(gs[0].entry) != "again" {
		t.Fatalf("held %+v, want only the landed commit's entry", gs)
	}
	// A commit that does not follow on from what is held starts over.
	r.stage(5, 6, []byte("later"))
	r.publish()
	if gs := r.from(1, 10, nil); gs != nil {
		t.Fatalf("still held after a gap: %+v", gs)
	}
	if gs := r.from(5, 10, nil); len(gs) != 1 || gs[0].key != 5 {
		t.Fatalf("held %+v, want the entry at 5", gs)
	}
}

// BenchmarkPublishCycle is what a partition that keeps up and its
// publisher do per commit: commit three changes of 300 bytes, read them
// back (ReadOutboxTo) and delete them once published (DeleteOutbox).
// held: as they run, the publisher reading the held entries; store: the
// held entries let go before each read, as before they were held.
func BenchmarkPublishCycle(b *testing.B) {
	for _, held := range []bool{true, false} {
		name := "store"
		if held {
			name = "held"
		}
		b.Run(name, func(b *testing.B) {
			s := openMem(b, vfs.NewMem(), Options{})
			defer s.Close()
			p, err := s.Partition(0)
			if err != nil {
				b.Fatal(err)
			}
			value := bytes.Repeat([]byte("v"), 300)
			var after uint64
			b.ReportAllocs()
			for b.Loop() {
				for range 3 {
					p.AppendOutbox(value)
				}
				if err := p.Commit(); err != nil {
					b.Fatal(err)
				}
				if !held {
					forgetHeld(p)
				}
				if err := p.ReadOutboxTo(after, p.OutboxReleased(), 512, func(seq uint64, _ []byte) error {
					after = seq
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				if err := p.DeleteOutbox(after); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
