package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/segd/segd/rules"
)

// A record names the segments of its memberships by their index in a
// segment list (the segment ids of a rule set, in order), and the list by
// its id (rules.RuleSet.SegmentListID): an index is one or two bytes where
// a segment id was a dozen or more, repeated in every record. The lists
// themselves are state catalogs (state.Partition.SetCatalog): committed
// with the first records that use them, so they travel in the changelog
// with them, and a record read under other rules (a reload, a restart
// with another rules file, a partition restored elsewhere) can still name
// the segments it holds.

// Catalogs finds stored segment lists by id: *state.Store implements it.
type Catalogs interface {
	Catalog(id uint64) (value []byte, found bool, err error)
}

// segmentListVersion is the first byte of an encoded segment list.
const segmentListVersion = 1

// appendSegmentList appends rs's segment list as stored in its catalog:
// version byte, uvarint count, then per segment uvarint len and id.
func appendSegmentList(dst []byte, rs *rules.RuleSet) []byte {
	dst = append(dst, segmentListVersion)
	dst = binary.AppendUvarint(dst, uint64(len(rs.SegmentIDs())))
	for _, id := range rs.SegmentIDs() {
		dst = binary.AppendUvarint(dst, uint64(len(id)))
		dst = append(dst, id...)
	}
	return dst
}

// decodeSegmentList decodes a stored segment list and checks that it is
// the list id names.
func decodeSegmentList(id uint64, data []byte) ([]string, error) {
	if len(data) == 0 || data[0] != segmentListVersion {
		return nil, errors.New("unknown segment list version")
	}
	r := reader{b: data[1:]}
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		return nil, fmt.Errorf("%d segments in %d bytes", n, len(r.b))
	}
	ids := make([]string, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		ids = append(ids, string(r.bytes()))
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d bytes after the last segment", len(r.b))
	}
	if got := rules.SegmentListIDOf(ids); got != id {
		return nil, fmt.Errorf("the list stored under id %016x has id %016x", id, got)
	}
	return ids, nil
}

// SegmentLists finds the segment list a record names by its id.
type SegmentLists interface {
	SegmentList(id uint64) ([]string, error)
}

// NewSegmentLists reads segment lists from cat (a *state.Store), each
// once. Safe for concurrent use.
func NewSegmentLists(cat Catalogs) SegmentLists {
	return &storedLists{cat: cat, lists: map[uint64][]string{}}
}

type storedLists struct {
	cat   Catalogs
	mu    sync.Mutex
	lists map[uint64][]string
}

func (l *storedLists) SegmentList(id uint64) ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ids, ok := l.lists[id]; ok {
		return ids, nil
	}
	data, found, err := l.cat.Catalog(id)
	if err != nil {
		return nil, fmt.Errorf("read segment list %016x: %w", id, err)
	}
	if !found {
		return nil, fmt.Errorf("segment list %016x is not in the store", id)
	}
	ids, err := decodeSegmentList(id, data)
	if err != nil {
		return nil, fmt.Errorf("segment list %016x: %w", id, err)
	}
	l.lists[id] = ids
	return ids, nil
}

// ruleSetList answers for one rule set's own list: a record decoded for it
// and held in memory is re-keyed for other rules without a read.
type ruleSetList struct{ rs *rules.RuleSet }

func (l ruleSetList) SegmentList(id uint64) ([]string, error) {
	if id != l.rs.SegmentListID() {
		return nil, fmt.Errorf("segment list %016x is unknown", id)
	}
	return l.rs.SegmentIDs(), nil
}
