package engine

import (
	"testing"
	"time"

	"github.com/segd/segd/segment"

	"github.com/rs/zerolog"
)

// TestStaleCopiesAreDropped: a copy of a partition this instance does not
// run is dropped once it is too old to catch up from (it may hold a
// customer the owner erased since); a recent one is kept for a quick
// catch-up.
func TestStaleCopiesAreDropped(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, _ := jsonTestConfig(t, brokers)
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	eng, err := New(cfg, Options{Logger: zerolog.New(zerolog.NewTestWriter(t)), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	for _, p := range []int32{1, 2} {
		part, err := eng.st.Partition(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := part.EnableChangelog(); err != nil {
			t.Fatal(err)
		}
		c, err := segment.DecodeCustomer(eng.rs.Load(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		part.MarkDirty("erased-elsewhere", c)
		part.CountMember("buyer", true)
		if err := part.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := part.ChangelogSent(1, 1); err != nil {
			t.Fatal(err)
		}
		if err := part.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Both synced now: nothing goes.
	eng.dropStaleCopies()
	if got, _ := eng.st.PartitionsWithCustomers(); len(got) != 2 {
		t.Fatalf("recent copies dropped: %v left", got)
	}
	// Two hours on, both are past the catch-up window.
	now = now.Add(2 * time.Hour)
	eng.dropStaleCopies()
	if got, _ := eng.st.PartitionsWithCustomers(); len(got) != 0 {
		t.Fatalf("stale copies kept: %v", got)
	}
	if n, err := eng.st.CountMembers("buyer"); err != nil || n != 0 {
		t.Fatalf("members of buyer after the drop: %d (%v)", n, err)
	}
	if ids, _, err := segment.ListMembers(eng.st, eng.rs.Load(), "buyer", "", 10, nil); err != nil || len(ids) != 0 {
		t.Fatalf("members listed after the drop: %v (%v)", ids, err)
	}
}
