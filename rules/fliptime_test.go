package rules

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/segd/segd/schemas"
)

// browses applies n browse events one minute apart from start.
func browses(rs *RuleSet, s *State, start int64, n int) int64 {
	now := start
	for i := range n {
		now = start + int64(i)*60_000
		rs.Apply(s, &schemas.Event{Type: schemas.EventBrowse, Time: now, Page: "product"}, now)
	}
	return now
}

// A count read only as "v >= 3" next changes a result when its eighth
// oldest of ten buckets leaves, not when the first does; read also
// through arithmetic, every leave counts again.
func TestNextChangeSkipsLeavesThatFlipNoComparison(t *testing.T) {
	start := at("2024-03-01T10:00:00Z")
	for _, tc := range []struct {
		name, segments string
		leaves         int // the leave NextChangeAll names, 1-based
	}{
		{"threshold", `  hot: { when: "views >= 3" }`, 8},
		{"two thresholds", "  hot: { when: \"views >= 3\" }\n  warm: { when: \"views > 8 and views != 5\" }", 2},
		{"arithmetic too", "  hot: { when: \"views >= 3\" }\n  odd: { when: \"views * 2 > 5\" }", 1},
		{"is null too", "  hot: { when: \"views >= 3\" }\n  none: { when: \"views is null\" }", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := mustCompile(t, "version: 1\ntraits:\n  views: count(browse) over 1h bucket 1m\nsegments:\n"+tc.segments+"\n")
			s := rs.NewState()
			now := browses(rs, s, start, 10)
			got, ok := rs.NextChangeAll(s, now)
			want := start + int64(tc.leaves-1)*60_000 + 3600_000
			if !ok || got != want {
				t.Fatalf("NextChangeAll = %d, %v; want the leave of bucket %d, %d", got, ok, tc.leaves, want)
			}
			// The segment the skip is for flips exactly there.
			if tc.leaves > 1 && rs.Eval(0, s, got-1) == rs.Eval(0, s, got) && rs.Eval(1%len(rs.Segments()), s, got-1) == rs.Eval(1%len(rs.Segments()), s, got) {
				t.Fatalf("no segment changes at %d", got)
			}
		})
	}
}

// Past maxFlipSteps leaves with no flip, the time reached is returned:
// a check there finds nothing and looks further.
func TestNextChangeStopsAfterMaxFlipSteps(t *testing.T) {
	rs := mustCompile(t, "version: 1\ntraits:\n  views: count(browse) over 1h bucket 1m\nsegments:\n  hot: { when: \"views >= 1\" }\n")
	s := rs.NewState()
	start := at("2024-03-01T10:00:00Z")
	now := browses(rs, s, start, 40)
	got, _ := rs.NextChangeAll(s, now)
	if want := start + int64(maxFlipSteps-1)*60_000 + 3600_000; got != want {
		t.Fatalf("NextChangeAll = %d, want the leave of bucket %d, %d", got, maxFlipSteps, want)
	}
	if rs.Eval(0, s, got) != rs.Eval(0, s, now) {
		t.Fatal("the segment changed at a stop that should change nothing")
	}
	// From there the search goes on, as far again.
	got2, _ := rs.NextChangeAll(s, got)
	if want := start + int64(2*maxFlipSteps-1)*60_000 + 3600_000; got2 != want {
		t.Fatalf("NextChangeAll after the stop = %d, want %d", got2, want)
	}
}

// randomThresholdRules returns rules reading windowed counts and sums only
// through comparisons with constants, every operator, and some segments
// reading one of them another way too.
func randomThresholdRules(r *rand.Rand) string {
	ops := []string{">", ">=", "<", "<=", "==", "!="}
	traits := []string{"n_2h", "spend_6h", "n_3d"}
	consts := map[string][]string{"n_2h": {"0", "1", "2", "3", "5"}, "n_3d": {"1", "4", "7"}, "spend_6h": {"0", "10", "49.5", "100", "-20", "0.3"}}
	cmp := func() string {
		tr := traits[r.IntN(len(traits))]
		cs := consts[tr]
		return fmt.Sprintf("%s %s %s", tr, ops[r.IntN(len(ops))], cs[r.IntN(len(cs))])
	}
	var b strings.Builder
	b.WriteString(`version: 1
traits:
  n_2h: count(purchase) over 2h bucket 10m
  spend_6h: sum(purchase.amount) over 6h bucket 30m
  n_3d: count(browse) over 3d bucket 1h
segments:
`)
	for i := range 1 + r.IntN(8) {
		when := cmp()
		switch r.IntN(6) {
		case 0:
			when += " and " + cmp()
		case 1:
			when = "not (" + when + " or " + cmp() + ")"
		case 2:
			if r.IntN(3) == 0 {
				when += " or spend_6h / 3 > 10"
			}
		}
		fmt.Fprintf(&b, "  s%d: { when: %q }\n", i, when)
	}
	return b.String()
}

// NextChangeAll against every instant a result can change at: no segment
// changes at a bucket's leave before it, and at it a comparison of a
// trait with a constant flips unless maxFlipSteps leaves were passed (or
// a trait read another way made every leave count; and/or may still hide
// a flip from the segment's result). Values of windowed counts and sums
// change only when a bucket leaves, so the leaves are all the instants to
// probe.
func TestNextChangeThresholdsAgainstEveryLeave(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	base := at("2024-03-01T00:00:00Z")
	amounts := []float64{0.1, 0.2, 10, 39.5, 50, -20, 1e308, 1e308, -1e308, 0}
	for iter := 0; iter < 400; iter++ {
		src := randomThresholdRules(r)
		rs := mustCompile(t, src)
		s := rs.NewState()
		now := base
		for range 1 + r.IntN(60) {
			now += int64(r.IntN(40 * 60_000))
			if r.IntN(3) == 0 {
				rs.Apply(s, &schemas.Event{Type: schemas.EventBrowse, Time: now, Page: "p"}, now)
			} else {
				rs.Apply(s, &schemas.Event{Type: schemas.EventPurchase, Time: now, Amount: amounts[r.IntN(len(amounts))]}, now)
			}
		}
		var leaves []int64
		for ti, tr := range rs.Traits() {
			for _, b := range s.get(ti).buckets {
				leaves = append(leaves, b.start+tr.Window)
			}
		}
		opaque := strings.Contains(src, "spend_6h / 3")
		results := func(at int64) string {
			var b strings.Builder
			for seg := range rs.Segments() {
				fmt.Fprint(&b, rs.Eval(seg, s, at))
			}
			return b.String()
		}
		comparisons := func(at int64) string {
			var b strings.Builder
			for ti, cuts := range rs.cuts {
				v := rs.TraitValue(ti, s, at)
				for _, c := range cuts {
					fmt.Fprint(&b, opTest(c.op, v.Num, c.c))
				}
			}
			return b.String()
		}
		cur := now
		for step := 0; step < 30; step++ {
			next, ok := rs.NextChangeAll(s, cur)
			if !ok {
				next = 1 << 62
			}
			was, wasCmp, passed := results(cur), comparisons(cur), 0
			for _, l := range leaves {
				if l > cur && l < next {
					passed++
					if results(l) != was {
						t.Fatalf("iter %d: results changed at %d, before NextChangeAll %d (now %d)\n%s", iter, l, next, cur, src)
					}
				}
			}
			if !ok {
				break
			}
			if comparisons(next) == wasCmp && passed+1 < maxFlipSteps && !opaque {
				t.Fatalf("iter %d: NextChangeAll %d flips no comparison after %d leaves (now %d)\n%s", iter, next, passed, cur, src)
			}
			cur = next
		}
	}
}

// A trait compared with more than maxCuts constants keeps a timer per
// leave: its comparisons no longer fit the bitmask flipTime tests.
func TestTooManyCutsFallBack(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\ntraits:\n  views: count(browse) over 1h bucket 1m\n  buys: count(purchase) over 1h bucket 1m\nsegments:\n")
	for i := range maxCuts + 2 {
		fmt.Fprintf(&b, "  v%d: { when: \"views >= %d\" }\n", i, i+1)
	}
	b.WriteString("  b: { when: \"buys >= 3\" }\n")
	rs := mustCompile(t, b.String())
	if rs.cuts[0] != nil {
		t.Fatalf("views has %d cuts, want none past %d", len(rs.cuts[0]), maxCuts)
	}
	if len(rs.cuts[1]) != 1 {
		t.Fatalf("buys has %d cuts, want 1", len(rs.cuts[1]))
	}
}
