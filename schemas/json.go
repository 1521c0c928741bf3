package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"
)

// JSON is the development and replay-file encoding: one object per event
// with "type" (purchase, browse, engagement, profile) and the Avro schema's
// field names. ts is an RFC 3339 string or Unix milliseconds.

type jsonEvent struct {
	Type       string         `json:"type"`
	EventID    string         `json:"event_id"`
	CustomerID string         `json:"customer_id"`
	Ts         string         `json:"ts"`
	Channel    string         `json:"channel,omitempty"`
	OrderID    string         `json:"order_id,omitempty"`
	Amount     *float64       `json:"amount,omitempty"`
	Currency   string         `json:"currency,omitempty"`
	Quantity   *int64         `json:"quantity,omitempty"`
	Categories []string       `json:"categories,omitempty"`
	ProductIDs []string       `json:"product_ids,omitempty"`
	ProductID  string         `json:"product_id,omitempty"`
	Category   string         `json:"category,omitempty"`
	Page       string         `json:"page,omitempty"`
	SessionID  string         `json:"session_id,omitempty"`
	Action     string         `json:"action,omitempty"`
	CampaignID string         `json:"campaign_id,omitempty"`
	Attributes map[string]any `json:"attributes,omitempty"`
	Delete     bool           `json:"delete,omitempty"`
	AliasOf    string         `json:"alias_of,omitempty"`
}

// FormatTime formats Unix ms as RFC 3339 UTC with milliseconds when needed.
func FormatTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

func jsonValue(v Value) any {
	switch v.Kind {
	case KindString:
		return v.Str
	case KindNumber:
		return v.Num
	case KindBool:
		return v.Bool
	}
	return nil
}

// AppendJSON appends e as one JSON object (no newline).
func AppendJSON(dst []byte, e *Event) []byte {
	j := jsonEvent{Type: e.Type.String(), EventID: e.EventID, CustomerID: e.CustomerID, Ts: FormatTime(e.Time), Channel: e.Channel}
	switch e.Type {
	case EventPurchase:
		amount, qty := e.Amount, e.Quantity
		j.OrderID, j.Amount, j.Currency, j.Quantity, j.Categories, j.ProductIDs = e.OrderID, &amount, e.Currency, &qty, e.Categories, e.ProductIDs
	case EventBrowse:
		j.ProductID, j.Category, j.Page, j.SessionID = e.ProductID, e.Category, e.Page, e.SessionID
	case EventEngagement:
		j.Action, j.CampaignID = e.Action, e.CampaignID
	case EventProfile:
		j.Channel = ""
		if len(e.Attributes) > 0 {
			j.Attributes = map[string]any{}
			for _, a := range e.Attributes {
				j.Attributes[a.Name] = jsonValue(a.Value)
			}
		}
		j.Delete, j.AliasOf = e.Delete, e.AliasOf
	}
	b, err := json.Marshal(j)
	if err != nil {
		panic(fmt.Sprintf("schemas: marshal event: %v", err)) // only plain types: cannot fail
	}
	return append(dst, b...)
}

type jsonChange struct {
	ID           string         `json:"id"`
	CustomerID   string         `json:"customer_id"`
	SegmentID    string         `json:"segment_id"`
	Kind         string         `json:"kind"`
	Seq          uint64         `json:"seq"`
	Ts           string         `json:"ts"`
	Cause        string         `json:"cause"`
	CauseEventID *string        `json:"cause_event_id"`
	RulesVersion int64          `json:"rules_version"`
	RulesHash    string         `json:"rules_hash"`
	Traits       map[string]any `json:"traits"`
}

var causeNames = map[CauseKind]string{CauseEvent: "EVENT", CauseTimer: "TIMER", CauseRuleChange: "RULE_CHANGE", CauseDeletion: "DELETION", CauseMerge: "MERGE"}

// AppendSegmentChangeJSON appends c as one JSON object with the Avro
// schema's field names; kind and cause as their enum symbols, ts as RFC
// 3339. Keys of traits are sorted, so equal changes give equal bytes.
// JSON has no NaN or infinity: a trait holding one is an error wrapping
// ErrNonFinite, and dst comes back unchanged.
func AppendSegmentChangeJSON(dst []byte, c *SegmentChange) ([]byte, error) {
	if err := checkTraits(c); err != nil {
		return dst, err
	}
	j := jsonChange{ID: c.ID, CustomerID: c.CustomerID, SegmentID: c.SegmentID, Kind: c.Kind.String(), Seq: c.Seq,
		Ts: FormatTime(c.Time), Cause: causeNames[c.Cause], RulesVersion: c.RulesVersion, RulesHash: c.RulesHash, Traits: map[string]any{}}
	if c.CauseEventID != "" {
		id := c.CauseEventID
		j.CauseEventID = &id
	}
	for _, t := range c.Traits {
		j.Traits[t.Name] = jsonValue(t.Value)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(j); err != nil {
		return dst, fmt.Errorf("schemas: encode change %s: %w", c.ID, err)
	}
	return append(dst, bytes.TrimRight(buf.Bytes(), "\n")...), nil
}

// checkTraits reports a trait value no output encoding may carry: NaN or
// an infinity.
func checkTraits(c *SegmentChange) error {
	for _, t := range c.Traits {
		if t.Value.Kind == KindNumber && !finite(t.Value.Num) {
			return fmt.Errorf("%w: change %s: trait %s is %v", ErrNonFinite, c.ID, t.Name, t.Value.Num)
		}
	}
	return nil
}

// finite reports whether f is neither NaN nor an infinity.
func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// DecodeSegmentChangeJSON decodes the output of AppendSegmentChangeJSON.
// Traits come back sorted by name.
func DecodeSegmentChangeJSON(data []byte, c *SegmentChange) error {
	var j jsonChange
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return &DecodeError{Reason: ReasonJSONDecode, Err: err}
	}
	tm, err := time.Parse(time.RFC3339Nano, j.Ts)
	if err != nil {
		return decodeErr(ReasonBadTimestamp, "ts %q", j.Ts)
	}
	*c = SegmentChange{ID: j.ID, CustomerID: j.CustomerID, SegmentID: j.SegmentID, Seq: j.Seq, Time: tm.UnixMilli(), RulesVersion: j.RulesVersion, RulesHash: j.RulesHash}
	switch j.Kind {
	case "ENTER":
		c.Kind = Enter
	case "EXIT":
		c.Kind = Exit
	default:
		return decodeErr(ReasonJSONDecode, "kind %q", j.Kind)
	}
	for k, name := range causeNames {
		if name == j.Cause {
			c.Cause = k
		}
	}
	if c.Cause == 0 {
		return decodeErr(ReasonJSONDecode, "cause %q", j.Cause)
	}
	if j.CauseEventID != nil {
		c.CauseEventID = *j.CauseEventID
	}
	names := make([]string, 0, len(j.Traits))
	for k := range j.Traits {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v, err := nativeValue(j.Traits[k])
		if err != nil {
			return decodeErr(ReasonJSONDecode, "trait %s: %v", k, err)
		}
		c.Traits = append(c.Traits, TraitValue{Name: k, Value: v})
	}
	return nil
}
