package schemas

import (
	"bytes"
	"errors"
	"math"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/linkedin/goavro/v2"
)

func sampleEvents() []Event {
	ts := time.Date(2024, 3, 1, 12, 30, 0, 0, time.UTC).UnixMilli()
	return []Event{
		{Type: EventPurchase, EventID: "p1", CustomerID: "c1", Time: ts, Channel: "web", OrderID: "o1", Amount: 12.5, Currency: "GBP", Quantity: 2, Categories: []string{"shoes", "bags"}, ProductIDs: []string{"a", "b"}},
		{Type: EventBrowse, EventID: "b1", CustomerID: "c2", Time: ts + 1, Channel: "app", ProductID: "p9", Category: "toys", Page: "product", SessionID: "s1"},
		{Type: EventEngagement, EventID: "g1", CustomerID: "c3", Time: ts + 2, Channel: "email", Action: "click", CampaignID: "spring"},
		{Type: EventProfile, EventID: "f1", CustomerID: "c4", Time: ts + 3, Attributes: []Attribute{{"birth_year", Number(1980)}, {"consent_marketing", Bool(false)}, {"country", String("France")}, {"tier", Value{}}}},
		{Type: EventProfile, EventID: "f2", CustomerID: "c5", Time: ts + 4, Delete: true},
	}
}

func norm(e Event) Event {
	if len(e.Categories) == 0 {
		e.Categories = nil
	}
	if len(e.ProductIDs) == 0 {
		e.ProductIDs = nil
	}
	if len(e.Attributes) == 0 {
		e.Attributes = nil
	}
	return e
}

func TestAvroAndJSONRoundTrip(t *testing.T) {
	cs, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range sampleEvents() {
		b, err := cs[want.Type].AppendEncode(nil, &want)
		if err != nil {
			t.Fatal(err)
		}
		var got Event
		if err := cs[want.Type].Decode(b, &got); err != nil {
			t.Fatalf("%s: %v", want.Type, err)
		}
		if !reflect.DeepEqual(norm(got), norm(want)) {
			t.Errorf("avro round trip:\n got %+v\nwant %+v", got, want)
		}
		j := AppendJSON(nil, &want)
		got = Event{}
		if err := DecodeJSON(j, &got); err != nil {
			t.Fatalf("json %s: %v", j, err)
		}
		if !reflect.DeepEqual(norm(got), norm(want)) {
			t.Errorf("json round trip of %s:\n got %+v\nwant %+v", j, got, want)
		}
	}
}

func TestDecodeErrorsHaveReasons(t *testing.T) {
	cs, _ := NewCodecs()
	cases := []struct {
		name   string
		decode func() error
		reason Reason
	}{
		{"avro garbage", func() error { return cs[EventPurchase].Decode([]byte{0xff, 0xff, 0xff}, &Event{}) }, ReasonAvroDecode},
		{"json garbage", func() error { return DecodeJSON([]byte("{nope"), &Event{}) }, ReasonJSONDecode},
		{"json unknown type", func() error { return DecodeJSON([]byte(`{"type":"refund"}`), &Event{}) }, ReasonUnknownEventType},
		{"json unknown field", func() error {
			return DecodeJSON([]byte(`{"type":"browse","event_id":"x","customer_id":"c","ts":1,"colour":"red"}`), &Event{})
		}, ReasonJSONDecode},
		{"json bad ts", func() error {
			return DecodeJSON([]byte(`{"type":"browse","event_id":"x","customer_id":"c","ts":"yesterday"}`), &Event{})
		}, ReasonBadTimestamp},
		{"confluent magic", func() error { _, _, err := SplitConfluent([]byte{1, 0, 0, 0, 1, 2}); return err }, ReasonBadMagic},
		{"missing customer", func() error { return (&Event{Type: EventBrowse, Time: 1e12 * 1.5}).Validate(0, 0) }, ReasonMissingCustomerID},
		{"old ts", func() error { return (&Event{Type: EventBrowse, CustomerID: "c", Time: 5}).Validate(0, 0) }, ReasonBadTimestamp},
		{"future ts", func() error {
			return (&Event{Type: EventBrowse, CustomerID: "c", Time: 2e12}).Validate(1.5e12, 3600_000)
		}, ReasonFutureTimestamp},
	}
	for _, c := range cases {
		err := c.decode()
		var de *DecodeError
		if !errors.As(err, &de) || de.Reason != c.reason {
			t.Errorf("%s: got %v, want reason %s", c.name, err, c.reason)
		}
	}
}

func sampleChange() SegmentChange {
	return SegmentChange{ID: "c1:vip:3:1709296200000", CustomerID: "c1", SegmentID: "vip", Kind: Enter, Seq: 3, Time: 1709296200000,
		Cause: CauseEvent, CauseEventID: "e9", RulesVersion: 7, RulesHash: "abc",
		Traits: []TraitValue{{"orders_30d", Number(3)}, {"top", String("shoes")}, {"flag", Bool(true)}, {"max", Value{}}}}
}

// The hand-written SegmentChange encoding is checked against two
// independent Avro implementations with the schema file.
func TestSegmentChangeAvroInterop(t *testing.T) {
	c := sampleChange()
	b, err := AppendSegmentChangeAvro(nil, &c)
	if err != nil {
		t.Fatal(err)
	}
	var back SegmentChange
	if err := DecodeSegmentChangeAvro(b, &back); err != nil || !reflect.DeepEqual(back, c) {
		t.Fatalf("own decode: %+v %v", back, err)
	}
	// goavro
	codec, err := goavro.NewCodec(SegmentChangeSchema())
	if err != nil {
		t.Fatal(err)
	}
	native, rest, err := codec.NativeFromBinary(b)
	if err != nil || len(rest) != 0 {
		t.Fatalf("goavro: %v (%d left)", err, len(rest))
	}
	m := native.(map[string]any)
	if m["kind"] != "ENTER" || m["cause"] != "EVENT" || m["seq"] != int64(3) || m["segment_id"] != "vip" {
		t.Fatalf("goavro decoded %v", m)
	}
	back2, err := codec.BinaryFromNative(nil, native)
	if err != nil || !bytes.Equal(back2, b) {
		t.Fatalf("goavro re-encoding differs: %v", err)
	}
	// hamba/avro
	schema := avro.MustParse(SegmentChangeSchema())
	var h map[string]any
	if err := avro.Unmarshal(schema, b, &h); err != nil {
		t.Fatalf("hamba: %v", err)
	}
	if h["customer_id"] != "c1" || h["rules_hash"] != "abc" {
		t.Fatalf("hamba decoded %v", h)
	}
	traits, ok := h["traits"].([]any)
	if !ok || len(traits) != 4 {
		t.Fatalf("hamba traits %#v", h["traits"])
	}
	if tv := traits[1].(map[string]any); tv["name"] != "top" || tv["value"] != "shoes" {
		t.Fatalf("hamba trait %#v", traits[1])
	}
	// JSON
	j, err := AppendSegmentChangeJSON(nil, &c)
	if err != nil {
		t.Fatal(err)
	}
	var jc SegmentChange
	if err := DecodeSegmentChangeJSON(j, &jc); err != nil {
		t.Fatal(err)
	}
	if jc.ID != c.ID || jc.Kind != c.Kind || jc.Cause != c.Cause || len(jc.Traits) != 4 {
		t.Fatalf("json round trip %+v", jc)
	}
}

// Input events written by hamba/avro decode with ours.
func TestHambaWrittenInputDecodes(t *testing.T) {
	schema := avro.MustParse(SchemaText(EventBrowse))
	b, err := avro.Marshal(schema, map[string]any{"event_id": "x", "customer_id": "c", "ts": time.UnixMilli(1700000000000).UTC(), "channel": "web", "product_id": "", "category": "shoes", "page": "product", "session_id": "s"})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := NewAvroCodec(EventBrowse, SchemaText(EventBrowse))
	var e Event
	if err := c.Decode(b, &e); err != nil || e.Category != "shoes" || e.Time != 1700000000000 {
		t.Fatalf("%+v %v", e, err)
	}
}

func TestGoldenJSON(t *testing.T) {
	var out []byte
	for _, e := range sampleEvents() {
		out = AppendJSON(out, &e)
		out = append(out, '\n')
	}
	c := sampleChange()
	out, err := AppendSegmentChangeJSON(out, &c)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, '\n')
	want, err := os.ReadFile("testdata/golden.jsonl")
	if os.Getenv("SEGD_REWRITE") != "" || errors.Is(err, os.ErrNotExist) {
		os.WriteFile("testdata/golden.jsonl", out, 0o644)
		want = out
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("JSON encoding changed:\n%s\nwant:\n%s", out, want)
	}
}

func FuzzDecodeAvro(f *testing.F) {
	cs, _ := NewCodecs()
	for _, e := range sampleEvents() {
		b, _ := cs[e.Type].AppendEncode(nil, &e)
		f.Add(uint8(e.Type), b)
	}
	// NaN and infinities, which Avro doubles can carry.
	for _, f64 := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		p := sampleEvents()[0]
		p.Amount = f64
		b, _ := cs[EventPurchase].AppendEncode(nil, &p)
		f.Add(uint8(EventPurchase), b)
		pr := sampleEvents()[3]
		pr.Attributes = []Attribute{{"x", Number(f64)}}
		b, _ = cs[EventProfile].AppendEncode(nil, &pr)
		f.Add(uint8(EventProfile), b)
	}
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		t2 := EventType(typ%4 + 1)
		var e Event
		if err := cs[t2].Decode(data, &e); err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		checkFinite(t, "avro", &e)
	})
}

func FuzzDecodeJSON(f *testing.F) {
	for _, e := range sampleEvents() {
		f.Add(AppendJSON(nil, &e))
	}
	// Numbers beyond float64 and int64.
	f.Add([]byte(`{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"amount":1e400,"quantity":1e30}`))
	f.Add([]byte(`{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"amount":-1e400,"quantity":9.3e18}`))
	f.Add([]byte(`{"type":"profile","event_id":"e","customer_id":"c","ts":1700000000000,"attributes":{"a":1e400}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Event
		if err := DecodeJSON(data, &e); err == nil {
			checkFinite(t, "json", &e)
			// What decodes re-encodes and decodes to the same event.
			var e2 Event
			if err := DecodeJSON(AppendJSON(nil, &e), &e2); err != nil {
				t.Fatalf("re-decode: %v", err)
			}
		}
	})
}

func FuzzDecodeSegmentChange(f *testing.F) {
	c := sampleChange()
	b, _ := AppendSegmentChangeAvro(nil, &c)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var c SegmentChange
		if err := DecodeSegmentChangeAvro(data, &c); err == nil {
			// Avro allows non-canonical varints and blocks, so compare
			// meaning, not bytes.
			b2, err := AppendSegmentChangeAvro(nil, &c)
			if err != nil {
				t.Fatalf("decoded change does not re-encode: %v", err)
			}
			var c2 SegmentChange
			if err := DecodeSegmentChangeAvro(b2, &c2); err != nil {
				t.Fatalf("re-encoded change does not decode: %v", err)
			}
			// (NaN values make DeepEqual useless; canonical bytes are.)
			if b3, _ := AppendSegmentChangeAvro(nil, &c2); !bytes.Equal(b2, b3) {
				t.Fatal("canonical encoding is not stable")
			}
		}
	})
}

func FuzzSplitConfluent(f *testing.F) {
	f.Add(AppendConfluentHeader(nil, 42))
	f.Fuzz(func(t *testing.T, data []byte) {
		id, payload, err := SplitConfluent(data)
		if err == nil && !bytes.Equal(AppendConfluentHeader(nil, id), data[:5]) || (err == nil && len(payload) != len(data)-5) {
			t.Fatal("split does not invert the header")
		}
	})
}

// A control field of the wrong type is a bad_field error, never read as
// absent: an erasure request with "delete":"true" must not vanish.
func TestControlFieldOfWrongTypeIsBadField(t *testing.T) {
	const head = `{"type":"profile","event_id":"d1","customer_id":"c1","ts":"2024-01-01T00:00:00Z",`
	for _, tc := range []struct {
		json   string
		reason Reason // "" means valid
		del    bool
		alias  string
	}{
		{head + `"delete":"true"}`, ReasonBadField, false, ""},
		{head + `"delete":1}`, ReasonBadField, false, ""},
		{head + `"delete":[true]}`, ReasonBadField, false, ""},
		{head + `"delete":{"boolean":"yes"}}`, ReasonBadField, false, ""},
		{head + `"alias_of":5}`, ReasonBadField, false, ""},
		{head + `"alias_of":true}`, ReasonBadField, false, ""},
		{head + `"attributes":"country=FR"}`, ReasonBadField, false, ""},
		{head + `"attributes":[1]}`, ReasonBadField, false, ""},
		{head + `"delete":true}`, "", true, ""},
		{head + `"delete":false}`, "", false, ""},
		{head + `"delete":null}`, "", false, ""},
		{head + `"alias_of":"c9"}`, "", false, "c9"},
		{head + `"attributes":null}`, "", false, ""},
	} {
		var e Event
		err := DecodeJSON([]byte(tc.json), &e)
		var de *DecodeError
		switch {
		case tc.reason == "" && err != nil:
			t.Errorf("%s: %v, want valid", tc.json, err)
		case tc.reason != "" && (!errors.As(err, &de) || de.Reason != tc.reason):
			t.Errorf("%s: got %v, want reason %s", tc.json, err, tc.reason)
		case tc.reason == "" && (e.Delete != tc.del || e.AliasOf != tc.alias):
			t.Errorf("%s: got delete=%v alias_of=%q, want %v %q", tc.json, e.Delete, e.AliasOf, tc.del, tc.alias)
		}
	}
}

// The Avro path reads the writer's schema (from a registry), whose
// control fields may have another type than ours: those are bad_field
// too, and a ["null","boolean"] delete still erases.
func TestAvroControlFieldOfWrongTypeIsBadField(t *testing.T) {
	schemaWith := func(fields string) string {
		return `{"type":"record","name":"Profile","namespace":"segd","fields":[
			{"name":"event_id","type":"string"},{"name":"customer_id","type":"string"},
			{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},` + fields + `]}`
	}
	ts := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	base := map[string]any{"event_id": "d1", "customer_id": "c1", "ts": ts}
	for _, tc := range []struct {
		name, fields string
		value        map[string]any
		reason       Reason
		del          bool
	}{
		{"delete string", `{"name":"delete","type":"string"}`, map[string]any{"delete": "true"}, ReasonBadField, false},
		{"delete int", `{"name":"delete","type":"int"}`, map[string]any{"delete": int32(1)}, ReasonBadField, false},
		{"alias_of long", `{"name":"alias_of","type":"long"}`, map[string]any{"alias_of": int64(5)}, ReasonBadField, false},
		{"attributes string", `{"name":"attributes","type":"string"}`, map[string]any{"attributes": "x"}, ReasonBadField, false},
		{"delete union true", `{"name":"delete","type":["null","boolean"]}`, map[string]any{"delete": goavro.Union("boolean", true)}, "", true},
		{"delete union null", `{"name":"delete","type":["null","boolean"]}`, map[string]any{"delete": nil}, "", false},
	} {
		c, err := NewAvroCodec(EventProfile, schemaWith(tc.fields))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		native := map[string]any{}
		for k, v := range base {
			native[k] = v
		}
		for k, v := range tc.value {
			native[k] = v
		}
		b, err := c.codec.BinaryFromNative(nil, native)
		if err != nil {
			t.Fatalf("%s: encode: %v", tc.name, err)
		}
		var e Event
		err = c.Decode(b, &e)
		var de *DecodeError
		switch {
		case tc.reason == "" && err != nil:
			t.Errorf("%s: %v, want valid", tc.name, err)
		case tc.reason != "" && (!errors.As(err, &de) || de.Reason != tc.reason):
			t.Errorf("%s: got %v, want reason %s", tc.name, err, tc.reason)
		case tc.reason == "" && e.Delete != tc.del:
			t.Errorf("%s: delete=%v, want %v", tc.name, e.Delete, tc.del)
		}
	}
}

// Timestamps outside 2000-01-01 .. 9999-12-31 are bad_timestamp, also
// without a wall clock to compare with (replays), and a number too big
// for int64 does not wrap around.
func TestTimestampRange(t *testing.T) {
	for _, tc := range []struct {
		ts     string
		reason Reason
	}{
		{`"2024-01-01T00:00:00Z"`, ""},
		{`1704067200000`, ""},
		{`"9999-12-31T23:59:59.999Z"`, ""},
		{`253402300800000`, ReasonBadTimestamp}, // year 10000
		{`1e300`, ReasonBadTimestamp},
		{`-1e300`, ReasonBadTimestamp},
		{`-1`, ReasonBadTimestamp},
		{`"1969-12-31T23:59:59Z"`, ReasonBadTimestamp},
		{`"1999-12-31T23:59:59Z"`, ReasonBadTimestamp},
		{`"yesterday"`, ReasonBadTimestamp},
	} {
		var e Event
		err := DecodeJSON([]byte(`{"type":"browse","event_id":"b1","customer_id":"c1","ts":`+tc.ts+`}`), &e)
		if err == nil {
			err = e.Validate(0, 0)
		}
		var de *DecodeError
		switch {
		case tc.reason == "" && err != nil:
			t.Errorf("ts %s: %v, want valid", tc.ts, err)
		case tc.reason != "" && (!errors.As(err, &de) || de.Reason != tc.reason):
			t.Errorf("ts %s: got %v, want reason %s", tc.ts, err, tc.reason)
		}
	}
}
