package schemas

import "testing"

func BenchmarkDecodeAvroPurchase(b *testing.B) {
	cs, _ := NewCodecs()
	ev := sampleEvents()[0]
	data, _ := cs[EventPurchase].AppendEncode(nil, &ev)
	var e Event
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := cs[EventPurchase].Decode(data, &e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeAvroBrowse(b *testing.B) {
	cs, _ := NewCodecs()
	ev := sampleEvents()[1]
	data, _ := cs[EventBrowse].AppendEncode(nil, &ev)
	var e Event
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := cs[EventBrowse].Decode(data, &e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeJSONBrowse(b *testing.B) {
	ev := sampleEvents()[1]
	data := AppendJSON(nil, &ev)
	var e Event
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := DecodeJSON(data, &e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeSegmentChangeAvro(b *testing.B) {
	c := sampleChange()
	var buf []byte
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf, _ = AppendSegmentChangeAvro(buf[:0], &c)
	}
}

// The output encoder runs once per transition; it must not allocate.
func TestEncodeSegmentChangeAllocatesNothing(t *testing.T) {
	c := sampleChange()
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { buf, _ = AppendSegmentChangeAvro(buf[:0], &c) }); n != 0 {
		t.Fatalf("%v allocations per change", n)
	}
}
