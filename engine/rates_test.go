package engine

import (
	"testing"
	"time"

	"github.com/segd/segd/segment"
)

func TestSegmentRatesWindows(t *testing.T) {
	var r segmentRates
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	r.addN("vip", 1, 0, t0)
	r.addN("vip", 1, 0, t0.Add(30*time.Minute))
	r.addN("vip", 0, 1, t0.Add(90*time.Minute))
	r.addN("vip", 1, 0, t0.Add(-25*time.Hour)) // outside the day
	now := t0.Add(100 * time.Minute)
	e1, x1, e24, x24 := r.counts("vip", now)
	if e1 != 0 || x1 != 1 || e24 != 2 || x24 != 1 {
		t.Fatalf("1h %d/%d, 24h %d/%d; want 0/1 and 2/1", e1, x1, e24, x24)
	}
	// A slot reused a day later forgets its old minute (t0's ENTER): the
	// last day holds t0+30m and t0+24h.
	r.addN("vip", 1, 0, t0.Add(24*time.Hour))
	e1, _, e24, _ = r.counts("vip", t0.Add(24*time.Hour))
	if e1 != 1 || e24 != 2 {
		t.Fatalf("a day later: 1h %d, 24h %d; want 1 and 2", e1, e24)
	}
	if e, x, _, _ := r.counts("nope", now); e != 0 || x != 0 {
		t.Fatal("unknown segment has counts")
	}
}

// TestChangeObserverCountsAtFlush: a partition's changes reach the shared
// rates when its task flushes them after a commit (from the processor's
// counts), each counted once.
func TestChangeObserverCountsAtFlush(t *testing.T) {
	var r segmentRates
	o := &changeObserver{rates: &r}
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	st := &segment.Stats{SegmentChanges: map[string][2]uint64{"vip": {2, 1}, "lapsed": {1, 0}}}
	if e, x, _, _ := r.counts("vip", t0); e != 0 || x != 0 {
		t.Fatalf("before the flush: vip %d/%d, want nothing yet", e, x)
	}
	o.flush(t0, st)
	o.flush(t0, st) // nothing new: counts nothing twice
	if e, x, _, _ := r.counts("vip", t0); e != 2 || x != 1 {
		t.Fatalf("vip %d enters %d exits, want 2 and 1", e, x)
	}
	if e, x, _, _ := r.counts("lapsed", t0); e != 1 || x != 0 {
		t.Fatalf("lapsed %d enters %d exits, want 1 and 0", e, x)
	}
	st.SegmentChanges["vip"] = [2]uint64{2, 2}
	o.flush(t0.Add(time.Minute), st)
	if e, x, _, _ := r.counts("vip", t0.Add(time.Minute)); e != 2 || x != 2 {
		t.Fatalf("vip %d enters %d exits after a second flush, want 2 and 2", e, x)
	}
	var nilObs *changeObserver
	nilObs.flush(t0, st) // a backfill's task has none
}
