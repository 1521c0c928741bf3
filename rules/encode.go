package rules

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/segd/segd/internal/prefetch"
	"github.com/segd/segd/schemas"
)

// stateVersion is the first byte of an encoded State.
const stateVersion = 1

// ErrStateVersion is returned when decoding a state written by a newer segd.
var ErrStateVersion = errors.New("rules: state encoded by a newer version")

// AppendBinary appends the state's compact encoding:
//
//	version byte
//	uvarint n, then n traits: key (4 bytes LE) uvarint len payload
//	uvarint n, then n profile attributes: name kind value
//
// A trait's key is a hash of its canonical definition, so state survives
// rule reloads for every trait whose definition did not change. Buckets
// are sparse (only non-empty ones) with starts delta-encoded in bucket
// units; numbers are varints when integral or in hundredths.
func (s *State) AppendBinary(dst []byte) []byte {
	dst = append(dst, stateVersion)
	n := 0
	for k := range s.traits {
		if !s.traits[k].empty() {
			n++
		}
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	it := s.iter()
	for k := range s.traits {
		ts := &s.traits[k]
		i := it.next()
		if ts.empty() {
			continue
		}
		t := (*s.layout)[i]
		dst = binary.LittleEndian.AppendUint32(dst, t.key)
		// Write the payload, then slide it right to make room for its
		// length prefix: no scratch buffer needed.
		mark := len(dst)
		dst = ts.appendPayload(dst, t)
		var lenBuf [binary.MaxVarintLen64]byte
		k := binary.PutUvarint(lenBuf[:], uint64(len(dst)-mark))
		dst = append(dst, lenBuf[:k]...)
		copy(dst[mark+k:], dst[mark:len(dst)-k])
		copy(dst[mark:], lenBuf[:k])
	}
	dst = binary.AppendUvarint(dst, uint64(len(s.attrs)))
	for _, a := range s.attrs {
		dst = appendString(dst, a.Name)
		dst = append(dst, byte(a.Value.Kind))
		switch a.Value.Kind {
		case schemas.KindString:
			dst = appendString(dst, a.Value.Str)
		case schemas.KindNumber:
			dst = appendNumber(dst, a.Value.Num)
		case schemas.KindBool:
			if a.Value.Bool {
				dst = append(dst, 1)
			} else {
				dst = append(dst, 0)
			}
		}
	}
	return dst
}

func (ts *traitState) empty() bool {
	return len(ts.buckets) == 0 && (ts.x == nil || len(ts.x.seen) == 0 && !ts.x.has)
}

func (ts *traitState) appendPayload(dst []byte, t *Trait) []byte {
	if t.agg == aggFirst || t.agg == aggLast {
		switch {
		case t.kind == kStr:
			dst = appendString(dst, ts.rx().str)
		case t.Field != "ts":
			dst = appendNumber(dst, ts.rx().num)
		}
		// For first/last(x.ts) the value is the time: stored once.
		return binary.AppendVarint(dst, ts.rx().at)
	}
	if t.agg == aggDistinct {
		seen := ts.rx().seen
		dst = binary.AppendUvarint(dst, uint64(len(seen)))
		for _, sv := range seen {
			dst = appendString(dst, sv.v)
			if t.Window > 0 {
				dst = binary.AppendVarint(dst, sv.last/t.Bucket)
			}
		}
		return dst
	}
	dst = binary.AppendUvarint(dst, uint64(len(ts.buckets)))
	prev := int64(0)
	for i := range ts.buckets {
		b := &ts.buckets[i]
		if t.Window > 0 {
			units := b.start / t.Bucket
			if i == 0 {
				dst = binary.AppendVarint(dst, units)
			} else {
				dst = binary.AppendUvarint(dst, uint64(units-prev))
			}
			prev = units
		}
		switch t.agg {
		case aggCount:
			dst = appendNumber(dst, b.n)
		case aggSum, aggAvg:
			dst = appendNumber(dst, b.n)
			dst = appendNumber(dst, b.val)
		case aggMin, aggMax:
			dst = appendNumber(dst, b.val)
		case aggMostFrequent:
			vals := b.values()
			dst = binary.AppendUvarint(dst, uint64(len(vals)))
			for _, v := range vals {
				dst = appendString(dst, v.v)
				dst = binary.AppendUvarint(dst, uint64(v.n))
			}
		}
	}
	return dst
}

// DecodeState decodes data (from AppendBinary) into s, reusing its memory.
// Traits are matched by the key of their definition: state of traits this
// rule set no longer has is dropped, and new traits start empty.
func (rs *RuleSet) DecodeState(data []byte, s *State) error {
	s.layout = &rs.traits
	s.Reset()
	if len(data) == 0 {
		return errors.New("rules: empty state")
	}
	if data[0] != stateVersion {
		if data[0] > stateVersion {
			return fmt.Errorf("%w: %d (this segd reads %d)", ErrStateVersion, data[0], stateVersion)
		}
		return fmt.Errorf("rules: unknown state version %d", data[0])
	}
	d := decoder{b: data[1:]}
	n := d.uvarint()
	for i := uint64(0); i < n && d.err == nil; i++ {
		if len(d.b) < 4 {
			d.err = errors.New("truncated trait key")
			break
		}
		key := binary.LittleEndian.Uint32(d.b)
		d.b = d.b[4:]
		payload := d.bytes()
		idx, ok := rs.keyIndex[key]
		if !ok || d.err != nil {
			continue
		}
		pd := decoder{b: payload}
		s.slot(idx).decodePayload(&pd, rs.traits[idx])
		if pd.err != nil {
			return fmt.Errorf("rules: trait %s: %w", rs.traits[idx].Name, pd.err)
		}
	}
	na := d.uvarint()
	for i := uint64(0); i < na && d.err == nil; i++ {
		name := internBytes(d.bytes())
		kind := schemas.Kind(d.byte())
		a := schemas.Attribute{Name: name, Value: schemas.Value{Kind: kind}}
		switch kind {
		case schemas.KindString:
			a.Value.Str = internBytes(d.bytes())
		case schemas.KindNumber:
			a.Value.Num = d.number()
		case schemas.KindBool:
			a.Value.Bool = d.byte() == 1
		default:
			d.err = fmt.Errorf("attribute %s has kind %d", name, kind)
		}
		if d.err == nil {
			s.setAttr(a)
		}
	}
	if d.err != nil {
		return fmt.Errorf("rules: decode state: %w", d.err)
	}
	return nil
}

func (ts *traitState) decodePayload(d *decoder, t *Trait) {
	if t.agg == aggFirst || t.agg == aggLast {
		x := ts.ext()
		switch {
		case t.kind == kStr:
			x.str = internBytes(d.bytes())
		case t.Field != "ts":
			x.num = d.number()
		}
		x.at = d.varint()
		if t.Field == "ts" {
			x.num = float64(x.at)
		}
		x.has = d.err == nil
		return
	}
	if t.agg == aggDistinct {
		n := d.uvarint()
		if n > maxDistinct {
			d.err = fmt.Errorf("%d distinct values", n)
			return
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			sv := seenVal{v: internBytes(d.bytes())}
			if t.Window > 0 {
				sv.last = d.varint() * t.Bucket
			}
			x := ts.ext()
			x.seen = append(x.seen, sv)
		}
		return
	}
	if t.agg == aggMostFrequent {
		// Also after an error: the totals always match the buckets.
		defer ts.rebuildFreq()
	}
	nb := d.uvarint()
	if nb > 100000 {
		d.err = fmt.Errorf("%d buckets", nb)
		return
	}
	prev := int64(0)
	for i := uint64(0); i < nb && d.err == nil; i++ {
		var b bucket
		if t.Window > 0 {
			if i == 0 {
				prev = d.varint()
			} else {
				prev += int64(d.uvarint())
			}
			b.start = prev * t.Bucket
		}
		switch t.agg {
		case aggCount:
			b.n = d.number()
		case aggSum, aggAvg:
			b.n = d.number()
			b.val = d.number()
		case aggMin, aggMax:
			b.val, b.n = d.number(), 1
		case aggMostFrequent:
			nv := d.uvarint()
			if nv > maxDistinctPerBucket {
				d.err = fmt.Errorf("%d values in a bucket", nv)
				return
			}
			if nv > 0 {
				// nv is bounded above: sized once, not grown.
				vals := make([]valCount, 0, nv)
				b.vals = &vals
			}
			for j := uint64(0); j < nv && d.err == nil; j++ {
				v := valCount{v: internBytes(d.bytes()), n: uint32(d.uvarint())}
				*b.vals = append(*b.vals, v)
			}
			b.n = float64(len(b.values()))
		}
		ts.buckets = append(ts.buckets, b)
	}
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendNumber encodes integers and values with two decimals (money) as
// varints; anything else takes 9 bytes.
func appendNumber(dst []byte, v float64) []byte {
	if v == math.Trunc(v) && math.Abs(v) < 1<<52 {
		return binary.AppendUvarint(dst, zigzag(int64(v))<<2)
	}
	if c := math.Round(v * 100); c/100 == v && math.Abs(c) < 1<<52 {
		return binary.AppendUvarint(dst, zigzag(int64(c))<<2|1)
	}
	dst = binary.AppendUvarint(dst, 2)
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errors.New("truncated varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errors.New("truncated varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errors.New("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("length %d past the end", n)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) number() float64 {
	u := d.uvarint()
	switch u & 3 {
	case 0:
		return float64(unzigzag(u >> 2))
	case 1:
		return float64(unzigzag(u>>2)) / 100
	case 2:
		if len(d.b) < 8 {
			d.err = errors.New("truncated float")
			return 0
		}
		v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
		d.b = d.b[8:]
		return v
	}
	d.err = fmt.Errorf("bad number tag %d", u&3)
	return 0
}

// PrefetchSteps is the number of Prefetch steps a state has.
const PrefetchSteps = 4

// Prefetch announces the memory an encoding of s reads, in steps a loop
// over many states runs ahead of their encoding (the State itself
// announced before step 0), each step reading only what the one before
// brought into the cache: 0 the accumulators, 1 their buckets, extras and
// the attributes, 2 distinct values and most_frequent list headers, 3 the
// most_frequent lists.
func (s *State) Prefetch(step int) {
	switch step {
	case 0:
		if len(s.traits) == 0 {
			return
		}
		base := unsafe.Pointer(unsafe.SliceData(s.traits))
		for off := uintptr(0); off < uintptr(len(s.traits))*sizeofTraitState; off += 64 {
			prefetch.Line(unsafe.Add(base, off))
		}
	case 1:
		for k := range s.traits {
			ts := &s.traits[k]
			if len(ts.buckets) > 0 {
				prefetch.Line(unsafe.Pointer(unsafe.SliceData(ts.buckets)))
			}
			if ts.x != nil {
				prefetch.Line(unsafe.Pointer(ts.x))
			}
		}
		if len(s.attrs) > 0 {
			prefetch.Line(unsafe.Pointer(unsafe.SliceData(s.attrs)))
		}
	case 2:
		for k := range s.traits {
			ts := &s.traits[k]
			for i := range ts.buckets {
				if v := ts.buckets[i].vals; v != nil {
					prefetch.Line(unsafe.Pointer(v))
				}
			}
			if x := ts.x; x != nil && len(x.seen) > 0 {
				prefetch.Line(unsafe.Pointer(unsafe.SliceData(x.seen)))
			}
		}
	case 3:
		for k := range s.traits {
			ts := &s.traits[k]
			for i := range ts.buckets {
				if v := ts.buckets[i].vals; v != nil && len(*v) > 0 {
					prefetch.Line(unsafe.Pointer(unsafe.SliceData(*v)))
				}
			}
		}
	}
}
