package connectors

import (
	"encoding/binary"
	"sort"

	"github.com/segmentio/kafka-go"
)

// coPartitionBalancer gives every member whole partition numbers (the
// same numbers of every topic it subscribes to), as evenly as possible
// (sizes differ by at most one), and sticky: each member tells the group,
// in its join metadata, the numbers it would rather keep (the ones whose
// state it has), and keeps as many of them as balance allows. Adding an
// instance then moves only the partitions it needs, and a restarted
// instance gets its own back, with no restore.
//
// kafka-go's RangeGroupBalancer was not usable: it slices each topic's
// partitions in the order the metadata lists them, which brokers do not
// promise to sort, so it can give one member partition 3 of one topic and
// partition 1 of another (seen with the embedded broker).
type coPartitionBalancer struct {
	// prefer returns the numbers this member would rather keep; nil for
	// none.
	prefer func() []int
}

// coPartitionProtocol is the assignor name segd members agree on.
const coPartitionProtocol = "segd-copartition"

// preferV1 versions the join metadata: the byte, then uvarint numbers.
const preferV1 = 1

// maxPreferred bounds the numbers read from one member's metadata.
const maxPreferred = 1 << 16

func (coPartitionBalancer) ProtocolName() string { return coPartitionProtocol }

func (b coPartitionBalancer) UserData() ([]byte, error) {
	if b.prefer == nil {
		return nil, nil
	}
	return encodePreferred(b.prefer()), nil
}

func encodePreferred(ps []int) []byte {
	out := []byte{preferV1}
	for _, p := range ps {
		if p >= 0 {
			out = binary.AppendUvarint(out, uint64(p))
		}
	}
	return out
}

// decodePreferred reads a member's preferred numbers. Metadata it cannot
// read (another version, garbage) means no preference, never a failed
// assignment.
func decodePreferred(b []byte) []int {
	if len(b) == 0 || b[0] != preferV1 {
		return nil
	}
	var ps []int
	for rest := b[1:]; len(rest) > 0 && len(ps) < maxPreferred; {
		v, n := binary.Uvarint(rest)
		if n <= 0 || v > 1<<31-1 {
			return nil
		}
		ps = append(ps, int(v))
		rest = rest[n:]
	}
	return ps
}

func (coPartitionBalancer) AssignGroups(members []kafka.GroupMember, partitions []kafka.Partition) kafka.GroupMemberAssignments {
	out := kafka.GroupMemberAssignments{}
	if len(members) == 0 {
		return out
	}
	ms := append([]kafka.GroupMember(nil), members...)
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	numbers := map[int]bool{}
	byTopic := map[string]map[int]bool{}
	for _, p := range partitions {
		numbers[p.ID] = true
		if byTopic[p.Topic] == nil {
			byTopic[p.Topic] = map[int]bool{}
		}
		byTopic[p.Topic][p.ID] = true
	}
	ids := make([]int, 0, len(numbers))
	for n := range numbers {
		ids = append(ids, n)
	}
	sort.Ints(ids)
	prefs := make([][]int, len(ms))
	for i, m := range ms {
		prefs[i] = decodePreferred(m.UserData)
	}
	for i, got := range stickyAssign(prefs, ids) {
		m := ms[i]
		out[m.ID] = map[string][]int{}
		for _, topic := range m.Topics {
			for _, n := range got {
				if byTopic[topic][n] {
					out[m.ID][topic] = append(out[m.ID][topic], n)
				}
			}
		}
	}
	return out
}

// stickyAssign splits numbers over len(prefs) members: each gets q or q+1
// of them (q = len(numbers)/members, at most len(numbers)%members get
// q+1), keeping as many of its preferred numbers as that allows. A number
// two members prefer goes to the first. Deterministic for its inputs.
func stickyAssign(prefs [][]int, numbers []int) [][]int {
	m := len(prefs)
	q, r := len(numbers)/m, len(numbers)%m
	free := make(map[int]bool, len(numbers))
	for _, n := range numbers {
		free[n] = true
	}
	got := make([][]int, m)
	take := func(i, n int) {
		got[i] = append(got[i], n)
		delete(free, n)
	}
	// Everyone keeps up to q of its own first, so nobody's preference
	// crowds out another's share.
	for i, pr := range prefs {
		for _, n := range pr {
			if len(got[i]) == q {
				break
			}
			if free[n] {
				take(i, n)
			}
		}
	}
	// The r larger shares go to members that can fill them with one of
	// their own.
	big := 0
	for i, pr := range prefs {
		if big == r {
			break
		}
		if len(got[i]) != q {
			continue
		}
		for _, n := range pr {
			if free[n] {
				take(i, n)
				big++
				break
			}
		}
	}
	// The rest, in order, filling members in order: the remaining larger
	// shares to the first of them (with no preferences at all this is
	// contiguous ranges).
	rest := make([]int, 0, len(free))
	for _, n := range numbers {
		if free[n] {
			rest = append(rest, n)
		}
	}
	for i := range got {
		if len(got[i]) > q {
			continue
		}
		want := q
		if big < r {
			want, big = q+1, big+1
		}
		for len(got[i]) < want && len(rest) > 0 {
			take(i, rest[0])
			rest = rest[1:]
		}
	}
	for i := range got {
		sort.Ints(got[i])
	}
	return got
}
