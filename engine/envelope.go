package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
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
type envelope struct {
	topic   string
	key     []byte
	headers []header
	value   []byte
}

type header struct {
	key   string
	value []byte
}

func appendEnvelope(dst []byte, topic string, key string, headers []header, value []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(topic)))
	dst = append(dst, topic...)
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	dst = binary.AppendUvarint(dst, uint64(len(headers)))
	for _, h := range headers {
		dst = binary.AppendUvarint(dst, uint64(len(h.key)))
		dst = append(dst, h.key...)
		dst = binary.AppendUvarint(dst, uint64(len(h.value)))
		dst = append(dst, h.value...)
	}
	return append(dst, value...)
}

var errBadEnvelope = errors.New("engine: corrupt outbox envelope")

// decodeEnvelope parses b. The result aliases b.
func decodeEnvelope(b []byte) (envelope, error) {
	r := reader{b: b}
	var e envelope
	e.topic = string(r.bytes())
	e.key = r.bytes()
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%d headers in %d bytes", n, len(r.b))
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		k := r.bytes()
		v := r.bytes()
		e.headers = append(e.headers, header{key: string(k), value: v})
	}
	if r.err != nil {
		return envelope{}, fmt.Errorf("%w: %v", errBadEnvelope, r.err)
	}
	if e.topic == "" {
		return envelope{}, fmt.Errorf("%w: empty topic", errBadEnvelope)
	}
	e.value = r.b
	return e, nil
}
