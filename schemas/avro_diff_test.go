package schemas

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/linkedin/goavro/v2"
)

// evolvedWriters are writer schemas other producers may use, per event
// type: older ones (fields missing), newer ones (fields added, of every
// Avro type), and ones with other but compatible types (unions, enums,
// other numeric types). Each is read as segd's schema of the type, or a
// reader with other defaults.
func evolvedWriters(t EventType) []string {
	head := `{"type":"record","name":"W","namespace":"other","fields":[
		{"name":"event_id","type":"string"},{"name":"customer_id","type":["null","string"]},`
	extra := `{"name":"x_rec","type":{"type":"record","name":"Sub","fields":[{"name":"a","type":"int"},{"name":"b","type":{"type":"array","items":"double"}},{"name":"c","type":{"type":"fixed","name":"F","size":3}}]}},
		{"name":"x_enum","type":{"type":"enum","name":"E","symbols":["A","B","C"]}},
		{"name":"x_map","type":{"type":"map","values":["null","bytes","float"]}},
		{"name":"x_union","type":["null","long","string",{"type":"array","items":"boolean"}]},
		{"name":"x_date","type":"int","logicalType":"date"},{"name":"x_micros","type":{"type":"long","logicalType":"time-micros"}},`
	tsMillis := `{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}}`
	var fields []string
	switch t {
	case EventPurchase:
		fields = []string{
			tsMillis + `,{"name":"amount","type":"double"}`,
			extra + `{"name":"amount","type":"float"},{"name":"quantity","type":"int"},` + tsMillis + `,{"name":"channel","type":{"type":"enum","name":"Ch","symbols":["web","app","store"]}},{"name":"categories","type":{"type":"array","items":"string"}}`,
			`{"name":"ts","type":"long"},{"name":"amount","type":"long"},{"name":"quantity","type":"double"},{"name":"currency","type":["string","null"]},{"name":"product_ids","type":{"type":"array","items":{"type":"enum","name":"P","symbols":["a","b"]}}},{"name":"order_id","type":"string"}`,
			`{"name":"ts","type":"long","logicalType":"timestamp-micros"},{"name":"amount","type":"int"},{"name":"quantity","type":"float"}`,
		}
	case EventBrowse:
		fields = []string{
			tsMillis,
			extra + tsMillis + `,{"name":"page","type":["null","string"]},{"name":"category","type":"string"},{"name":"session_id","type":{"type":"string","logicalType":"uuid"}}`,
			`{"name":"channel","type":["null","string"],"default":null},{"name":"ts","type":"long"},{"name":"product_id","type":"string"}`,
		}
	case EventEngagement:
		fields = []string{
			tsMillis + `,{"name":"action","type":{"type":"enum","name":"A","symbols":["send","open","click"]}}`,
			extra + tsMillis + `,{"name":"campaign_id","type":["null","string"]},{"name":"channel","type":"string"}`,
		}
	case EventProfile:
		fields = []string{
			tsMillis + `,{"name":"delete","type":["null","boolean"]}`,
			extra + tsMillis + `,{"name":"attributes","type":{"type":"map","values":["null","string","double","boolean","int","long","float"]}},{"name":"alias_of","type":"string"}`,
			tsMillis + `,{"name":"attributes","type":{"type":"map","values":"double"}},{"name":"delete","type":"boolean"},{"name":"alias_of","type":["null","string"]}`,
			tsMillis + `,{"name":"attributes","type":{"type":"map","values":["null",{"type":"enum","name":"Tier","symbols":["gold","silver"]}]}}`,
		}
	}
	var out []string
	for _, f := range fields {
		out = append(out, head+f+`]}`)
	}
	return out
}

// otherReader is segd's schema of t with other defaults.
func otherReader(t EventType) string {
	var s map[string]any
	json.Unmarshal([]byte(SchemaText(t)), &s)
	for _, f := range s["fields"].([]any) {
		fm := f.(map[string]any)
		switch fm["name"] {
		case "currency", "channel", "page", "action":
			fm["default"] = "EUR"
		case "quantity":
			fm["default"] = 3.9
		case "categories":
			fm["default"] = []any{"c1", "c2"}
		case "attributes":
			fm["default"] = map[string]any{"b": 1.5, "a": "x", "c": nil, "d": true}
		case "delete":
			fm["default"] = true
		case "amount":
			fm["default"] = -2.5
		}
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// avroDiffCodecs are the codecs the differential target picks from:
// per type, segd's schema and every evolved writer read as segd's
// schema and as otherReader.
var avroDiffCodecs = func() (cs [NumEventTypes][]*AvroCodec) {
	for t := EventPurchase; t <= EventProfile; t++ {
		c, err := NewAvroCodec(t, SchemaText(t))
		if err != nil {
			panic(err)
		}
		cs[t] = append(cs[t], c)
		for _, w := range append([]string{SchemaText(t)}, evolvedWriters(t)...) {
			for _, r := range []string{SchemaText(t), otherReader(t)} {
				c, err := NewResolvingCodec(t, w, r)
				if err != nil {
					panic(err)
				}
				cs[t] = append(cs[t], c)
			}
		}
	}
	return cs
}()

// Every schema the differential test uses is one the compiled decoder
// takes, so that it compares two decoders, not goavro with itself.
func TestAvroDiffCodecsAreCompiled(t *testing.T) {
	for typ := EventPurchase; typ <= EventProfile; typ++ {
		for i, c := range avroDiffCodecs[typ] {
			if !c.Compiled() {
				t.Errorf("%s codec %d is not compiled", typ, i)
			}
		}
	}
}

// Shapes the compiled decoder leaves to goavro.
func TestAvroUnsupportedShapesFallBack(t *testing.T) {
	head := `{"type":"record","name":"W","fields":[{"name":"event_id","type":"string"},{"name":"customer_id","type":"string"},{"name":"ts","type":"long"},`
	for _, f := range []string{
		`{"name":"channel","type":"int"}`,                   // fillEvent rejects every record
		`{"name":"channel","type":["null","string","int"]}`, // some records
		`{"name":"amount","type":["null","double"]}`,        // a union is an object to toFloat
		`{"name":"currency","type":"bytes"}`,                // []byte is not a string
		`{"name":"x","type":{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}}`,
		`{"name":"n","type":{"type":"record","name":"N","fields":[{"name":"a","type":"int"}]}},{"name":"m","type":"N"}`, // a reference
	} {
		c, err := NewAvroCodec(EventPurchase, head+f+`]}`)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if c.Compiled() {
			t.Errorf("%s: compiled, want goavro", f)
		}
	}
	if c, _ := NewAvroCodec(EventProfile, head+`{"name":"delete","type":"string"}]}`); c.Compiled() { // bad_field
		t.Error("delete string: compiled, want goavro")
	}
	for typ := EventPurchase; typ <= EventProfile; typ++ {
		if c, _ := NewAvroCodec(typ, SchemaText(typ)); !c.Compiled() {
			t.Errorf("segd's %s schema is not compiled", typ)
		}
	}
}

// avroGen makes goavro native values for a schema from fuzz bytes.
type avroGen struct{ b []byte }

func (g *avroGen) byte() byte {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

func (g *avroGen) u64() uint64 {
	var v uint64
	for range 8 {
		v = v<<8 | uint64(g.byte())
	}
	return v
}

// special returns a number at an edge of what fillEvent takes.
func (g *avroGen) special() float64 {
	return []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.MaxFloat64, -math.MaxFloat64, 1 << 63, -(1 << 63), 9.2e18, -1.5, 1e30}[g.byte()%10]
}

func (g *avroGen) str() string {
	n := int(g.byte() % 12)
	s := make([]byte, n)
	for i := range s {
		s[i] = "abcxyz\xff\x00\xc3\xa9web"[g.byte()%13]
	}
	return string(s)
}

func (g *avroGen) value(n *avroNode) any {
	switch n.kind {
	case aNull:
		return nil
	case aBoolean:
		return g.byte()&1 == 1
	case aInt:
		if g.byte()&1 == 0 {
			return int32(g.byte())
		}
		return int32(g.u64())
	case aLong:
		switch g.byte() % 4 {
		case 0:
			return int64(1700000000000 + int64(g.byte()))
		case 1:
			return int64(1700000000000000 + int64(g.byte()))
		case 2:
			return int64(g.byte())
		}
		return int64(g.u64())
	case aFloat:
		switch g.byte() % 4 {
		case 0:
			return float32(g.byte()) / 4
		case 1:
			return float32(g.special())
		}
		return math.Float32frombits(uint32(g.u64()))
	case aDouble:
		switch g.byte() % 4 {
		case 0:
			return float64(g.byte()) / 4
		case 1:
			return g.special()
		}
		return math.Float64frombits(g.u64())
	case aBytes:
		return []byte(g.str())
	case aString:
		return g.str()
	case aEnum:
		return n.symbols[int(g.byte())%len(n.symbols)]
	case aFixed:
		b := make([]byte, n.size)
		for i := range b {
			b[i] = g.byte()
		}
		return b
	case aArray:
		var items []any
		for range g.byte() % 4 {
			items = append(items, g.value(n.elem))
		}
		return items
	case aMap:
		m := map[string]any{}
		for range g.byte() % 4 {
			m[g.str()] = g.value(n.elem)
		}
		return m
	case aUnion:
		b := n.branches[int(g.byte())%len(n.branches)]
		v := g.value(b)
		if b.kind == aNull {
			return nil
		}
		name := map[avroKind]string{aBoolean: "boolean", aInt: "int", aLong: "long", aFloat: "float", aDouble: "double", aBytes: "bytes", aString: "string", aArray: "array", aMap: "map"}[b.kind]
		if b.kind == aEnum {
			name = "other.Tier"
		}
		return goavro.Union(name, v)
	case aRecord:
		m := map[string]any{}
		for i, f := range n.fields {
			m[n.names[i]] = g.value(f)
		}
		return m
	}
	panic("kind")
}

// compareAvro decodes data with both paths of c and fails if they differ.
func compareAvro(t *testing.T, c *AvroCodec, data []byte) {
	t.Helper()
	var got, want Event
	gotErr := c.Decode(data, &got)
	wantErr := c.decodeGoavro(data, &want)
	switch {
	case gotErr == nil && wantErr == nil:
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%x: event differs:\n got %+v\nwant %+v", data, got, want)
		}
		// Into a used event.
		used := Event{Categories: []string{"q"}, Attributes: []Attribute{{"z", Bool(true)}}, Delete: true, AliasOf: "x", Amount: 3}
		if err := c.Decode(data, &used); err != nil || !reflect.DeepEqual(norm(used), norm(want)) {
			t.Fatalf("%x: into a used event:\n got %+v %v\nwant %+v", data, used, err, want)
		}
	case gotErr == nil || wantErr == nil:
		t.Fatalf("%x: got %+v %v, want %+v %v", data, got, gotErr, want, wantErr)
	default:
		var g, w *DecodeError
		if !errors.As(gotErr, &g) || !errors.As(wantErr, &w) || g.Reason != w.Reason ||
			w.Reason != ReasonAvroDecode && gotErr.Error() != wantErr.Error() {
			t.Fatalf("%x: got %v, want %v", data, gotErr, wantErr)
		}
	}
}

// avroDiffSeeds are the record encodings of the sample events, the NaN
// and infinity cases of FuzzDecodeAvro and its crashers in testdata.
func avroDiffSeeds(tb testing.TB) (seeds []struct {
	typ  uint8
	data []byte
}) {
	add := func(t EventType, b []byte) {
		seeds = append(seeds, struct {
			typ  uint8
			data []byte
		}{uint8(t), b})
	}
	cs, _ := NewCodecs()
	for _, e := range sampleEvents() {
		b, _ := cs[e.Type].AppendEncode(nil, &e)
		add(e.Type, b)
	}
	for _, f64 := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		p := sampleEvents()[0]
		p.Amount = f64
		b, _ := cs[EventPurchase].AppendEncode(nil, &p)
		add(EventPurchase, b)
		pr := sampleEvents()[3]
		pr.Attributes = []Attribute{{"x", Number(f64)}}
		b, _ = cs[EventProfile].AppendEncode(nil, &pr)
		add(EventProfile, b)
	}
	files, _ := filepath.Glob("testdata/fuzz/FuzzDecodeAvro/*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 3 {
			continue
		}
		typ := lines[1]
		var ty uint8
		switch {
		case strings.HasPrefix(typ, "byte("):
			r, _, _, _ := strconv.UnquoteChar(strings.TrimSuffix(strings.TrimPrefix(typ, "byte('"), "')"), '\'')
			ty = uint8(r)
		case strings.HasPrefix(typ, "uint8("):
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(typ, "uint8("), ")"))
			ty = uint8(n)
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[2], "[]byte("), ")"))
		if err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		add(EventType(ty%4+1), []byte(s))
	}
	return seeds
}

// FuzzDecodeAvroDifferential: the compiled decoder gives the event, or
// the error reason (and text, but for avro_decode), that goavro plus the
// projection gives, (1) for records goavro encodes from values made of
// the fuzz input, with segd's schemas and evolved writer schemas read
// with two readers, and (2) for the fuzz input as a record.
func FuzzDecodeAvroDifferential(f *testing.F) {
	for _, s := range avroDiffSeeds(f) {
		for v := range uint8(4) {
			f.Add(s.typ, v, s.data)
		}
	}
	f.Fuzz(func(t *testing.T, typ, variant uint8, data []byte) {
		et := EventType(typ%4 + 1)
		c := avroDiffCodecs[et][int(variant)%len(avroDiffCodecs[et])]
		compareAvro(t, c, data)

		var s any
		json.Unmarshal([]byte(c.codec.Schema()), &s)
		root, err := parseAvroNode(s)
		if err != nil {
			t.Fatal(err)
		}
		g := &avroGen{b: data}
		native := g.value(root)
		b, err := c.codec.BinaryFromNative(nil, native)
		if err != nil {
			t.Fatalf("goavro cannot encode %v: %v", native, err)
		}
		compareAvro(t, c, b)
	})
}

func TestDecodeAvroMatchesGoavro(t *testing.T) {
	for _, s := range avroDiffSeeds(t) {
		et := EventType(s.typ)
		for _, c := range avroDiffCodecs[et] {
			compareAvro(t, c, s.data)
		}
	}
	// Generated records for every codec.
	for typ := EventPurchase; typ <= EventProfile; typ++ {
		for _, c := range avroDiffCodecs[typ] {
			var s any
			json.Unmarshal([]byte(c.codec.Schema()), &s)
			root, _ := parseAvroNode(s)
			for i := range 300 {
				rng := rand.New(rand.NewPCG(uint64(i), 7))
				seed := make([]byte, 256)
				for j := range seed {
					seed[j] = byte(rng.Uint32())
				}
				b, err := c.codec.BinaryFromNative(nil, (&avroGen{b: seed}).value(root))
				if err != nil {
					t.Fatal(err)
				}
				compareAvro(t, c, b)
			}
		}
	}
}

// In steady state the compiled decoder allocates only the strings it
// keeps.
func TestDecodeAvroAllocations(t *testing.T) {
	cs, _ := NewCodecs()
	ev := sampleEvents()[1] // browse: channel and page are shared constants
	ev.EventID, ev.CustomerID, ev.ProductID, ev.Category, ev.SessionID = "b-000123", "cust-000042", "p-991", "toys", "s-17"
	data, _ := cs[EventBrowse].AppendEncode(nil, &ev)
	var e Event
	if n := testing.AllocsPerRun(100, func() { cs[EventBrowse].Decode(data, &e) }); n > 5 {
		t.Errorf("%v allocations per browse event, want <= 5", n)
	}
}

func BenchmarkDecodeAvro(b *testing.B) {
	cs, _ := NewCodecs()
	evs := sampleEvents()
	evs[0].EventID, evs[0].CustomerID, evs[0].OrderID = "p-000123", "cust-000042", "o-551"
	evs[1].EventID, evs[1].CustomerID, evs[1].ProductID, evs[1].SessionID = "b-000123", "cust-000042", "p-991", "s-17"
	evs[3].EventID, evs[3].CustomerID = "f-000123", "cust-000042"
	for _, ev := range []Event{evs[0], evs[1], evs[3]} {
		c := cs[ev.Type]
		data, _ := c.AppendEncode(nil, &ev)
		for _, dec := range []struct {
			name string
			fn   func([]byte, *Event) error
		}{{"goavro", c.decodeGoavro}, {"compiled", c.Decode}} {
			b.Run(ev.Type.String()+"/"+dec.name, func(b *testing.B) {
				var e Event
				b.ReportAllocs()
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					if err := dec.fn(data, &e); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
