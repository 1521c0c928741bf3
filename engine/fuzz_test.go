package engine

import (
	"bytes"
	"testing"

	"github.com/segd/segd/rules"
)

func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(appendEnvelope(nil, "segment.changes", "c1", []header{{"segd-reason", []byte("json_decode")}}, []byte("value")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := decodeEnvelope(data)
		if err != nil {
			return
		}
		// Varints may be non-minimal, so compare meaning: what decodes
		// re-encodes canonically, and that decodes to the same envelope.
		canon := appendEnvelope(nil, env.topic, string(env.key), env.headers, env.value)
		back, err := decodeEnvelope(canon)
		if err != nil {
			t.Fatalf("canonical form does not decode: %v", err)
		}
		if !bytes.Equal(appendEnvelope(nil, back.topic, string(back.key), back.headers, back.value), canon) {
			t.Fatal("canonical encoding is not stable")
		}
	})
}

func FuzzDecodeCustomer(f *testing.F) {
	rs, err := rules.Compile("fuzz.yaml", []byte(testRules))
	if err != nil {
		f.Fatal(err)
	}
	c, _ := decodeCustomer(rs, nil)
	c.timerAt = 1234
	c.members[0] = member{seq: 3, since: 99}
	c.remember(eventIDHash("e1"), 5)
	f.Add(c.AppendBinary(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeCustomer(rs, data)
		if err != nil {
			return
		}
		// A decoded record encodes and decodes again without error.
		if _, err := decodeCustomer(rs, c.AppendBinary(nil)); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
