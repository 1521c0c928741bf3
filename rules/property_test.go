package rules

import (
	"math/rand/v2"
	"testing"

	"github.com/segd/segd/schemas"
)

const propRules = `version: 1
traits:
  n_3h: count(purchase) over 3h
  spend_2d: sum(purchase.amount) over 2d
  max_1d: max(purchase.amount) over 1d bucket 1h
  min_1d: min(purchase.amount) over 1d bucket 1h
  avg_2d: avg(purchase.amount) over 2d
  cats_6h: distinct_count(purchase.categories) over 6h
  top_4h: most_frequent(browse.category) over 4h
  last_at: last(purchase.ts)
  first_at: first(purchase.ts)
segments:
  a: { when: "n_3h >= 2" }
  b: { when: "spend_2d > 100 and max_1d < 80" }
  c: { when: "last_at is not null and since(last_at) > 5h" }
  d: { when: "first_at is not null and since(first_at) <= 1d" }
  e: { when: "cats_6h >= 2 or top_4h == \"shoes\"" }
  f: { when: "since(last_at) == 2h" }
`

type rawEvent struct {
	t      int64
	typ    schemas.EventType
	amount float64
	cats   []string
	cat    string
}

// bruteValue recomputes a trait from the raw events with the documented
// window rule: bucket(t) - W < bucket(e) <= bucket(t).
func bruteValue(tr *Trait, evs []rawEvent, now int64) (float64, string, bool) {
	var in []rawEvent
	for _, e := range evs {
		if e.typ != tr.Event {
			continue
		}
		if tr.Window > 0 {
			b, bt := bucketStart(e.t, tr.Bucket), bucketStart(now, tr.Bucket)
			if !(bt-tr.Window < b && b <= bt) {
				continue
			}
		}
		in = append(in, e)
	}
	switch tr.Agg {
	case "count":
		return float64(len(in)), "", true
	case "sum":
		s := 0.0
		for _, e := range in {
			s += e.amount
		}
		return s, "", true
	case "max", "min":
		if len(in) == 0 {
			return 0, "", false
		}
		m := in[0].amount
		for _, e := range in {
			if tr.Agg == "max" {
				m = max(m, e.amount)
			} else {
				m = min(m, e.amount)
			}
		}
		return m, "", true
	case "avg":
		if len(in) == 0 {
			return 0, "", false
		}
		s := 0.0
		for _, e := range in {
			s += e.amount
		}
		return s / float64(len(in)), "", true
	case "distinct_count":
		set := map[string]bool{}
		for _, e := range in {
			for _, c := range e.cats {
				set[c] = true
			}
		}
		return float64(len(set)), "", true
	case "most_frequent":
		counts := map[string]int{}
		for _, e := range in {
			counts[e.cat]++
		}
		best, bn := "", 0
		for v, n := range counts {
			if n > bn || (n == bn && v < best) {
				best, bn = v, n
			}
		}
		return 0, best, bn > 0
	case "last", "first":
		if len(in) == 0 {
			return 0, "", false
		}
		v := in[0].t
		for _, e := range in {
			if (tr.Agg == "last" && e.t >= v) || (tr.Agg == "first" && e.t < v) {
				v = e.t
			}
		}
		return float64(v), "", true
	}
	panic(tr.Agg)
}

func randomHistory(r *rand.Rand, base int64) []rawEvent {
	cats := []string{"shoes", "bags", "toys"}
	var evs []rawEvent
	t := base
	for i := 0; i < 1+r.IntN(12); i++ {
		t += int64(r.IntN(4 * 3600_000))
		if r.IntN(2) == 0 {
			evs = append(evs, rawEvent{t: t, typ: schemas.EventPurchase, amount: float64(r.IntN(120)), cats: []string{cats[r.IntN(3)], cats[r.IntN(3)]}})
		} else {
			evs = append(evs, rawEvent{t: t, typ: schemas.EventBrowse, cat: cats[r.IntN(3)]})
		}
	}
	return evs
}

func applyAll(rs *RuleSet, evs []rawEvent) (*State, int64) {
	s := rs.NewState()
	var now int64
	for _, re := range evs {
		e := &schemas.Event{Type: re.typ, CustomerID: "c", Time: re.t, Amount: re.amount, Categories: re.cats, Category: re.cat}
		now = max(now, re.t)
		rs.Apply(s, e, now)
	}
	return s, now
}

// Traits agree with an independent recomputation from the raw events at
// every probed time, and NextChange brackets every change of every
// segment: no change strictly before it, and a change exactly at it is
// what it predicts.
func TestTraitsAndNextChangeAgainstBruteForce(t *testing.T) {
	rs := mustCompile(t, propRules)
	r := rand.New(rand.NewPCG(1, 2))
	base := at("2024-03-01T00:00:00Z")
	for iter := 0; iter < 300; iter++ {
		evs := randomHistory(r, base)
		s, now := applyAll(rs, evs)
		for probe := now; probe < now+3*86400_000; probe += int64(r.IntN(3*3600_000)) + 1 {
			for _, tr := range rs.Traits() {
				wantN, wantS, wantOK := bruteValue(tr, evs, probe)
				got := rs.TraitValue(tr.Index, s, probe)
				switch {
				case !wantOK && got.Kind != schemas.KindNull:
					t.Fatalf("iter %d trait %s at %d: got %+v, want null", iter, tr.Name, probe, got)
				case wantOK && tr.kind == kStr && got.Str != wantS:
					t.Fatalf("iter %d trait %s at %d: got %q, want %q", iter, tr.Name, probe, got.Str, wantS)
				case wantOK && tr.kind != kStr && got.Num != wantN:
					t.Fatalf("iter %d trait %s at %d: got %v, want %v", iter, tr.Name, probe, got.Num, wantN)
				}
			}
		}
		for seg := range rs.Segments() {
			// Walk time forward from now by NextChange; between two
			// predicted instants the result must not change.
			cur := now
			for step := 0; step < 20; step++ {
				next, ok := rs.NextChange(seg, s, cur)
				horizon := cur + 4*86400_000
				if ok {
					if next <= cur {
						t.Fatalf("NextChange(%d) = %d, not after now", cur, next)
					}
					horizon = next
				}
				v := rs.Eval(seg, s, cur)
				for k := 0; k < 25; k++ {
					p := cur + 1 + r.Int64N(horizon-cur)
					if p >= horizon {
						p = horizon - 1
					}
					if rs.Eval(seg, s, p) != v {
						t.Fatalf("iter %d segment %s changed at %d, before NextChange %d (now %d)", iter, rs.Segments()[seg].ID, p, horizon, cur)
					}
				}
				if rs.Eval(seg, s, horizon-1) != v {
					t.Fatalf("segment %s changed just before its NextChange", rs.Segments()[seg].ID)
				}
				if !ok {
					break
				}
				cur = next
			}
		}
	}
}

func TestStateEncodingIsCompactAndSurvivesRuleChange(t *testing.T) {
	rs := mustCompile(t, shopRules)
	r := rand.New(rand.NewPCG(3, 4))
	s := rs.NewState()
	now := at("2024-05-01T00:00:00Z")
	for i := 0; i < 2; i++ {
		now += int64(r.IntN(5 * 86400_000))
		e := &schemas.Event{Type: schemas.EventPurchase, Time: now, Amount: float64(r.IntN(20000)) / 100, Categories: []string{"shoes"}}
		rs.Apply(s, e, now)
		b := &schemas.Event{Type: schemas.EventBrowse, Time: now, Category: "shoes"}
		rs.Apply(s, b, now)
	}
	rs.Apply(s, &schemas.Event{Type: schemas.EventProfile, Attributes: []schemas.Attribute{{Name: "country", Value: schemas.String("United Kingdom")}}}, now)
	enc := s.AppendBinary(nil)
	// A typical customer: 10 traits, two orders and two views, a
	// profile. Pebble's block compression shrinks it further on disk (the
	// repeated trait keys compress well); see the state benchmark.
	if len(enc) > 170 {
		t.Errorf("typical state encodes to %d bytes; want <= 170", len(enc))
	}
	t.Logf("typical state: %d bytes", len(enc))
	// A new rules file keeps state for traits with unchanged definitions.
	rs2 := mustCompile(t, `version: 3
traits:
  spend: sum(purchase.amount) over 90d
  new_trait: count(browse) over 7d
segments:
  big: { when: "spend > 1" }
`)
	s2 := rs2.NewState()
	if err := rs2.DecodeState(enc, s2); err != nil {
		t.Fatal(err)
	}
	spendOld, _ := traitNum(rs.Traits()[1], s, now)
	spendNew, _ := traitNum(rs2.Traits()[0], s2, now)
	if spendOld != spendNew || spendNew == 0 {
		t.Fatalf("spend after rule change = %v, want %v", spendNew, spendOld)
	}
	if v, _ := traitNum(rs2.Traits()[1], s2, now); v != 0 {
		t.Fatalf("new trait starts at %v, want 0", v)
	}
	if v, ok := s2.Attr("country"); !ok || v.Str != "United Kingdom" {
		t.Fatalf("profile lost: %+v", v)
	}
	// Truncations are errors, never panics.
	for i := 0; i < len(enc); i++ {
		rs.DecodeState(enc[:i], rs.NewState())
	}
	bad := append([]byte(nil), enc...)
	bad[0] = stateVersion + 1
	if err := rs.DecodeState(bad, rs.NewState()); err == nil {
		t.Fatal("newer version accepted")
	}
}

// TestSegmentsDueAgainstEveryTimeSegment: walking a customer's timers as
// the processor fires them (NextChangeAfter), a time-dependent segment
// SegmentsDue leaves out has the result it had at the previous timer:
// evaluating only the due ones loses no transition.
func TestSegmentsDueAgainstEveryTimeSegment(t *testing.T) {
	rs := mustCompile(t, propRules)
	r := rand.New(rand.NewPCG(3, 4))
	base := at("2024-03-01T00:00:00Z")
	var timeSegs []int
	for _, s := range rs.Segments() {
		if s.TimeDependent {
			timeSegs = append(timeSegs, s.Index)
		}
	}
	left := 0
	for iter := 0; iter < 300; iter++ {
		evs := randomHistory(r, base)
		s, now := applyAll(rs, evs)
		var ct ChangeTimes
		if _, ok := rs.SegmentsDue(&ct, now, nil); ok {
			t.Fatal("empty ChangeTimes answered for the rules")
		}
		prev := map[int]bool{}
		for _, i := range timeSegs {
			prev[i] = rs.Eval(i, s, now)
		}
		cur, touched := now, TouchedAll
		for step := 0; step < 30; step++ {
			next, ok := rs.NextChangeAfter(s, cur, touched, &ct)
			if !ok {
				break
			}
			due, ok := rs.SegmentsDue(&ct, next, nil)
			if !ok {
				t.Fatal("SegmentsDue refused the times NextChangeAfter left")
			}
			isDue := map[int]bool{}
			for _, i := range due {
				isDue[i] = true
			}
			for _, i := range timeSegs {
				v := rs.Eval(i, s, next)
				if !isDue[i] {
					left++
					if v != prev[i] {
						t.Fatalf("iter %d: segment %s changed at %d (timer) but SegmentsDue left it out (due %v)", iter, rs.Segments()[i].ID, next, due)
					}
				}
				prev[i] = v
			}
			cur, touched = next, 0
		}
	}
	if left == 0 {
		t.Fatal("SegmentsDue never left a segment out: the test checked nothing")
	}
	t.Logf("%d time-dependent segment evaluations left out", left)
}
