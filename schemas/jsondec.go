package schemas

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The event fields a JSON object may carry, by index into jsonDoc.field.
const (
	jfType = iota
	jfEventID
	jfCustomerID
	jfTs
	jfChannel
	jfOrderID
	jfAmount
	jfCurrency
	jfQuantity
	jfCategories
	jfProductIDs
	jfProductID
	jfCategory
	jfPage
	jfSessionID
	jfAction
	jfCampaignID
	jfAttributes
	jfDelete
	jfAliasOf
	numJSONFields
)

var jsonFieldNames = [numJSONFields]string{
	"type", "event_id", "customer_id", "ts", "channel", "order_id", "amount", "currency", "quantity",
	"categories", "product_ids", "product_id", "category", "page", "session_id", "action", "campaign_id",
	"attributes", "delete", "alias_of",
}

// jsonAllowed is, per event type, the set of fields (bit i: field i) an
// object of that type may carry.
var jsonAllowed = func() (a [NumEventTypes]uint32) {
	common := uint32(1<<jfType | 1<<jfEventID | 1<<jfCustomerID | 1<<jfTs)
	a[EventPurchase] = common | 1<<jfChannel | 1<<jfOrderID | 1<<jfAmount | 1<<jfCurrency | 1<<jfQuantity | 1<<jfCategories | 1<<jfProductIDs
	a[EventBrowse] = common | 1<<jfChannel | 1<<jfProductID | 1<<jfCategory | 1<<jfPage | 1<<jfSessionID
	a[EventEngagement] = common | 1<<jfChannel | 1<<jfAction | 1<<jfCampaignID
	a[EventProfile] = common | 1<<jfAttributes | 1<<jfDelete | 1<<jfAliasOf
	return a
}()

// jsonFieldIndex returns the index of the field named key (unquoted), or -1.
func jsonFieldIndex(key string) int {
	switch key {
	case "type":
		return jfType
	case "event_id":
		return jfEventID
	case "customer_id":
		return jfCustomerID
	case "ts":
		return jfTs
	case "channel":
		return jfChannel
	case "order_id":
		return jfOrderID
	case "amount":
		return jfAmount
	case "currency":
		return jfCurrency
	case "quantity":
		return jfQuantity
	case "categories":
		return jfCategories
	case "product_ids":
		return jfProductIDs
	case "product_id":
		return jfProductID
	case "category":
		return jfCategory
	case "page":
		return jfPage
	case "session_id":
		return jfSessionID
	case "action":
		return jfAction
	case "campaign_id":
		return jfCampaignID
	case "attributes":
		return jfAttributes
	case "delete":
		return jfDelete
	case "alias_of":
		return jfAliasOf
	}
	return -1
}

// jsonDoc is a checked event object: where each known field's value is
// (the last one, as a map would keep), and the first unknown key.
type jsonDoc struct {
	d       []byte
	field   [numJSONFields]jspan
	present uint32
	unknown jspan // key of the first member not in jsonFieldNames
}

// DecodeJSON decodes one JSON event into e. Unknown fields are errors, so
// a typo never silently drops data.
//
// Numbers are read exactly as written, so that one too large for a
// float64 (1e400) or, for quantity, for an int64 is a bad_value error
// rather than a decode error or a silently wrong value.
//
// DecodeJSON reads the bytes directly (no reflection, no map) and, in
// steady state, allocates only the strings it stores in e: every string
// in e is a copy that never aliases data, so it stays valid after data is
// reused and may be kept (in state, as a map key) for good; well-known
// values (channels, pages, actions, common currencies) are shared
// constants. e's slices are reused (Reset), so they, unlike the strings,
// are valid only until the next decode into e. On an error e's content
// is unspecified. It accepts exactly the documents, and returns exactly
// the events and error reasons, that the encoding/json based decoder it
// replaced did (FuzzDecodeJSONDifferential); only the text of a syntax
// error (reason json_decode) is its own.
func DecodeJSON(data []byte, e *Event) error {
	var doc jsonDoc
	doc.d = data
	i := skipWS(data, 0)
	if i == len(data) {
		return &DecodeError{Reason: ReasonJSONDecode, Err: io.EOF}
	}
	var top jspan
	if data[i] == '{' {
		end, err := scanObject(data, i, 1, doc.member)
		if err != nil {
			return &DecodeError{Reason: ReasonJSONDecode, Err: err}
		}
		top = jspan{i, end, jObject}
		i = end
	} else {
		v, end, err := scanValue(data, i, 0)
		if err != nil {
			return &DecodeError{Reason: ReasonJSONDecode, Err: err}
		}
		if !v.is(jNull) {
			return &DecodeError{Reason: ReasonJSONDecode, Err: fmt.Errorf("json: cannot unmarshal %s into Go value of type map[string]interface {}", jsonKindName(v))}
		}
		top = v
		i = end
	}
	if skipWS(data, i) != len(data) {
		return decodeErr(ReasonJSONDecode, "data after the JSON object")
	}
	if top.is(jNull) {
		return decodeErr(ReasonJSONDecode, "not a JSON object")
	}
	return doc.fill(e)
}

// member records one top-level member.
func (doc *jsonDoc) member(key, val jspan) {
	var buf [64]byte
	var k int
	if plain(key, doc.d) {
		k = jsonFieldIndex(bstr(key.raw(doc.d)))
	} else if key.end-key.start <= 3*len("customer_id")*2 {
		k = jsonFieldIndex(bstr(appendUnquoted(buf[:0], key.raw(doc.d))))
	} else {
		k = -1 // too long to unquote to a known name
	}
	if k < 0 {
		if doc.unknown.kind == jNone {
			doc.unknown = key
		}
		return
	}
	doc.field[k] = val
	doc.present |= 1 << k
}

// jsonKindName names a value's JSON type as encoding/json's type errors do.
func jsonKindName(v jspan) string {
	switch v.kind &^ jEscaped {
	case jString:
		return "string"
	case jNumber:
		return "number"
	case jTrue, jFalse:
		return "bool"
	case jArray:
		return "array"
	case jObject:
		return "object"
	}
	return "null"
}

// typeNameOf is typeName (avro.go) for a JSON value.
func typeNameOf(v jspan) string {
	switch v.kind &^ jEscaped {
	case jString:
		return "a string"
	case jNumber:
		return "a number"
	case jTrue, jFalse:
		return "a boolean"
	case jArray:
		return "an array"
	case jObject:
		return "an object"
	}
	return "null"
}

// goTypeOf names the Go type encoding/json decodes v to (UseNumber), as
// %T prints it.
func goTypeOf(v jspan) string {
	switch v.kind &^ jEscaped {
	case jString:
		return "string"
	case jNumber:
		return "json.Number"
	case jTrue, jFalse:
		return "bool"
	case jArray:
		return "[]interface {}"
	case jObject:
		return "map[string]interface {}"
	}
	return "<nil>"
}

// decodeAny decodes one checked value as encoding/json would into an any
// (error paths only).
func decodeAny(d []byte, v jspan) any {
	var x any
	raw := d[v.start:v.end]
	if v.is(jString) {
		raw = d[v.start-1 : v.end+1]
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	dec.Decode(&x) //nolint:errcheck // checked before
	return x
}

// fill applies the checks and conversions of fillEvent, in its order, to
// the checked document.
func (doc *jsonDoc) fill(e *Event) error {
	d := doc.d
	f := &doc.field
	var tmp [64]byte
	var t EventType
	switch tv := f[jfType]; {
	case tv.is(jString):
		var ok bool
		if t, ok = ParseEventType(jtemp(d, tv, tmp[:])); !ok {
			return decodeErr(ReasonUnknownEventType, "type %q: want purchase, browse, engagement or profile", jstring(d, tv))
		}
	case tv.kind == jNone || tv.is(jNull):
		return decodeErr(ReasonUnknownEventType, "no type: want purchase, browse, engagement or profile")
	default:
		b, _ := json.Marshal(decodeAny(d, tv))
		return decodeErr(ReasonUnknownEventType, "type %s: want a string: purchase, browse, engagement or profile", b)
	}
	if doc.unknown.kind != jNone {
		return decodeErr(ReasonJSONDecode, "unknown field %q for a %s event", jstring(d, doc.unknown), t)
	}
	if bad := doc.present &^ jsonAllowed[t]; bad != 0 {
		for k := range numJSONFields {
			if bad&(1<<k) != 0 {
				return decodeErr(ReasonJSONDecode, "unknown field %q for a %s event", jsonFieldNames[k], t)
			}
		}
	}
	var ts int64
	tsv := f[jfTs]
	if tsv.is(jString) {
		s := jtemp(d, tsv, tmp[:])
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return decodeErr(ReasonBadTimestamp, "ts %q: want RFC 3339 or Unix milliseconds", strings.Clone(s))
		}
		ts = tm.UnixMilli()
	}
	e.Reset()
	e.Type = t

	var err error
	str := func(v jspan, name string, r Reason, intern bool) string {
		switch v.kind &^ jEscaped {
		case jNone, jNull:
			return ""
		case jObject:
			// A one-member object {"string": "x"} is read as its member,
			// as an Avro union is.
			var u jspan
			var b [16]byte
			members(d, v, func(key, val jspan) {
				if jtemp(d, key, b[:]) == "string" {
					u = val
				}
			})
			v = u
		}
		if !v.is(jString) {
			if err == nil {
				err = decodeErr(r, "field %s is %s, want a string", name, typeNameOf(v))
			}
			return ""
		}
		if intern {
			return internJSON(d, v)
		}
		return jstring(d, v)
	}
	field := func(k int, intern bool) string { return str(f[k], jsonFieldNames[k], ReasonJSONDecode, intern) }
	num := func(k int) float64 {
		x, nerr := jsonFloat(d, f[k])
		if nerr != nil && err == nil {
			err = fieldErr(jsonFieldNames[k], nerr, ReasonJSONDecode)
		}
		return x
	}
	integer := func(k int) int64 {
		x, nerr := jsonInt(d, f[k])
		if nerr != nil && err == nil {
			err = fieldErr(jsonFieldNames[k], nerr, ReasonJSONDecode)
		}
		return x
	}
	list := func(k int, dst []string) []string {
		v := f[k]
		switch v.kind &^ jEscaped {
		case jNone, jNull:
			return dst
		case jArray:
		default:
			if err == nil {
				err = decodeErr(ReasonJSONDecode, "field %s is %s, want an array", jsonFieldNames[k], goTypeOf(v))
			}
			return dst
		}
		failed := false
		forItems(d, v, func(it jspan) {
			if failed {
				return
			}
			if !it.is(jString) {
				if err == nil {
					err = decodeErr(ReasonJSONDecode, "field %s holds a %s, want strings", jsonFieldNames[k], goTypeOf(it))
				}
				failed = true
				return
			}
			dst = append(dst, jstring(d, it))
		})
		return dst
	}

	e.EventID = field(jfEventID, false)
	e.CustomerID = field(jfCustomerID, false)
	switch tsv.kind &^ jEscaped {
	case jString:
		e.Time = ts
	case jNumber:
		s := bstr(tsv.raw(d))
		x, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || x < minEventTime || x > maxEventTime {
			return decodeErr(ReasonBadTimestamp, "ts %s is outside 2000-01-01 .. 9999-12-31", string(tsv.raw(d)))
		}
		e.Time = int64(x)
	case jNone, jNull:
		return decodeErr(ReasonBadTimestamp, "missing ts")
	default:
		return decodeErr(ReasonBadTimestamp, "ts is %s", goTypeOf(tsv))
	}
	switch t {
	case EventPurchase:
		e.Channel = field(jfChannel, true)
		e.OrderID = field(jfOrderID, false)
		e.Amount = num(jfAmount)
		e.Currency = field(jfCurrency, true)
		e.Quantity = integer(jfQuantity)
		e.Categories = list(jfCategories, e.Categories)
		e.ProductIDs = list(jfProductIDs, e.ProductIDs)
	case EventBrowse:
		e.Channel = field(jfChannel, true)
		e.ProductID = field(jfProductID, false)
		e.Category = field(jfCategory, false)
		e.Page = field(jfPage, true)
		e.SessionID = field(jfSessionID, false)
	case EventEngagement:
		e.Channel = field(jfChannel, true)
		e.Action = field(jfAction, true)
		e.CampaignID = field(jfCampaignID, false)
	case EventProfile:
		switch dv := f[jfDelete]; dv.kind &^ jEscaped {
		case jNone, jNull:
		case jTrue:
			e.Delete = true
		case jFalse:
		case jObject:
			var b jspan
			var kb [16]byte
			members(d, dv, func(key, val jspan) {
				if jtemp(d, key, kb[:]) == "boolean" {
					b = val
				}
			})
			switch b.kind {
			case jTrue:
				e.Delete = true
			case jFalse:
			default:
				return decodeErr(ReasonBadField, "field delete is %s, want a boolean", typeNameOf(dv))
			}
		default:
			return decodeErr(ReasonBadField, "field delete is %s, want a boolean", typeNameOf(dv))
		}
		e.AliasOf = str(f[jfAliasOf], "alias_of", ReasonBadField, false)
		if err != nil {
			return err
		}
		switch av := f[jfAttributes]; av.kind {
		case jNone, jNull:
		case jObject:
			if aerr := jsonAttributes(d, av, e); aerr != nil {
				return aerr
			}
		default:
			return decodeErr(ReasonBadField, "field attributes is %s, want an object", typeNameOf(av))
		}
	}
	return err
}

// Internal Value kinds for an attribute whose value is an error, kept
// until the attributes are sorted (the first in name order is reported).
const (
	kindErrUnsupported Kind = 250 // Str: the Go type encoding/json would give
	kindErrBadValue    Kind = 251 // Str: the number's text
)

// jsonAttributes appends the members of the attributes object to
// e.Attributes, sorted by name, the last of equal names winning, as
// fillEvent reads a map.
func jsonAttributes(d []byte, obj jspan, e *Event) error {
	first := len(e.Attributes)
	members(d, obj, func(key, val jspan) {
		e.Attributes = append(e.Attributes, Attribute{Name: jstring(d, key), Value: jsonAttrValue(d, val)})
	})
	attrs := e.Attributes[first:]
	slices.SortStableFunc(attrs, func(a, b Attribute) int { return strings.Compare(a.Name, b.Name) })
	// Keep the last of each run of equal names.
	n := 0
	for i := range attrs {
		if i+1 < len(attrs) && attrs[i+1].Name == attrs[i].Name {
			continue
		}
		attrs[n] = attrs[i]
		n++
	}
	clear(attrs[n:])
	e.Attributes = e.Attributes[:first+n]
	for _, a := range e.Attributes[first:] {
		switch a.Value.Kind {
		case kindErrUnsupported:
			return fieldErr("attribute "+a.Name, fmt.Errorf("unsupported value type %s", a.Value.Str), ReasonJSONDecode)
		case kindErrBadValue:
			_, ferr := toFloat(json.Number(a.Value.Str))
			return fieldErr("attribute "+a.Name, ferr, ReasonJSONDecode)
		}
	}
	return nil
}

// jsonAttrValue is nativeValue for a JSON value: an object stands for a
// union and is read as its (last) member.
func jsonAttrValue(d []byte, v jspan) Value {
	if v.is(jObject) {
		inner := jspan{}
		members(d, v, func(_, val jspan) { inner = val })
		if inner.kind != jNone {
			v = inner
		}
	}
	switch v.kind &^ jEscaped {
	case jNull:
		return Value{}
	case jString:
		return String(jstring(d, v))
	case jTrue:
		return Bool(true)
	case jFalse:
		return Bool(false)
	case jNumber:
		x, err := strconv.ParseFloat(bstr(v.raw(d)), 64)
		if err != nil {
			return Value{Kind: kindErrBadValue, Str: string(v.raw(d))}
		}
		return Number(x)
	}
	return Value{Kind: kindErrUnsupported, Str: goTypeOf(v)}
}

// jsonFloat is toFloat for a JSON value.
func jsonFloat(d []byte, v jspan) (float64, error) {
	switch v.kind &^ jEscaped {
	case jNone, jNull:
		return 0, nil
	case jNumber:
		x, err := strconv.ParseFloat(bstr(v.raw(d)), 64)
		if err != nil || math.IsInf(x, 0) {
			return toFloat(json.Number(string(v.raw(d))))
		}
		return x, nil
	}
	return 0, fmt.Errorf("%s, want a number", typeNameOf(v))
}

// jsonInt is toInt for a JSON value.
func jsonInt(d []byte, v jspan) (int64, error) {
	if !v.is(jNumber) {
		x, err := jsonFloat(d, v)
		return int64(x), err
	}
	s := bstr(v.raw(d))
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i, nil
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil || x >= -math.MinInt64 || x < math.MinInt64 {
		return toInt(json.Number(string(v.raw(d))))
	}
	return int64(x), nil
}

// internedValues holds the values of the enumerated fields (channel, page,
// action) and common currencies: decoding one of them shares the constant
// instead of allocating a copy.
var internedValues = func() map[string]string {
	m := map[string]string{}
	for _, s := range strings.Fields(`web app store email push sms
		home category product search cart checkout
		send open click unsubscribe bounce
		EUR USD GBP JPY CHF CAD AUD SEK NOK DKK PLN CZK CNY INR BRL`) {
		m[s] = s
	}
	return m
}()

// internJSON is jstring for a value that is often one of internedValues.
func internJSON(d []byte, v jspan) string {
	if v.kind&jEscaped == 0 {
		if s, ok := internedValues[string(v.raw(d))]; ok {
			return s
		}
	}
	return jstring(d, v)
}
