package segment

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/segd/segd/rules"
)

func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(AppendEnvelope(nil, "segment.changes", "c1", []Header{{"segd-reason", []byte("json_decode")}}, []byte("value")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := DecodeEnvelope(data)
		if err != nil {
			return
		}
		// Varints may be non-minimal, so compare meaning: what decodes
		// re-encodes canonically, and that decodes to the same envelope.
		canon := AppendEnvelope(nil, env.Topic, string(env.Key), env.Headers, env.Value)
		back, err := DecodeEnvelope(canon)
		if err != nil {
			t.Fatalf("canonical form does not decode: %v", err)
		}
		if !bytes.Equal(AppendEnvelope(nil, back.Topic, string(back.Key), back.Headers, back.Value), canon) {
			t.Fatal("canonical encoding is not stable")
		}
	})
}

// fuzzRuleSets are the rules records are decoded for and another rule
// set: records may name the rules' own segment list or the other's (which
// shares the segment clicker).
func fuzzRuleSets(f *testing.F) (rs, other *rules.RuleSet) {
	rs, err := rules.Compile("fuzz.yaml", []byte(testRules))
	if err != nil {
		f.Fatal(err)
	}
	other, err = rules.Compile("other.yaml", []byte("version: 1\ntraits:\n  n: count(purchase) over 30d\nsegments:\n  clicker: { when: \"n >= 1\" }\n  gone: { when: \"n >= 2\" }\n"))
	if err != nil {
		f.Fatal(err)
	}
	return rs, other
}

func FuzzDecodeCustomer(f *testing.F) {
	rs, other := fuzzRuleSets(f)
	lists := ruleSetList{other}
	c, _ := DecodeCustomer(rs, nil, nil)
	c.timerAt = 1234
	*c.memberRef(0) = member{seq: 3, since: 99}
	*c.memberRef(2) = member{seq: 1, since: 120}
	c.orphans = append(c.orphans, orphanMember{segment: "old", m: member{seq: 2, since: 7}})
	c.remember(eventIDHash("e1"), 5)
	f.Add(c.AppendBinary(nil))
	o, _ := DecodeCustomer(other, nil, nil)
	*o.memberRef(0) = member{seq: 1, since: 10}
	*o.memberRef(1) = member{seq: 1, since: 10}
	f.Add(o.AppendBinary(nil))
	if v2, err := os.ReadFile("testdata/record-v2.bin"); err == nil {
		f.Add(v2)
	} else {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCustomer(rs, lists, data)
		if err != nil {
			return
		}
		// A decoded record encodes and decodes again without error, to
		// the same encoding.
		enc := c.AppendBinary(nil)
		c2, err := DecodeCustomer(rs, nil, enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if enc2 := c2.AppendBinary(nil); !bytes.Equal(enc2, enc) {
			t.Fatalf("encoding not stable:\n%x\n%x", enc, enc2)
		}
	})
}

// FuzzDecodeMergeRecord: a merge record from the merges topic never
// panics the decoder, and what decodes re-encodes to the same meaning.
func FuzzDecodeMergeRecord(f *testing.F) {
	f.Add(AppendMergeRecord(nil, "alias-1", "anon-7", 1714564800000, []byte{1, 0, 0}))
	f.Add([]byte{})
	f.Add([]byte{mergeRecordVersion, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		id, from, at, traits, err := DecodeMergeRecord(data)
		if err != nil {
			if !errors.Is(err, ErrBadMerge) {
				t.Fatalf("error %v does not wrap ErrBadMerge", err)
			}
			return
		}
		id2, from2, at2, traits2, err := DecodeMergeRecord(AppendMergeRecord(nil, id, from, at, traits))
		if err != nil || id2 != id || from2 != from || at2 != at || !bytes.Equal(traits2, traits) {
			t.Fatalf("round trip: %q %q %d %x, %v", id2, from2, at2, traits2, err)
		}
	})
}

// FuzzMemberMatcher: the matcher that listings use reads only a record's
// head; for every record DecodeCustomer accepts, it must say for each
// segment what the decoded customer says (a differential test against the
// full decoder), whichever segment list the record names.
func FuzzMemberMatcher(f *testing.F) {
	rs, other := fuzzRuleSets(f)
	lists := ruleSetList{other}
	bothLists := listsOf{other, rs}
	c, _ := DecodeCustomer(rs, nil, nil)
	*c.memberRef(0) = member{seq: 3, since: 99}
	*c.memberRef(1) = member{seq: 2, since: 100}
	*c.memberRef(2) = member{seq: 1, since: 120}
	c.orphans = append(c.orphans, orphanMember{segment: "old", m: member{seq: 1, since: 7}})
	f.Add(c.AppendBinary(nil))
	// An orphan under a segment the rules define wins over the list.
	c.orphans = append(c.orphans, orphanMember{segment: "buyer", m: member{seq: 4, since: 130}}, orphanMember{segment: "vip", m: member{seq: 5, since: 130}})
	f.Add(c.AppendBinary(nil))
	o, _ := DecodeCustomer(other, nil, nil)
	*o.memberRef(0) = member{seq: 1, since: 10}
	*o.memberRef(1) = member{seq: 1, since: 10}
	f.Add(o.AppendBinary(nil))
	v2, err := os.ReadFile("testdata/record-v2.bin")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(v2)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCustomer(rs, lists, data)
		if err != nil {
			return
		}
		for i, s := range rs.Segments() {
			want, _, _ := c.Member(i)
			// With the rules at hand, or their list read like any other.
			for _, known := range []*rules.RuleSet{rs, nil} {
				got, err := NewMemberMatcher(s.ID, known, bothLists).Match(data)
				if err != nil || got != want {
					t.Fatalf("segment %s (rules at hand: %v): matcher %v (%v), decoded record %v", s.ID, known != nil, got, err, want)
				}
			}
		}
	})
}

// listsOf finds the lists of several rule sets.
type listsOf []*rules.RuleSet

func (l listsOf) SegmentList(id uint64) ([]string, error) {
	for _, rs := range l {
		if rs.SegmentListID() == id {
			return rs.SegmentIDs(), nil
		}
	}
	return nil, fmt.Errorf("segment list %016x is unknown", id)
}
