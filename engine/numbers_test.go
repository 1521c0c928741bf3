package engine

import (
	"math"
	"testing"

	"github.com/segd/segd/schemas"
)

// A change the output encoding refuses (here: a trait that is NaN, as
// state written before segd checked numbers could hold) is set aside as a
// dead letter; the event is not an error, so the partition never stops on
// it, the transition stands and later changes flow.
func TestProcessorUnencodableChangeIsDeadLettered(t *testing.T) {
	h := newHarness(t, testRules)
	h.proc.opt.encodeChange = func(dst []byte, c *schemas.SegmentChange) ([]byte, error) {
		if c.SegmentID == "vip" && c.Kind == schemas.Enter {
			for i := range c.Traits {
				c.Traits[i].Value = schemas.Number(math.NaN())
			}
		}
		return schemas.AppendSegmentChangeJSON(dst, c)
	}
	h.apply(purchase("e1", "alice", "2024-01-01T10:00:00Z", 2000))
	h.expect(
		"2024-01-01T10:00:00Z alice buyer ENTER event e1",
		"DEADLETTER segd.deadletter",
	)
	if n := h.proc.stats.deadLetter[reasonUnencodableChange]; n != 1 {
		t.Fatalf("dead letters %s = %d, want 1", reasonUnencodableChange, n)
	}
	// alice is in vip (the transition stood), so a cancellation takes her
	// out with an EXIT that encodes.
	h.apply(purchase("e2", "alice", "2024-01-02T10:00:00Z", -1500))
	h.expect("2024-01-02T10:00:00Z alice vip EXIT event e2")
}
