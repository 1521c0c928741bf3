package rules

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/segd/segd/schemas"
)

// strCmpRef is trait OP c for a string trait, computed from TraitValue:
// null compares false.
func strCmpRef(rs *RuleSet, s *State, now int64, trait, op, c string) bool {
	ti, _ := traitIndexByName(rs, trait)
	v := rs.TraitValue(ti, s, now)
	return v.Kind == schemas.KindString && cmpOrdered(v.Str, c, op)
}

func traitIndexByName(rs *RuleSet, name string) (int, bool) {
	for _, t := range rs.Traits() {
		if t.Name == name {
			return t.Index, true
		}
	}
	return 0, false
}

// TestStringTraitComparisonsInline: comparisons of a string trait with a
// constant run inline (segProgram, not a closure), with every operator and
// the constant on either side, and give what comparing TraitValue does,
// also when the trait is null.
func TestStringTraitComparisonsInline(t *testing.T) {
	traits := []string{"top_4h", "last_cat"}
	ops := []string{"==", "!=", "<", "<=", ">", ">="}
	consts := []string{"", "bags", "shoes", "toys", "m"}
	type cmpCase struct{ trait, op, c string }
	var cases []cmpCase
	var b strings.Builder
	b.WriteString("version: 1\ntraits:\n  top_4h: most_frequent(browse.category) over 4h\n  last_cat: last(browse.category)\nsegments:\n")
	for _, tr := range traits {
		for _, op := range ops {
			for _, c := range consts {
				for _, left := range []bool{false, true} {
					// Either way: trait op c.
					when := fmt.Sprintf("%s %s %q", tr, op, c)
					if left {
						when = fmt.Sprintf("%q %s %s", c, mirror(op), tr)
					}
					fmt.Fprintf(&b, "  s%d: { when: %q }\n", len(cases), when)
					cases = append(cases, cmpCase{tr, op, c})
				}
			}
		}
	}
	rs := mustCompile(t, b.String())
	for i := range cases {
		if rs.progs[i].op != progCmp {
			t.Fatalf("segment %s runs as a closure", rs.Segments()[i].When)
		}
	}
	r := rand.New(rand.NewPCG(41, 42))
	base := at("2024-03-01T00:00:00Z")
	all := make([]int, len(cases))
	for i := range all {
		all[i] = i
	}
	for iter := 0; iter < 200; iter++ {
		s, clock := applyAll(rs, randomHistory(r, base))
		for _, now := range []int64{clock, clock + 3*3600_000, clock + 86400_000} {
			got := rs.EvalSegments(s, now, all, nil)
			for i, c := range cases {
				if want := strCmpRef(rs, s, now, c.trait, c.op, c.c); got[i] != want {
					t.Fatalf("iteration %d: %s at clock%+d = %v, want %v", iter, rs.Segments()[i].When, now-clock, got[i], want)
				}
			}
		}
	}
}

// TestSegmentsTouchedMatchesReadMasks compares SegmentsTouched with a
// filter of SegmentsFor by each segment's readMask, for random touched
// sets on random rule sets.
func TestSegmentsTouchedMatchesReadMasks(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	for iter := 0; iter < 100; iter++ {
		rs := mustCompile(t, randomSinceRules(r))
		for et := schemas.EventUnknown; et <= schemas.EventProfile+1; et++ {
			touched := Touched(r.Uint64())
			var want []int
			for _, i := range rs.SegmentsFor(et) {
				if rs.segments[i].readMask&touched != 0 {
					want = append(want, i)
				}
			}
			got := rs.SegmentsTouched(et, touched, nil)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("iteration %d, event type %d, touched %b: got %v, want %v", iter, et, touched, got, want)
			}
		}
	}
}

// withRepeats returns src with copies of random segments (same condition,
// new id) shuffled in among them, so that up to all of its conditions are
// shared.
func withRepeats(tb testing.TB, r *rand.Rand, src string) string {
	segs := mustCompile(tb, src).Segments()
	var whens []string
	for _, s := range segs {
		whens = append(whens, s.When)
		for r.IntN(3) > 0 {
			whens = append(whens, s.When)
		}
	}
	r.Shuffle(len(whens), func(i, j int) { whens[i], whens[j] = whens[j], whens[i] })
	head, _, _ := strings.Cut(src, "\nsegments:\n")
	var b strings.Builder
	b.WriteString(head + "\nsegments:\n")
	for i, w := range whens {
		fmt.Fprintf(&b, "  r%d: { when: %q }\n", i, w)
	}
	return b.String()
}

// TestEvalSegmentsSharedMatchesEval: EvalSegments, which evaluates a
// condition shared by several segments once per call, gives what Eval
// gives each segment, for random subsets of segments in any order (with
// repeats), on rule sets with up to 80 shared conditions (more than one
// word of bits), and with one state evaluated under two rule sets in turn.
func TestEvalSegmentsSharedMatchesEval(t *testing.T) {
	r := rand.New(rand.NewPCG(45, 46))
	base := at("2024-03-01T00:00:00Z")
	for iter := 0; iter < 150; iter++ {
		rsA := mustCompile(t, withRepeats(t, r, randomSinceRules(r)))
		rsB := mustCompile(t, withRepeats(t, r, randomSinceRules(r)))
		if rsA.nShared == 0 {
			t.Fatalf("iteration %d: no shared condition", iter)
		}
		s, clock := applyAll(rsA, randomHistory(r, base))
		s.setAttr(schemas.Attribute{Name: "signup", Value: signups[r.IntN(len(signups))]})
		for k := 0; k < 20; k++ {
			rs := rsA
			if k%2 == 1 {
				rs = rsB // same traits, so the state fits both
			}
			segs := make([]int, r.IntN(2*len(rs.Segments())))
			for j := range segs {
				segs[j] = r.IntN(len(rs.Segments()))
			}
			now := clock - 86400_000 + r.Int64N(5*86400_000)
			got := rs.EvalSegments(s, now, segs, nil)
			for j, seg := range segs {
				if want := rs.Eval(seg, s, now); got[j] != want {
					t.Fatalf("iteration %d: segment %d (%s) = %v, Eval %v", iter, seg, rs.Segments()[seg].When, got[j], want)
				}
			}
		}
	}
}

// TestEvalSegmentsAllocatesNothing: after a state's first evaluation
// under a rule set with shared conditions, EvalSegments does not allocate.
func TestEvalSegmentsAllocatesNothing(t *testing.T) {
	rs := mustCompile(t, withSegments(t, standardRules(t), 1000, false))
	s, now := applyAll(rs, randomHistory(rand.New(rand.NewPCG(47, 48)), at("2024-03-01T00:00:00Z")))
	segs := rs.SegmentsFor(schemas.EventPurchase)
	res := rs.EvalSegments(s, now, segs, nil)
	allocs := testing.AllocsPerRun(100, func() {
		now++
		res = rs.EvalSegments(s, now, segs, res[:0])
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per call, want 0", allocs)
	}
}
