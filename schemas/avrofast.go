package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// A compiled Avro decoder: the writer schema, compiled once, read straight
// from the binary into the Event, with no map per record. It applies the
// same rule as the goavro path (decodeGoavro + fillEvent): the writer's
// record is projected onto the event by field name, the reader's defaults
// fill the fields the writer lacks, and every check and error reason is
// the same (FuzzDecodeAvroDifferential). It covers the schema shapes
// producers use; compileAvro refuses any other (errAvroUnsupported) and
// the codec then decodes with goavro.

// errAvroUnsupported marks a schema shape the compiled decoder does not
// take (the goavro path decodes it).
var errAvroUnsupported = errors.New("schemas: schema shape not supported by the compiled decoder")

func unsupported(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errAvroUnsupported}, args...)...)
}

type avroKind uint8

const (
	aNull avroKind = iota
	aBoolean
	aInt
	aLong
	aFloat
	aDouble
	aBytes
	aString
	aEnum
	aFixed
	aArray
	aMap
	aUnion
	aRecord
)

var avroPrimitives = map[string]avroKind{"null": aNull, "boolean": aBoolean, "int": aInt, "long": aLong, "float": aFloat, "double": aDouble, "bytes": aBytes, "string": aString}

// Logical types that change what goavro returns.
const (
	ltNone   = iota
	ltMillis // long timestamp-millis: time.Time
	ltMicros // long timestamp-micros: time.Time
	ltOther  // time-millis, time-micros, date: a time.Time or Duration
)

// avroNode is one compiled schema node.
type avroNode struct {
	kind     avroKind
	logical  uint8
	size     int         // fixed
	symbols  []string    // enum
	elem     *avroNode   // array items, map values
	branches []*avroNode // union
	fields   []*avroNode // record field types
	names    []string    // record field names
}

// parseAvroNode compiles a schema (already accepted by goavro) without
// named-type references.
func parseAvroNode(v any) (*avroNode, error) {
	switch s := v.(type) {
	case string:
		if k, ok := avroPrimitives[s]; ok {
			return &avroNode{kind: k}, nil
		}
		return nil, unsupported("reference to named type %q", s)
	case []any:
		n := &avroNode{kind: aUnion}
		for _, b := range s {
			bn, err := parseAvroNode(b)
			if err != nil {
				return nil, err
			}
			n.branches = append(n.branches, bn)
		}
		return n, nil
	case map[string]any:
		return parseAvroMap(s)
	}
	return nil, unsupported("schema %T", v)
}

// reservedTypeNames are names goavro resolves before a named type's.
var reservedTypeNames = map[string]bool{"null": true, "boolean": true, "int": true, "long": true, "float": true, "double": true,
	"bytes": true, "string": true, "array": true, "map": true, "enum": true, "fixed": true, "record": true, "error": true}

func checkTypeName(m map[string]any) error {
	name, _ := m["name"].(string)
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		name = name[i+1:]
	}
	if reservedTypeNames[name] {
		return unsupported("type named %q", name)
	}
	return nil
}

func parseAvroMap(m map[string]any) (*avroNode, error) {
	t, ok := m["type"].(string)
	if !ok {
		// {"type": {...}} or {"type": [...]}: goavro builds the inner one.
		switch m["type"].(type) {
		case map[string]any, []any:
			return parseAvroNode(m["type"])
		}
		return nil, unsupported("type %T", m["type"])
	}
	lt, _ := m["logicalType"].(string)
	if k, ok := avroPrimitives[t]; ok {
		n := &avroNode{kind: k}
		switch {
		case t == "long" && lt == "timestamp-millis":
			n.logical = ltMillis
		case t == "long" && lt == "timestamp-micros":
			n.logical = ltMicros
		case t == "long" && lt == "time-micros", t == "int" && (lt == "time-millis" || lt == "date"):
			n.logical = ltOther
		case t == "bytes" && lt == "decimal", t == "string" && lt == "validated-string":
			return nil, unsupported("logical type %s", lt)
		}
		return n, nil
	}
	switch t {
	case "array", "map":
		key := "items"
		kind := aArray
		if t == "map" {
			key, kind = "values", aMap
		}
		e, err := parseAvroNode(m[key])
		if err != nil {
			return nil, err
		}
		return &avroNode{kind: kind, elem: e}, nil
	case "enum":
		if err := checkTypeName(m); err != nil {
			return nil, err
		}
		n := &avroNode{kind: aEnum}
		syms, _ := m["symbols"].([]any)
		for _, s := range syms {
			str, ok := s.(string)
			if !ok {
				return nil, unsupported("enum symbol %v", s)
			}
			n.symbols = append(n.symbols, str)
		}
		return n, nil
	case "fixed":
		if err := checkTypeName(m); err != nil {
			return nil, err
		}
		if lt == "decimal" {
			return nil, unsupported("logical type decimal")
		}
		size, ok := m["size"].(float64)
		if !ok || size < 0 || size != math.Trunc(size) || size > math.MaxInt32 {
			return nil, unsupported("fixed size %v", m["size"])
		}
		return &avroNode{kind: aFixed, size: int(size)}, nil
	case "record":
		if err := checkTypeName(m); err != nil {
			return nil, err
		}
		fields, ok := m["fields"].([]any)
		if !ok {
			return nil, unsupported("record without fields")
		}
		n := &avroNode{kind: aRecord}
		seen := map[string]bool{}
		for _, f := range fields {
			fm, ok := f.(map[string]any)
			if !ok {
				return nil, unsupported("field %v", f)
			}
			name, _ := fm["name"].(string)
			if seen[name] {
				return nil, unsupported("duplicate field %q", name)
			}
			seen[name] = true
			// goavro reads the field's own map as its type's schema (so a
			// logicalType beside "type" counts).
			fn, err := parseAvroMap(fm)
			if err != nil {
				return nil, err
			}
			n.fields = append(n.fields, fn)
			n.names = append(n.names, name)
		}
		return n, nil
	}
	return nil, unsupported("type %q", t)
}

// Operations on the top-level fields of the writer's record.
const (
	opSkip = iota
	opStr
	opStrEnum
	opStrUnion // union of null and string
	opTs
	opNum
	opInt
	opList
	opBool
	opBoolUnion // union of null and boolean
	opAttrs
)

type avroOp struct {
	op     uint8
	target int // jf* field index
	node   *avroNode
}

// avroProgram is a compiled writer schema for one event type.
type avroProgram struct {
	typ EventType
	ops []avroOp
	// def is the event the reader's defaults make of the fields the
	// writer lacks (its strings and slices are shared, never written).
	def Event
}

// projected lists, per event type, the fields fillEvent reads.
var projected = func() (p [NumEventTypes]map[string]int) {
	common := map[string]int{"event_id": jfEventID, "customer_id": jfCustomerID, "ts": jfTs}
	for t := EventPurchase; t <= EventProfile; t++ {
		p[t] = map[string]int{}
		for k, v := range common {
			p[t][k] = v
		}
		for i := range numJSONFields {
			if jsonAllowed[t]&(1<<i) != 0 && i != jfType {
				p[t][jsonFieldNames[i]] = i
			}
		}
	}
	return p
}()

// compileAvro compiles writer (a schema goavro accepted) for events of
// type t, with defaults for the reader fields the writer lacks.
func compileAvro(t EventType, writer string, defaults []fieldDefault) (*avroProgram, error) {
	var s any
	if err := json.Unmarshal([]byte(writer), &s); err != nil {
		return nil, err
	}
	root, err := parseAvroNode(s)
	if err != nil {
		return nil, err
	}
	if root.kind != aRecord {
		return nil, unsupported("not a record")
	}
	p := &avroProgram{typ: t}
	have := map[int]bool{}
	for i, name := range root.names {
		op := avroOp{target: -1, node: root.fields[i]}
		if k, ok := projected[t][name]; ok {
			op.target = k
			if op.op, err = projectOp(k, op.node); err != nil {
				return nil, fmt.Errorf("field %s: %w", name, err)
			}
			have[k] = true
		}
		p.ops = append(p.ops, op)
	}
	if !have[jfTs] {
		return nil, unsupported("no ts")
	}
	for _, d := range defaults {
		k, ok := projected[t][d.name]
		if !ok || have[k] {
			continue
		}
		if err := setDefault(&p.def, k, d.value); err != nil {
			return nil, fmt.Errorf("default of %s: %w", d.name, err)
		}
	}
	return p, nil
}

// projectOp picks the operation reading a writer field of type n into
// event field k, or refuses a shape whose goavro value fillEvent would
// reject or read differently.
func projectOp(k int, n *avroNode) (uint8, error) {
	plain := n.logical == ltNone
	switch k {
	case jfEventID, jfCustomerID, jfChannel, jfOrderID, jfCurrency, jfProductID, jfCategory, jfPage, jfSessionID, jfAction, jfCampaignID, jfAliasOf:
		switch {
		case n.kind == aString:
			return opStr, nil
		case n.kind == aEnum:
			return opStrEnum, nil
		case n.kind == aUnion && unionOf(n, aString):
			return opStrUnion, nil
		}
	case jfTs:
		if n.kind == aLong && n.logical != ltOther {
			return opTs, nil
		}
	case jfAmount:
		if plain && (n.kind == aDouble || n.kind == aFloat || n.kind == aInt || n.kind == aLong) {
			return opNum, nil
		}
	case jfQuantity:
		if plain && (n.kind == aDouble || n.kind == aFloat || n.kind == aInt || n.kind == aLong) {
			return opInt, nil
		}
	case jfCategories, jfProductIDs:
		if n.kind == aArray && (n.elem.kind == aString || n.elem.kind == aEnum) {
			return opList, nil
		}
	case jfDelete:
		switch {
		case n.kind == aBoolean:
			return opBool, nil
		case n.kind == aUnion && unionOf(n, aBoolean):
			return opBoolUnion, nil
		}
	case jfAttributes:
		if n.kind == aMap && attrValueOK(n.elem, true) {
			return opAttrs, nil
		}
	}
	return 0, unsupported("type %d", n.kind)
}

// unionOf reports whether the union n has only null and kind branches.
func unionOf(n *avroNode, kind avroKind) bool {
	for _, b := range n.branches {
		if b.kind != aNull && b.kind != kind {
			return false
		}
	}
	return true
}

// attrValueOK reports whether nativeValue takes every value of type n.
func attrValueOK(n *avroNode, unionOK bool) bool {
	switch n.kind {
	case aNull, aBoolean, aInt, aLong, aFloat, aDouble, aString:
		return n.logical == ltNone
	case aEnum:
		return true
	case aUnion:
		if !unionOK {
			return false
		}
		for _, b := range n.branches {
			if !attrValueOK(b, false) {
				return false
			}
		}
		return true
	}
	return false
}

// setDefault applies default v (decoded JSON) of field k to e as
// fillEvent would, refusing what it would reject or read otherwise.
func setDefault(e *Event, k int, v any) error {
	if v == nil {
		return nil // as absent
	}
	switch k {
	case jfEventID, jfCustomerID, jfChannel, jfOrderID, jfCurrency, jfProductID, jfCategory, jfPage, jfSessionID, jfAction, jfCampaignID, jfAliasOf:
		s, ok := v.(string)
		if !ok {
			return unsupported("%T", v)
		}
		*strField(e, k) = s
		return nil
	case jfAmount:
		f, err := toFloat(v)
		if err != nil {
			return unsupported("%v", err)
		}
		e.Amount = f
		return nil
	case jfQuantity:
		i, err := toInt(v)
		if err != nil {
			return unsupported("%v", err)
		}
		e.Quantity = i
		return nil
	case jfCategories, jfProductIDs:
		items, ok := v.([]any)
		if !ok {
			return unsupported("%T", v)
		}
		var l []string
		for _, it := range items {
			s, ok := it.(string)
			if !ok {
				return unsupported("%T", it)
			}
			l = append(l, s)
		}
		if k == jfCategories {
			e.Categories = l
		} else {
			e.ProductIDs = l
		}
		return nil
	case jfDelete:
		b, ok := v.(bool)
		if !ok {
			return unsupported("%T", v)
		}
		e.Delete = b
		return nil
	case jfAttributes:
		m, ok := v.(map[string]any)
		if !ok {
			return unsupported("%T", v)
		}
		for name, x := range m {
			switch x.(type) {
			case nil, string, bool, float64:
			default:
				return unsupported("attribute %T", x)
			}
			val, err := nativeValue(x)
			if err != nil {
				return unsupported("%v", err)
			}
			e.Attributes = append(e.Attributes, Attribute{Name: name, Value: val})
		}
		slices.SortFunc(e.Attributes, func(a, b Attribute) int { return strings.Compare(a.Name, b.Name) })
		return nil
	}
	return unsupported("field %d", k)
}

// strField returns the string field k of e.
func strField(e *Event, k int) *string {
	switch k {
	case jfEventID:
		return &e.EventID
	case jfCustomerID:
		return &e.CustomerID
	case jfChannel:
		return &e.Channel
	case jfOrderID:
		return &e.OrderID
	case jfCurrency:
		return &e.Currency
	case jfProductID:
		return &e.ProductID
	case jfCategory:
		return &e.Category
	case jfPage:
		return &e.Page
	case jfSessionID:
		return &e.SessionID
	case jfAction:
		return &e.Action
	case jfCampaignID:
		return &e.CampaignID
	case jfAliasOf:
		return &e.AliasOf
	}
	panic("schemas: not a string field")
}

// avroIn reads Avro binary as goavro does; a read past the end or a value
// goavro refuses sets bad.
type avroIn struct {
	b   []byte
	i   int
	bad bool
}

// raw reads a varint without zig-zag decoding (shifts past 63 bits lose
// the bits, as goavro's do).
func (r *avroIn) raw() uint64 {
	var v uint64
	var shift uint
	for r.i < len(r.b) {
		c := r.b[r.i]
		r.i++
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v
		}
		shift += 7
	}
	r.bad = true
	return 0
}

func (r *avroIn) long() int64 {
	v := r.raw()
	return int64(v>>1) ^ -int64(v&1)
}

func (r *avroIn) int() int32 {
	v := r.raw()
	return int32(uint32(v>>1)) ^ -int32(v&1)
}

// bytes reads a length-prefixed value, aliasing the input.
func (r *avroIn) bytes() []byte {
	n := r.long()
	if r.bad || n < 0 || n > int64(len(r.b)-r.i) {
		r.bad = true
		return nil
	}
	b := r.b[r.i : r.i+int(n)]
	r.i += int(n)
	return b
}

func (r *avroIn) take(n int) []byte {
	if n > len(r.b)-r.i {
		r.bad = true
		return nil
	}
	b := r.b[r.i : r.i+n]
	r.i += n
	return b
}

func (r *avroIn) double() float64 {
	b := r.take(8)
	if b == nil {
		return 0
	}
	return math.Float64frombits(uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 | uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56)
}

func (r *avroIn) float() float32 {
	b := r.take(4)
	if b == nil {
		return 0
	}
	return math.Float32frombits(uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24)
}

func (r *avroIn) boolean() bool {
	if r.i >= len(r.b) || r.b[r.i] > 1 {
		r.bad = true
		return false
	}
	r.i++
	return r.b[r.i-1] == 1
}

// index reads a union branch or enum symbol index below n.
func (r *avroIn) index(n int) int {
	i := r.long()
	if r.bad || i < 0 || i >= int64(n) {
		r.bad = true
		return 0
	}
	return int(i)
}

// blockCount reads the item count of the next array or map block (0 at
// the end), skipping a block's byte size.
func (r *avroIn) blockCount() int {
	n := r.long()
	if n < 0 {
		if n == math.MinInt64 {
			r.bad = true
			return 0
		}
		n = -n
		r.long()
	}
	if r.bad || n > maxAvroBlockItems {
		r.bad = true
		return 0
	}
	return int(n)
}

// skip reads a value of type n and drops it.
func (r *avroIn) skip(n *avroNode) {
	switch n.kind {
	case aNull:
	case aBoolean:
		r.boolean()
	case aInt, aLong:
		r.raw()
	case aFloat:
		r.take(4)
	case aDouble:
		r.take(8)
	case aBytes, aString:
		r.bytes()
	case aEnum:
		r.index(len(n.symbols))
	case aFixed:
		r.take(n.size)
	case aArray, aMap:
		for c := r.blockCount(); c > 0 && !r.bad; c = r.blockCount() {
			for range c {
				if n.kind == aMap {
					r.bytes()
				}
				r.skip(n.elem)
				if r.bad {
					return
				}
			}
		}
	case aUnion:
		i := r.index(len(n.branches))
		if !r.bad {
			r.skip(n.branches[i])
		}
	case aRecord:
		for _, f := range n.fields {
			r.skip(f)
			if r.bad {
				return
			}
		}
	}
}

// str copies a string.
func (r *avroIn) str() string { return string(r.bytes()) }

// strOf copies the string of the event's field k, sharing the well-known
// values of the enumerated fields. Only those: a lookup for every id
// (customers, events, orders) cost about 45 ns each for nothing, 0.9 s
// of a 6M-event run's decoding.
func (r *avroIn) strOf(k int) string {
	switch k {
	case jfChannel, jfCurrency, jfPage, jfAction:
		b := r.bytes()
		if s, ok := internedValues[string(b)]; ok {
			return s
		}
		return string(b)
	}
	return r.str()
}

// decode reads one record into e (Reset first). Errors are *DecodeError
// as the goavro path returns them.
func (p *avroProgram) decode(data []byte, e *Event) error {
	e.Reset()
	e.Type = p.typ
	if len(p.def.Categories)+len(p.def.ProductIDs)+len(p.def.Attributes) == 0 {
		cats, pids, attrs := e.Categories, e.ProductIDs, e.Attributes
		*e = p.def
		e.Type = p.typ
		e.Categories, e.ProductIDs, e.Attributes = cats, pids, attrs
	} else {
		cats, pids, attrs := e.Categories, e.ProductIDs, e.Attributes
		*e = p.def
		e.Type = p.typ
		e.Categories = append(cats, p.def.Categories...)
		e.ProductIDs = append(pids, p.def.ProductIDs...)
		e.Attributes = append(attrs, p.def.Attributes...)
	}
	r := avroIn{b: data}
	var amount, quantity any // a number fillEvent rejects, kept for its error
	for i := range p.ops {
		op := &p.ops[i]
		switch op.op {
		case opSkip:
			r.skip(op.node)
		case opStr:
			*strField(e, op.target) = r.strOf(op.target)
		case opStrEnum:
			if j := r.index(len(op.node.symbols)); !r.bad {
				*strField(e, op.target) = op.node.symbols[j]
			}
		case opStrUnion:
			j := r.index(len(op.node.branches))
			if r.bad {
				break
			}
			s := ""
			if op.node.branches[j].kind == aString {
				s = r.strOf(op.target)
			}
			*strField(e, op.target) = s
		case opTs:
			v := r.long()
			switch op.node.logical {
			case ltMillis:
				sec := v / 1e3
				v = time.Unix(sec, (v-sec*1e3)*1e6).UnixMilli()
			case ltMicros:
				sec := v / 1e6
				v = time.Unix(sec, (v-sec*1e6)*1e3).UnixMilli()
			}
			e.Time = v
		case opNum:
			switch op.node.kind {
			case aDouble:
				if e.Amount = r.double(); !finite(e.Amount) {
					amount, e.Amount = e.Amount, 0
				}
			case aFloat:
				f := r.float()
				if e.Amount = float64(f); !finite(e.Amount) {
					amount, e.Amount = f, 0
				}
			case aInt:
				e.Amount = float64(r.int())
			case aLong:
				e.Amount = float64(r.long())
			}
		case opInt:
			switch op.node.kind {
			case aLong:
				e.Quantity = r.long()
			case aInt:
				e.Quantity = int64(r.int())
			case aDouble:
				f := r.double()
				if f >= -math.MinInt64 || f < math.MinInt64 || f != f {
					quantity = f
				} else {
					e.Quantity = int64(f)
				}
			case aFloat:
				f := r.float()
				if f64 := float64(f); f64 >= -math.MinInt64 || f64 < math.MinInt64 || f != f {
					quantity = f
				} else {
					e.Quantity = int64(f64)
				}
			}
		case opList:
			dst := e.Categories
			if op.target == jfProductIDs {
				dst = e.ProductIDs
			}
			for c := r.blockCount(); c > 0 && !r.bad; c = r.blockCount() {
				for range c {
					var s string
					if op.node.elem.kind == aEnum {
						j := r.index(len(op.node.elem.symbols))
						if r.bad {
							break
						}
						s = op.node.elem.symbols[j]
					} else {
						s = r.str()
					}
					if r.bad {
						break
					}
					dst = append(dst, s)
				}
			}
			if op.target == jfProductIDs {
				e.ProductIDs = dst
			} else {
				e.Categories = dst
			}
		case opBool:
			e.Delete = r.boolean()
		case opBoolUnion:
			j := r.index(len(op.node.branches))
			if !r.bad && op.node.branches[j].kind == aBoolean {
				e.Delete = r.boolean()
			} else {
				e.Delete = false
			}
		case opAttrs:
			e.Attributes = r.attrs(op.node.elem, e.Attributes[:0])
		}
		if r.bad {
			return decodeErr(ReasonAvroDecode, "cannot decode the %s record", p.typ)
		}
	}
	if r.i != len(data) {
		return decodeErr(ReasonAvroDecode, "%d trailing bytes after the %s record", len(data)-r.i, p.typ)
	}
	// The checks fillEvent makes once the record is read, in its order.
	if amount != nil {
		_, err := toFloat(amount)
		return fieldErr("amount", err, ReasonAvroDecode)
	}
	if quantity != nil {
		_, err := toInt(quantity)
		return fieldErr("quantity", err, ReasonAvroDecode)
	}
	if len(e.Attributes) > 0 {
		slices.SortStableFunc(e.Attributes, func(a, b Attribute) int { return strings.Compare(a.Name, b.Name) })
		for i, a := range e.Attributes {
			if i > 0 && e.Attributes[i-1].Name == a.Name {
				return decodeErr(ReasonAvroDecode, "cannot decode binary map: duplicate key: %q", a.Name)
			}
		}
		for _, a := range e.Attributes {
			if a.Value.Kind == KindNumber && !finite(a.Value.Num) {
				_, err := toFloat(a.Value.Num)
				return fieldErr("attribute "+a.Name, err, ReasonAvroDecode)
			}
		}
	}
	return nil
}

// attrs reads a map of attribute values (attrValueOK) onto dst.
func (r *avroIn) attrs(vt *avroNode, dst []Attribute) []Attribute {
	for c := r.blockCount(); c > 0 && !r.bad; c = r.blockCount() {
		for range c {
			name := string(r.bytes())
			v := r.attrValue(vt)
			if r.bad {
				return dst
			}
			dst = append(dst, Attribute{Name: name, Value: v})
		}
	}
	return dst
}

func (r *avroIn) attrValue(n *avroNode) Value {
	switch n.kind {
	case aNull:
		return Value{}
	case aBoolean:
		return Bool(r.boolean())
	case aInt:
		return Number(float64(r.int()))
	case aLong:
		return Number(float64(r.long()))
	case aFloat:
		return Number(float64(r.float()))
	case aDouble:
		return Number(r.double())
	case aString:
		return String(r.str())
	case aEnum:
		j := r.index(len(n.symbols))
		if r.bad {
			return Value{}
		}
		return String(n.symbols[j])
	case aUnion:
		j := r.index(len(n.branches))
		if r.bad {
			return Value{}
		}
		return r.attrValue(n.branches[j])
	}
	r.bad = true
	return Value{}
}
