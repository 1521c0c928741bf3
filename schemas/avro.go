package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/linkedin/goavro/v2"
)

// AvroCodec decodes and encodes one input event type in Avro binary with
// github.com/linkedin/goavro/v2. Safe for concurrent use.
type AvroCodec struct {
	typ   EventType
	codec *goavro.Codec
	// defaults fill the reader fields the writer lacks (NewResolvingCodec).
	defaults []fieldDefault
	// fast is the writer schema compiled for this event type (avrofast.go),
	// or nil if its shape is one only goavro decodes.
	fast *avroProgram
}

// NewAvroCodec compiles schemaText (the writer's schema) for events of type t.
func NewAvroCodec(t EventType, schemaText string) (*AvroCodec, error) {
	if t == EventUnknown || int(t) >= NumEventTypes {
		return nil, fmt.Errorf("schemas: avro codec for event type %d", t)
	}
	c, err := goavro.NewCodec(schemaText)
	if err != nil {
		return nil, fmt.Errorf("schemas: compile %s schema: %w", t, err)
	}
	ac := &AvroCodec{typ: t, codec: c}
	ac.fast, _ = compileAvro(t, schemaText, nil)
	return ac, nil
}

// Compiled reports whether the codec decodes with the decoder compiled
// from the writer schema; if not (a schema shape it does not take, see
// docs/schemas.md), it decodes with goavro.
func (c *AvroCodec) Compiled() bool { return c.fast != nil }

// Type returns the event type the codec reads.
func (c *AvroCodec) Type() EventType { return c.typ }

// Decode decodes one Avro binary value into e (Reset first, slices reused).
// Errors are *DecodeError with reason avro_decode, or bad_value, or
// bad_field. The strings decode stores in e are copies (or shared
// constants) that never alias data and may be kept; e's slices are valid
// until the next decode into e. On an error e's content is unspecified.
//
// With a compiled writer schema (Compiled) it reads the binary straight
// into e, allocating only the strings it keeps; otherwise it decodes with
// goavro into a map and projects that. Both give the same event and the
// same error reasons (FuzzDecodeAvroDifferential).
func (c *AvroCodec) Decode(data []byte, e *Event) error {
	if c.fast != nil {
		return c.fast.decode(data, e)
	}
	return c.decodeGoavro(data, e)
}

// decodeGoavro is Decode with goavro: the reference the compiled decoder
// is tested against.
func (c *AvroCodec) decodeGoavro(data []byte, e *Event) error {
	native, rest, err := c.codec.NativeFromBinary(data)
	if err != nil {
		return &DecodeError{Reason: ReasonAvroDecode, Err: err}
	}
	if len(rest) != 0 {
		return decodeErr(ReasonAvroDecode, "%d trailing bytes after the %s record", len(rest), c.typ)
	}
	m, ok := native.(map[string]any)
	if !ok {
		return decodeErr(ReasonAvroDecode, "%s value is %T, not a record", c.typ, native)
	}
	for _, d := range c.defaults {
		m[d.name] = d.value
	}
	e.Reset()
	e.Type = c.typ
	return fillEvent(e, m, ReasonAvroDecode)
}

// fillEvent copies a decoded record (Avro native or JSON) into e.
func fillEvent(e *Event, m map[string]any, reason Reason) error {
	f := fieldReader{m: m, reason: reason}
	e.EventID = f.str("event_id")
	e.CustomerID = f.str("customer_id")
	var err error
	if e.Time, err = eventTime(m["ts"]); err != nil {
		return err
	}
	switch e.Type {
	case EventPurchase:
		e.Channel = f.str("channel")
		e.OrderID = f.str("order_id")
		e.Amount = f.num("amount")
		e.Currency = f.str("currency")
		e.Quantity = f.integer("quantity")
		e.Categories = f.list("categories", e.Categories)
		e.ProductIDs = f.list("product_ids", e.ProductIDs)
	case EventBrowse:
		e.Channel = f.str("channel")
		e.ProductID = f.str("product_id")
		e.Category = f.str("category")
		e.Page = f.str("page")
		e.SessionID = f.str("session_id")
	case EventEngagement:
		e.Channel = f.str("channel")
		e.Action = f.str("action")
		e.CampaignID = f.str("campaign_id")
	case EventProfile:
		if err := fillProfile(e, &f); err != nil {
			return err
		}
	}
	return f.err
}

// fieldReader reads the fields of a decoded record, keeping the first
// error: a field of the wrong type is an error with reason.
type fieldReader struct {
	m      map[string]any
	reason Reason
	err    error
}

func (f *fieldReader) fail(err error) {
	if f.err == nil {
		f.err = err
	}
}

func (f *fieldReader) str(name string) string { return f.strAs(name, f.reason) }

// strAs reads a string field; a value of another type is an error with
// reason r.
func (f *fieldReader) strAs(name string, r Reason) string {
	v, ok := f.m[name]
	if !ok || v == nil {
		return ""
	}
	if u, isUnion := v.(map[string]any); isUnion {
		v = u["string"]
	}
	s, ok := v.(string)
	if !ok {
		f.fail(decodeErr(r, "field %s is %s, want a string", name, typeName(v)))
	}
	return s
}

// num reads a number field; NaN, an infinity or a JSON number beyond the
// float64 range is a bad_value error.
func (f *fieldReader) num(name string) float64 {
	x, err := toFloat(f.m[name])
	if err != nil {
		f.fail(fieldErr(name, err, f.reason))
	}
	return x
}

// integer reads an int64 field; a number beyond the int64 range (a
// quantity of 1e30 would become math.MinInt64) is a bad_value error.
func (f *fieldReader) integer(name string) int64 {
	i, err := toInt(f.m[name])
	if err != nil {
		f.fail(fieldErr(name, err, f.reason))
	}
	return i
}

// list appends the strings of an array field to dst.
func (f *fieldReader) list(name string, dst []string) []string {
	v, ok := f.m[name]
	if !ok || v == nil {
		return dst
	}
	items, ok := v.([]any)
	if !ok {
		f.fail(decodeErr(f.reason, "field %s is %T, want an array", name, v))
		return dst
	}
	for _, it := range items {
		s, ok := it.(string)
		if !ok {
			f.fail(decodeErr(f.reason, "field %s holds a %T, want strings", name, it))
			return dst
		}
		dst = append(dst, s)
	}
	return dst
}

// eventTime reads ts: a time (Avro timestamp-millis), Unix ms, or a JSON
// number of Unix ms within 2000-01-01 .. 9999-12-31.
func eventTime(ts any) (int64, error) {
	switch ts := ts.(type) {
	case time.Time:
		return ts.UnixMilli(), nil
	case int64:
		return ts, nil
	case json.Number:
		f, err := strconv.ParseFloat(string(ts), 64)
		if err != nil || f < minEventTime || f > maxEventTime {
			return 0, decodeErr(ReasonBadTimestamp, "ts %s is outside 2000-01-01 .. 9999-12-31", ts)
		}
		return int64(f), nil
	case nil:
		return 0, decodeErr(ReasonBadTimestamp, "missing ts")
	default:
		return 0, decodeErr(ReasonBadTimestamp, "ts is %T", ts)
	}
}

// fillProfile reads a profile event's delete, alias_of and attributes.
// They control what the event does: one of the wrong type must never be
// read as absent (an erasure request would vanish), so it is a bad_field
// error.
func fillProfile(e *Event, f *fieldReader) error {
	switch d := f.m["delete"].(type) {
	case nil:
	case bool:
		e.Delete = d
	case map[string]any: // an Avro union such as ["null","boolean"]
		b, ok := d["boolean"].(bool)
		if !ok {
			return decodeErr(ReasonBadField, "field delete is %s, want a boolean", typeName(d))
		}
		e.Delete = b
	default:
		return decodeErr(ReasonBadField, "field delete is %s, want a boolean", typeName(d))
	}
	e.AliasOf = f.strAs("alias_of", ReasonBadField)
	if f.err != nil {
		return f.err
	}
	switch attrs := f.m["attributes"].(type) {
	case nil:
	case map[string]any:
		names := make([]string, 0, len(attrs))
		for k := range attrs {
			names = append(names, k)
		}
		// Map order is random; sort so that equal input always gives
		// equal state.
		sort.Strings(names)
		for _, k := range names {
			v, err := nativeValue(attrs[k])
			if err != nil {
				return fieldErr("attribute "+k, err, f.reason)
			}
			e.Attributes = append(e.Attributes, Attribute{Name: k, Value: v})
		}
	default:
		return decodeErr(ReasonBadField, "field attributes is %s, want an object", typeName(attrs))
	}
	return nil
}

// typeName names the JSON (or Avro native) type of v for error messages.
func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case float64, float32, int64, int32, int, json.Number:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// errBadValue marks a number segd cannot take: not finite, or out of
// range. fieldErr turns it into a bad_value DecodeError.
var errBadValue = errors.New("bad value")

// fieldErr wraps err, from reading field name, as a DecodeError: reason
// bad_value for a number segd cannot take, else r.
func fieldErr(name string, err error, r Reason) error {
	if errors.Is(err, errBadValue) {
		r = ReasonBadValue
	}
	return &DecodeError{Reason: r, Err: fmt.Errorf("field %s: %w", name, err)}
}

// toFloat converts a decoded number (Avro native or json.Number) to a
// finite float64. nil is 0.
func toFloat(v any) (float64, error) {
	var f float64
	switch x := v.(type) {
	case nil:
		return 0, nil
	case float64:
		f = x
	case float32:
		f = float64(x)
	case int64:
		return float64(x), nil
	case int32:
		return float64(x), nil
	case int:
		return float64(x), nil
	case json.Number:
		var err error
		f, err = strconv.ParseFloat(string(x), 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %s is beyond the range of a float64 (±%g)", errBadValue, x, math.MaxFloat64)
		}
	default:
		return 0, fmt.Errorf("%s, want a number", typeName(v))
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%w: %v: %w", errBadValue, f, ErrNonFinite)
	}
	return f, nil
}

// toInt converts a decoded number to an int64, truncating a fraction as
// a conversion would; a number outside the int64 range is an error.
func toInt(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case int32:
		return int64(x), nil
	case int:
		return int64(x), nil
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i, nil
		}
	}
	f, err := toFloat(v)
	if err != nil {
		return 0, err
	}
	// float64(math.MaxInt64) rounds up to 2^63, which does not fit.
	if f >= -math.MinInt64 || f < math.MinInt64 {
		return 0, fmt.Errorf("%w: %v is beyond the range of an int64", errBadValue, v)
	}
	return int64(f), nil
}

// nativeValue converts an Avro union value (or a JSON scalar) to a Value.
// A number must be finite.
func nativeValue(v any) (Value, error) {
	if u, ok := v.(map[string]any); ok {
		for _, inner := range u {
			v = inner
		}
	}
	switch x := v.(type) {
	case nil:
		return Value{}, nil
	case string:
		return String(x), nil
	case bool:
		return Bool(x), nil
	case float64, float32, int64, int32, json.Number:
		f, err := toFloat(x)
		if err != nil {
			return Value{}, err
		}
		return Number(f), nil
	}
	return Value{}, fmt.Errorf("unsupported value type %T", v)
}

func unionValue(v Value) any {
	switch v.Kind {
	case KindString:
		return goavro.Union("string", v.Str)
	case KindNumber:
		return goavro.Union("double", v.Num)
	case KindBool:
		return goavro.Union("boolean", v.Bool)
	}
	return nil
}

func strs(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// AppendEncode appends e's Avro binary encoding. e.Type must be the codec's.
func (c *AvroCodec) AppendEncode(dst []byte, e *Event) ([]byte, error) {
	if e.Type != c.typ {
		return dst, fmt.Errorf("schemas: encode a %s event with the %s codec", e.Type, c.typ)
	}
	m := map[string]any{
		"event_id":    e.EventID,
		"customer_id": e.CustomerID,
		"ts":          time.UnixMilli(e.Time).UTC(),
	}
	switch e.Type {
	case EventPurchase:
		m["channel"], m["order_id"], m["amount"], m["currency"], m["quantity"] = e.Channel, e.OrderID, e.Amount, e.Currency, e.Quantity
		m["categories"], m["product_ids"] = strs(e.Categories), strs(e.ProductIDs)
	case EventBrowse:
		m["channel"], m["product_id"], m["category"], m["page"], m["session_id"] = e.Channel, e.ProductID, e.Category, e.Page, e.SessionID
	case EventEngagement:
		m["channel"], m["action"], m["campaign_id"] = e.Channel, e.Action, e.CampaignID
	case EventProfile:
		attrs := map[string]any{}
		for _, a := range e.Attributes {
			attrs[a.Name] = unionValue(a.Value)
		}
		m["attributes"], m["delete"] = attrs, e.Delete
		if e.AliasOf != "" {
			m["alias_of"] = goavro.Union("string", e.AliasOf)
		} else {
			m["alias_of"] = nil
		}
	}
	out, err := c.codec.BinaryFromNative(dst, m)
	if err != nil {
		return dst, fmt.Errorf("schemas: encode %s: %w", e.Type, err)
	}
	return out, nil
}

// Codecs holds an AvroCodec per input type built from the embedded schemas.
type Codecs [NumEventTypes]*AvroCodec

// NewCodecs compiles the embedded schemas.
func NewCodecs() (*Codecs, error) {
	var cs Codecs
	for t := EventPurchase; t <= EventProfile; t++ {
		c, err := NewAvroCodec(t, SchemaText(t))
		if err != nil {
			return nil, err
		}
		cs[t] = c
	}
	return &cs, nil
}

// maxAvroBlockItems bounds the items of one array or map block in an
// input record. goavro allocates a block's items up front, so without a
// bound a 40-byte record claiming 100M map entries took 12 s and gigabytes
// (found by FuzzDecodeAvro; testdata/fuzz keeps the input). No segd event
// comes near 65,536 categories, product ids or attributes.
const maxAvroBlockItems = 1 << 16

// maxAvroBlockBytes bounds one string or bytes value likewise.
const maxAvroBlockBytes = 16 << 20

func init() {
	goavro.MaxBlockCount = maxAvroBlockItems
	goavro.MaxBlockSize = maxAvroBlockBytes
}

// ErrSchemaMismatch marks a writer schema that cannot be resolved to the
// reader schema (Avro schema resolution): not a record, or lacking a reader
// field that has no default. Every record written with it is rejected with
// reason incompatible_schema.
var ErrSchemaMismatch = errors.New("schemas: writer schema does not resolve to the reader schema")

// NewResolvingCodec compiles writer, the schema records were written with,
// for reading as reader (segd's schema of t, or an override), following
// Avro schema resolution for record fields: a writer field the reader does
// not have is ignored (Decode picks fields by name), and a reader field the
// writer lacks takes the reader's default. A reader field the writer lacks
// that has no default is an error wrapping ErrSchemaMismatch. Field types
// are checked per record as Decode reads them (a wrong type is
// avro_decode), not here.
func NewResolvingCodec(t EventType, writer, reader string) (*AvroCodec, error) {
	c, err := NewAvroCodec(t, writer)
	if err != nil {
		return nil, err
	}
	rf, err := recordFields(reader)
	if err != nil {
		return nil, fmt.Errorf("schemas: reader schema of %s: %w", t, err)
	}
	wf, err := recordFields(writer)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSchemaMismatch, err)
	}
	have := make(map[string]bool, len(wf))
	for _, f := range wf {
		have[f.Name] = true
	}
	var missing []string
	for _, f := range rf {
		if have[f.Name] {
			continue
		}
		if f.Default == nil {
			missing = append(missing, f.Name)
			continue
		}
		var v any
		if err := json.Unmarshal(f.Default, &v); err != nil {
			return nil, fmt.Errorf("schemas: reader schema of %s: default of %s: %w", t, f.Name, err)
		}
		c.defaults = append(c.defaults, fieldDefault{name: f.Name, value: v})
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: the writer's %s record lacks %s, which the reader's has without a default", ErrSchemaMismatch, t, strings.Join(missing, ", "))
	}
	c.fast, _ = compileAvro(t, writer, c.defaults)
	return c, nil
}

// fieldDefault is a reader field the writer lacks, and its default as a
// decoded JSON value (what Decode's field readers accept, like Avro native).
type fieldDefault struct {
	name  string
	value any
}

// avroField is a record field of a schema, as far as resolution needs it.
type avroField struct {
	Name    string          `json:"name"`
	Default json.RawMessage `json:"default"`
}

// recordFields returns the fields of a record schema.
func recordFields(schema string) ([]avroField, error) {
	var s struct {
		Type   any         `json:"type"`
		Fields []avroField `json:"fields"`
	}
	if err := json.Unmarshal([]byte(schema), &s); err != nil {
		return nil, fmt.Errorf("not a record schema: %v", err)
	}
	if s.Type != "record" {
		return nil, fmt.Errorf("not a record schema (type %v)", s.Type)
	}
	return s.Fields, nil
}
