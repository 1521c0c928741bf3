package segment

import (
	"fmt"

	"github.com/segd/segd/rules"
	"github.com/segd/segd/state"
)

// MemberMatcher tells whether stored customer records are members of one
// segment. The store keeps no index of who is in a segment (it cost a
// Pebble key per change): listings read the records, and a matcher reads
// only a record's head, its memberships, not its traits.
//
// Its answer is the one DecodeCustomer gives for the record under a rule
// set that defines the segment: the standing the record holds under the
// segment's id, from its segment list or from its orphans (which win, as
// they do when a record is decoded). Not safe for concurrent use.
type MemberMatcher struct {
	segment string
	rs      *rules.RuleSet // may be nil
	lists   SegmentLists   // may be nil
	// where is the segment's index in each segment list seen (-1: not in
	// it) and the list's length.
	where map[uint64]listPlace
}

type listPlace struct{ index, size int }

// NewMemberMatcher matches records against segmentID. rs (may be nil) is
// a rule set whose own segment list needs no catalog read; lists finds
// the others (nil: a record naming another list is an error).
func NewMemberMatcher(segmentID string, rs *rules.RuleSet, lists SegmentLists) *MemberMatcher {
	return &MemberMatcher{segment: segmentID, rs: rs, lists: lists, where: map[uint64]listPlace{}}
}

// Match reports whether the record data (as a store holds it) is in the
// segment. A record that cannot be read is an error.
func (m *MemberMatcher) Match(data []byte) (bool, error) {
	if len(data) == 0 {
		return false, fmt.Errorf("%w: empty", errCorruptRecord)
	}
	version := data[0]
	if version < 1 || version > recordVersion {
		return false, fmt.Errorf("%w: record version %d (this segd reads 1 to %d)", errCorruptRecord, version, recordVersion)
	}
	r := reader{b: data[1:]}
	r.varint() // timerAt
	if version >= 2 {
		r.varint() // born
	}
	in := false
	if version >= 3 {
		var err error
		if in, err = m.listed(&r); err != nil {
			return false, fmt.Errorf("%w: %v", errCorruptRecord, err)
		}
	}
	// Orphans in version 3, every membership before: by name.
	n := r.uvarint()
	for i := uint64(0); i < n && r.err == nil; i++ {
		name := r.bytes()
		seq := r.uvarint()
		r.varint() // since
		if r.err == nil && seq != 0 && string(name) == m.segment {
			in = seq&1 == 1
		}
	}
	if r.err != nil {
		return false, fmt.Errorf("%w: %v", errCorruptRecord, r.err)
	}
	return in, nil
}

// listed reads a version 3 record's memberships by segment list index,
// checked as decodeMembers checks them.
func (m *MemberMatcher) listed(r *reader) (bool, error) {
	n := r.uvarint()
	if n == 0 || r.err != nil {
		return false, r.err
	}
	if n > uint64(len(r.b))/3 {
		return false, fmt.Errorf("%d members in %d bytes", n, len(r.b))
	}
	id := r.fixed64()
	if r.err != nil {
		return false, r.err
	}
	place, err := m.place(id)
	if err != nil {
		return false, err
	}
	in := false
	seg, size := uint64(0), uint64(place.size)
	for i := uint64(0); i < n; i++ {
		d := r.uvarint()
		seq := r.uvarint()
		r.varint() // since
		if r.err != nil {
			return false, r.err
		}
		if i > 0 && d == 0 {
			return false, fmt.Errorf("member %d repeats segment %d", i, seg)
		}
		if d >= size || seg+d >= size {
			return false, fmt.Errorf("member %d: segment past the end of a list of %d", i, size)
		}
		seg += d
		if int(seg) == place.index {
			in = seq&1 == 1
		}
	}
	return in, nil
}

// place finds the segment in segment list id, once per list.
func (m *MemberMatcher) place(id uint64) (listPlace, error) {
	if p, ok := m.where[id]; ok {
		return p, nil
	}
	var names []string
	switch {
	case m.rs != nil && id == m.rs.SegmentListID():
		names = m.rs.SegmentIDs()
	case m.lists == nil:
		return listPlace{}, fmt.Errorf("segment list %016x is not the rules' and none can be read", id)
	default:
		var err error
		if names, err = m.lists.SegmentList(id); err != nil {
			return listPlace{}, err
		}
	}
	p := listPlace{index: -1, size: len(names)}
	for i, name := range names {
		if name == m.segment {
			p.index = i
			break
		}
	}
	m.where[id] = p
	return p, nil
}

// ListMembers is a page of segmentID's committed members in st, in id
// order (state.Store.MembersOf: a page may be short, even empty, before
// the end; only an empty next is the end). rs (may be nil) is the rule set
// whose segment list the records most likely name.
func ListMembers(st *state.Store, rs *rules.RuleSet, segmentID, cursor string, limit int, include func(partition int32) bool) (ids []string, next string, err error) {
	return st.MembersOf(memberMatch(st, rs, segmentID), cursor, limit, include)
}

// memberMatch is a MemberMatcher of segmentID as the store's matcher.
func memberMatch(st *state.Store, rs *rules.RuleSet, segmentID string) state.MemberMatch {
	m := NewMemberMatcher(segmentID, rs, NewSegmentLists(st))
	return func(_ int32, data []byte) (bool, error) { return m.Match(data) }
}

// AllMembers is every committed member of segmentID in st, in id order:
// ListMembers page after page.
func AllMembers(st *state.Store, rs *rules.RuleSet, segmentID string, include func(partition int32) bool) ([]string, error) {
	match := memberMatch(st, rs, segmentID)
	var all []string
	cursor := ""
	for {
		ids, next, err := st.MembersOf(match, cursor, 10_000, include)
		if err != nil {
			return all, fmt.Errorf("members of %s: %w", segmentID, err)
		}
		all = append(all, ids...)
		if next == "" {
			return all, nil
		}
		cursor = next
	}
}
