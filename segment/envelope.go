package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// An outbox entry is an envelope: the Kafka record to publish, whole, so
// that a re-send after a crash is a byte-identical copy. Segment changes and
// dead letters both travel this way, which is what makes a dead letter as
// durable as the offset that skipped it.
//
//	uvarint len(topic) topic
//	uvarint len(key)   key
//	uvarint nHeaders   { uvarint len(k) k uvarint len(v) v }
//	value (to the end)
type Envelope struct {
	Topic   string
	Key     []byte
	Headers []Header
	Value   []byte
}

// Header is one Kafka record header of an envelope.
type Header struct {
	Key   string
	Value []byte
}

// AppendEnvelope appends the encoded envelope to dst.
func AppendEnvelope(dst []byte, topic string, key string, headers []Header, value []byte) []byte {
	return append(AppendEnvelopeHead(dst, topic, key, headers), value...)
}

// AppendEnvelopeHead appends an envelope without its value, which runs to
// the end: appending the value's encoding after it completes the
// envelope without encoding the value elsewhere first and copying it.
func AppendEnvelopeHead(dst []byte, topic string, key string, headers []Header) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(topic)))
	dst = append(dst, topic...)
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	dst = binary.AppendUvarint(dst, uint64(len(headers)))
	for _, h := range headers {
		dst = binary.AppendUvarint(dst, uint64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = binary.AppendUvarint(dst, uint64(len(h.Value)))
		dst = append(dst, h.Value...)
	}
	return dst
}

// ErrBadEnvelope marks an outbox entry that cannot be decoded.
var ErrBadEnvelope = errors.New("segment: corrupt outbox envelope")

// DecodeEnvelope parses b. The result aliases b.
func DecodeEnvelope(b []byte) (Envelope, error) {
	r := reader{b: b}
	var e Envelope
	e.Topic = string(r.bytes())
	e.Key = r.bytes()
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%d headers in %d bytes", n, len(r.b))
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		k := r.bytes()
		v := r.bytes()
		e.Headers = append(e.Headers, Header{Key: string(k), Value: v})
	}
	if r.err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrBadEnvelope, r.err)
	}
	if e.Topic == "" {
		return Envelope{}, fmt.Errorf("%w: empty topic", ErrBadEnvelope)
	}
	e.Value = r.b
	return e, nil
}

// HeaderValue returns the value of the first header named key.
func (e *Envelope) HeaderValue(key string) ([]byte, bool) {
	for _, h := range e.Headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return nil, false
}

// DeadLetterMaxValue and DeadLetterMaxHeader bound a dead letter's value and
// each header value, so that a dead letter always fits in a Kafka record
// batch (kafka-go's writer refuses records over 1 MiB): a 614 KB record with
// its error quoting the field once became a 1.2 MB dead letter that wedged
// its partition's output.
const (
	DeadLetterMaxValue  = 256 << 10
	DeadLetterMaxHeader = 1 << 10
)

// BoundDeadLetter truncates value and each header value to the caps,
// adding segd-truncated (the original value size) when value was cut.
func BoundDeadLetter(value []byte, hs []Header) ([]byte, []Header) {
	for i := range hs {
		if len(hs[i].Value) > DeadLetterMaxHeader {
			hs[i].Value = append(hs[i].Value[:DeadLetterMaxHeader-3:DeadLetterMaxHeader-3], "..."...)
		}
	}
	if len(value) > DeadLetterMaxValue {
		hs = append(hs, Header{Key: "segd-truncated", Value: strconv.AppendInt(nil, int64(len(value)), 10)})
		value = value[:DeadLetterMaxValue]
	}
	return value, hs
}
