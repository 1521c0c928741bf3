package rules

import (
	"math"
	"testing"

	"github.com/segd/segd/schemas"
)

const overflowRules = `version: 1
traits:
  spend_90d: sum(purchase.amount) over 90d
  spend: sum(purchase.amount)
  avg_order: avg(purchase.amount)
  avg_order_90d: avg(purchase.amount) over 90d
segments:
  big: { when: "spend_90d >= 1000" }
`

func traitNumber(t *testing.T, rs *RuleSet, s *State, name string, now int64) float64 {
	t.Helper()
	for i, tr := range rs.Traits() {
		if tr.Name == name {
			v := rs.TraitValue(i, s, now)
			if v.Kind != schemas.KindNumber {
				t.Fatalf("%s is %v, want a number", name, v)
			}
			return v.Num
		}
	}
	t.Fatalf("no trait %s", name)
	return 0
}

// Sums of finite amounts saturate at ±math.MaxFloat64 instead of
// overflowing to an infinity, within a bucket, across the buckets of a
// window, and in a merge; so no trait value is ever NaN or infinite.
func TestSumsSaturate(t *testing.T) {
	rs := mustCompile(t, overflowRules)
	buy := func(s *State, when string, amount float64) int64 {
		e := &schemas.Event{Type: schemas.EventPurchase, CustomerID: "a", Time: at(when), Amount: amount}
		rs.Apply(s, e, e.Time)
		return e.Time
	}
	check := func(s *State, now int64, want map[string]float64) {
		t.Helper()
		for name, w := range want {
			if got := traitNumber(t, rs, s, name, now); got != w {
				t.Errorf("%s = %v, want %v", name, got, w)
			}
		}
	}
	max := math.MaxFloat64

	// Two 1e308 purchases in one bucket: the bucket's own sum saturates.
	s := rs.NewState()
	buy(s, "2024-01-01T10:00:00Z", 1e308)
	now := buy(s, "2024-01-01T11:00:00Z", 1e308)
	check(s, now, map[string]float64{"spend_90d": max, "spend": max, "avg_order": max / 2, "avg_order_90d": max / 2})
	if !rs.Eval(0, s, now) {
		t.Error("big: want true at a saturated spend")
	}
	// A cancellation takes from the saturated sum: the excess is gone.
	now = buy(s, "2024-01-01T12:00:00Z", -1e308)
	check(s, now, map[string]float64{"spend": max - 1e308})

	// In two daily buckets: each bucket is finite, the window sum is not.
	s = rs.NewState()
	buy(s, "2024-01-01T10:00:00Z", 1e308)
	now = buy(s, "2024-01-02T10:00:00Z", 1e308)
	check(s, now, map[string]float64{"spend_90d": max, "avg_order_90d": max / 2})
	s.Reset()
	buy(s, "2024-01-01T10:00:00Z", -1e308)
	now = buy(s, "2024-01-02T10:00:00Z", -1e308)
	check(s, now, map[string]float64{"spend_90d": -max, "spend": -max})

	// The saturated state encodes and decodes to the same value.
	b := s.AppendBinary(nil)
	back := rs.NewState()
	if err := rs.DecodeState(b, back); err != nil {
		t.Fatal(err)
	}
	check(back, now, map[string]float64{"spend": -max})

	// A merge of two customers of 1e308 each.
	a, c := rs.NewState(), rs.NewState()
	buy(a, "2024-01-01T10:00:00Z", 1e308)
	now = buy(c, "2024-01-01T10:00:00Z", 1e308)
	rs.Merge(a, c, now)
	check(a, now, map[string]float64{"spend_90d": max, "spend": max, "avg_order": max / 2})
}
