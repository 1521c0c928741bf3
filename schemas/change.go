package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The SegmentChange Avro encoding is written by hand: it is on the output
// path of every transition, must be byte-for-byte deterministic (replays
// compare outputs), and is small. Tests check it against goavro and
// hamba/avro with schemas/segment_change.avsc.

func appendAvroLong(dst []byte, v int64) []byte { return binary.AppendVarint(dst, v) }

func appendAvroString(dst []byte, s string) []byte {
	return append(binary.AppendVarint(dst, int64(len(s))), s...)
}

// AppendSegmentChangeAvro appends c's Avro binary encoding. A trait
// holding NaN or an infinity is an error wrapping ErrNonFinite (Avro could
// carry it, but no consumer of segment changes should have to), and dst
// comes back unchanged.
func AppendSegmentChangeAvro(dst []byte, c *SegmentChange) ([]byte, error) {
	if err := checkTraits(c); err != nil {
		return dst, err
	}
	if c.Kind != Enter && c.Kind != Exit {
		return dst, fmt.Errorf("schemas: change kind %d", c.Kind)
	}
	if c.Cause < CauseEvent || c.Cause > CauseMerge {
		return dst, fmt.Errorf("schemas: change cause %d", c.Cause)
	}
	dst = appendAvroString(dst, c.ID)
	dst = appendAvroString(dst, c.CustomerID)
	dst = appendAvroString(dst, c.SegmentID)
	dst = appendAvroLong(dst, int64(c.Kind)-1)
	dst = appendAvroLong(dst, int64(c.Seq))
	dst = appendAvroLong(dst, c.Time)
	dst = appendAvroLong(dst, int64(c.Cause)-1)
	if c.CauseEventID == "" {
		dst = appendAvroLong(dst, 0)
	} else {
		dst = appendAvroLong(dst, 1)
		dst = appendAvroString(dst, c.CauseEventID)
	}
	dst = appendAvroLong(dst, c.RulesVersion)
	dst = appendAvroString(dst, c.RulesHash)
	if len(c.Traits) > 0 {
		dst = appendAvroLong(dst, int64(len(c.Traits)))
		for _, t := range c.Traits {
			dst = appendAvroString(dst, t.Name)
			dst = appendAvroValue(dst, t.Value)
		}
	}
	return appendAvroLong(dst, 0), nil
}

// appendAvroValue writes a union ["null","string","double","boolean"].
func appendAvroValue(dst []byte, v Value) []byte {
	switch v.Kind {
	case KindString:
		return appendAvroString(appendAvroLong(dst, 1), v.Str)
	case KindNumber:
		return binary.LittleEndian.AppendUint64(appendAvroLong(dst, 2), math.Float64bits(v.Num))
	case KindBool:
		b := byte(0)
		if v.Bool {
			b = 1
		}
		return append(appendAvroLong(dst, 3), b)
	}
	return appendAvroLong(dst, 0)
}

type avroReader struct {
	b   []byte
	err error
}

var errTruncated = errors.New("truncated")

func (r *avroReader) long() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errTruncated
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *avroReader) str() string {
	n := r.long()
	if r.err != nil {
		return ""
	}
	if n < 0 || n > int64(len(r.b)) {
		r.err = fmt.Errorf("string length %d with %d bytes left", n, len(r.b))
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *avroReader) value() Value {
	switch idx := r.long(); idx {
	case 0:
		return Value{}
	case 1:
		return String(r.str())
	case 2:
		if len(r.b) < 8 {
			r.err = errTruncated
			return Value{}
		}
		v := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
		r.b = r.b[8:]
		if !finite(v) && r.err == nil {
			r.err = fmt.Errorf("%w: trait value %v", ErrNonFinite, v)
		}
		return Number(v)
	case 3:
		if len(r.b) < 1 {
			r.err = errTruncated
			return Value{}
		}
		v := r.b[0] == 1
		r.b = r.b[1:]
		return Bool(v)
	default:
		if r.err == nil {
			r.err = fmt.Errorf("union index %d", idx)
		}
		return Value{}
	}
}

// DecodeSegmentChangeAvro decodes an Avro SegmentChange into c.
func DecodeSegmentChangeAvro(data []byte, c *SegmentChange) error {
	r := avroReader{b: data}
	traits := c.Traits[:0]
	*c = SegmentChange{}
	c.ID = r.str()
	c.CustomerID = r.str()
	c.SegmentID = r.str()
	kind := r.long()
	c.Seq = uint64(r.long())
	c.Time = r.long()
	cause := r.long()
	switch r.long() {
	case 0:
	case 1:
		c.CauseEventID = r.str()
	default:
		if r.err == nil {
			r.err = errors.New("cause_event_id union index")
		}
	}
	c.RulesVersion = r.long()
	c.RulesHash = r.str()
	for r.err == nil {
		n := r.long()
		if n == 0 {
			break
		}
		if n < 0 { // a block with its byte size
			n = -n
			r.long()
		}
		if n > int64(len(r.b)) {
			r.err = fmt.Errorf("%d traits with %d bytes left", n, len(r.b))
			break
		}
		for i := int64(0); i < n && r.err == nil; i++ {
			traits = append(traits, TraitValue{Name: r.str(), Value: r.value()})
		}
	}
	c.Traits = traits
	if r.err == nil && (kind < 0 || kind > 1) {
		r.err = fmt.Errorf("kind index %d", kind)
	}
	if r.err == nil && (cause < 0 || cause > int64(CauseMerge)-1) {
		r.err = fmt.Errorf("cause index %d", cause)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return &DecodeError{Reason: ReasonAvroDecode, Err: fmt.Errorf("segment change: %w", r.err)}
	}
	c.Kind = ChangeKind(kind + 1)
	c.Cause = CauseKind(cause + 1)
	return nil
}
