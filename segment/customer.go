package segment

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/segd/segd/internal/prefetch"
	"github.com/segd/segd/rules"
)

// recordVersion is the first byte of every encoded customer record. Bump it
// when the layout changes and teach DecodeCustomer the old one. Version 2
// added born (version 1 records decode with born 0); version 3 names a
// member's segment by its index in a stored segment list instead of its
// id (segmentlist.go).
const recordVersion = 3

// recentIDs bounds the per-customer set of recently applied event ids kept
// for de-duplication.
const recentIDs = 4

// errCorruptRecord marks a stored record that cannot be decoded.
var errCorruptRecord = errors.New("segment: corrupt customer record")

// member is a customer's standing in one segment.
type member struct {
	seq   uint64 // transitions so far; odd means in the segment (ENTER is odd)
	since int64  // time of the last transition, Unix ms
}

func (m member) in() bool { return m.seq&1 == 1 }

// segMember is the standing in the segment at index seg of the rule set
// the record was decoded for.
type segMember struct {
	seg int32
	m   member
}

// recentEvent is a fingerprint of an applied event id.
type recentEvent struct {
	hash uint64
	time int64
}

// Customer is segd's per-customer record: the rules' trait state plus
// what the engine itself tracks (memberships, the pending timer, recently
// seen event ids). It implements state.Record.
type Customer struct {
	// traits is held here, not behind a pointer: every event reads it,
	// and an allocation of its own was a cache miss per event with a
	// million customers cached.
	traits  rules.State
	timerAt int64 // the customer's scheduled timer, 0 = none
	// born identifies this life of the customer (an erasure or a merge
	// ends a life): a fingerprint of the event that created the record.
	// It is part of every change id, so a customer erased and seen again
	// never reuses an id of an earlier life, even within one millisecond;
	// it is deterministic in a replay and independent of partitioning,
	// and an erasure leaves nothing keyed by the erased id. 0 for records
	// written before it existed.
	born int64
	// fresh marks a record just created for an unknown id, until the
	// processor stamps born (not stored).
	fresh bool
	// members holds the segments with a transition (seq > 0), ordered by
	// their index in the rule set: a customer is in few of many segments,
	// and a slot per segment cost 16 bytes per segment per cached customer
	// (16 KB each with 1000 segments) and a scan of every slot at commit.
	members []segMember
	// orphans keeps memberships of segments the current rules no longer
	// define, so a later rules file that brings the segment back continues
	// its sequence numbers instead of reusing ids.
	orphans []orphanMember
	recent  [recentIDs]recentEvent
	// rs is the rule set the record was decoded for: members is aligned
	// with its segments.
	rs *rules.RuleSet
	// in has bit i set while the customer is in segment i of rs (the
	// members entry of i has an odd seq); nil until standings builds it
	// (not stored). Evaluating a segment that did not change, most of
	// them, is then a bit test, not a search of members.
	in []uint64
	// inWord holds in for up to 64 segments, so that the bitmap read at
	// every event is in the record, not an allocation of its own.
	inWord [1]uint64
	// changes remembers when each windowed trait next changes, so that
	// the timer after an event is computed from the traits it touched
	// (not stored: a decoded record computes them all once).
	changes rules.ChangeTimes
}

type orphanMember struct {
	segment string
	m       member
}

// eventIDHash is FNV-1a 64: stable across processes, unlike maphash.
func eventIDHash(id string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	if h == 0 {
		h = 1 // 0 marks an empty slot
	}
	return h
}

// seen reports whether an event id was recently applied.
func (c *Customer) seen(h uint64) bool {
	for i := range c.recent {
		if c.recent[i].hash == h {
			return true
		}
	}
	return false
}

// remember records h, evicting the oldest fingerprint.
func (c *Customer) remember(h uint64, t int64) {
	oldest := 0
	for i := range c.recent {
		if c.recent[i].hash == 0 {
			oldest = i
			break
		}
		if c.recent[i].time < c.recent[oldest].time {
			oldest = i
		}
	}
	c.recent[oldest] = recentEvent{hash: h, time: t}
}

// forgetBefore drops fingerprints older than t, so they cost no disk space
// once outside the de-duplication horizon.
func (c *Customer) forgetBefore(t int64) {
	for i := range c.recent {
		if c.recent[i].hash != 0 && c.recent[i].time < t {
			c.recent[i] = recentEvent{}
		}
	}
}

// AppendBinary implements state.Record. Layout (integers are varints):
//
//	version byte (3)
//	timerAt
//	born
//	nMembers; if > 0, the segment list's id (8 bytes LE), then per
//	  segment with seq > 0, in index order: the index (the first) or
//	  its distance from the previous one, seq, since (the first) or its
//	  difference from the previous one's
//	nOrphans, then per orphan: len(segment id) id seq since
//	nRecent, then per fingerprint: hash (8 bytes LE) time
//	trait state (rules.State encoding) to the end
//
// Members that entered or left with the same event share their since:
// most differences are 0, one byte.
func (c *Customer) AppendBinary(dst []byte) []byte {
	dst = append(dst, recordVersion)
	dst = binary.AppendVarint(dst, c.timerAt)
	dst = binary.AppendVarint(dst, c.born)
	dst = binary.AppendUvarint(dst, uint64(len(c.members)))
	if len(c.members) > 0 {
		dst = binary.LittleEndian.AppendUint64(dst, c.rs.SegmentListID())
		prevSeg, prevSince := int32(0), int64(0)
		for _, sm := range c.members {
			dst = binary.AppendUvarint(dst, uint64(sm.seg-prevSeg))
			dst = binary.AppendUvarint(dst, sm.m.seq)
			dst = binary.AppendVarint(dst, sm.m.since-prevSince)
			prevSeg, prevSince = sm.seg, sm.m.since
		}
	}
	dst = binary.AppendUvarint(dst, uint64(len(c.orphans)))
	for _, o := range c.orphans {
		dst = binary.AppendUvarint(dst, uint64(len(o.segment)))
		dst = append(dst, o.segment...)
		dst = binary.AppendUvarint(dst, o.m.seq)
		dst = binary.AppendVarint(dst, o.m.since)
	}
	nr := 0
	for i := range c.recent {
		if c.recent[i].hash != 0 {
			nr++
		}
	}
	dst = binary.AppendUvarint(dst, uint64(nr))
	for i := range c.recent {
		if c.recent[i].hash == 0 {
			continue
		}
		dst = binary.LittleEndian.AppendUint64(dst, c.recent[i].hash)
		dst = binary.AppendVarint(dst, c.recent[i].time)
	}
	return c.traits.AppendBinary(dst)
}

// Prefetch implements state.Prefetcher: step 0 announces the record's
// struct, 1 its members, then rules.State's steps in turn. An encoding
// reads all of them.
func (c *Customer) Prefetch(step int) {
	switch {
	case step == 0:
		base := unsafe.Pointer(c)
		for off := uintptr(0); off < unsafe.Sizeof(*c); off += 64 {
			prefetch.Line(unsafe.Add(base, off))
		}
	case step == 1 && len(c.members) > 0:
		prefetch.Line(unsafe.Pointer(unsafe.SliceData(c.members)))
	}
	if step >= 1 {
		c.traits.Prefetch(step - 1)
	}
}

// SizeBytes implements state.Record: the heap the record holds (the
// rule set is shared).
func (c *Customer) SizeBytes() int {
	n := int(unsafe.Sizeof(*c)) + cap(c.members)*int(unsafe.Sizeof(segMember{})) +
		cap(c.orphans)*int(unsafe.Sizeof(orphanMember{})) + c.traits.HeapBytes() + c.changes.SizeBytes()
	if cap(c.in) > len(c.inWord) {
		n += 8 * cap(c.in)
	}
	for _, o := range c.orphans {
		n += len(o.segment)
	}
	return n
}

// DecodeCustomer decodes a stored record for the rule set rs. data == nil
// yields a new, empty customer. lists finds the segment list a record
// names when it is not rs's (nil: none can be found).
func DecodeCustomer(rs *rules.RuleSet, lists SegmentLists, data []byte) (*Customer, error) {
	c := &Customer{rs: rs}
	rs.InitState(&c.traits)
	if data == nil {
		c.fresh = true
		return c, nil
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty", errCorruptRecord)
	}
	version := data[0]
	if version < 1 || version > recordVersion {
		if version > recordVersion {
			return nil, fmt.Errorf("%w: record version %d is newer than this segd understands (%d)", errCorruptRecord, version, recordVersion)
		}
		return nil, fmt.Errorf("%w: unknown record version %d", errCorruptRecord, version)
	}
	r := reader{b: data[1:]}
	c.timerAt = r.varint()
	if version >= 2 {
		c.born = r.varint()
	}
	if version >= 3 {
		if err := c.decodeMembers(&r, lists); err != nil {
			return nil, fmt.Errorf("%w: %v", errCorruptRecord, err)
		}
	}
	// Orphans in version 3, every membership before.
	n := r.uvarint()
	for i := uint64(0); i < n && r.err == nil; i++ {
		id := r.bytes()
		m := member{seq: r.uvarint(), since: r.varint()}
		if r.err == nil {
			c.addNamed(string(id), m)
		}
	}
	nr := r.uvarint()
	if nr > recentIDs && r.err == nil {
		r.err = fmt.Errorf("%d recent ids, at most %d", nr, recentIDs)
	}
	for i := uint64(0); i < nr && r.err == nil; i++ {
		c.recent[i] = recentEvent{hash: r.fixed64(), time: r.varint()}
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %v", errCorruptRecord, r.err)
	}
	if err := rs.DecodeState(r.b, &c.traits); err != nil {
		return nil, fmt.Errorf("%w: traits: %v", errCorruptRecord, err)
	}
	return c, nil
}

// addNamed adds the membership of the segment with id name: a member of
// the rule set's segment, or an orphan when the rules do not define it.
func (c *Customer) addNamed(name string, m member) {
	if m.seq == 0 {
		return
	}
	if idx, ok := c.rs.SegmentIndex(name); ok {
		*c.memberRef(idx) = m
		return
	}
	c.orphans = append(c.orphans, orphanMember{segment: name, m: m})
}

// decodeMembers decodes a version 3 record's memberships. When the record
// names the rule set's own segment list, its indices are the members' as
// they are; otherwise each goes through its segment's id.
func (c *Customer) decodeMembers(r *reader, lists SegmentLists) error {
	n := r.uvarint()
	if n == 0 || r.err != nil {
		return r.err
	}
	// Each member takes at least three bytes.
	if n > uint64(len(r.b))/3 {
		return fmt.Errorf("%d members in %d bytes", n, len(r.b))
	}
	id := r.fixed64()
	if r.err != nil {
		return r.err
	}
	var names []string // nil: the rule set's own list
	size := len(c.rs.Segments())
	if id != c.rs.SegmentListID() {
		if lists == nil {
			return fmt.Errorf("segment list %016x is not the rules' and none can be read", id)
		}
		var err error
		if names, err = lists.SegmentList(id); err != nil {
			return err
		}
		size = len(names)
	} else {
		c.members = make([]segMember, 0, n)
	}
	seg, since := uint64(0), int64(0)
	for i := uint64(0); i < n; i++ {
		d := r.uvarint()
		m := member{seq: r.uvarint()}
		m.since = since + r.varint()
		if r.err != nil {
			return r.err
		}
		if i > 0 && d == 0 {
			return fmt.Errorf("member %d repeats segment %d", i, seg)
		}
		// seg < size: the sum cannot wrap around.
		if d >= uint64(size) || seg+d >= uint64(size) {
			return fmt.Errorf("member %d: segment past the end of a list of %d", i, size)
		}
		seg += d
		since = m.since
		switch {
		case m.seq == 0:
		case names == nil:
			c.members = append(c.members, segMember{seg: int32(seg), m: m})
		default:
			c.addNamed(names[seg], m)
		}
	}
	return nil
}

// reader decodes varints, remembering the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("truncated uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errors.New("truncated varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) fixed64() uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.err = errors.New("truncated fixed64")
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("length %d past end (%d left)", n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// Traits is the customer's trait state.
func (c *Customer) Traits() *rules.State { return &c.traits }

// Member is the customer's standing in segment i of the rule set the
// record was decoded for: whether they are in it, since when (Unix ms),
// and the transitions so far.
func (c *Customer) Member(i int) (in bool, since int64, seq uint64) {
	m := c.member(i)
	return m.in(), m.since, m.seq
}

// findMember returns the position of segment seg in c.members, or where
// it would be inserted, searching from hint on (a position at which every
// earlier entry is of a smaller segment; 0 if unknown): callers that look
// up segments in ascending order pass the last position back.
func (c *Customer) findMember(seg int32, hint int) (int, bool) {
	ms := c.members
	if hint < 0 || hint > len(ms) || (hint > 0 && ms[hint-1].seg >= seg) {
		hint = 0
	}
	// Gallop from hint: ascending lookups mostly find their segment a
	// step or two on, and a lookup that skips many members pays for the
	// log of the skip, not of the whole slice. Every entry before lo is
	// of a smaller segment.
	lo, hi, step := hint, hint, 1
	for hi < len(ms) && ms[hi].seg < seg {
		lo = hi + 1
		hi += step
		step <<= 1
	}
	hi = min(hi, len(ms))
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ms[m].seg < seg {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(ms) && ms[lo].seg == seg
}

// standings returns c.in, built from members on first use. n is the
// number of segments of c.rs.
func (c *Customer) standings(n int) []uint64 {
	if c.in == nil {
		if words := (n + 63) / 64; words <= len(c.inWord) {
			c.inWord = [1]uint64{}
			c.in = c.inWord[:words:words]
		} else {
			c.in = make([]uint64, words)
		}
		for _, sm := range c.members {
			if sm.m.in() {
				c.in[sm.seg>>6] |= 1 << (sm.seg & 63)
			}
		}
	}
	return c.in
}

// flipStanding records that the customer entered or left segment seg of
// c.rs (its members entry's seq moved by one).
func (c *Customer) flipStanding(seg int) {
	if c.in != nil {
		c.in[seg>>6] ^= 1 << (seg & 63)
	}
}

// addMembers merges entries of segments c has none of into c.members,
// keeping them in segment order. add is sorted here.
func (c *Customer) addMembers(add []segMember) {
	if !slices.IsSortedFunc(add, func(a, b segMember) int { return cmp.Compare(a.seg, b.seg) }) {
		slices.SortFunc(add, func(a, b segMember) int { return cmp.Compare(a.seg, b.seg) })
	}
	n := len(c.members)
	c.members = slices.Grow(c.members, len(add))[:n+len(add)]
	ms := c.members
	// Merge from the back: every entry moves once.
	i, j := n-1, len(add)-1
	for k := len(ms) - 1; j >= 0; k-- {
		if i >= 0 && ms[i].seg > add[j].seg {
			ms[k] = ms[i]
			i--
		} else {
			ms[k] = add[j]
			j--
		}
	}
}

// member is the standing in segment i (zero: never a transition).
func (c *Customer) member(i int) member {
	if j, ok := c.findMember(int32(i), 0); ok {
		return c.members[j].m
	}
	return member{}
}

// memberRef returns segment i's entry, inserting a zero one if it has
// none. The pointer is valid until the next insertion.
func (c *Customer) memberRef(i int) *member {
	j, found := c.findMember(int32(i), 0)
	return c.memberAt(j, int32(i), found)
}

// memberAt returns the entry of segment seg at position j, as findMember
// reported them, inserting a zero one there if it was not found. The
// pointer is valid until the next insertion.
func (c *Customer) memberAt(j int, seg int32, found bool) *member {
	if !found {
		c.members = slices.Insert(c.members, j, segMember{seg: seg})
	}
	return &c.members[j].m
}
