package schemas

import (
	"strings"
	"testing"
)

// TestDecodeJSONTypeErrors: a missing or non-string type is described
// in words, not as Go's %!q(<nil>).
func TestDecodeJSONTypeErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{"customer_id":"c1"}`:              "no type: want purchase",
		`{"type":null,"customer_id":"c1"}`:  "no type: want purchase",
		`{"type":3,"customer_id":"c1"}`:     "type 3: want a string",
		`{"type":"buy","customer_id":"c1"}`: `type "buy": want purchase`,
	} {
		var e Event
		err := DecodeJSON([]byte(in), &e)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "%!") {
			t.Errorf("DecodeJSON(%s) = %v, want %q", in, err, want)
		}
	}
}
