package schemas

import (
	"bytes"
	"errors"
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
	j := AppendSegmentChangeJSON(nil, &c)
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
	out = AppendSegmentChangeJSON(out, &c)
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
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		t2 := EventType(typ%4 + 1)
		var e Event
		if err := cs[t2].Decode(data, &e); err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error without a reason: %v", err)
			}
		}
	})
}

func FuzzDecodeJSON(f *testing.F) {
	for _, e := range sampleEvents() {
		f.Add(AppendJSON(nil, &e))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Event
		if err := DecodeJSON(data, &e); err == nil {
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
