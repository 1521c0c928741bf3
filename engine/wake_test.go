package engine

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/schemas"
)

// TestCommitWakesThePublisherOfWhatItReleased: a commit wakes the outbox
// publisher when its changes are released by it (no changelog); with the
// changelog on it wakes the changelog writer only, whose acknowledgement
// releases the changes and wakes the outbox publisher then
// (changelogPublisher.sent). Woken by the commit too, the outbox
// publisher found nothing released, once per commit.
func TestCommitWakesThePublisherOfWhatItReleased(t *testing.T) {
	h := newHarness(t, testRules)
	now := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, changelog := range []bool{false, true} {
		pub := &publisher{notify: make(chan struct{}, 1)}
		tk := openTask(0, h.proc, nil, pub, nil, taskOptions{idleAfter: -1, now: func() time.Time { return now }}, zerolog.Nop(), nil)
		var cl *changelogPublisher
		if changelog {
			cl = &changelogPublisher{notify: make(chan struct{}, 1)}
			tk.cl = cl
		}
		if err := tk.commit(); err != nil {
			t.Fatal(err)
		}
		pubWoken := len(pub.notify) == 1
		switch {
		case !changelog && !pubWoken:
			t.Fatal("changelog off: the commit did not wake the outbox publisher")
		case changelog && pubWoken:
			t.Fatal("changelog on: the commit woke the outbox publisher, whose entries wait for the changelog")
		case changelog && len(cl.notify) != 1:
			t.Fatal("changelog on: the commit did not wake the changelog writer")
		}
	}
}

// TestChangelogAcknowledgementWakesThePublisher: with the changelog on
// (the default), a live change is published once the changelog holds its
// commit, woken by the changelog's acknowledgement: the idle publishers'
// look for work is an hour away here, and the commit no longer wakes the
// outbox publisher (seen failing with changelogPublisher.sent unset).
func TestChangelogAcknowledgementWakesThePublisher(t *testing.T) {
	idleTickNanos.Store(int64(time.Hour))
	t.Cleanup(func() { idleTickNanos.Store(0) })
	_, brokers := startTestBroker(t)
	cfg, _ := jsonTestConfig(t, brokers)
	cfg.EnsureDefaults()
	if cfg.State.Changelog != "on" {
		t.Fatalf("state.changelog defaults to %q, want on", cfg.State.Changelog)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
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
