package state

import "sync/atomic"

// Customer-id filter.
//
// Every partition has an in-memory Bloom filter of the customer ids it may
// hold in the store, so that Partition.Get of an id the partition never
// stored (every new customer) answers without a Pebble lookup. It may say
// "maybe" for an id the store does not hold (a false positive, or a
// deleted customer: deletions are not removed) and then costs the lookup
// it would have cost anyway; it must never say "no" for an id the store
// holds. Every way a customer key enters the store adds the id first:
// Partition.Commit (before its batch is written), Restorer.Apply, and Open
// (the verify pass, a scan of the customer keys, or a filter file that
// checks out: filterfile.go).
//
// The filter is split-block (Putze et al.; the layout of Parquet's bloom
// filters): an id sets 8 bits in one 32-byte block, one bit in each 32-bit
// word, so a lookup touches one cache line. At filterBitsPerID (16) bits
// per id a full layer answers "maybe" for about 0.13% of unknown ids
// (TestFilterFalsePositiveRate measures it). A "maybe" for a new customer
// is a Pebble lookup that finds nothing, and such a lookup is slow while
// a store fills: the level-0 tables it checks are new, their filter
// blocks not cached yet (about 0.05 ms each in the 1M-customer engine
// benchmark); 12 bits per id (0.54%) had left 2,272 of them per run.
// A Bloom filter cannot be resized without its ids, so a full layer is
// followed by a new one holding twice the capacity of all before it; a
// lookup checks every layer, and the false-positive rates add up (at most
// one more layer each time the partition's customers double).

// filterBitsPerID is the filter's size per id of capacity.
const filterBitsPerID = 16

// filterBitsPerIDv1 is the size the layers of filter files written
// before 2026-12-06 have (the same file version: only the block count of
// a layer differs, and a lookup works with any). Open takes them as they
// are rather than rebuilding every filter once after an upgrade.
const filterBitsPerIDv1 = 12

// filterMinIDs is the capacity of the first layer of an empty partition.
const filterMinIDs = 1 << 14

// filterMaxLayers bounds the layers of a filter (a file claiming more is
// corrupt). Each layer at least doubles the capacity, so 40 layers hold
// more ids than a partition can.
const filterMaxLayers = 40

// sbBlock is one block of a split-block filter: 256 bits.
type sbBlock [8]uint32

// sbSalts spread an id's 32 key bits to one bit per word (Parquet's).
var sbSalts = [8]uint32{0x47b6137b, 0x44974d91, 0x8824ad5b, 0xa2b7289d, 0x705495c7, 0x2df1424b, 0x9efc4947, 0x5c6bfb31}

// filterLayer is one split-block filter.
type filterLayer struct {
	blocks []sbBlock
	cap    uint64 // ids it takes at filterBitsPerID
	n      uint64 // ids added
}

// idFilter is a partition's customer-id filter: layers of growing
// capacity. Owned like the partition's records (its task, or the
// Restorer rebuilding it); bytes is read by Store.Metrics.
type idFilter struct {
	layers []filterLayer
	bytes  atomic.Int64
}

// newIDFilter returns an empty filter sized for n ids and room to grow.
func newIDFilter(n int) *idFilter {
	f := &idFilter{}
	f.grow(max(uint64(n)+uint64(n)/4, filterMinIDs))
	return f
}

// blocksFor is the number of blocks of a layer of capacity c.
func blocksFor(c uint64) uint64 { return blocksForBits(c, filterBitsPerID) }

func blocksForBits(c, bitsPerID uint64) uint64 {
	return max(1, (c*bitsPerID+255)/256)
}

// grow adds a layer of capacity c.
func (f *idFilter) grow(c uint64) {
	nb := blocksFor(c)
	f.layers = append(f.layers, filterLayer{blocks: make([]sbBlock, nb), cap: c})
	f.bytes.Add(int64(nb) * 32)
}

// mayContain reports whether the id with hash h may have been added. A
// nil filter knows nothing: it says maybe.
func (f *idFilter) mayContain(h uint64) bool {
	if f == nil {
		return true
	}
	for i := range f.layers {
		if f.layers[i].has(h) {
			return true
		}
	}
	return false
}

// add adds the id with hash h. An id the filter already reports is not
// added again, so the layers fill with distinct ids, not with updates. A
// nil filter (a Partition made only to read offsets) keeps nothing.
func (f *idFilter) add(h uint64) {
	if f == nil || f.mayContain(h) {
		return
	}
	last := &f.layers[len(f.layers)-1]
	last.set(h)
	last.n++
	if last.n >= last.cap && len(f.layers) < filterMaxLayers {
		var total uint64
		for _, l := range f.layers {
			total += l.cap
		}
		f.grow(2 * total)
	}
}

// ids is the number of distinct ids added (false positives at the time
// of their add are not counted).
func (f *idFilter) ids() uint64 {
	var n uint64
	for _, l := range f.layers {
		n += l.n
	}
	return n
}

// block returns the block h maps to: the high 32 bits pick it (a
// multiply-shift instead of a modulo), the low 32 bits pick its bits.
func (l *filterLayer) block(h uint64) *sbBlock {
	return &l.blocks[(h>>32)*uint64(len(l.blocks))>>32]
}

func (l *filterLayer) set(h uint64) {
	b := l.block(h)
	k := uint32(h)
	for i, s := range sbSalts {
		b[i] |= 1 << ((k * s) >> 27)
	}
}

func (l *filterLayer) has(h uint64) bool {
	b := l.block(h)
	k := uint32(h)
	for i, s := range sbSalts {
		if b[i]&(1<<((k*s)>>27)) == 0 {
			return false
		}
	}
	return true
}

// hashID hashes a customer id for the filter: MurmurHash64A with a fixed
// seed. The filter file stores these bits, so the function must never
// change without a new filter file version (filterFileVersion).
func hashID[T string | []byte](id T) uint64 {
	const m = 0xc6a4a7935bd1e995
	const r = 47
	h := uint64(0x5e9d5e9d) ^ uint64(len(id))*m
	i := 0
	for ; i+8 <= len(id); i += 8 {
		k := uint64(id[i]) | uint64(id[i+1])<<8 | uint64(id[i+2])<<16 | uint64(id[i+3])<<24 |
			uint64(id[i+4])<<32 | uint64(id[i+5])<<40 | uint64(id[i+6])<<48 | uint64(id[i+7])<<56
		k *= m
		k ^= k >> r
		k *= m
		h ^= k
		h *= m
	}
	if rest := len(id) - i; rest > 0 {
		for j := rest - 1; j >= 0; j-- {
			h ^= uint64(id[i+j]) << (8 * j)
		}
		h *= m
	}
	h ^= h >> r
	h *= m
	h ^= h >> r
	return h
}
