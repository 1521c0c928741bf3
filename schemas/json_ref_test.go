package schemas

import (
	"bytes"
	"encoding/json"
	"io"
	"time"
)

var refJSONFields = map[EventType]map[string]bool{
	EventPurchase:   {"channel": true, "order_id": true, "amount": true, "currency": true, "quantity": true, "categories": true, "product_ids": true},
	EventBrowse:     {"channel": true, "product_id": true, "category": true, "page": true, "session_id": true},
	EventEngagement: {"channel": true, "action": true, "campaign_id": true},
	EventProfile:    {"attributes": true, "delete": true, "alias_of": true},
}

// decodeJSONReference is the encoding/json based DecodeJSON that the
// hand-written one replaced, kept verbatim as the reference the
// differential fuzz target compares it with. It decodes one JSON event into e. Unknown fields are errors, so
// a typo never silently drops data.
//
// Numbers are read exactly as written (json.Number), so that one too
// large for a float64 (1e400) or, for quantity, for an int64 is a
// bad_value error rather than a decode error or a silently wrong value.
func decodeJSONReference(data []byte, e *Event) error {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return &DecodeError{Reason: ReasonJSONDecode, Err: err}
	}
	if _, err := dec.Token(); err != io.EOF {
		return decodeErr(ReasonJSONDecode, "data after the JSON object")
	}
	if m == nil {
		return decodeErr(ReasonJSONDecode, "not a JSON object")
	}
	typ, _ := m["type"].(string)
	t, ok := ParseEventType(typ)
	if !ok {
		switch v := m["type"].(type) {
		case nil:
			return decodeErr(ReasonUnknownEventType, "no type: want purchase, browse, engagement or profile")
		case string:
			return decodeErr(ReasonUnknownEventType, "type %q: want purchase, browse, engagement or profile", v)
		default:
			b, _ := json.Marshal(v)
			return decodeErr(ReasonUnknownEventType, "type %s: want a string: purchase, browse, engagement or profile", b)
		}
	}
	for k := range m {
		switch k {
		case "type", "event_id", "customer_id", "ts":
			continue
		}
		if !refJSONFields[t][k] {
			return decodeErr(ReasonJSONDecode, "unknown field %q for a %s event", k, t)
		}
	}
	if s, ok := m["ts"].(string); ok {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return decodeErr(ReasonBadTimestamp, "ts %q: want RFC 3339 or Unix milliseconds", s)
		}
		m["ts"] = tm.UnixMilli()
	}
	e.Reset()
	e.Type = t
	return fillEvent(e, m, ReasonJSONDecode)
}
