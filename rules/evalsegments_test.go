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
