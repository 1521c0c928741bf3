package rules

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/segd/segd/schemas"
)

// Random attribute updates across the size where lookups switch to the
// index agree with a map model: values, count, AttrSize total, the
// AttrUsageAfter prediction, and a round trip through the encoding.
func TestAttrsMatchModel(t *testing.T) {
	rs := mustCompile(t, shopRules)
	rng := rand.New(rand.NewPCG(1, 2))
	s := rs.NewState()
	model := map[string]schemas.Value{}
	for round := range 300 {
		var updates []schemas.Attribute
		for range rng.IntN(8) + 1 {
			name := fmt.Sprintf("a%d", rng.IntN(40))
			var v schemas.Value
			switch rng.IntN(4) {
			case 0: // null: remove
			case 1:
				v = schemas.Number(float64(rng.IntN(100)))
			case 2:
				v = schemas.Bool(rng.IntN(2) == 0)
			case 3:
				v = schemas.String(name + "-value")
			}
			updates = append(updates, schemas.Attribute{Name: name, Value: v})
		}
		wantN, wantBytes := s.AttrUsageAfter(updates)
		rs.Apply(s, &schemas.Event{Type: schemas.EventProfile, CustomerID: "c", Time: 1, Attributes: updates}, 1)
		for _, u := range updates {
			if u.Value.Kind == schemas.KindNull {
				delete(model, u.Name)
			} else {
				model[u.Name] = u.Value
			}
		}
		bytes := 0
		for name, v := range model {
			bytes += AttrSize(schemas.Attribute{Name: name, Value: v})
			if got, ok := s.Attr(name); !ok || got != v {
				t.Fatalf("round %d: %s = %v %v, want %v", round, name, got, ok, v)
			}
		}
		if n, b := s.AttrUsage(); n != len(model) || b != bytes || n != wantN || b != wantBytes {
			t.Fatalf("round %d: usage %d/%d, predicted %d/%d, want %d/%d", round, n, b, wantN, wantBytes, len(model), bytes)
		}
		if round%50 == 0 {
			back := rs.NewState()
			if err := rs.DecodeState(s.AppendBinary(nil), back); err != nil {
				t.Fatal(err)
			}
			if n, b := back.AttrUsage(); n != len(model) || b != bytes {
				t.Fatalf("decoded usage %d/%d, want %d/%d", n, b, len(model), bytes)
			}
			s = back
		}
	}
}
