package engine

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/schemas"
)

// TestDecodeAheadMatchesInline: records handed in polls leave the same
// outbox, byte for byte, whether a decoder goroutine decodes them ahead
// of the task or the task decodes each itself: dead letters of bad
// records, an event from the future and tombstones (left to the task)
// included. The decoder must have decoded records for the comparison to
// mean anything.
func TestDecodeAheadMatchesInline(t *testing.T) {
	records := oneEntryRecords(t, 1500)
	// Tombstones (nil values on the profile topic): erasures at the
	// record's time, decoded by the task whatever the mode.
	for _, i := range []int{200, 700, 1200} {
		records = append(records[:i+1], records[i:]...)
		records[i] = connectors.Message{Topic: DefaultProfilesTopic, Key: records[i+1].Key, Time: records[i+1].Time}
	}
	start := time.Now()
	run := func(mode int) [][]byte {
		defer func(m int) { decodeAheadMode = m }(decodeAheadMode)
		decodeAheadMode = mode
		l := openLocalAt(t, start)
		for i := 0; i < len(records); i += 64 {
			poll := make([]connectors.Message, 0, 64)
			for j := i; j < min(i+64, len(records)); j++ {
				m := records[j]
				m.Offset = int64(j)
				poll = append(poll, m)
			}
			if err := l.HandlePoll(0, poll); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Commit(); err != nil {
			t.Fatal(err)
		}
		return outboxEntries(t, l.tasks[0].part)
	}
	inline := run(-1)
	// The decoder may not get a processor during the few polls of a run
	// (the task then decodes every record itself): run again until it
	// decoded some, or the comparison would be inline with inline.
	var ahead [][]byte
	var n int64
	for attempt := 0; attempt < 20 && n == 0; attempt++ {
		before := decodedAhead.Load()
		ahead = run(1)
		n = decodedAhead.Load() - before
	}
	if n == 0 {
		t.Fatal("the decoder decoded no record in 20 runs: the test compared inline with inline")
	}
	t.Logf("%d of %d records decoded ahead", n, len(records))
	if len(inline) != len(ahead) || len(inline) < 100 {
		t.Fatalf("inline left %d outbox entries, ahead %d", len(inline), len(ahead))
	}
	for i := range inline {
		if !bytes.Equal(inline[i], ahead[i]) {
			t.Fatalf("entry %d differs:\ninline: %q\nahead:  %q", i, inline[i], ahead[i])
		}
	}
}

// TestDecodeAheadDropsBigEvents: once a poll is through, a slot whose
// record was big holds no event (its strings would stay in memory until
// the slot's next record), while a small record's event stays for reuse.
func TestDecodeAheadDropsBigEvents(t *testing.T) {
	defer func(m int) { decodeAheadMode = m }(decodeAheadMode)
	decodeAheadMode = 1
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var poll []connectors.Message
	for i := 0; i < 200; i++ {
		e := schemas.Event{Type: schemas.EventProfile, EventID: fmt.Sprintf("p%d", i), CustomerID: fmt.Sprintf("c%d", i), Time: start.UnixMilli() - 1000}
		size := 10
		if i%50 == 7 || i >= 195 { // the decoder reaches the last ones first
			size = 3 * aheadKeepBytes
		}
		e.Attributes = []schemas.Attribute{{Name: "note", Value: schemas.String(strings.Repeat("n", size))}}
		v, err := codecs[schemas.EventProfile].AppendEncode(nil, &e)
		if err != nil {
			t.Fatal(err)
		}
		poll = append(poll, connectors.Message{Topic: DefaultProfilesTopic, Offset: int64(i), Key: []byte(e.CustomerID), Value: v, Time: start})
	}
	// Records up to 16 KiB are taken (the test config's 4 KiB would
	// dead-letter the big ones at decoding, and leave their events empty
	// whatever the decoder keeps).
	l := openLocalAt(t, start, func(c *Config) { c.Input.MaxRecordBytes = 16 << 10 })
	// The decoder may not get a processor during a poll on a busy
	// machine (the task then decodes every record itself): the poll is
	// handed in again until the decoder has decoded a big record and a
	// small one (the slots keep what was decoded into them).
	small, big := false, false
	for attempt := 0; attempt < 200 && !(small && big); attempt++ {
		before, beforeBig := decodedAhead.Load(), decodedAheadBig.Load()
		if err := l.HandlePoll(0, poll); err != nil {
			t.Fatal(err)
		}
		nBig := decodedAheadBig.Load() - beforeBig
		big = big || nBig > 0
		small = small || decodedAhead.Load()-before > nBig
	}
	if !small || !big {
		t.Fatalf("in 200 polls the decoder decoded small records: %v, big ones: %v", small, big)
	}
	a := &l.tasks[0].ahead
	kept := 0
	for i := range a.slots {
		s := &a.slots[i]
		if i%50 == 7 || i >= 195 {
			if s.big || s.ev.CustomerID != "" || cap(s.ev.Attributes) != 0 {
				t.Fatalf("slot %d (a %d-byte record) still holds its event: %q, %d attributes", i, len(poll[i].Value), s.ev.CustomerID, cap(s.ev.Attributes))
			}
		} else if s.ev.CustomerID != "" {
			kept++
		}
	}
	if kept == 0 {
		t.Fatal("no small record's event was kept: the test cannot tell dropped from never decoded")
	}
}

// openLocalAt opens a one-partition Local of a fresh engine whose wall
// clock stands at now (its config adjusted by adjust); the test's cleanup
// closes both.
func openLocalAt(t *testing.T, now time.Time, adjust ...func(*Config)) *Local {
	t.Helper()
	cfg := oneEntryConfig(t, []string{"127.0.0.1:1"}, t.TempDir())
	for _, f := range adjust {
		f(cfg)
	}
	e, err := New(cfg, Options{Logger: zerolog.Nop(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	l, err := e.OpenLocal(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
