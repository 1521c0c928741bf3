package rules

import (
	"sort"

	"github.com/segd/segd/schemas"
)

// valueKind is the static type of an expression.
type valueKind uint8

const (
	kNull valueKind = iota // the null literal
	kNum
	kStr
	kBool
	kTime // Unix ms
	kDur  // ms
	kList // list of strings (event fields only)
	kAny  // a profile attribute: string, number or bool, known at run time
)

func (k valueKind) String() string {
	return [...]string{"null", "number", "string", "bool", "time", "duration", "list", "attribute"}[k]
}

// field is an event field readable in trait definitions and filters.
type field struct {
	kind valueKind
	num  func(e *schemas.Event) float64 // kNum, kTime
	str  func(e *schemas.Event) string  // kStr
	list func(e *schemas.Event) []string
}

var commonFields = map[string]field{
	"event_id": {kind: kStr, str: func(e *schemas.Event) string { return e.EventID }},
	"ts":       {kind: kTime, num: func(e *schemas.Event) float64 { return float64(e.Time) }},
	"channel":  {kind: kStr, str: func(e *schemas.Event) string { return e.Channel }},
}

// eventFields lists the fields of each event type, by their Avro names.
var eventFields = map[schemas.EventType]map[string]field{
	schemas.EventPurchase: {
		"order_id":    {kind: kStr, str: func(e *schemas.Event) string { return e.OrderID }},
		"amount":      {kind: kNum, num: func(e *schemas.Event) float64 { return e.Amount }},
		"currency":    {kind: kStr, str: func(e *schemas.Event) string { return e.Currency }},
		"quantity":    {kind: kNum, num: func(e *schemas.Event) float64 { return float64(e.Quantity) }},
		"categories":  {kind: kList, list: func(e *schemas.Event) []string { return e.Categories }},
		"product_ids": {kind: kList, list: func(e *schemas.Event) []string { return e.ProductIDs }},
	},
	schemas.EventBrowse: {
		"product_id": {kind: kStr, str: func(e *schemas.Event) string { return e.ProductID }},
		"category":   {kind: kStr, str: func(e *schemas.Event) string { return e.Category }},
		"page":       {kind: kStr, str: func(e *schemas.Event) string { return e.Page }},
		"session_id": {kind: kStr, str: func(e *schemas.Event) string { return e.SessionID }},
	},
	schemas.EventEngagement: {
		"action":      {kind: kStr, str: func(e *schemas.Event) string { return e.Action }},
		"campaign_id": {kind: kStr, str: func(e *schemas.Event) string { return e.CampaignID }},
	},
}

func lookupField(t schemas.EventType, name string) (field, bool) {
	if f, ok := commonFields[name]; ok {
		return f, true
	}
	f, ok := eventFields[t][name]
	return f, ok
}

func fieldNames(t schemas.EventType) []string {
	var out []string
	for n := range commonFields {
		out = append(out, n)
	}
	for n := range eventFields[t] {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// aggregate kinds.
type aggKind uint8

const (
	aggCount aggKind = iota + 1
	aggSum
	aggMin
	aggMax
	aggAvg
	aggDistinct
	aggFirst
	aggLast
	aggMostFrequent
)

var aggNames = map[string]aggKind{
	"count": aggCount, "sum": aggSum, "min": aggMin, "max": aggMax, "avg": aggAvg,
	"distinct_count": aggDistinct, "first": aggFirst, "last": aggLast, "most_frequent": aggMostFrequent,
}

func (a aggKind) String() string {
	for n, k := range aggNames {
		if k == a {
			return n
		}
	}
	return "?"
}

func aggList() []string {
	return []string{"count", "sum", "min", "max", "avg", "distinct_count", "first", "last", "most_frequent"}
}
