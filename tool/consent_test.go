package tool

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A file replay honours the consent attribute it is given, as segd run
// honours consent.attribute: before, it always read consent_marketing.
func TestReplayHonoursTheConsentAttribute(t *testing.T) {
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(testRules), 0o644); err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(dir, "events.jsonl")
	lines := `{"type":"profile","event_id":"p1","customer_id":"c1","ts":"2024-01-01T00:00:00Z","attributes":{"gdpr_ok":false}}
{"type":"engagement","event_id":"e1","customer_id":"c1","ts":"2024-01-01T01:00:00Z","channel":"email","action":"click","campaign_id":"k"}
`
	if err := os.WriteFile(input, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	clickerEnters := func(attr string) int {
		var out bytes.Buffer
		sum, err := Replay(context.Background(), ReplayOptions{RulesFile: rulesFile, StateDir: filepath.Join(t.TempDir(), "state"),
			Inputs: []string{input}, Output: &out, ConsentAttribute: attr})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Events != 2 || sum.Invalid != 0 {
			t.Fatalf("%d events, %d invalid: %v", sum.Events, sum.Invalid, sum.FirstSkipped)
		}
		return strings.Count(out.String(), `"segment_id":"clicker","kind":"ENTER"`)
	}
	if n := clickerEnters(""); n != 1 {
		t.Fatalf("with the default consent attribute: %d clicker ENTERs, want 1 (gdpr_ok means nothing)", n)
	}
	if n := clickerEnters("gdpr_ok"); n != 0 {
		t.Fatalf("with consent attribute gdpr_ok false: %d clicker ENTERs, want 0", n)
	}
}
