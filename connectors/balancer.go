package connectors

import (
	"sort"

	"github.com/segmentio/kafka-go"
)

// coPartitionBalancer gives every member whole partition numbers: the
// same numbers of every topic it subscribes to, contiguous ranges over
// members sorted by id. kafka-go's RangeGroupBalancer slices each topic's
// partitions in the order the metadata lists them, which brokers do not
// promise to sort, so it can give one member partition 3 of one topic and
// partition 1 of another (seen with the embedded broker).
type coPartitionBalancer struct{}

// coPartitionProtocol is the assignor name segd members agree on.
const coPartitionProtocol = "segd-copartition"

func (coPartitionBalancer) ProtocolName() string { return coPartitionProtocol }

func (coPartitionBalancer) UserData() ([]byte, error) { return nil, nil }

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
	for i, m := range ms {
		out[m.ID] = map[string][]int{}
		lo, hi := i*len(ids)/len(ms), (i+1)*len(ids)/len(ms)
		for _, topic := range m.Topics {
			for _, n := range ids[lo:hi] {
				if byTopic[topic][n] {
					out[m.ID][topic] = append(out[m.ID][topic], n)
				}
			}
		}
	}
	return out
}
