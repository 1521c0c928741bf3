package rules

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/segd/segd/schemas"
)

// flipRef is how a since() comparison's next flip was computed before the
// comparisons were grouped: one read of x per comparison.
func (d sinceDep) flipRef(e *env, now int64) (int64, bool) {
	x, ok := d.x(e)
	if !ok {
		return 0, false
	}
	base := int64(x) + d.d
	var cands [2]int64
	switch d.op {
	case ">", "<=":
		cands = [2]int64{base + 1, base + 1}
	case ">=", "<":
		cands = [2]int64{base, base}
	default: // == and != flip twice
		cands = [2]int64{base, base + 1}
	}
	for _, c := range cands {
		if c > now {
			return c, true
		}
	}
	return 0, false
}

// nextChangeRef is segment seg's next change as it was computed before
// timeDeps: every windowed trait and every since() comparison it reads.
func nextChangeRef(rs *RuleSet, seg int, s *State, now int64) (int64, bool) {
	sg := rs.segments[seg]
	best := int64(math.MaxInt64)
	for _, ti := range sg.wins {
		best = min(best, rs.leaveTime(ti, s, now))
	}
	sc := s.touch(now)
	for _, d := range sg.sinces {
		if c, ok := d.flipRef(&sc.env, now); ok && c < best {
			best = c
		}
	}
	if best == math.MaxInt64 {
		return 0, false
	}
	return best, true
}

// nextChangeAllRef is the minimum of nextChangeRef over all segments: the
// per-segment loop NextChangeAll replaces.
func nextChangeAllRef(rs *RuleSet, s *State, now int64) (int64, bool) {
	best := int64(math.MaxInt64)
	for seg := range rs.segments {
		if c, ok := nextChangeRef(rs, seg, s, now); ok {
			best = min(best, c)
		}
	}
	if best == math.MaxInt64 {
		return 0, false
	}
	return best, true
}

// randomSinceRules returns a rule set of up to 80 random segments mixing
// windowed traits and since() comparisons of five time expressions, with
// every operator, and durations that are zero, negative, repeated (so that
// groups share offsets) or large enough to wrap int64 arithmetic.
func randomSinceRules(r *rand.Rand) string {
	xs := []string{"last_at", "first_at", "profile.signup", "last_at + 1h", "first_at - 30m", "recent_at"}
	ops := []string{">", ">=", "<", "<=", "==", "!="}
	durs := []string{"0s", "1ms", "5h", "1d", "1d", "-2h", "90d", "30m", "100000000d", "106751991167d"}
	since := func() string {
		return fmt.Sprintf("since(%s) %s %s", xs[r.IntN(len(xs))], ops[r.IntN(len(ops))], durs[r.IntN(len(durs))])
	}
	var b strings.Builder
	b.WriteString(`version: 1
traits:
  last_at: last(purchase.ts)
  first_at: first(purchase.ts)
  recent_at: max(purchase.ts) over 6h
  n_3h: count(purchase) over 3h
  spend_2d: sum(purchase.amount) over 2d bucket 6h
  top_4h: most_frequent(browse.category) over 4h
segments:
`)
	for i := range 1 + r.IntN(80) {
		var when string
		switch r.IntN(5) {
		case 0:
			when = since()
		case 1:
			when = "n_3h >= 1 and " + since()
		case 2:
			when = since() + " or " + since()
		case 3:
			when = "spend_2d > 10"
		default:
			when = `top_4h == "shoes" or ` + since()
		}
		fmt.Fprintf(&b, "  s%d: { when: %q }\n", i, when)
	}
	return b.String()
}

// signups are values of the profile attribute signup: ordinary times, ones
// at which adding an offset wraps, and values since() cannot use.
var signups = []schemas.Value{
	schemas.Number(float64(at("2024-02-20T00:00:00Z"))),
	schemas.Number(float64(at("2024-03-02T10:00:00Z"))),
	schemas.Number(9.2233720368547e18),
	schemas.Number(-9.2233720368547e18),
	schemas.String("yesterday"),
	{},
}

// TestNextChangeAllMatchesPerSegment compares NextChangeAll and NextChange
// with the per-segment computation they replace, over random rule sets,
// histories, profile times and clocks before, at and after the last event.
func TestNextChangeAllMatchesPerSegment(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	base := at("2024-03-01T00:00:00Z")
	for iter := 0; iter < 300; iter++ {
		src := randomSinceRules(r)
		rs := mustCompile(t, src)
		for h := 0; h < 5; h++ {
			s, clock := applyAll(rs, randomHistory(r, base))
			s.setAttr(schemas.Attribute{Name: "signup", Value: signups[r.IntN(len(signups))]})
			for _, now := range probes(r, rs, s, clock) {
				gotAt, gotOK := rs.NextChangeAll(s, now)
				wantAt, wantOK := nextChangeAllRef(rs, s, now)
				if gotAt != wantAt || gotOK != wantOK {
					t.Fatalf("iteration %d: NextChangeAll at clock%+d = %d %v, per segment %d %v\n%s", iter, now-clock, gotAt, gotOK, wantAt, wantOK, src)
				}
				for seg := range rs.Segments() {
					gotAt, gotOK := rs.NextChange(seg, s, now)
					wantAt, wantOK := nextChangeRef(rs, seg, s, now)
					if gotAt != wantAt || gotOK != wantOK {
						t.Fatalf("iteration %d: NextChange(%s) at clock%+d = %d %v, want %d %v\n%s", iter, rs.Segments()[seg].ID, now-clock, gotAt, gotOK, wantAt, wantOK, src)
					}
				}
			}
		}
	}
}

// probes returns clocks to compute next changes at: random ones from a
// day before clock to four after, and ones next to the flips of random
// since() comparisons (x + d - 1, x + d, x + d + 1), where a flip missed
// or off by one shows.
func probes(r *rand.Rand, rs *RuleSet, s *State, clock int64) []int64 {
	var ps []int64
	for range 10 {
		ps = append(ps, clock-86400_000+r.Int64N(5*86400_000))
	}
	sc := s.touch(clock)
	for range 10 {
		sg := rs.segments[r.IntN(len(rs.segments))]
		if len(sg.sinces) == 0 {
			continue
		}
		d := sg.sinces[r.IntN(len(sg.sinces))]
		if x, ok := d.x(&sc.env); ok {
			at := int64(x) + d.d
			ps = append(ps, at-1, at, at+1)
		}
	}
	return ps
}

// TestNextChangeAllGroupsRepeatedSegments: 1000 segments repeating the
// standard 20 depend on as few since() times as the 20 do.
func TestNextChangeAllGroupsRepeatedSegments(t *testing.T) {
	src := standardRules(t)
	few, many := mustCompile(t, src), mustCompile(t, withSegments(t, src, 1000, false))
	if len(few.timing.sinces) != len(many.timing.sinces) || len(few.timing.wins) != len(many.timing.wins) {
		t.Fatalf("20 segments: %d since() groups and %d windowed traits; 1000: %d and %d",
			len(few.timing.sinces), len(few.timing.wins), len(many.timing.sinces), len(many.timing.wins))
	}
}

// manyWindowsRules has 13 windowed traits, most of which an event does
// not touch.
var manyWindowsRules = func() string {
	var b strings.Builder
	b.WriteString("version: 1\ntraits:\n")
	for i := 1; i <= 12; i++ {
		fmt.Fprintf(&b, "  n_%dh: count(purchase) over %dh\n", i, i)
	}
	b.WriteString("  top_4h: most_frequent(browse.category) over 4h\nsegments:\n")
	for i := 1; i <= 12; i++ {
		fmt.Fprintf(&b, "  s%d: { when: \"n_%dh >= %d\" }\n", i, i, 1+i%3)
	}
	b.WriteString("  shoes: { when: 'top_4h == \"shoes\"' }\n")
	return b.String()
}()

// TestNextChangeAfterMatchesNextChangeAll drives one state as the engine
// does, through random events (some late), clock moves and timers firing
// at the predicted time, and compares NextChangeAfter, which recomputes
// only what each step touched, with NextChangeAll after every step.
func TestNextChangeAfterMatchesNextChangeAll(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	base := at("2024-03-01T00:00:00Z")
	cats := []string{"shoes", "bags", "toys"}
	for iter := 0; iter < 200; iter++ {
		src := randomSinceRules(r)
		switch iter % 3 {
		case 0:
			src = propRules
		case 1:
			src = manyWindowsRules
		}
		rs := mustCompile(t, src)
		s := rs.NewState()
		var ct ChangeTimes
		now := base
		next, pending := int64(0), false
		check := func(step string, touched Touched) {
			t.Helper()
			gotAt, gotOK := rs.NextChangeAfter(s, now, touched, &ct)
			wantAt, wantOK := rs.NextChangeAll(s, now)
			if gotAt != wantAt || gotOK != wantOK {
				t.Fatalf("iteration %d, %s at %d: NextChangeAfter %d %v, NextChangeAll %d %v\n%s", iter, step, now-base, gotAt, gotOK, wantAt, wantOK, src)
			}
			next, pending = gotAt, gotOK
		}
		check("start", 0)
		for step := 0; step < 60; step++ {
			gap := int64(r.IntN(5 * 3600_000))
			if pending && now+gap >= next {
				// The timer fires at its time first, as PopDue does.
				now = next
				check("timer", 0)
				continue
			}
			now += gap
			switch r.IntN(4) {
			case 0:
				s.setAttr(schemas.Attribute{Name: "signup", Value: signups[r.IntN(len(signups))]})
				check("profile", 0)
			default:
				et := now - int64(r.IntN(3))*int64(r.IntN(6*3600_000)) // late at times
				e := &schemas.Event{Type: schemas.EventPurchase, CustomerID: "c", Time: et, Amount: float64(r.IntN(120)), Categories: []string{cats[r.IntN(3)]}}
				if r.IntN(2) == 0 {
					e = &schemas.Event{Type: schemas.EventBrowse, CustomerID: "c", Time: et, Category: cats[r.IntN(3)]}
				}
				check("event", rs.Apply(s, e, now))
			}
		}
	}
}

// A customer's change times live in its ChangeTimes when they fit (the
// standard rules' 9 do): computing them the first time allocates nothing,
// and SizeBytes counts no heap beyond the struct; past the inline room one
// allocation holds both kinds.
func TestChangeTimesInline(t *testing.T) {
	rs := mustCompile(t, standardRules(t))
	if n := len(rs.timing.wins) + len(rs.timing.sinces); n > changeTimesInline {
		t.Fatalf("the standard rules need %d times, more than the %d inline", n, changeTimesInline)
	}
	s := rs.NewState()
	now := at("2024-03-01T10:00:00Z")
	rs.Apply(s, &schemas.Event{Type: schemas.EventPurchase, Time: now, Amount: 20}, now)
	ct := new(ChangeTimes) // on the heap, as in a cached record
	allocs := testing.AllocsPerRun(100, func() {
		ct.rs = nil // a record just decoded: every time computed
		rs.NextChangeAfter(s, now, TouchedAll, ct)
		if ct.SizeBytes() != 0 {
			t.Fatalf("SizeBytes = %d for inline times", ct.SizeBytes())
		}
	})
	if allocs != 0 {
		t.Fatalf("first NextChangeAfter allocates %v times, want 0", allocs)
	}
	// A windowed trait more than the inline room holds.
	var src strings.Builder
	src.WriteString("version: 1\ntraits:\n")
	for i := range changeTimesInline + 1 {
		fmt.Fprintf(&src, "  n%d: count(purchase) over %dh\n", i, i+1)
	}
	src.WriteString("segments:\n")
	for i := range changeTimesInline + 1 {
		fmt.Fprintf(&src, "  s%d: { when: \"n%d >= 1\" }\n", i, i)
	}
	big := mustCompile(t, src.String())
	if n := len(big.timing.wins) + len(big.timing.sinces); n <= changeTimesInline {
		t.Fatalf("the big rules need only %d times", n)
	}
	ct = new(ChangeTimes)
	big.NextChangeAfter(big.NewState(), now, TouchedAll, ct)
	if want := 8 * (len(big.timing.wins) + len(big.timing.sinces)); ct.SizeBytes() != want {
		t.Fatalf("SizeBytes = %d, want %d", ct.SizeBytes(), want)
	}
}
