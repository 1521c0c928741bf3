package segment

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/segd/segd/schemas"
)

// A change the output encoding refuses (here: a trait that is NaN, as
// state written before segd checked numbers could hold) is set aside as a
// dead letter; the event is not an error, so the partition never stops on
// it, the transition stands and later changes flow.
func TestProcessorUnencodableChangeIsDeadLettered(t *testing.T) {
	h := newHarness(t, testRules)
	h.proc.opt.EncodeChange = func(dst []byte, c *schemas.SegmentChange) ([]byte, error) {
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
	if n := h.proc.stats.DeadLetters[ReasonUnencodableChange]; n != 1 {
		t.Fatalf("dead letters %s = %d, want 1", ReasonUnencodableChange, n)
	}
	// alice is in vip (the transition stood), so a cancellation takes her
	// out with an EXIT that encodes.
	h.apply(purchase("e2", "alice", "2024-01-02T10:00:00Z", -1500))
	h.expect("2024-01-02T10:00:00Z alice vip EXIT event e2")
}

// Profile attributes are bounded per event and per customer, in count and
// bytes; an update past a bound is refused whole with too_many_attributes
// (the task dead-letters it), and a customer past a bound may shrink.
func TestProcessorAttributeBounds(t *testing.T) {
	h := newHarness(t, testRules)
	h.proc.opt.MaxAttributes, h.proc.opt.MaxAttributeBytes = 4, 100
	str := func(name, v string) schemas.Attribute { return schemas.Attribute{Name: name, Value: schemas.String(v)} }
	refused := func(e schemas.Event, want string) {
		t.Helper()
		err := h.proc.Apply(&e)
		var rej *Rejected
		if !errors.As(err, &rej) || rej.Reason != string(schemas.ReasonTooManyAttributes) || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want too_many_attributes with %q", err, want)
		}
	}
	h.apply(profile("p1", "alice", "2024-01-01T00:00:00Z", str("a", "1"), str("b", "2"), str("c", "3")))
	refused(profile("p2", "alice", "2024-01-01T00:00:01Z", str("d", "4"), str("e", "5")), "customer would have 5 attributes, limit 4")
	refused(profile("p3", "alice", "2024-01-01T00:00:02Z", str("a", "1"), str("b", "1"), str("c", "1"), str("d", "1"), str("e", "1")),
		"the event carries 5 attributes, limit 4")
	refused(profile("p4", "alice", "2024-01-01T00:00:03Z", str("d", strings.Repeat("x", 100))), "would take 107 bytes, limit 100")
	if v, ok := h.proc.load("alice", ""); ok == nil {
		if n, _ := v.traits.AttrUsage(); n != 3 {
			t.Fatalf("refused updates applied: %d attributes", n)
		}
	}
	// Replacing and removing within the bounds is fine.
	h.apply(profile("p5", "alice", "2024-01-01T00:00:04Z", str("a", "new"), schemas.Attribute{Name: "b"}, str("d", "4"), str("e", "5")))
	// Lowered bounds: the customer is past them, and may still shrink.
	h.proc.opt.MaxAttributes = 2
	h.apply(profile("p6", "alice", "2024-01-01T00:00:05Z", schemas.Attribute{Name: "a"}))
	refused(profile("p7", "alice", "2024-01-01T00:00:06Z", str("z", "1")), "customer would have 4 attributes, limit 2")
}

// A profile event under attribute bounds looks its customer up once: the
// bound check's load is the event's (a second lookup was a map access per
// profile event on the hot path).
func TestProfileUnderBoundsLoadsCustomerOnce(t *testing.T) {
	h := newHarness(t, testRules)
	h.proc.opt.MaxAttributes, h.proc.opt.MaxAttributeBytes = 4, 100
	str := func(name, v string) schemas.Attribute { return schemas.Attribute{Name: name, Value: schemas.String(v)} }
	h.apply(profile("p1", "alice", "2024-01-01T00:00:00Z", str("a", "1")))
	before := h.st.Metrics()
	h.apply(profile("p2", "alice", "2024-01-01T00:00:01Z", str("b", "2")))
	after := h.st.Metrics()
	if got := after.CacheHits + after.CacheMisses - before.CacheHits - before.CacheMisses; got != 1 {
		t.Fatalf("a profile event looked its customer up %d times, want 1", got)
	}
	c, err := h.proc.load("alice", "")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := c.traits.AttrUsage(); n != 2 {
		t.Fatalf("customer has %d attributes after two updates, want 2", n)
	}
}
