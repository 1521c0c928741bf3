package rules

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/segd/segd/schemas"
)

// manyTraitRules has n traits, trait i counting purchases of more than i:
// a purchase of amount a feeds traits 0..a-1, so the traits a customer
// has state for depend on the amounts it saw, and the first events create
// them out of index order, across the 64-trait word boundary.
func manyTraitRules(n int) string {
	var b strings.Builder
	b.WriteString("version: 1\ntraits:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  t%03d: count(purchase where amount > %d) over 30d\n", i, i)
	}
	b.WriteString("segments:\n  x: { when: \"t000 >= 1\" }\n")
	return b.String()
}

// TestSparseStateHoldsFedTraitsOnly: a state holds an accumulator for the
// traits an event fed and no other, every trait reads what a count of its
// events says, and encoding, decoding and merging keep each trait's state
// with its trait, for rule sets past 64 traits too.
func TestSparseStateHoldsFedTraitsOnly(t *testing.T) {
	for _, n := range []int{10, 64, 65, 150} {
		rs := mustCompile(t, manyTraitRules(n))
		r := rand.New(rand.NewPCG(uint64(n), 7))
		base := at("2024-03-01T00:00:00Z")
		for iter := 0; iter < 200; iter++ {
			want := [2][]float64{make([]float64, n), make([]float64, n)}
			states := [2]*State{rs.NewState(), rs.NewState()}
			now := base
			for k := 0; k < 1+r.IntN(8); k++ {
				amount := r.IntN(n + 10)
				who := r.IntN(2)
				now += int64(r.IntN(3600_000))
				rs.Apply(states[who], &schemas.Event{Type: schemas.EventPurchase, CustomerID: "c", Time: now, Amount: float64(amount)}, now)
				for i := 0; i < amount && i < n; i++ {
					want[who][i]++
				}
			}
			for who, s := range states {
				checkCounts(t, rs, s, want[who], now, fmt.Sprintf("n=%d iteration %d state %d", n, iter, who))
				enc := s.AppendBinary(nil)
				d := rs.NewState()
				if err := rs.DecodeState(enc, d); err != nil {
					t.Fatal(err)
				}
				checkCounts(t, rs, d, want[who], now, fmt.Sprintf("n=%d iteration %d state %d decoded", n, iter, who))
				if again := d.AppendBinary(nil); !bytes.Equal(again, enc) {
					t.Fatalf("n=%d iteration %d: decoded state encodes differently", n, iter)
				}
			}
			rs.Merge(states[0], states[1], now)
			sum := make([]float64, n)
			for i := range sum {
				sum[i] = want[0][i] + want[1][i]
			}
			checkCounts(t, rs, states[0], sum, now, fmt.Sprintf("n=%d iteration %d merged", n, iter))
		}
	}
}

func checkCounts(t *testing.T, rs *RuleSet, s *State, want []float64, now int64, what string) {
	t.Helper()
	fed := 0
	for i, w := range want {
		if w > 0 {
			fed++
		}
		if got := rs.TraitValue(i, s, now); got.Num != w {
			t.Fatalf("%s: trait %d = %v, want %v", what, i, got.Num, w)
		}
		if s.HasHistory(i) != (w > 0) {
			t.Fatalf("%s: trait %d HasHistory %v with %v events", what, i, s.HasHistory(i), w)
		}
	}
	if len(s.traits) != fed {
		t.Fatalf("%s: %d accumulators for %d traits fed", what, len(s.traits), fed)
	}
}
