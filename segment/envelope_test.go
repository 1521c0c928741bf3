package segment

import (
	"bytes"
	"testing"
)

// TestDeadLettersAreBounded: a dead letter carries at most
// DeadLetterMaxValue bytes of the record and DeadLetterMaxHeader bytes per
// header, with the original size, so it always fits a Kafka batch.
func TestDeadLettersAreBounded(t *testing.T) {
	long := bytes.Repeat([]byte("e"), 600<<10)
	value, hs := BoundDeadLetter(bytes.Repeat([]byte("v"), 614<<10), []Header{{Key: "segd-error", Value: long}, {Key: "segd-reason", Value: []byte("too_large")}})
	if len(value) != DeadLetterMaxValue {
		t.Errorf("value %d bytes, want %d", len(value), DeadLetterMaxValue)
	}
	want := map[string]string{"segd-reason": "too_large", "segd-truncated": "628736"}
	for _, h := range hs {
		if len(h.Value) > DeadLetterMaxHeader {
			t.Errorf("header %s is %d bytes", h.Key, len(h.Value))
		}
		if w, ok := want[h.Key]; ok && string(h.Value) != w {
			t.Errorf("header %s = %q, want %q", h.Key, h.Value, w)
		}
		delete(want, h.Key)
	}
	if len(want) > 0 {
		t.Errorf("headers missing: %v", want)
	}
	small, shs := BoundDeadLetter([]byte("ok"), []Header{{Key: "segd-error", Value: []byte("short")}})
	if string(small) != "ok" || len(shs) != 1 || string(shs[0].Value) != "short" {
		t.Errorf("a small dead letter changed: %q %v", small, shs)
	}
}
