package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
)

// TestCommitWakesThePublisherOfWhatItReleased: without a changelog a
// commit releases its changes and wakes the outbox publisher. With the
// changelog on it wakes the changelog writer, whose acknowledgement
// releases the changes and wakes the outbox publisher
// (changelogPublisher.sent); the commit wakes the outbox publisher too
// only when everything committed is already released, as when an
// acknowledgement came before the commit counted as committed and its
// wake-up found nothing.
func TestCommitWakesThePublisherOfWhatItReleased(t *testing.T) {
	h := newHarness(t, testRules)
	proc := jsonPurchaseProcessor(t, h)
	now := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	pub := &publisher{notify: make(chan struct{}, 1)}
	tk := openTask(0, proc, nil, pub, nil, taskOptions{idleAfter: -1, now: func() time.Time { return now }}, zerolog.Nop(), nil)
	offset := int64(0)
	// commit handles a purchase of a new customer (a change to
	// publish) unless empty, commits, and reports which publishers the
	// commit woke.
	commit := func(empty bool) (pubWoken, clWoken bool) {
		t.Helper()
		for len(pub.notify) > 0 {
			<-pub.notify
		}
		if tk.cl != nil {
			for len(tk.cl.notify) > 0 {
				<-tk.cl.notify
			}
		}
		if !empty {
			body := fmt.Sprintf(`{"type":"purchase","event_id":"o%d","customer_id":"c%d","ts":%d,"amount":1}`, offset, offset, now.Add(-time.Minute).UnixMilli())
			m := connectors.Message{Topic: DefaultPurchasesTopic, Offset: offset, Value: []byte(body)}
			offset++
			before := h.part.OutboxCommitted()
			if err := tk.handle(&m); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if h.part.OutboxCommitted() == before {
					t.Fatal("the purchase made no change to publish: the case is not exercised")
				}
			}()
		}
		if err := tk.commit(); err != nil {
			t.Fatal(err)
		}
		return len(pub.notify) == 1, tk.cl != nil && len(tk.cl.notify) == 1
	}

	if woken, _ := commit(false); !woken {
		t.Fatal("changelog off: the commit did not wake the outbox publisher")
	}
	if err := h.part.EnableChangelog(); err != nil {
		t.Fatal(err)
	}
	tk.cl = &changelogPublisher{notify: make(chan struct{}, 1)}
	// The changelog off commit's changes are released (no mark holds
	// them back); this one's wait for the changelog.
	pubWoken, clWoken := commit(false)
	if !clWoken {
		t.Fatal("changelog on: the commit did not wake the changelog writer")
	}
	if pubWoken {
		t.Fatal("changelog on: the commit woke the outbox publisher while its changes wait for the changelog")
	}
	// The changelog writer sends the entry; its acknowledgement, as if
	// it came before the next commit counted as committed.
	var last uint64
	if err := h.part.ReadChangelog(0, 1000, func(seq uint64, _ []byte) error { last = seq; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := h.part.ChangelogSent(last, 1); err != nil {
		t.Fatal(err)
	}
	if pubWoken, _ := commit(true); !pubWoken {
		t.Fatal("changelog on, everything committed released: the commit did not wake the outbox publisher")
	}
}

// TestChangelogAcknowledgementWakesThePublisher: with the changelog on
// (the default), a live change is published once the changelog holds its
// commit, woken by the changelog's acknowledgement: the idle publishers'
// look for work is an hour away here, and the commit wakes the outbox
// publisher only once everything committed is released, which it rarely
// is then (seen failing with changelogPublisher.sent unset).
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
	checkLivePurchasePublished(t, cfg, brokers)
}
