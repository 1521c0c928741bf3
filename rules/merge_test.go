package rules

import (
	"math/rand/v2"
	"testing"

	"github.com/segd/segd/schemas"
)

// TestMergeEqualsOneHistory: splitting a customer's events between two ids
// and merging one state into the other (through the stored encoding, as the
// engine does) gives the trait values and segment results of one state
// that saw all the events, now and as time passes.
func TestMergeEqualsOneHistory(t *testing.T) {
	rs := mustCompile(t, propRules)
	r := rand.New(rand.NewPCG(11, 12))
	base := at("2024-03-01T00:00:00Z")
	for iter := 0; iter < 2000; iter++ {
		evs := randomHistory(r, base)
		// Distinct times: on equal times first/last depend on order.
		for i := 1; i < len(evs); i++ {
			if evs[i].t <= evs[i-1].t {
				evs[i].t = evs[i-1].t + 1
			}
		}
		var a, k []rawEvent
		for _, e := range evs {
			if r.IntN(2) == 0 {
				a = append(a, e)
			} else {
				k = append(k, e)
			}
		}
		whole, now := applyAll(rs, evs)
		sa, _ := applyAll(rs, a)
		sk, _ := applyAll(rs, k)
		sk.setAttr(attr("country", "UK"))
		sa.setAttr(attr("country", "FR"))
		sa.setAttr(attr("tier", "gold"))
		stored := rs.NewState()
		if err := rs.DecodeState(sa.AppendBinary(nil), stored); err != nil {
			t.Fatal(err)
		}
		touched := rs.Merge(sk, stored, now)
		if len(a) > 0 && touched == 0 {
			t.Fatalf("iteration %d: merge of a non-empty state touched nothing", iter)
		}
		for _, dt := range []int64{0, 3600_000, 5 * 3600_000, 30 * 3600_000, 3 * 86400_000} {
			tt := now + dt
			for ti := range rs.Traits() {
				want, got := rs.TraitValue(ti, whole, tt), rs.TraitValue(ti, sk, tt)
				if want != got {
					t.Fatalf("iteration %d, +%dms: trait %s merged %+v, one history %+v\nA %v\nK %v", iter, dt, rs.Traits()[ti].Name, got, want, a, k)
				}
			}
			for seg := range rs.Segments() {
				if rs.Eval(seg, whole, tt) != rs.Eval(seg, sk, tt) {
					t.Fatalf("iteration %d: segment %s differs at +%dms", iter, rs.Segments()[seg].ID, dt)
				}
			}
		}
		if v, _ := sk.Attr("country"); v.Str != "UK" {
			t.Fatalf("the target's own attribute was overwritten: %+v", v)
		}
		if v, _ := sk.Attr("tier"); v.Str != "gold" {
			t.Fatalf("an attribute only the source had was not copied: %+v", v)
		}
	}
}

func attr(name, v string) schemas.Attribute {
	return schemas.Attribute{Name: name, Value: schemas.String(v)}
}

// A late event that lands in a bucket before the newest one must not touch
// the newer bucket's values (regression: the inserted bucket shared its
// value list with its neighbour).
func TestLateEventKeepsNeighbourBucket(t *testing.T) {
	rs := mustCompile(t, propRules)
	s := rs.NewState()
	h := int64(3600_000)
	base := at("2024-03-01T00:00:00Z")
	browse := func(ts int64, cat string, now int64) {
		rs.Apply(s, &schemas.Event{Type: schemas.EventBrowse, CustomerID: "c", Time: ts, Category: cat}, now)
	}
	browse(base+1*h, "shoes", base+1*h)
	browse(base+3*h, "bags", base+3*h)
	browse(base+3*h+1, "bags", base+3*h+1)
	browse(base+2*h, "toys", base+3*h+1) // late, into the 2h bucket
	browse(base+2*h+5, "toys", base+3*h+1)
	if v := rs.TraitValue(traitIndex(t, rs, "top_4h"), s, base+3*h+1); v.Str != "bags" && v.Str != "toys" {
		t.Fatalf("top_4h = %+v", v)
	}
	ts := s.get(traitIndex(t, rs, "top_4h"))
	for _, b := range ts.buckets {
		if b.start == base+3*h && (len(b.values()) != 1 || b.values()[0].v != "bags" || b.values()[0].n != 2) {
			t.Fatalf("the 3h bucket was overwritten: %+v", b.values())
		}
	}
}

func traitIndex(t *testing.T, rs *RuleSet, name string) int {
	for i, tr := range rs.Traits() {
		if tr.Name == name {
			return i
		}
	}
	t.Fatalf("no trait %s", name)
	return -1
}
