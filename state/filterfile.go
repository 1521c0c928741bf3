package state

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Customer filters at Open and Close.
//
// Open builds every partition's filter from the customer keys: during the
// verify pass it makes anyway, or, with SkipVerify, from the filter file
// a clean Close left, or else from a scan of the customer keys.
//
// The filter file (FilterFile) is valid for exactly one state of the
// store, which it names by two things Open compares with the store:
//
//   - a nonce: every read-write Open writes a new random one to Pebble
//     (filterMarkerKey) once its filters are complete, and Close writes
//     the file with that nonce. A file from another session (one that
//     crashed, or a copy of the directory taken at another time) names
//     another nonce.
//   - Pebble's visible sequence number at Close: every write to the store
//     after it, by this code or by an older segd that knows nothing of
//     filters, moves it.
//
// Open also checks the file's CRC, its structure, that it holds a filter
// for every partition with customer keys, and that those filters know the
// first keys of each partition. A file failing any check is ignored and
// the filters are rebuilt from a scan: a wrong file costs time, never a
// false "not stored".

// FilterFile is the name of the file, in the store's directory, that
// holds the customer filters a clean Close saved.
const FilterFile = "SEGD-FILTERS"

// filterMarkerKey holds the nonce of the session that may write the
// filter file (see above). Local bookkeeping: never in a changelog.
var filterMarkerKey = []byte("\x00filters")

// filterFileMagic starts the file; its last byte is the version, which
// names the layout and hashID (a new hash needs a new version).
var filterFileMagic = []byte("SEGDFLT\x01")

const filterNonceLen = 16

// filterSpotChecks is how many of a partition's first customer ids Open
// checks a loaded filter knows.
const filterSpotChecks = 64

// filterSet is the decoded filter file.
type filterSet struct {
	nonce   [filterNonceLen]byte
	seq     uint64
	filters map[int32]*idFilter
}

// encodeFilterSet lays out: magic, nonce, seq (8 BE), partition count (4
// BE), per partition in ascending order its number (4 BE), layer count (4
// BE) and per layer capacity, ids and block count (8 BE each) and the
// blocks (32-bit words, little endian), then the CRC-32C of all before
// (4 BE).
func encodeFilterSet(fs *filterSet) []byte {
	parts := slices.Sorted(maps.Keys(fs.filters))
	size := len(filterFileMagic) + filterNonceLen + 8 + 4 + 4
	for _, n := range parts {
		size += 8
		for _, l := range fs.filters[n].layers {
			size += 24 + 32*len(l.blocks)
		}
	}
	b := make([]byte, 0, size)
	b = append(b, filterFileMagic...)
	b = append(b, fs.nonce[:]...)
	b = binary.BigEndian.AppendUint64(b, fs.seq)
	b = binary.BigEndian.AppendUint32(b, uint32(len(parts)))
	for _, n := range parts {
		f := fs.filters[n]
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		b = binary.BigEndian.AppendUint32(b, uint32(len(f.layers)))
		for _, l := range f.layers {
			b = binary.BigEndian.AppendUint64(b, l.cap)
			b = binary.BigEndian.AppendUint64(b, l.n)
			b = binary.BigEndian.AppendUint64(b, uint64(len(l.blocks)))
			for _, blk := range l.blocks {
				for _, w := range blk {
					b = binary.LittleEndian.AppendUint32(b, w)
				}
			}
		}
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errFilterFile marks a filter file that is not a valid encoding.
var errFilterFile = errors.New("invalid filter file")

// decodeFilterSet decodes encodeFilterSet's layout and refuses anything
// else: a wrong magic or CRC, counts beyond the data, a layer whose block
// count does not match its capacity, partitions out of order, bytes left
// over.
func decodeFilterSet(b []byte) (*filterSet, error) {
	head := len(filterFileMagic) + filterNonceLen + 8 + 4
	if len(b) < head+4 || !bytes.Equal(b[:len(filterFileMagic)], filterFileMagic) {
		return nil, fmt.Errorf("%w: no filter file header", errFilterFile)
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", errFilterFile)
	}
	fs := &filterSet{filters: map[int32]*idFilter{}}
	r := filterReader{b: body[len(filterFileMagic):]}
	copy(fs.nonce[:], r.bytes(filterNonceLen))
	fs.seq = r.u64()
	count := r.u32()
	prev := int64(-1)
	for i := uint32(0); i < count && r.err == nil; i++ {
		n := int32(r.u32())
		if int64(n) <= prev {
			return nil, fmt.Errorf("%w: partition %d out of order", errFilterFile, n)
		}
		prev = int64(n)
		f, err := r.filter()
		if err != nil {
			return nil, fmt.Errorf("%w: partition %d: %w", errFilterFile, n, err)
		}
		fs.filters[n] = f
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %w", errFilterFile, r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last partition", errFilterFile, len(r.b))
	}
	return fs, nil
}

// filterReader reads the file's fields; the first short read sets err
// and makes every later read return zeros.
type filterReader struct {
	b   []byte
	err error
}

func (r *filterReader) bytes(n int) []byte {
	if r.err != nil || len(r.b) < n {
		if r.err == nil {
			r.err = io.ErrUnexpectedEOF
		}
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *filterReader) u32() uint32 { return binary.BigEndian.Uint32(r.bytes(4)) }
func (r *filterReader) u64() uint64 { return binary.BigEndian.Uint64(r.bytes(8)) }

// filter reads one partition's layers.
func (r *filterReader) filter() (*idFilter, error) {
	layers := r.u32()
	if r.err == nil && (layers == 0 || layers > filterMaxLayers) {
		return nil, fmt.Errorf("%d layers", layers)
	}
	f := &idFilter{}
	for i := uint32(0); i < layers && r.err == nil; i++ {
		c, n, nb := r.u64(), r.u64(), r.u64()
		if r.err != nil {
			break
		}
		if c == 0 || c > 1<<40 || n > c || nb != blocksFor(c) && nb != blocksForBits(c, filterBitsPerIDv1) {
			return nil, fmt.Errorf("layer %d: capacity %d, %d ids, %d blocks", i, c, n, nb)
		}
		if nb > uint64(len(r.b))/32 {
			return nil, fmt.Errorf("layer %d: %d blocks: %w", i, nb, io.ErrUnexpectedEOF)
		}
		l := filterLayer{blocks: make([]sbBlock, nb), cap: c, n: n}
		raw := r.bytes(int(nb) * 32)
		for j := range l.blocks {
			for w := range l.blocks[j] {
				l.blocks[j][w] = binary.LittleEndian.Uint32(raw[(j*8+w)*4:])
			}
		}
		f.layers = append(f.layers, l)
		f.bytes.Add(int64(nb) * 32)
	}
	return f, r.err
}

// filterBuilder builds the filters of every partition from customer keys
// met in key order (so each partition's keys come together).
type filterBuilder struct {
	filters map[int32]*idFilter
	part    int32
	hashes  []uint64
}

func newFilterBuilder() *filterBuilder {
	return &filterBuilder{filters: map[int32]*idFilter{}}
}

// addKey adds a customer key ('c' p id).
func (fb *filterBuilder) addKey(k []byte) {
	if len(k) < 5 {
		return // no partition's: Get can never ask for it
	}
	n := int32(binary.BigEndian.Uint32(k[1:5]))
	if len(fb.hashes) > 0 && n != fb.part {
		fb.flush()
	}
	fb.part = n
	fb.hashes = append(fb.hashes, hashID(k[5:]))
}

// flush makes the pending partition's filter, sized for its ids now that
// their number is known.
func (fb *filterBuilder) flush() {
	if len(fb.hashes) == 0 {
		return
	}
	defer func() { fb.hashes = fb.hashes[:0] }()
	if f := fb.filters[fb.part]; f != nil {
		// Keys out of order would land here twice: add, never replace.
		for _, h := range fb.hashes {
			f.add(h)
		}
		return
	}
	// A new filter has room for them all in its one layer: set the bits
	// without add's lookup first (a fifth of the verify pass's filter
	// cost).
	f := newIDFilter(len(fb.hashes))
	l := &f.layers[0]
	for _, h := range fb.hashes {
		l.set(h)
	}
	l.n = uint64(len(fb.hashes))
	fb.filters[fb.part] = f
}

func (fb *filterBuilder) finish() map[int32]*idFilter {
	fb.flush()
	return fb.filters
}

// scanFilters builds the filters from every customer key of the store.
func (s *Store) scanFilters() (map[int32]*idFilter, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{ksCustomer}, UpperBound: []byte{ksCustomer + 1}})
	if err != nil {
		return nil, err
	}
	fb := newFilterBuilder()
	for it.First(); it.Valid(); it.Next() {
		fb.addKey(it.Key())
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("scan customer keys: %w", err)
	}
	return fb.finish(), nil
}

// scanPartitionFilter builds partition n's filter from its customer keys.
func (s *Store) scanPartitionFilter(n int32) (*idFilter, error) {
	prefix := partPrefix(ksCustomer, n)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	fb := newFilterBuilder()
	for it.First(); it.Valid(); it.Next() {
		fb.addKey(it.Key())
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("scan customer keys of partition %d: %w", n, err)
	}
	if f := fb.finish()[n]; f != nil {
		return f, nil
	}
	return newIDFilter(0), nil
}

// visibleSeqNum is Pebble's visible sequence number: every write moves
// it. Pebble exports it only as the earliest open snapshot's, so open
// one. Another snapshot open at the same time (Reseed's) makes the value
// older than the truth: the file then fails its check at the next Open,
// which costs a scan, never a false negative.
func visibleSeqNum(db *pebble.DB) uint64 {
	snap := db.NewSnapshot()
	defer snap.Close()
	return uint64(db.Metrics().Snapshots.EarliestSeqNum)
}

// initFilters makes the store's filters at Open (see above) and, on a
// read-write store, writes the session's nonce. verified holds the
// filters built by the verify pass, nil when it was skipped.
func (s *Store) initFilters(verified map[int32]*idFilter) error {
	start := time.Now()
	source := "verify pass"
	filters := verified
	if filters == nil {
		var why error
		filters, why = s.loadFilters()
		source = "filter file"
		if why != nil {
			s.h.log.Info().Err(why).Str("state_dir", s.h.dir).Msg("customer filter file not used: scanning the customer keys")
			var err error
			if filters, err = s.scanFilters(); err != nil {
				return err
			}
			source = "scan"
		}
	}
	s.filters = filters
	var ids uint64
	for _, f := range filters {
		ids += f.ids()
	}
	s.h.log.Info().Str("state_dir", s.h.dir).Str("source", source).Uint64("ids", ids).
		Int64("bytes", s.filterBytesLocked()).Dur("took", time.Since(start)).Msg("customer filters ready")
	if s.opts.ReadOnly {
		return nil
	}
	var nonce [filterNonceLen]byte
	rand.Read(nonce[:])
	if err := s.db.Set(filterMarkerKey, nonce[:], s.wo); err != nil {
		return fmt.Errorf("write filter marker: %w", err)
	}
	s.filterNonce = nonce[:]
	return nil
}

// loadFilters reads the filter file and returns its filters if it
// describes the store as it is, else why not.
func (s *Store) loadFilters() (map[int32]*idFilter, error) {
	marker, closer, err := s.db.Get(filterMarkerKey)
	if err != nil {
		return nil, fmt.Errorf("filter marker: %w", err)
	}
	nonce := slices.Clone(marker)
	closer.Close()
	seq := visibleSeqNum(s.db)
	b, err := readFile(s.opts.FS, s.opts.FS.PathJoin(s.h.dir, FilterFile))
	if err != nil {
		return nil, err
	}
	fs, err := decodeFilterSet(b)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(fs.nonce[:], nonce) {
		return nil, fmt.Errorf("%w: written by another session than the store's last", errFilterFile)
	}
	if fs.seq != seq {
		return nil, fmt.Errorf("%w: valid at sequence %d, the store is at %d", errFilterFile, fs.seq, seq)
	}
	if err := s.spotCheckFilters(fs.filters); err != nil {
		return nil, err
	}
	return fs.filters, nil
}

// spotCheckFilters checks that every partition with customer keys has a
// filter and that it knows the partition's first ids: a last line against
// a file that passed every other check yet is wrong.
func (s *Store) spotCheckFilters(filters map[int32]*idFilter) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{ksCustomer}, UpperBound: []byte{ksCustomer + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; {
		k := it.Key()
		if len(k) < 5 {
			ok = it.Next()
			continue
		}
		n := int32(binary.BigEndian.Uint32(k[1:5]))
		f := filters[n]
		if f == nil {
			return fmt.Errorf("%w: no filter for partition %d, which has customers", errFilterFile, n)
		}
		prefix := partPrefix(ksCustomer, n)
		for i := 0; ok && i < filterSpotChecks && bytes.HasPrefix(it.Key(), prefix); i++ {
			if !f.mayContain(hashID(it.Key()[5:])) {
				return fmt.Errorf("%w: partition %d's filter misses customer %q", errFilterFile, n, it.Key()[5:])
			}
			ok = it.Next()
		}
		if n == -1 {
			break // the last partition number: no next prefix
		}
		ok = it.SeekGE(partPrefix(ksCustomer, n+1))
	}
	return it.Error()
}

// readFile reads a whole file in one allocation of its size.
func readFile(fs vfs.FS, path string) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, st.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// saveFilters writes the filter file at Close (see above), unless the
// store cannot vouch for its filters: read-only, failed, a disk full, or
// a partition being restored (its Restorer may still add to its filter).
// The file is a cache: failing to write it costs the next Open a scan, so
// it is logged, not returned.
func (s *Store) saveFilters() {
	s.mu.Lock()
	restoring := len(s.restoring) > 0
	fs := &filterSet{filters: s.filters}
	bytes := s.filterBytesLocked()
	s.mu.Unlock()
	if s.filterNonce == nil || restoring || s.h.err() != nil || s.DiskFull() {
		return
	}
	start := time.Now()
	fs.seq = visibleSeqNum(s.db)
	copy(fs.nonce[:], s.filterNonce)
	if err := writeFileAtomic(s.opts.FS, s.h.dir, FilterFile, encodeFilterSet(fs)); err != nil {
		s.h.log.Warn().Err(err).Str("state_dir", s.h.dir).Msg("customer filters not saved: the next start scans the customer keys")
		return
	}
	s.h.log.Info().Str("state_dir", s.h.dir).Int64("bytes", bytes).Dur("took", time.Since(start)).Msg("customer filters saved")
}

// writeFileAtomic writes data to dir/name through a synced temporary file
// renamed over it, so a crash leaves the old file or the new one. It uses
// the store's file system without the disk-full wait: on a full disk it
// fails at once.
func writeFileAtomic(fs vfs.FS, dir, name string, data []byte) (err error) {
	path := fs.PathJoin(dir, name)
	tmp := path + ".tmp"
	defer func() {
		if err != nil {
			fs.Remove(tmp)
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return err
	}
	if err := fs.Rename(tmp, path); err != nil {
		return err
	}
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// filterBytesLocked is the memory the store's filters take. s.mu is held
// (or Open runs).
func (s *Store) filterBytesLocked() int64 {
	var n int64
	for _, f := range s.filters {
		n += f.bytes.Load()
	}
	return n
}
