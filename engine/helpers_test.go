package engine

import (
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/segd/segd/internal/eventtest"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/segment"
	"github.com/segd/segd/state"
)

// The rules and event builders the package's tests share.
const testRules = eventtest.Rules

var (
	ts       = eventtest.Time
	purchase = eventtest.Purchase
	profile  = eventtest.Profile
)

// harness runs a segment.Processor over a real Pebble store on an
// in-memory FS, for the tests of what engine builds around one.
type harness struct {
	rs   *rules.RuleSet
	st   *state.Store
	part *state.Partition
	proc *segment.Processor
}

func newHarness(t *testing.T, src string) *harness {
	t.Helper()
	rs, err := rules.Compile("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{rs: rs}
	h.st, err = segment.OpenStore("db", func() *rules.RuleSet { return h.rs }, state.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.st.Close() })
	if h.part, err = h.st.Partition(0); err != nil {
		t.Fatal(err)
	}
	h.proc, err = segment.New(rs, h.part, segment.Options{
		ChangesTopic:     DefaultChangesTopic,
		DeadLetterTopic:  DefaultDeadLetterTopic,
		EncodeChange:     schemas.AppendSegmentChangeJSON,
		ConsentAttribute: segment.DefaultConsentAttribute,
		DedupHorizon:     time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}
