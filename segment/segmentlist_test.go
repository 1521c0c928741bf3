package segment

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/state"
)

// reopen closes the harness's store and opens it again (a restart) with
// the rules src, in a new processor.
func (h *harness) reopen(src string) {
	h.t.Helper()
	rs, err := rules.Compile("test.yaml", []byte(src))
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.part.Close(); err != nil {
		h.t.Fatal(err)
	}
	if err := h.st.Close(); err != nil {
		h.t.Fatal(err)
	}
	h.rs = rs
	if h.st, err = OpenStore("db", func() *rules.RuleSet { return h.rs }, state.Options{FS: h.fs}); err != nil {
		h.t.Fatal(err)
	}
	if h.part, err = h.st.Partition(0); err != nil {
		h.t.Fatal(err)
	}
	if h.proc, err = New(rs, h.part, h.proc.opt); err != nil {
		h.t.Fatal(err)
	}
}

// standing lists a customer's memberships by segment id, orphans
// included, as "segment:seq" (seq odd: in the segment).
func standing(t *testing.T, h *harness, id string) string {
	t.Helper()
	rec, err := h.part.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	c := rec.(*Customer)
	var out []string
	for _, sm := range c.members {
		out = append(out, h.rs.Segments()[sm.seg].ID+":"+string(rune('0'+sm.m.seq)))
	}
	for _, o := range c.orphans {
		out = append(out, "orphan "+o.segment+":"+string(rune('0'+o.m.seq)))
	}
	return strings.Join(out, " ")
}

// TestRecordsNameTheirSegmentsThroughTheStore: a record names its
// segments by index into its rule set's segment list, which the store
// keeps: after a restart with the segments reordered, one removed and one
// added, a fresh process (nothing cached) reads each membership back on
// its segment, and the removed one as an orphan.
func TestRecordsNameTheirSegmentsThroughTheStore(t *testing.T) {
	h := newHarness(t, testRules)
	h.apply(purchase("o1", "alice", "2024-01-01T10:00:00Z", 1500))
	h.expect("2024-01-01T10:00:00Z alice buyer ENTER event o1", "2024-01-01T10:00:00Z alice vip ENTER event o1")
	if got, want := standing(t, h, "alice"), "buyer:1 vip:1"; got != want {
		t.Fatalf("before: %s, want %s", got, want)
	}
	reordered := strings.Replace(testRules, "segments:\n", "segments:\n  fresh:\n    when: \"orders_30d >= 5\"\n", 1)
	reordered = strings.Replace(reordered, "  buyer:\n    description: ordered in the last 30 days\n    when: \"orders_30d >= 1\"\n", "", 1)
	reordered += "  buyer:\n    when: \"orders_30d >= 1\"\n"
	reordered = strings.Replace(reordered, "  vip:\n    when: \"spend_90d >= 1000\"\n", "", 1)
	h.reopen(reordered)
	if h.rs.SegmentListID() == rulesListID(t, testRules) {
		t.Fatal("the test's rules did not change the segment list")
	}
	if got, want := standing(t, h, "alice"), "buyer:1 orphan vip:1"; got != want {
		t.Fatalf("after the restart: %s, want %s", got, want)
	}
	// The record, written again under the new list, reads back the same
	// after one more restart.
	h.apply(purchase("o2", "alice", "2024-01-02T10:00:00Z", 10))
	h.changes()
	h.reopen(reordered)
	if got, want := standing(t, h, "alice"), "buyer:1 orphan vip:1"; got != want {
		t.Fatalf("after the second restart: %s, want %s", got, want)
	}
}

func rulesListID(t *testing.T, src string) uint64 {
	t.Helper()
	rs, err := rules.Compile("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return rs.SegmentListID()
}

// TestACommitWithoutRecordsStoresNoSegmentList: the segment list is
// stored with the first records that name it, and a commit that changes
// nothing still writes nothing.
func TestACommitWithoutRecordsStoresNoSegmentList(t *testing.T) {
	h := newHarness(t, testRules)
	id := h.rs.SegmentListID()
	if err := h.proc.Commit(); err != nil {
		t.Fatal(err)
	}
	if ok, err := h.part.HasCatalog(id); err != nil || ok {
		t.Fatalf("after an empty commit the partition has the segment list: %v %v", ok, err)
	}
	h.apply(purchase("o1", "alice", "2024-01-01T10:00:00Z", 15))
	h.changes()
	if ok, err := h.part.HasCatalog(id); err != nil || !ok {
		t.Fatalf("after a commit of a record the partition lacks its segment list: %v %v", ok, err)
	}
}

// TestDecodeVersion2Record: a record written by segd before segment lists
// (version 2: each membership names its segment; testdata/record-v2.bin,
// written by that code under the test rules plus a segment "retired")
// reads back, and is written again in the current version to the same
// meaning.
func TestDecodeVersion2Record(t *testing.T) {
	data, err := os.ReadFile("testdata/record-v2.bin")
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != 2 {
		t.Fatalf("golden record has version %d", data[0])
	}
	rs, err := rules.Compile("test.yaml", []byte(testRules))
	if err != nil {
		t.Fatal(err)
	}
	c, err := DecodeCustomer(rs, nil, data)
	if err != nil {
		t.Fatal(err)
	}
	check := func(c *Customer) {
		t.Helper()
		buyer, _ := rs.SegmentIndex("buyer")
		vip, _ := rs.SegmentIndex("vip")
		if in, since, seq := c.Member(buyer); !in || seq != 1 || since != ts("2024-01-01T10:00:00Z") {
			t.Errorf("buyer: in %v since %d seq %d", in, since, seq)
		}
		if in, since, seq := c.Member(vip); !in || seq != 1 || since != ts("2024-01-01T10:00:00Z") {
			t.Errorf("vip: in %v since %d seq %d", in, since, seq)
		}
		if len(c.members) != 2 {
			t.Errorf("members %+v, want buyer and vip", c.members)
		}
		if len(c.orphans) != 1 || c.orphans[0].segment != "retired" || c.orphans[0].m.seq != 1 || c.orphans[0].m.since != ts("2024-01-02T10:00:00Z") {
			t.Errorf("orphans %+v, want retired entered 2024-01-02T10:00", c.orphans)
		}
		if c.born == 0 || c.timerAt == 0 {
			t.Errorf("born %d timer %d, want both set", c.born, c.timerAt)
		}
		if a, ok := c.traits.Attr("tier"); !ok || a.Kind != schemas.KindString || a.Str != "gold" {
			t.Errorf("attribute tier = %+v %v", a, ok)
		}
		if v := rs.TraitValue(0, &c.traits, ts("2024-01-03T10:00:00Z")); v.Num != 2 {
			t.Errorf("orders_30d = %+v, want 2", v)
		}
	}
	check(c)
	enc := c.AppendBinary(nil)
	if enc[0] != recordVersion || len(enc) >= len(data) {
		t.Fatalf("re-encoded as version %d in %d bytes (version 2: %d)", enc[0], len(enc), len(data))
	}
	c3, err := DecodeCustomer(rs, nil, enc)
	if err != nil {
		t.Fatal(err)
	}
	check(c3)
	if !bytes.Equal(c3.AppendBinary(nil), enc) {
		t.Fatal("version 3 encoding is not stable")
	}
}

// TestCorruptMemberLists: a version 3 record whose members cannot be
// named is corrupt, never misread.
func TestCorruptMemberLists(t *testing.T) {
	rs, err := rules.Compile("test.yaml", []byte(testRules))
	if err != nil {
		t.Fatal(err)
	}
	other := rulesWithSegments(t, "x", "y")
	c, _ := DecodeCustomer(other, nil, nil)
	*c.memberRef(1) = member{seq: 1, since: 5}
	good, _ := DecodeCustomer(rs, nil, nil)
	*good.memberRef(0) = member{seq: 1, since: 5}
	*good.memberRef(3) = member{seq: 2, since: 9}
	enc := good.AppendBinary(nil)
	// Version, timer 0, born 0, 2 members, then the list id: the first
	// member's index follows at byte 12, the second's distance at 15.
	if enc[3] != 2 {
		t.Fatalf("unexpected layout: %x", enc)
	}
	pastEnd := bytes.Clone(enc)
	pastEnd[15] = 4 // index 4 of a list of 4
	repeat := bytes.Clone(enc)
	repeat[15] = 0
	for _, tc := range []struct {
		name  string
		data  []byte
		lists SegmentLists
	}{
		{"another rule set's list, unknown", c.AppendBinary(nil), nil},
		{"a list the store does not hold", c.AppendBinary(nil), NewSegmentLists(emptyCatalogs{})},
		{"an index past the list's end", pastEnd, nil},
		{"a segment twice", repeat, nil},
	} {
		if _, err := DecodeCustomer(rs, tc.lists, tc.data); !errors.Is(err, errCorruptRecord) {
			t.Errorf("%s: err %v, want errCorruptRecord", tc.name, err)
		}
	}
	if _, err := DecodeCustomer(rs, ruleSetList{other}, c.AppendBinary(nil)); err != nil {
		t.Errorf("the other rule set's list, known: %v", err)
	}
}

type emptyCatalogs struct{}

func (emptyCatalogs) Catalog(uint64) ([]byte, bool, error) { return nil, false, nil }
