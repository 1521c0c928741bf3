package state

import "encoding/binary"

// coldTier keeps the encodings of records the write-back cache evicted,
// in a ring of bytes, so that a customer seen again is decoded from
// memory instead of read from Pebble. At 10M customers with a Zipf
// activity, most of the task's Pebble reads were of customers evicted
// minutes before (about 21 us each: the memtables searched, a two-level
// index and a block read, most of whose other records are cold), while a
// record's encoding is a quarter of its decoded size.
//
// A record enters the ring when it leaves the cache clean (what Pebble
// holds), and leaves the ring's index when it is taken back into the
// cache (the cache then holds the newer state) or deleted; the ring's
// oldest records are overwritten first (FIFO). The index maps an id's
// 64-bit hash to the record's logical offset; the id is stored with the
// record and compared, so a hash collision is a miss. Nothing in the
// ring is a pointer: the collector neither scans nor marks it.
type coldTier struct {
	ring  []byte
	head  uint64 // logical offset of the next write
	tail  uint64 // logical offset of the oldest record still in the ring
	index map[uint64]uint64
	bytes int64 // bytes of the records the index holds (stats)
}

// Record layout: tagRecord, uvarint id length, id, uvarint record
// length, record. tagPad fills a ring's end too short for the next record.
const (
	coldTagPad    = 0
	coldTagRecord = 1
)

// setCapacity sizes the ring; a change drops its contents.
func (c *coldTier) setCapacity(n int64) {
	if n < 0 {
		n = 0
	}
	if int64(len(c.ring)) == n {
		return
	}
	c.ring = nil
	if n > 0 {
		c.ring = make([]byte, n)
	}
	c.head, c.tail = 0, 0
	c.index = nil
	c.bytes = 0
}

// put stores rec's encoding under id (h is hashID(id)). Records over an
// eighth of the ring are not kept.
func (c *coldTier) put(id string, h uint64, rec []byte) {
	capacity := uint64(len(c.ring))
	size := uint64(1 + binary.MaxVarintLen32*2 + len(id) + len(rec))
	if capacity == 0 || size > capacity/8 {
		c.drop(h)
		return
	}
	if pos := c.head % capacity; pos+size > capacity {
		c.makeRoom(capacity - pos)
		c.ring[pos] = coldTagPad
		c.head += capacity - pos
	}
	c.makeRoom(size)
	if c.index == nil {
		c.index = map[uint64]uint64{}
	}
	if old, ok := c.index[h]; ok {
		c.bytes -= int64(c.sizeAt(old))
	}
	start := c.head
	b := c.ring[start%capacity:]
	b[0] = coldTagRecord
	n := 1 + binary.PutUvarint(b[1:], uint64(len(id)))
	n += copy(b[n:], id)
	n += binary.PutUvarint(b[n:], uint64(len(rec)))
	n += copy(b[n:], rec)
	c.head += uint64(n)
	c.index[h] = start
	c.bytes += int64(n)
}

// makeRoom advances the tail until n bytes after the head are free,
// removing the index entries of the records overwritten.
func (c *coldTier) makeRoom(n uint64) {
	capacity := uint64(len(c.ring))
	for c.tail < c.head && c.head+n-c.tail > capacity {
		pos := c.tail % capacity
		if c.ring[pos] == coldTagPad {
			c.tail += capacity - pos
			continue
		}
		id, _, size := c.parse(pos)
		if h := hashID(id); c.holds(h, c.tail) {
			delete(c.index, h)
			c.bytes -= int64(size)
		}
		c.tail += uint64(size)
	}
	if c.tail >= c.head {
		c.tail = c.head
	}
}

// parse returns the id and record at ring position pos and the bytes
// they take.
func (c *coldTier) parse(pos uint64) (id, rec []byte, size int) {
	b := c.ring[pos:]
	idLen, k := binary.Uvarint(b[1:])
	n := 1 + k
	id = b[n : n+int(idLen)]
	n += int(idLen)
	recLen, k := binary.Uvarint(b[n:])
	n += k
	rec = b[n : n+int(recLen)]
	return id, rec, n + int(recLen)
}

// holds reports whether the index has h's record at offset off (a
// missing entry reads as offset 0, the first record's).
func (c *coldTier) holds(h, off uint64) bool {
	got, ok := c.index[h]
	return ok && got == off
}

func (c *coldTier) sizeAt(off uint64) int {
	_, _, size := c.parse(off % uint64(len(c.ring)))
	return size
}

// take returns id's encoding and removes it from the index: the caller
// decodes it into the cache, which holds the customer's state from then
// on. The bytes are the ring's: valid until the next put.
func (c *coldTier) take(id string, h uint64) ([]byte, bool) {
	off, ok := c.index[h]
	if !ok {
		return nil, false
	}
	delete(c.index, h)
	gotID, rec, size := c.parse(off % uint64(len(c.ring)))
	c.bytes -= int64(size)
	if string(gotID) != id {
		return nil, false // another id with the same hash: a miss
	}
	return rec, true
}

// drop forgets h's record, if the ring holds one.
func (c *coldTier) drop(h uint64) {
	if off, ok := c.index[h]; ok {
		delete(c.index, h)
		c.bytes -= int64(c.sizeAt(off))
	}
}
