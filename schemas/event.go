package schemas

import "fmt"

// EventType says which input stream an event came from.
type EventType uint8

// The input event types. Their numeric values are stored on disk (timer and
// outbox keys never, trait state sometimes), so never renumber them.
const (
	EventUnknown    EventType = 0
	EventPurchase   EventType = 1
	EventBrowse     EventType = 2
	EventEngagement EventType = 3
	EventProfile    EventType = 4
)

// NumEventTypes bounds arrays indexed by EventType.
const NumEventTypes = 5

var eventTypeNames = [NumEventTypes]string{"unknown", "purchase", "browse", "engagement", "profile"}

// String returns the lower-case name used in rules files, JSON and logs.
func (t EventType) String() string {
	if int(t) < len(eventTypeNames) {
		return eventTypeNames[t]
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// ParseEventType maps a name ("purchase", "browse", "engagement", "profile")
// to its EventType. It reports false for anything else.
func ParseEventType(s string) (EventType, bool) {
	for i := 1; i < NumEventTypes; i++ {
		if eventTypeNames[i] == s {
			return EventType(i), true
		}
	}
	return EventUnknown, false
}

// Kind is the type of a profile attribute value.
type Kind uint8

// Attribute value kinds.
const (
	KindNull   Kind = 0
	KindString Kind = 1
	KindNumber Kind = 2
	KindBool   Kind = 3
)

func (k Kind) String() string {
	switch k {
	case KindNull:
		return "null"
	case KindString:
		return "string"
	case KindNumber:
		return "number"
	case KindBool:
		return "bool"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Value is a dynamically typed scalar: a profile attribute value.
// The zero Value is null.
type Value struct {
	// Kind and Bool sit together after the 8-byte fields: 32 bytes, not
	// 40 with a padded byte at each end (a cached customer holds one per
	// profile attribute).
	Str  string
	Num  float64
	Kind Kind
	Bool bool
}

// String, Number and Bool build Values.
func String(s string) Value  { return Value{Kind: KindString, Str: s} }
func Number(f float64) Value { return Value{Kind: KindNumber, Num: f} }
func Bool(b bool) Value      { return Value{Kind: KindBool, Bool: b} }

// Attribute is one profile attribute update. A null Value removes the
// attribute.
type Attribute struct {
	Name  string
	Value Value
}

// Event is one decoded input event of any type: the union of the fields of
// the purchase, browse, engagement and profile schemas (schemas/*.avsc).
// Fields that do not belong to Type are zero.
//
// Decoders fill a caller-owned Event and reuse its slices, so an Event and
// the slices it holds are valid only until the next decode into it.
type Event struct {
	Type       EventType
	EventID    string // unique per event; used for de-duplication and as a change cause
	CustomerID string // the Kafka key; never empty in a valid event
	Time       int64  // event time, Unix milliseconds (UTC)

	// Channel: purchase web|app|store; browse web|app; engagement email|push|sms|web|app.
	Channel string

	// Purchase fields.
	OrderID    string
	Amount     float64  // order total in Currency; negative for a cancellation
	Currency   string   // ISO 4217 code
	Quantity   int64    // number of items; negative for a cancellation
	Categories []string // distinct product categories in the order
	ProductIDs []string // distinct product ids (stock codes) in the order

	// Browse fields (Channel too).
	ProductID string
	Category  string
	Page      string // page type: home, category, product, search, cart, checkout
	SessionID string

	// Engagement fields (Channel too).
	Action     string // send, open, click, unsubscribe, bounce
	CampaignID string

	// Profile fields.
	Attributes []Attribute // attribute updates; a null value removes one
	Delete     bool        // erase the customer (right to erasure)
	// AliasOf, on a profile event, says this customer (e.g. an anonymous
	// visitor id) is the customer AliasOf: segd merges the state into it.
	AliasOf string
}

// Reset clears e for reuse, keeping the capacity of its slices.
func (e *Event) Reset() {
	cats, pids, attrs := e.Categories[:0], e.ProductIDs[:0], e.Attributes[:0]
	*e = Event{Categories: cats, ProductIDs: pids, Attributes: attrs}
}

// ChangeKind says whether a customer entered or left a segment.
type ChangeKind uint8

// Segment change kinds.
const (
	Enter ChangeKind = 1
	Exit  ChangeKind = 2
)

func (k ChangeKind) String() string {
	switch k {
	case Enter:
		return "ENTER"
	case Exit:
		return "EXIT"
	}
	return fmt.Sprintf("ChangeKind(%d)", uint8(k))
}

// CauseKind says what caused a segment change.
type CauseKind uint8

// Change causes.
const (
	CauseEvent      CauseKind = 1 // an input event (Cause.EventID names it)
	CauseTimer      CauseKind = 2 // time passed: a window moved or a since() threshold was crossed
	CauseRuleChange CauseKind = 3 // the rules were reloaded
	CauseDeletion   CauseKind = 4 // the customer was erased
	CauseMerge      CauseKind = 5 // identity merge: an alias folded one customer into another
)

func (k CauseKind) String() string {
	switch k {
	case CauseEvent:
		return "event"
	case CauseTimer:
		return "timer"
	case CauseRuleChange:
		return "rule_change"
	case CauseDeletion:
		return "deletion"
	case CauseMerge:
		return "merge"
	}
	return fmt.Sprintf("CauseKind(%d)", uint8(k))
}

// TraitValue is the value of one trait a segment read, at the time of a change.
type TraitValue struct {
	Name  string
	Value Value
}

// SegmentChange is one ENTER or EXIT of a customer in a segment: the output
// record (schemas/segment_change.avsc).
type SegmentChange struct {
	ID           string // deterministic: customer, segment and Seq; equal for duplicates
	CustomerID   string
	SegmentID    string
	Kind         ChangeKind
	Seq          uint64 // per (customer, segment) transition number, from 1; ENTER is odd, EXIT even
	Time         int64  // when the rule result flipped, Unix milliseconds (event time)
	Cause        CauseKind
	CauseEventID string // the event that caused it, for CauseEvent
	RulesVersion int64
	RulesHash    string
	Traits       []TraitValue // values of the traits the segment reads
}
