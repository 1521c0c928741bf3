package state

import (
	"slices"
	"sync/atomic"
	"testing"
)

// stepRecord logs the prefetch steps it is asked for, and fails the test
// when asked before the writer claimed it (the task may be changing an
// unclaimed record: reading it would race).
type stepRecord struct {
	t     *testing.T
	id    int
	state *uint32
	steps []int
	done  bool
}

func (r *stepRecord) AppendBinary(dst []byte) []byte { return dst }
func (r *stepRecord) SizeBytes() int                 { return 0 }

func (r *stepRecord) Prefetch(step int) {
	if s := atomic.LoadUint32(r.state); s != flightWriting {
		r.t.Errorf("record %d prefetched in state %d, not claimed", r.id, s)
	}
	if r.done {
		r.t.Errorf("record %d prefetched (step %d) after its encoding", r.id, step)
	}
	r.steps = append(r.steps, step)
}

// TestClaimAheadPrefetchesClaimedRecordsInSteps: the writer encodes the
// records the task did not take, in order, each once; every one of them
// past the first few gets each prefetch step once, in order, before it is
// encoded; and none is read before the writer claimed it.
func TestClaimAheadPrefetchesClaimedRecordsInSteps(t *testing.T) {
	const n = 40
	recs := make([]flightRec, n)
	logs := make([]*stepRecord, n)
	taken := map[int]bool{3: true, 4: true, 11: true, 12: true, 13: true, 14: true, 15: true, 16: true, 39: true}
	for i := range recs {
		logs[i] = &stepRecord{t: t, id: i, state: &recs[i].state}
		recs[i].rec = logs[i]
		if taken[i] {
			recs[i].state = flightCopying
		}
	}
	var a claimAhead
	var order []int
	for {
		i, ok := a.next(recs)
		if !ok {
			break
		}
		if recs[i].state != flightWriting {
			t.Fatalf("record %d returned in state %d", i, recs[i].state)
		}
		logs[i].done = true
		order = append(order, i)
	}
	var want []int
	for i := range n {
		if !taken[i] {
			want = append(want, i)
		}
	}
	if !slices.Equal(order, want) {
		t.Fatalf("encoded %v, want %v", order, want)
	}
	full := []int{0, 1, 2, 3, 4}[:PrefetchSteps]
	for k, i := range order {
		steps := logs[i].steps
		if !slices.IsSorted(steps) || len(slices.Compact(slices.Clone(steps))) != len(steps) {
			t.Errorf("record %d got steps %v", i, steps)
		}
		if len(steps) > 0 && steps[len(steps)-1] != PrefetchSteps-1 {
			t.Errorf("record %d's last step %d, want %d", i, steps[len(steps)-1], PrefetchSteps-1)
		}
		if k >= PrefetchSteps+1 && !slices.Equal(steps, full) {
			t.Errorf("record %d (the %dth encoded) got steps %v, want %v", i, k, steps, full)
		}
	}
	for i := range taken {
		if len(logs[i].steps) > 0 {
			t.Errorf("record %d, the task's, got steps %v", i, logs[i].steps)
		}
	}
}
