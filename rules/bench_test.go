package rules

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/segd/segd/schemas"
)

// benchRules is a shop's typical rule set: 10 traits, 20 segments.
const benchRules = `version: 1
traits:
  orders_7d: count(purchase) over 7d
  orders_30d: count(purchase) over 30d
  spend_30d: sum(purchase.amount) over 30d
  spend_90d: sum(purchase.amount) over 90d
  max_order_90d: max(purchase.amount) over 90d
  last_order_at: last(purchase.ts)
  first_order_at: first(purchase.ts)
  categories_90d: distinct_count(purchase.categories) over 90d
  views_24h: count(browse where page == "product") over 24h
  clicks_14d: count(engagement where channel == "email" and action == "click") over 14d
segments:
  s01: { when: "orders_30d >= 1" }
  s02: { when: "orders_30d >= 3" }
  s03: { when: "spend_90d >= 1000" }
  s04: { when: "spend_90d >= 1000 and orders_30d >= 2" }
  s05: { when: "spend_30d > 200 or max_order_90d > 300" }
  s06: { when: "last_order_at is not null and since(last_order_at) > 60d" }
  s07: { when: "first_order_at is not null and since(first_order_at) <= 7d" }
  s08: { when: "orders_7d == 0 and views_24h >= 3" }
  s09: { when: "categories_90d >= 3" }
  s10: { when: "clicks_14d >= 1 and orders_30d >= 1" }
  s11: { when: "spend_90d / orders_30d > 50" }
  s12: { when: "orders_7d >= 2 and spend_30d < 100" }
  s13: { when: "max_order_90d >= 500" }
  s14: { when: "orders_30d >= 1 and clicks_14d == 0" }
  s15: { when: "spend_30d >= 50 and spend_30d < 150" }
  s16: { when: "categories_90d == 1" }
  s17: { when: "last_order_at is not null and since(last_order_at) > 30d and spend_90d > 100" }
  s18: { when: "orders_7d >= 1 or views_24h >= 10" }
  s19: { when: "not (orders_30d >= 1)" }
  s20: { when: "spend_90d >= 250 and categories_90d >= 2" }
`

// BenchmarkApplyEval20 is the rules step of one purchase event, as the
// engine runs it: update the traits, evaluate every segment the event can
// affect (all 20 here) and compute the customer's next timer
// (NextChangeAll).
//
// typical: a customer with 8 orders over 90 days; heavy: one with an order
// every day of the 90-day window (every bucket of every window full).
func BenchmarkApplyEval20(b *testing.B) {
	for _, c := range []struct {
		name   string
		orders int
		gap    int64
	}{{"typical", 8, 11 * 86400_000}, {"heavy", 90, 86400_000}} {
		for _, step := range []string{"apply", "apply+eval", "apply+eval+timer"} {
			b.Run(c.name+"/"+step, func(b *testing.B) { benchApplyEval(b, c.orders, c.gap, step) })
		}
	}
}

// benchApplyEval measures one step of the per-event rules work; the
// difference between "apply+eval" and "apply" is the evaluation of the 20
// segments on a freshly updated state (no memoized trait values).
func benchApplyEval(b *testing.B, orders int, gap int64, step string) {
	rs := mustCompile(b, benchRules)
	s := rs.NewState()
	now := at("2024-01-01T00:00:00Z")
	e := &schemas.Event{Type: schemas.EventPurchase, CustomerID: "c1", Amount: 42.5, Categories: []string{"shoes"}}
	cats := []string{"shoes", "bags", "toys", "books"}
	for i := 0; i < orders; i++ {
		now += gap
		e.Time = now
		e.Categories = cats[i%4 : i%4+1]
		rs.Apply(s, e, now)
	}
	segs := rs.SegmentsFor(schemas.EventPurchase)
	if len(segs) != 20 {
		b.Fatalf("%d segments affected", len(segs))
	}
	b.ReportAllocs()
	b.ResetTimer()
	in := 0
	res := make([]bool, 0, len(segs))
	// Events land in the current buckets (seconds apart), so the state
	// keeps its shape for the whole run.
	for i := 0; i < b.N; i++ {
		now += int64(i & 1)
		e.Time = now
		rs.Apply(s, e, now)
		if step == "apply" {
			continue
		}
		res = rs.EvalSegments(s, now, segs, res[:0])
		for _, r := range res {
			if r {
				in++
			}
		}
		if step == "apply+eval+timer" {
			rs.NextChangeAll(s, now)
		}
	}
	if in == 0 && step != "apply" {
		b.Fatal("no segment matched")
	}
}

// BenchmarkEval20 is the evaluation alone.
func BenchmarkEval20(b *testing.B) {
	rs := mustCompile(b, benchRules)
	s := rs.NewState()
	now := at("2024-01-01T00:00:00Z")
	e := &schemas.Event{Type: schemas.EventPurchase, Amount: 42.5, Categories: []string{"shoes"}, Time: now}
	rs.Apply(s, e, now)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		for seg := 0; seg < 20; seg++ {
			rs.Eval(seg, s, now)
		}
	}
}

func BenchmarkEncodeDecodeState(b *testing.B) {
	rs := mustCompile(b, benchRules)
	s := rs.NewState()
	now := at("2024-01-01T00:00:00Z")
	e := &schemas.Event{Type: schemas.EventPurchase, Amount: 42.5, Categories: []string{"shoes"}}
	for i := 0; i < 3; i++ {
		now += 86400_000 * 3
		e.Time = now
		rs.Apply(s, e, now)
	}
	buf := s.AppendBinary(nil)
	s2 := rs.NewState()
	b.ReportMetric(float64(len(buf)), "B/state")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = s.AppendBinary(buf[:0])
		if err := rs.DecodeState(buf, s2); err != nil {
			b.Fatal(err)
		}
	}
}

func TestApplyEvalAllocatesNothing(t *testing.T) {
	rs := mustCompile(t, benchRules)
	s := rs.NewState()
	now := at("2024-01-01T00:00:00Z")
	e := &schemas.Event{Type: schemas.EventPurchase, Amount: 42.5, Categories: []string{"shoes"}, Time: now}
	rs.Apply(s, e, now)
	allocs := testing.AllocsPerRun(1000, func() {
		now += 60_000
		e.Time = now
		rs.Apply(s, e, now)
		for seg := range rs.Segments() {
			rs.Eval(seg, s, now)
			rs.NextChange(seg, s, now)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per event, want 0", allocs)
	}
}

// BenchmarkApplyAttributes applies one profile event setting n new
// attributes to an empty state, then one updating all of them: the cost
// per attribute (ns/attr) must stay flat as n grows. With a scan per
// update it grew with n (40,000 attributes took 1.9 s).
func BenchmarkApplyAttributes(b *testing.B) {
	rs := mustCompile(b, shopRules)
	for _, n := range []int{1, 100, 10_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			set := &schemas.Event{Type: schemas.EventProfile, CustomerID: "a", Time: at("2024-01-01T00:00:00Z")}
			upd := &schemas.Event{Type: schemas.EventProfile, CustomerID: "a", Time: set.Time}
			for i := range n {
				name := fmt.Sprintf("attr_%06d", i)
				set.Attributes = append(set.Attributes, schemas.Attribute{Name: name, Value: schemas.Number(float64(i))})
				upd.Attributes = append(upd.Attributes, schemas.Attribute{Name: name, Value: schemas.String("x")})
			}
			s := rs.NewState()
			b.ResetTimer()
			for b.Loop() {
				s.Reset()
				rs.Apply(s, set, set.Time)
				rs.Apply(s, upd, upd.Time)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*n), "ns/attr")
		})
	}
}
