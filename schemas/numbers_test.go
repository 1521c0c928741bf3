package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"
)

// A number segd cannot hold exactly or at all (NaN, an infinity, a JSON
// number beyond float64, an integer beyond int64) is a bad_value error in
// every field of every record kind, never a value that later crashes an
// encoder or silently wraps.
func TestDecodeRejectsNonFiniteAndOverflow(t *testing.T) {
	const purchase = `{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"amount":%s,"quantity":%s}`
	const profile = `{"type":"profile","event_id":"e","customer_id":"c","ts":1700000000000,"attributes":{"ltv":%s}}`
	cases := []struct {
		name   string
		json   string
		reason Reason // "" if it decodes
	}{
		{"amount 1e400", sprintf(purchase, "1e400", "1"), ReasonBadValue},
		{"amount -1e400", sprintf(purchase, "-1e400", "1"), ReasonBadValue},
		{"amount 1e308", sprintf(purchase, "1e308", "1"), ""},
		{"amount smallest subnormal", sprintf(purchase, "5e-324", "1"), ""},
		{"quantity 1e30", sprintf(purchase, "1", "1e30"), ReasonBadValue},
		{"quantity -1e30", sprintf(purchase, "1", "-1e30"), ReasonBadValue},
		{"quantity 9.3e18", sprintf(purchase, "1", "9.3e18"), ReasonBadValue},
		{"quantity 2^63", sprintf(purchase, "1", "9223372036854775808"), ReasonBadValue},
		{"quantity max int64", sprintf(purchase, "1", "9223372036854775807"), ""},
		{"quantity min int64", sprintf(purchase, "1", "-9223372036854775808"), ""},
		{"quantity 1e400", sprintf(purchase, "1", "1e400"), ReasonBadValue},
		{"attribute 1e400", sprintf(profile, "1e400"), ReasonBadValue},
		{"attribute -1e400", sprintf(profile, "-1e400"), ReasonBadValue},
		{"attribute 1e308", sprintf(profile, "1e308"), ""},
		{"ts 1e400", `{"type":"browse","event_id":"e","customer_id":"c","ts":1e400}`, ReasonBadTimestamp},
		{"trailing data", `{"type":"browse","event_id":"e","customer_id":"c","ts":1700000000000} {}`, ReasonJSONDecode},
	}
	for _, c := range cases {
		var e Event
		err := DecodeJSON([]byte(c.json), &e)
		checkReason(t, c.name, err, c.reason)
		if err == nil {
			checkFinite(t, c.name, &e)
		}
	}
	var e Event
	if err := DecodeJSON([]byte(sprintf(purchase, "1", "9223372036854775807")), &e); err != nil || e.Quantity != math.MaxInt64 {
		t.Errorf("quantity max int64: got %d %v, want %d", e.Quantity, err, int64(math.MaxInt64))
	}
}

func TestDecodeAvroRejectsNonFinite(t *testing.T) {
	cs, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.Float64frombits(0x7ff8000000000001)} {
		p := sampleEvents()[0]
		p.Amount = f
		b, err := cs[EventPurchase].AppendEncode(nil, &p)
		if err != nil {
			t.Fatal(err)
		}
		var e Event
		checkReason(t, sprintf("avro amount %v", f), cs[EventPurchase].Decode(b, &e), ReasonBadValue)

		pr := sampleEvents()[3]
		pr.Attributes = []Attribute{{"ltv", Number(f)}}
		b, err = cs[EventProfile].AppendEncode(nil, &pr)
		if err != nil {
			t.Fatal(err)
		}
		checkReason(t, sprintf("avro attribute %v", f), cs[EventProfile].Decode(b, &e), ReasonBadValue)

		// An event built in code is caught by Validate.
		p.Time = 1700000000000
		checkReason(t, sprintf("validate amount %v", f), p.Validate(0, 0), ReasonBadValue)
		pr.Time = 1700000000000
		checkReason(t, sprintf("validate attribute %v", f), pr.Validate(0, 0), ReasonBadValue)
	}
	// The largest finite values pass.
	p := sampleEvents()[0]
	p.Amount = -math.MaxFloat64
	b, _ := cs[EventPurchase].AppendEncode(nil, &p)
	var e Event
	if err := cs[EventPurchase].Decode(b, &e); err != nil || e.Amount != -math.MaxFloat64 {
		t.Errorf("avro amount -MaxFloat64: got %v %v", e.Amount, err)
	}
}

// The SegmentChange encoders refuse a non-finite trait with an error
// (never a panic) and leave dst as it was; the Avro decoder refuses one too.
func TestSegmentChangeEncodersRefuseNonFinite(t *testing.T) {
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		c := sampleChange()
		c.Traits[0].Value = Number(f)
		dst := []byte("prefix")
		got, err := AppendSegmentChangeJSON(dst, &c)
		if !errors.Is(err, ErrNonFinite) || string(got) != "prefix" {
			t.Errorf("json %v: got %q %v, want prefix and ErrNonFinite", f, got, err)
		}
		got, err = AppendSegmentChangeAvro(dst, &c)
		if !errors.Is(err, ErrNonFinite) || string(got) != "prefix" {
			t.Errorf("avro %v: got %q %v, want prefix and ErrNonFinite", f, got, err)
		}
		// Bytes carrying the value (written by hand) do not decode.
		c.Traits[0].Value = Number(1)
		b, _ := AppendSegmentChangeAvro(nil, &c)
		one := []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f} // 1.0, little-endian
		i := bytes.Index(b, one)
		if i < 0 {
			t.Fatal("no 1.0 in the encoding")
		}
		bits := math.Float64bits(f)
		for k := range 8 {
			b[i+k] = byte(bits >> (8 * k))
		}
		var back SegmentChange
		if err := DecodeSegmentChangeAvro(b, &back); !errors.Is(err, ErrNonFinite) {
			t.Errorf("decode avro with %v: got %v, want ErrNonFinite", f, err)
		}
	}
	c := sampleChange()
	c.Traits[0].Value = Number(math.MaxFloat64)
	if _, err := AppendSegmentChangeJSON(nil, &c); err != nil {
		t.Errorf("json MaxFloat64: %v", err)
	}
	if _, err := AppendSegmentChangeAvro(nil, &c); err != nil {
		t.Errorf("avro MaxFloat64: %v", err)
	}
}

func checkReason(t *testing.T, name string, err error, want Reason) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Errorf("%s: got %v, want no error", name, err)
		}
		return
	}
	var de *DecodeError
	if !errors.As(err, &de) || de.Reason != want {
		t.Errorf("%s: got %v, want reason %s", name, err, want)
	}
}

// checkFinite fails if a decoded event holds a number no encoder can write.
func checkFinite(t *testing.T, name string, e *Event) {
	t.Helper()
	if !finite(e.Amount) {
		t.Errorf("%s: amount %v decoded", name, e.Amount)
	}
	for _, a := range e.Attributes {
		if a.Value.Kind == KindNumber && !finite(a.Value.Num) {
			t.Errorf("%s: attribute %s %v decoded", name, a.Name, a.Value.Num)
		}
	}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
