package schemas

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
)

var (
	//go:embed purchase.avsc
	purchaseSchema string
	//go:embed browse.avsc
	browseSchema string
	//go:embed engagement.avsc
	engagementSchema string
	//go:embed profile.avsc
	profileSchema string
	//go:embed segment_change.avsc
	segmentChangeSchema string
)

// SchemaText returns the Avro schema (JSON) of an input event type, or ""
// for EventUnknown.
func SchemaText(t EventType) string {
	switch t {
	case EventPurchase:
		return purchaseSchema
	case EventBrowse:
		return browseSchema
	case EventEngagement:
		return engagementSchema
	case EventProfile:
		return profileSchema
	}
	return ""
}

// SegmentChangeSchema returns the Avro schema (JSON) of SegmentChange.
func SegmentChangeSchema() string { return segmentChangeSchema }

// Reason is a machine-readable cause of a rejected record, used as the
// segd-reason dead-letter header and as a metric label.
type Reason string

// Reasons for rejecting an input record.
const (
	ReasonBadMagic          Reason = "bad_magic"
	ReasonUnknownSchemaID   Reason = "unknown_schema_id"
	ReasonRegistry          Reason = "registry_unavailable"
	ReasonAvroDecode        Reason = "avro_decode"
	ReasonJSONDecode        Reason = "json_decode"
	ReasonMissingCustomerID Reason = "missing_customer_id"
	ReasonMissingEventID    Reason = "missing_event_id"
	ReasonBadTimestamp      Reason = "bad_timestamp"
	ReasonFutureTimestamp   Reason = "future_timestamp"
	ReasonUnknownEventType  Reason = "unknown_event_type"
	ReasonTooLarge          Reason = "too_large"
	ReasonBadValue          Reason = "bad_value"
	// ReasonBadField: a control field (delete, alias_of, attributes) of
	// the wrong type, e.g. "delete":"true". Never read as absent.
	ReasonBadField Reason = "bad_field"
	// ReasonTooManyAttributes: a profile event that carries, or would
	// give its customer, more profile attributes (or attribute bytes)
	// than the engine's bounds.
	ReasonTooManyAttributes Reason = "too_many_attributes"
	// ReasonIncompatibleSchema: the writer schema (from the registry)
	// lacks a field segd's reader schema has without a default
	// (ErrSchemaMismatch), or is not a record.
	ReasonIncompatibleSchema Reason = "incompatible_schema"
)

// ErrNonFinite marks a number that is NaN or an infinity where segd allows
// only finite ones: every numeric field of an input event, every profile
// attribute and every trait value of a SegmentChange.
var ErrNonFinite = errors.New("schemas: number is not finite")

// DecodeError is why an input record was rejected.
type DecodeError struct {
	Reason Reason
	Err    error
}

func (e *DecodeError) Error() string {
	if e.Err == nil {
		return string(e.Reason)
	}
	return string(e.Reason) + ": " + e.Err.Error()
}

func (e *DecodeError) Unwrap() error { return e.Err }

func decodeErr(r Reason, format string, args ...any) error {
	return &DecodeError{Reason: r, Err: fmt.Errorf(format, args...)}
}

// minEventTime is 2000-01-01T00:00:00Z: anything older is a bad clock.
const minEventTime = 946684800000

// maxEventTime is 9999-12-31T23:59:59.999Z, the last instant RFC 3339
// (and so the JSON output) can write: anything later is a bad clock,
// whatever the future-skew setting.
const maxEventTime = 253402300799999

// Validate checks what every event needs. now is the wall clock in Unix ms,
// or 0 to skip the future check (replays); maxFutureSkew is in ms.
func (e *Event) Validate(now, maxFutureSkew int64) error {
	switch {
	case e.Type == EventUnknown || int(e.Type) >= NumEventTypes:
		return decodeErr(ReasonUnknownEventType, "event type %d", e.Type)
	case e.CustomerID == "":
		return decodeErr(ReasonMissingCustomerID, "customer_id is empty")
	case len(e.CustomerID) > 256:
		return decodeErr(ReasonBadValue, "customer_id is %d bytes, limit 256", len(e.CustomerID))
	case e.Time < minEventTime:
		return decodeErr(ReasonBadTimestamp, "ts %d is before 2000-01-01", e.Time)
	case e.Time > maxEventTime:
		return decodeErr(ReasonBadTimestamp, "ts %d is after 9999-12-31", e.Time)
	case now > 0 && e.Time > now+maxFutureSkew:
		return decodeErr(ReasonFutureTimestamp, "ts %d is %d ms ahead of the wall clock (limit %d)", e.Time, e.Time-now, maxFutureSkew)
	case !finite(e.Amount):
		return &DecodeError{Reason: ReasonBadValue, Err: fmt.Errorf("amount %v: %w", e.Amount, ErrNonFinite)}
	}
	for _, a := range e.Attributes {
		if a.Value.Kind == KindNumber && !finite(a.Value.Num) {
			return &DecodeError{Reason: ReasonBadValue, Err: fmt.Errorf("attribute %s %v: %w", a.Name, a.Value.Num, ErrNonFinite)}
		}
	}
	return nil
}

// Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro.
const confluentMagic = 0

// ErrNotConfluent marks a value that is not in the Confluent wire format.
var ErrNotConfluent = errors.New("schemas: not in the Confluent wire format")

// SplitConfluent returns the schema id and Avro payload of a value in the
// Confluent wire format.
func SplitConfluent(b []byte) (id uint32, payload []byte, err error) {
	if len(b) < 5 {
		return 0, nil, &DecodeError{Reason: ReasonBadMagic, Err: fmt.Errorf("%w: %d bytes, need at least 5", ErrNotConfluent, len(b))}
	}
	if b[0] != confluentMagic {
		return 0, nil, &DecodeError{Reason: ReasonBadMagic, Err: fmt.Errorf("%w: magic byte %d, want 0", ErrNotConfluent, b[0])}
	}
	return binary.BigEndian.Uint32(b[1:5]), b[5:], nil
}

// AppendConfluentHeader appends the magic byte and schema id.
func AppendConfluentHeader(dst []byte, id uint32) []byte {
	return binary.BigEndian.AppendUint32(append(dst, confluentMagic), id)
}
