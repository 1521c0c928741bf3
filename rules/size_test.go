package rules

import (
	"runtime"
	"testing"

	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

// TestSizeBytesMatchesHeap: the record cache's byte budget counts
// SizeBytes, so it must be the heap a decoded state really holds, within
// the allocator's rounding. It once claimed 1,218 bytes for states that
// held 2,315.
func TestSizeBytesMatchesHeap(t *testing.T) {
	rs, err := CompileFile("../bench/standard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g, err := gen.New(gen.Config{Seed: 42, Customers: 20000, EventsPerHour: 200000.0 / 720})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*State{}
	var sc Scratch
	var e schemas.Event
	var clock int64
	for n := 0; n < 200000 && g.Next(&e); n++ {
		clock = max(clock, e.Time)
		s := m[e.CustomerID]
		if s == nil {
			s = rs.NewState()
			s.UseScratch(&sc)
			m[e.CustomerID] = s
		}
		rs.Apply(s, &e, clock)
	}
	encs := make([][]byte, 0, len(m))
	for _, s := range m {
		encs = append(encs, s.AppendBinary(nil))
	}
	m = nil
	states := make([]*State, len(encs))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i, enc := range encs {
		states[i] = rs.NewState()
		if err := rs.DecodeState(enc, states[i]); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapAlloc-before.HeapAlloc) - float64(len(states)*8) // less the slice of pointers
	claimed := 0
	for _, s := range states {
		claimed += s.SizeBytes()
	}
	ratio := float64(claimed) / heap
	t.Logf("%d states: heap %.0f B each, SizeBytes %.0f B each (%.2f)", len(states), heap/float64(len(states)), float64(claimed)/float64(len(states)), ratio)
	if ratio < 0.75 || ratio > 1.25 {
		t.Fatalf("SizeBytes says %d bytes for %d states holding %.0f: ratio %.2f, want 0.75-1.25", claimed, len(states), heap, ratio)
	}
	runtime.KeepAlive(states)
}
