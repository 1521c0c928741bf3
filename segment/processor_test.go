package segment

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/state"
)

// harness runs a processor over a real Pebble store on an in-memory FS.
type harness struct {
	t    *testing.T
	fs   vfs.FS
	rs   *rules.RuleSet
	st   *state.Store
	part *state.Partition
	proc *Processor
	read uint64
}

func newHarness(t *testing.T, src string) *harness {
	t.Helper()
	rs, err := rules.Compile("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, rs: rs, fs: vfs.NewMem()}
	h.st, err = OpenStore("db", func() *rules.RuleSet { return h.rs }, state.Options{FS: h.fs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.st.Close() })
	h.part, err = h.st.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	h.proc, err = New(rs, h.part, Options{
		ChangesTopic:     DefaultChangesTopic,
		DeadLetterTopic:  DefaultDeadLetterTopic,
		EncodeChange:     schemas.AppendSegmentChangeJSON,
		ConsentAttribute: DefaultConsentAttribute,
		DedupHorizon:     time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) apply(e schemas.Event) {
	h.t.Helper()
	if err := h.proc.Apply(&e); err != nil {
		h.t.Fatal(err)
	}
}

// changes commits and returns the outbox entries added since the last call,
// one line each: "time customer segment KIND cause".
func (h *harness) changes() []string {
	h.t.Helper()
	if err := h.proc.Commit(); err != nil {
		h.t.Fatal(err)
	}
	var out []string
	err := h.part.ReadOutbox(h.read, 1<<20, func(seq uint64, v []byte) error {
		h.read = seq
		env, err := DecodeEnvelope(v)
		if err != nil {
			return err
		}
		if env.Topic != "segment.changes" {
			out = append(out, fmt.Sprintf("DEADLETTER %s", env.Topic))
			return nil
		}
		var c schemas.SegmentChange
		if err := schemas.DecodeSegmentChangeJSON(env.Value, &c); err != nil {
			return err
		}
		if string(env.Key) != c.CustomerID {
			return fmt.Errorf("key %q, customer %q", env.Key, c.CustomerID)
		}
		line := fmt.Sprintf("%s %s %s %s %s", fmtTime(c.Time), c.CustomerID, c.SegmentID, c.Kind, c.Cause)
		if c.CauseEventID != "" {
			line += " " + c.CauseEventID
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func (h *harness) expect(want ...string) {
	h.t.Helper()
	got := h.changes()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		h.t.Fatalf("changes:\n got:\n  %s\n want:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestProcessorEventAndTimeTransitions(t *testing.T) {
	h := newHarness(t, testRules)
	h.apply(purchase("e1", "alice", "2024-01-01T10:00:00Z", 600))
	h.expect("2024-01-01T10:00:00Z alice buyer ENTER event e1")

	h.apply(purchase("e2", "alice", "2024-01-05T09:30:00Z", 500))
	h.expect("2024-01-05T09:30:00Z alice vip ENTER event e2")

	// A re-delivered event is applied once.
	h.apply(purchase("e2", "alice", "2024-01-05T09:31:00Z", 500))
	h.expect()
	if h.proc.stats.Duplicates != 1 {
		t.Fatalf("duplicates = %d, want 1", h.proc.stats.Duplicates)
	}

	// Bob's events move the partition's watermark; alice's timers fire at
	// the exact instants her rules flip, with no event of hers.
	// orders_30d keeps daily buckets: alice's last purchase bucket starts
	// 2024-01-05T00:00, so it leaves the 30d window at 2024-02-04T00:00.
	h.apply(purchase("b1", "bob", "2024-02-10T12:00:00Z", 10))
	h.expect(
		"2024-02-04T00:00:00Z alice buyer EXIT timer",
		"2024-02-10T12:00:00Z bob buyer ENTER event b1",
	)
	// spend_90d: the 2024-01-05 bucket leaves at 2024-04-04T00:00, but
	// the 2024-01-01 bucket leaving at 2024-03-31T00:00 already drops the
	// total below 1000. lapsed: last order 2024-01-05T09:30 + 60d + 1ms.
	h.apply(purchase("b2", "bob", "2024-04-10T00:00:00Z", 10))
	h.expect(
		"2024-03-05T09:30:00.001Z alice lapsed ENTER timer",
		"2024-03-11T00:00:00Z bob buyer EXIT timer",
		"2024-03-31T00:00:00Z alice vip EXIT timer",
		"2024-04-10T00:00:00Z bob buyer ENTER event b2",
	)
	// A new order takes alice out of lapsed and back into buyer.
	h.apply(purchase("e3", "alice", "2024-04-11T08:00:00Z", 5))
	h.expect(
		"2024-04-11T08:00:00Z alice buyer ENTER event e3",
		"2024-04-11T08:00:00Z alice lapsed EXIT event e3",
	)
}

func TestProcessorLateEventAppliesAtWatermark(t *testing.T) {
	h := newHarness(t, testRules)
	h.apply(purchase("b1", "bob", "2024-01-10T00:00:00Z", 10))
	h.expect("2024-01-10T00:00:00Z bob buyer ENTER event b1")
	// Late: stamped before the watermark; the transition happens at the
	// watermark, and a late order does not become the last one.
	h.apply(purchase("a1", "alice", "2024-01-09T00:00:00Z", 2000))
	h.expect(
		"2024-01-10T00:00:00Z alice buyer ENTER event a1",
		"2024-01-10T00:00:00Z alice vip ENTER event a1",
	)
	if h.proc.stats.Late != 1 {
		t.Fatalf("late = %d, want 1", h.proc.stats.Late)
	}
}

func TestProcessorConsentAndErasure(t *testing.T) {
	h := newHarness(t, testRules)
	click := schemas.Event{Type: schemas.EventEngagement, EventID: "k1", CustomerID: "carol", Time: ts("2024-01-01T00:00:00Z"), Channel: "email", Action: "click"}
	h.apply(click)
	h.expect("2024-01-01T00:00:00Z carol clicker ENTER event k1")
	withdraw := schemas.Event{Type: schemas.EventProfile, EventID: "p1", CustomerID: "carol", Time: ts("2024-01-01T01:00:00Z"),
		Attributes: []schemas.Attribute{{Name: "consent_marketing", Value: schemas.Bool(false)}}}
	h.apply(withdraw)
	h.expect("2024-01-01T01:00:00Z carol clicker EXIT event p1")
	// Still no consent: another click does not bring carol back.
	click.EventID, click.Time = "k2", ts("2024-01-01T02:00:00Z")
	h.apply(click)
	h.expect()

	h.apply(purchase("o1", "carol", "2024-01-01T03:00:00Z", 1500))
	h.expect(
		"2024-01-01T03:00:00Z carol buyer ENTER event o1",
		"2024-01-01T03:00:00Z carol vip ENTER event o1",
	)
	h.apply(schemas.Event{Type: schemas.EventProfile, EventID: "d1", CustomerID: "carol", Time: ts("2024-01-01T04:00:00Z"), Delete: true})
	h.expect(
		"2024-01-01T04:00:00Z carol buyer EXIT deletion",
		"2024-01-01T04:00:00Z carol vip EXIT deletion",
		"2024-01-01T04:00:00Z carol  EXIT deletion", // the erasure notice
	)
	// Erased: no timer fires for carol later, and she starts fresh.
	h.apply(purchase("z1", "zed", "2024-06-01T00:00:00Z", 1))
	h.expect("2024-06-01T00:00:00Z zed buyer ENTER event z1")
	h.apply(purchase("o2", "carol", "2024-06-02T00:00:00Z", 1))
	h.expect("2024-06-02T00:00:00Z carol buyer ENTER event o2")
}

func TestProcessorRestartResumesClockAndTimers(t *testing.T) {
	h := newHarness(t, testRules)
	h.apply(purchase("e1", "alice", "2024-01-01T10:00:00Z", 1))
	h.expect("2024-01-01T10:00:00Z alice buyer ENTER event e1")
	// A new processor over the same partition (a restart) resumes the
	// committed clock, and the durable timer still fires.
	p2, err := New(h.rs, h.part, h.proc.opt)
	if err != nil {
		t.Fatal(err)
	}
	if p2.clock != ts("2024-01-01T10:00:00Z") {
		t.Fatalf("clock after restart = %s", fmtTime(p2.clock))
	}
	h.proc = p2
	h.apply(purchase("b1", "bob", "2024-03-01T00:00:00Z", 1))
	h.expect(
		"2024-01-31T00:00:00Z alice buyer EXIT timer",
		"2024-03-01T00:00:00Z bob buyer ENTER event b1",
	)
}

func TestEnvelopeRoundTrip(t *testing.T) {
	b := AppendEnvelope(nil, "t", "k", []Header{{"a", []byte("1")}, {"b", nil}}, []byte("value"))
	e, err := DecodeEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	if e.Topic != "t" || string(e.Key) != "k" || len(e.Headers) != 2 || e.Headers[0].Key != "a" || string(e.Headers[0].Value) != "1" || string(e.Value) != "value" {
		t.Fatalf("got %+v", e)
	}
	for i := 0; i < len(b)-len("value"); i++ {
		if _, err := DecodeEnvelope(b[:i]); err == nil {
			t.Fatalf("truncated at %d: no error", i)
		}
	}
}

func TestProcessorRuleReloadLeavesNoStaleMembers(t *testing.T) {
	h := newHarness(t, testRules)
	h.apply(purchase("e1", "alice", "2024-01-01T10:00:00Z", 1500))
	h.apply(purchase("b1", "bob", "2024-01-02T10:00:00Z", 50))
	h.expect(
		"2024-01-01T10:00:00Z alice buyer ENTER event e1",
		"2024-01-01T10:00:00Z alice vip ENTER event e1",
		"2024-01-02T10:00:00Z bob buyer ENTER event b1",
	)
	// New rules: buyer needs 2 orders now, vip is gone, big is new; the
	// spend trait keeps its state because its definition is unchanged.
	next := `version: 4
traits:
  orders_30d: count(purchase) over 30d
  spend_90d: sum(purchase.amount) over 90d
segments:
  buyer: { when: "orders_30d >= 2" }
  big: { when: "spend_90d >= 40" }
`
	rs2, err := rules.Compile("next.yaml", []byte(next))
	if err != nil {
		t.Fatal(err)
	}
	h.rs = rs2
	n, err := h.proc.Reload(rs2, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Cached customers (both are) and uncached ones are re-evaluated at
	// the partition clock (bob's event time).
	h.expect(
		"2024-01-02T10:00:00Z alice vip EXIT rule_change",
		"2024-01-02T10:00:00Z alice buyer EXIT rule_change",
		"2024-01-02T10:00:00Z alice big ENTER rule_change",
		"2024-01-02T10:00:00Z bob buyer EXIT rule_change",
		"2024-01-02T10:00:00Z bob big ENTER rule_change",
	)
	if n != 5 {
		t.Fatalf("reload reported %d changes, want 5", n)
	}
	// The next event runs under the new rules; sequences continue.
	h.apply(purchase("e2", "alice", "2024-01-03T10:00:00Z", 1))
	h.expect("2024-01-03T10:00:00Z alice buyer ENTER event e2")
	c, err := h.proc.load("alice", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.member(0).seq; got != 3 {
		t.Fatalf("alice buyer seq %d, want 3 (ENTER, EXIT, ENTER)", got)
	}
	// Transitions per segment, counted by index under each rule set (the
	// first one's folded in at the reload) and by id for the dropped vip.
	want := map[string][2]uint64{"buyer": {3, 2}, "vip": {1, 1}, "big": {2, 0}}
	if got := h.proc.Stats().SegmentChanges; !maps.Equal(got, want) {
		t.Fatalf("segment changes %v, want %v", got, want)
	}
}

// An event older than the longest window (plus a bucket) behind the
// watermark is counted and ignored; a profile update that old still
// applies (attributes are not windowed).
func TestProcessorTooLateEventIgnored(t *testing.T) {
	h := newHarness(t, testRules)
	h.apply(purchase("b1", "bob", "2024-06-10T00:00:00Z", 10))
	h.expect("2024-06-10T00:00:00Z bob buyer ENTER event b1")
	h.apply(purchase("a1", "alice", "2023-01-01T00:00:00Z", 2000))
	h.expect()
	if h.proc.stats.TooLate != 1 || h.proc.stats.Events[schemas.EventPurchase] != 1 {
		t.Fatalf("tooLate = %d, purchases applied = %d; want 1 and 1", h.proc.stats.TooLate, h.proc.stats.Events[schemas.EventPurchase])
	}
	// Within the window, late is applied.
	h.apply(purchase("a2", "alice", "2024-06-01T00:00:00Z", 2000))
	h.expect(
		"2024-06-10T00:00:00Z alice buyer ENTER event a2",
		"2024-06-10T00:00:00Z alice vip ENTER event a2",
	)
}

// TestChangeIDsNeverRepeatAcrossLives: a customer erased and seen again
// starts at seq 1; an ENTER at the same millisecond as an ENTER of the
// earlier life must still get a new id (consumers de-duplicate by id, so a
// reused id drops a real ENTER), while a replay of the same input gives
// the same ids.
func TestChangeIDsNeverRepeatAcrossLives(t *testing.T) {
	run := func() []string {
		h := newHarness(t, testRules)
		var ids []string
		collect := func() {
			if err := h.proc.Commit(); err != nil {
				t.Fatal(err)
			}
			err := h.part.ReadOutbox(h.read, 1<<20, func(seq uint64, v []byte) error {
				h.read = seq
				env, err := DecodeEnvelope(v)
				if err != nil {
					return err
				}
				var c schemas.SegmentChange
				if err := schemas.DecodeSegmentChangeJSON(env.Value, &c); err != nil {
					return err
				}
				ids = append(ids, c.Kind.String()+" "+c.ID)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		at := ts("2024-01-01T10:00:00Z")
		h.apply(schemas.Event{Type: schemas.EventPurchase, EventID: "o1", CustomerID: "dana", Time: ts("2024-01-01T09:00:00Z"), Amount: 5})
		collect()
		// Erased, then an order in the same millisecond as the erasure.
		h.apply(schemas.Event{Type: schemas.EventProfile, EventID: "d1", CustomerID: "dana", Time: at, Delete: true})
		h.apply(schemas.Event{Type: schemas.EventPurchase, EventID: "o2", CustomerID: "dana", Time: at, Amount: 5})
		collect()
		// Erased again and back at the same millisecond once more.
		h.apply(schemas.Event{Type: schemas.EventProfile, EventID: "d2", CustomerID: "dana", Time: at, Delete: true})
		h.apply(schemas.Event{Type: schemas.EventPurchase, EventID: "o3", CustomerID: "dana", Time: at, Amount: 5})
		collect()
		return ids
	}
	first := run()
	seen := map[string]bool{}
	enters := 0
	for _, line := range first {
		id := strings.Fields(line)[1]
		if seen[id] {
			t.Fatalf("change id %s used twice: %q", id, first)
		}
		seen[id] = true
		if strings.HasPrefix(line, "ENTER") {
			enters++
		}
	}
	if enters != 3 {
		t.Fatalf("%d ENTERs, want 3 (one per life): %q", enters, first)
	}
	if again := run(); strings.Join(again, ",") != strings.Join(first, ",") {
		t.Fatalf("ids differ between two runs of the same input:\n%q\n%q", first, again)
	}
}

// TestErasureNoticeForEveryErasedCustomer: erasing a customer who is in no
// segment still publishes an erasure notice (empty segment, seq 0), so
// downstream systems erase what they hold; a member gets its EXITs and
// the notice.
func TestErasureNoticeForEveryErasedCustomer(t *testing.T) {
	h := newHarness(t, testRules)
	h.apply(schemas.Event{Type: schemas.EventBrowse, EventID: "b1", CustomerID: "nora", Time: ts("2024-01-01T01:00:00Z"), Page: "home"})
	h.expect()
	h.apply(schemas.Event{Type: schemas.EventProfile, EventID: "d1", CustomerID: "nora", Time: ts("2024-01-01T02:00:00Z"), Delete: true})
	h.expect("2024-01-01T02:00:00Z nora  EXIT deletion")
}

// TestChangeIDReusesItsTailOnlyForTheSameTimes: the processor formats an
// id's times once for the changes that share them; every id must still
// be the one appendChangeID makes from scratch, whatever came before.
func TestChangeIDReusesItsTailOnlyForTheSameTimes(t *testing.T) {
	var p Processor
	rnd := rand.New(rand.NewPCG(7, 11))
	pick := func(xs ...int64) int64 { return xs[rnd.IntN(len(xs))] }
	for i := range 10000 {
		customer := fmt.Sprintf("c%d", rnd.IntN(3))
		segment := fmt.Sprintf("s%d", rnd.IntN(3))
		seq := uint64(rnd.IntN(5))
		at := pick(0, 1, 1700000000000, 1700000000001)
		born := pick(0, 5, 1700000000000)
		got := p.changeID(customer, segment, seq, at, born)
		if want := string(appendChangeID(nil, customer, segment, seq, at, born)); got != want {
			t.Fatalf("call %d: id %q, want %q", i, got, want)
		}
	}
}
