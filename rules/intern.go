package rules

import (
	"hash/maphash"
	"sync/atomic"
	"unsafe"
)

// The values traits keep (categories, product ids, attribute names and
// values) come from a small vocabulary that every customer repeats. A
// state stored each as a string of its own: a decoded record allocated
// every one of them again, and encoding a record at commit read each from
// a different cache line (the strings' bytes were a third of the
// encoder's time). Short values are now shared through a process-wide
// table: a fixed number of slots, each holding the last string hashed
// to it, so memory stays bounded whatever the input (a workload of
// distinct values only replaces slots, and then shares nothing).
const (
	internSlots  = 1 << 12
	internMaxLen = 32
)

var (
	internSeed  = maphash.MakeSeed()
	internTable [internSlots]atomic.Pointer[string]
)

// internBytes returns b as a string, the table's copy when it has one.
func internBytes(b []byte) string {
	if len(b) == 0 || len(b) > internMaxLen {
		return string(b)
	}
	slot := &internTable[maphash.Bytes(internSeed, b)&(internSlots-1)]
	if p := slot.Load(); p != nil && *p == string(b) {
		return *p
	}
	s := string(b)
	slot.Store(&s)
	return s
}

// intern returns s, or the table's equal copy; s itself enters the table
// when its slot holds another value.
func intern(s string) string {
	if len(s) == 0 || len(s) > internMaxLen {
		return s
	}
	slot := &internTable[maphash.String(internSeed, s)&(internSlots-1)]
	if p := slot.Load(); p != nil && *p == s {
		return *p
	}
	// A copy of the header, not &s: taking s's address moved the
	// parameter to the heap on every call, hits included (0.10 s of
	// allocations in the 1M-customer engine-only profile).
	p := new(string)
	*p = s
	slot.Store(p)
	return s
}

// ownBytes is what s costs a state that holds it: nothing when it is the
// table's copy (held by the table, whose size is fixed), else its bytes.
// A string that has left the table counts in full in every state that
// holds it, which overcounts, never under.
func ownBytes(s string) int {
	if len(s) == 0 {
		return 0
	}
	if len(s) <= internMaxLen {
		p := internTable[maphash.String(internSeed, s)&(internSlots-1)].Load()
		if p != nil && len(*p) == len(s) && unsafe.StringData(*p) == unsafe.StringData(s) {
			return 0
		}
	}
	return len(s)
}
