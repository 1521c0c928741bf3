package segment

import (
	"strings"
	"testing"

	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
)

// TestErasureExitsOrphanMemberships: a customer still recorded in a
// segment the rules no longer define (state from before rules were
// reconciled at start) is EXITed from it when erased, and neither the
// membership index nor the count keeps them.
func TestErasureExitsOrphanMemberships(t *testing.T) {
	h := newHarness(t, testRules)
	h.apply(schemas.Event{Type: schemas.EventPurchase, EventID: "o1", CustomerID: "alice", Time: ts("2024-01-01T10:00:00Z"), Amount: 1500})
	h.expect("2024-01-01T10:00:00Z alice buyer ENTER event o1", "2024-01-01T10:00:00Z alice vip ENTER event o1")
	// The rules lose vip without a reload (as a store written before
	// reconciliation would be): alice's vip membership is an orphan.
	without, err := rules.Compile("test.yaml", []byte(strings.Replace(testRules, "  vip:\n    when: \"spend_90d >= 1000\"\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	h.rs = without
	if err := h.part.Close(); err != nil {
		t.Fatal(err)
	}
	if h.part, err = h.st.Partition(0); err != nil {
		t.Fatal(err)
	}
	if h.proc, err = New(without, h.part, h.proc.opt); err != nil {
		t.Fatal(err)
	}
	h.apply(schemas.Event{Type: schemas.EventProfile, EventID: "d1", CustomerID: "alice", Time: ts("2024-01-01T11:00:00Z"), Delete: true})
	h.expect("2024-01-01T11:00:00Z alice buyer EXIT deletion", "2024-01-01T11:00:00Z alice vip EXIT deletion", "2024-01-01T11:00:00Z alice  EXIT deletion")
	if n, err := h.st.CountMembers("vip"); err != nil || n != 0 {
		t.Fatalf("vip members after the erasure: %d (%v), want 0", n, err)
	}
	if ids, _, err := ListMembers(h.st, h.rs, "vip", "", 10, nil); err != nil || len(ids) != 0 {
		t.Fatalf("vip members listed after the erasure: %v (%v)", ids, err)
	}
}
