package segment

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/segd/segd/rules"
)

// rulesWithSegments compiles a rule set whose segments are ids, in that
// order, each on one trait.
func rulesWithSegments(t *testing.T, ids ...string) *rules.RuleSet {
	t.Helper()
	var b strings.Builder
	b.WriteString("version: 1\ntraits:\n  n: count(purchase) over 30d\nsegments:\n")
	for _, id := range ids {
		fmt.Fprintf(&b, "  %s: { when: \"n >= 1\" }\n", id)
	}
	rs, err := rules.Compile("members.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestMembersFollowTheRuleSet: memberships are kept by segment id, so a
// record written under one rule set reads back under another with its
// segments in a different order (and some gone or new): each standing
// lands on its segment's new index, and the gone ones become orphans.
func TestMembersFollowTheRuleSet(t *testing.T) {
	before := rulesWithSegments(t, "a", "b", "c", "d")
	after := rulesWithSegments(t, "d", "x", "c", "a")
	c, _ := DecodeCustomer(before, nil, nil)
	want := map[string]member{"a": {seq: 1, since: 10}, "b": {seq: 3, since: 30}, "d": {seq: 2, since: 40}}
	for i, s := range before.Segments() {
		if m, ok := want[s.ID]; ok {
			*c.memberRef(i) = m
		}
	}
	got, err := DecodeCustomer(after, ruleSetList{before}, c.AppendBinary(nil))
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range after.Segments() {
		in, since, seq := got.Member(i)
		w := want[s.ID]
		if in != w.in() || since != w.since || seq != w.seq {
			t.Errorf("segment %s: in %v since %d seq %d, want %+v", s.ID, in, since, seq, w)
		}
	}
	if len(got.orphans) != 1 || got.orphans[0].segment != "b" || got.orphans[0].m != want["b"] {
		t.Errorf("orphans %+v, want b %+v", got.orphans, want["b"])
	}
	for j := 1; j < len(got.members); j++ {
		if got.members[j-1].seg >= got.members[j].seg {
			t.Fatalf("members out of order: %+v", got.members)
		}
	}
}

// TestCustomerSizeDoesNotGrowWithSegments: a customer pays for the
// segments it has been in, not for every segment of the rules (it paid 16
// bytes per segment: 16 KB per cached customer with 1000 segments).
func TestCustomerSizeDoesNotGrowWithSegments(t *testing.T) {
	size := func(n int) int {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("s%d", i)
		}
		rs := rulesWithSegments(t, ids...)
		c, _ := DecodeCustomer(rs, nil, nil)
		*c.memberRef(n / 2) = member{seq: 1, since: 5}
		*c.memberRef(n - 1) = member{seq: 1, since: 5}
		d, err := DecodeCustomer(rs, nil, c.AppendBinary(nil))
		if err != nil {
			t.Fatal(err)
		}
		return d.SizeBytes()
	}
	small, large := size(10), size(1000)
	if large != small {
		t.Fatalf("a customer in 2 segments: %d bytes under 10 segments, %d under 1000", small, large)
	}
}

// TestCustomerSizeBytesMatchesHeap: the record cache's budget counts
// Customer.SizeBytes, so it must be what a decoded customer holds,
// memberships and the rules' state included, within the allocator's
// rounding.
func TestCustomerSizeBytesMatchesHeap(t *testing.T) {
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = fmt.Sprintf("seg%d", i)
	}
	rs := rulesWithSegments(t, ids...)
	const n = 20000
	encs := make([][]byte, n)
	for i := range encs {
		c, _ := DecodeCustomer(rs, nil, nil)
		c.timerAt, c.born = int64(1000+i), int64(7+i)
		for k := 0; k < 1+i%7; k++ {
			*c.memberRef((i*13 + k*17) % len(ids)) = member{seq: uint64(1 + k), since: int64(i)}
		}
		c.remember(eventIDHash(fmt.Sprint("e", i)), int64(i))
		encs[i] = c.AppendBinary(nil)
	}
	custs := make([]*Customer, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i, enc := range encs {
		c, err := DecodeCustomer(rs, nil, enc)
		if err != nil {
			t.Fatal(err)
		}
		custs[i] = c
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapAlloc-before.HeapAlloc) - float64(n*8)
	claimed := 0
	for _, c := range custs {
		claimed += c.SizeBytes()
	}
	ratio := float64(claimed) / heap
	t.Logf("%d customers: heap %.0f B each, SizeBytes %.0f B each (%.2f)", n, heap/n, float64(claimed)/n, ratio)
	if ratio < 0.8 || ratio > 1.2 {
		t.Fatalf("SizeBytes says %d bytes for %d customers holding %.0f: ratio %.2f, want 0.8-1.2", claimed, n, heap, ratio)
	}
	runtime.KeepAlive(custs)
	runtime.KeepAlive(encs) // live across both measurements: not part of the difference
}

// TestFindMemberFromAnyHint: findMember gives the position a linear scan
// gives (of the segment, or where it would go), from any hint, valid or
// not, for members spread sparse and dense.
func TestFindMemberFromAnyHint(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for round := 0; round < 300; round++ {
		var c Customer
		n, spread := r.IntN(60), 1+r.IntN(8)
		seg := int32(0)
		for i := 0; i < n; i++ {
			seg += int32(1 + r.IntN(spread))
			c.members = append(c.members, segMember{seg: seg})
		}
		for q := 0; q < 50; q++ {
			want := int32(r.IntN(int(seg) + 3))
			wantPos := 0
			for wantPos < len(c.members) && c.members[wantPos].seg < want {
				wantPos++
			}
			wantFound := wantPos < len(c.members) && c.members[wantPos].seg == want
			hint := r.IntN(len(c.members)+3) - 1
			if pos, found := c.findMember(want, hint); pos != wantPos || found != wantFound {
				t.Fatalf("members %v, segment %d from hint %d: %d %v, want %d %v", c.members, want, hint, pos, found, wantPos, wantFound)
			}
		}
	}
}

// addMembers merges first memberships into a customer's, in segment
// order, whatever order they come in.
func TestAddMembersMergesInSegmentOrder(t *testing.T) {
	cases := []struct{ have, add, want []int32 }{
		{nil, []int32{3}, []int32{3}},
		{[]int32{1, 5, 9}, []int32{0, 6, 10}, []int32{0, 1, 5, 6, 9, 10}},
		{[]int32{1, 5, 9}, []int32{2, 3, 4}, []int32{1, 2, 3, 4, 5, 9}},
		{[]int32{4}, []int32{7, 2, 5}, []int32{2, 4, 5, 7}},
	}
	for _, tc := range cases {
		c := &Customer{}
		for _, s := range tc.have {
			c.members = append(c.members, segMember{seg: s, m: member{seq: uint64(s) + 1}})
		}
		var add []segMember
		for _, s := range tc.add {
			add = append(add, segMember{seg: s, m: member{seq: uint64(s) + 1}})
		}
		c.addMembers(add)
		var got []int32
		for _, sm := range c.members {
			if sm.m.seq != uint64(sm.seg)+1 {
				t.Fatalf("%v + %v: segment %d carries another's standing", tc.have, tc.add, sm.seg)
			}
			got = append(got, sm.seg)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%v + %v = %v, want %v", tc.have, tc.add, got, tc.want)
		}
	}
}
