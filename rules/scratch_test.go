package rules

import (
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/segd/segd/schemas"
)

// TestSharedScratchKeepsStatesApart: states that share one Scratch,
// evaluated in turn at the same clocks and changed in between, give
// exactly what the same states give each with a scratch of its own. A
// memo that outlived its state (or its state's last change) would hand
// one customer's trait values to the next.
func TestSharedScratchKeepsStatesApart(t *testing.T) {
	rs := mustCompile(t, propRules)
	r := rand.New(rand.NewPCG(7, 8))
	base := at("2024-03-01T00:00:00Z")
	const n = 40
	var shared Scratch
	sharedStates := make([]*State, n)
	ownStates := make([]*State, n)
	var clock int64
	for i := range n {
		evs := randomHistory(r, base)
		sharedStates[i], _ = applyAll(rs, evs)
		sharedStates[i].UseScratch(&shared)
		ownStates[i], clock = applyAll(rs, evs)
		clock = max(clock, base)
	}
	all := make([]int, len(rs.Segments()))
	for i := range all {
		all[i] = i
	}
	cats := []string{"shoes", "bags", "toys"}
	for step := range 3000 {
		i := r.IntN(n)
		s, o := sharedStates[i], ownStates[i]
		switch r.IntN(4) {
		case 0: // the same event on both: the memo of s must go
			e := &schemas.Event{Type: schemas.EventPurchase, CustomerID: "c", Time: clock, Amount: float64(r.IntN(120)), Categories: []string{cats[r.IntN(3)]}}
			if r.IntN(2) == 0 {
				e = &schemas.Event{Type: schemas.EventBrowse, CustomerID: "c", Time: clock, Category: cats[r.IntN(3)]}
			}
			rs.Apply(s, e, clock)
			rs.Apply(o, e, clock)
		case 1:
			clock += int64(r.IntN(3 * 3600_000))
		}
		got := rs.EvalSegments(s, clock, all, nil)
		want := rs.EvalSegments(o, clock, all, nil)
		for k := range got {
			if got[k] != want[k] {
				t.Fatalf("step %d state %d segment %s at %d: shared scratch says %v, own scratch %v", step, i, rs.Segments()[k].ID, clock, got[k], want[k])
			}
		}
		for ti := range rs.Traits() {
			if g, w := rs.TraitValue(ti, s, clock), rs.TraitValue(ti, o, clock); g != w {
				t.Fatalf("step %d state %d trait %s: shared scratch %+v, own %+v", step, i, rs.Traits()[ti].Name, g, w)
			}
		}
		ga, gok := rs.NextChangeAll(s, clock)
		wa, wok := rs.NextChangeAll(o, clock)
		if ga != wa || gok != wok {
			t.Fatalf("step %d state %d: NextChangeAll shared %d %v, own %d %v", step, i, ga, gok, wa, wok)
		}
	}
}

// TestStateCarriesNoScratch: a state evaluated with a shared scratch
// holds no memo of its own, which was most of a small state's memory.
func TestStateCarriesNoScratch(t *testing.T) {
	rs := mustCompile(t, benchRules)
	var sc Scratch
	now := at("2024-01-01T00:00:00Z")
	const n = 2000
	states := make([]*State, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range states {
		s := rs.NewState()
		s.UseScratch(&sc)
		rs.Apply(s, &schemas.Event{Type: schemas.EventPurchase, Time: now, Amount: 5}, now)
		for seg := range rs.Segments() {
			rs.Eval(seg, s, now)
		}
		states[i] = s
		if s.sc != &sc {
			t.Fatal("a state left the shared scratch")
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perState := int(after.HeapAlloc-before.HeapAlloc) / n
	// The traits, each with at most one bucket; a memo per state would
	// add 48 bytes per trait and the scratch struct beside it.
	limit := int(sizeofState) + len(rs.Traits())*int(sizeofTraitState+sizeofBucket) + 64
	if perState > limit {
		t.Fatalf("%d heap bytes per evaluated state, want at most %d (%d traits)", perState, limit, len(rs.Traits()))
	}
	runtime.KeepAlive(states)
}
