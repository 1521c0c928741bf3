package engine

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/segd/segd/connectors"
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
	fs   vfs.FS // the store's, under "db"
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
	h := &harness{rs: rs, fs: vfs.NewMem()}
	h.st, err = segment.OpenStore("db", func() *rules.RuleSet { return h.rs }, state.Options{FS: h.fs})
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

// jsonPurchaseProcessor is a processor over h's rules and partition that
// reads JSON purchases from DefaultPurchasesTopic, for tests that drive a
// task by hand.
func jsonPurchaseProcessor(t *testing.T, h *harness) *segment.Processor {
	t.Helper()
	dec, err := connectors.NewDecoder(connectors.DecoderOptions{Type: schemas.EventPurchase, Format: connectors.FormatJSON})
	if err != nil {
		t.Fatal(err)
	}
	proc, err := segment.New(h.proc.Rules(), h.proc.Partition(), segment.Options{
		Inputs:       map[string]segment.Input{DefaultPurchasesTopic: {Type: schemas.EventPurchase, Decoder: dec}},
		ChangesTopic: DefaultChangesTopic, DeadLetterTopic: DefaultDeadLetterTopic, EncodeChange: schemas.AppendSegmentChangeJSON,
		DedupHorizon: time.Hour, MaxRecordBytes: 1 << 20, MaxFutureSkew: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	return proc
}

// checkLivePurchasePublished runs an engine with cfg, sends it alice's
// live purchase once it runs its partition, and checks that her ENTER is
// published within 20 s.
func checkLivePurchasePublished(t *testing.T, cfg *Config, brokers []string) {
	t.Helper()
	eng, stop := runStoppable(t, cfg)
	defer stop()
	waitFor(t, 30*time.Second, "the engine to run its partition", func() bool {
		return gaugeValue(t, eng, "segd_owned_partitions") == 1
	})
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	body := `{"type":"purchase","event_id":"live-1","customer_id":"alice","ts":"` + time.Now().UTC().Format(time.RFC3339Nano) + `","amount":20}`
	if err := prod.Write(context.Background(), connectors.Message{Topic: DefaultPurchasesTopic, Key: []byte("alice"), Value: []byte(body), Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	got := readTopic(t, brokers, DefaultChangesTopic, 1, 20*time.Second)
	var ch schemas.SegmentChange
	if err := schemas.DecodeSegmentChangeAvro(got[0].Value, &ch); err != nil {
		t.Fatal(err)
	}
	if ch.CustomerID != "alice" || ch.CauseEventID != "live-1" || ch.Kind != schemas.Enter {
		t.Fatalf("published %+v, want alice's ENTER caused by live-1", ch)
	}
}
