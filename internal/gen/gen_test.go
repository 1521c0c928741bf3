package gen

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/schemas"
)

func take(t *testing.T, cfg Config, n int) []schemas.Event {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]schemas.Event, 0, n)
	for i := 0; i < n; i++ {
		var e schemas.Event
		if !g.Next(&e) {
			break
		}
		out = append(out, e)
	}
	return out
}

func TestDeterministicAndRealistic(t *testing.T) {
	a := take(t, Config{Seed: 7, Customers: 5000}, 100000)
	b := take(t, Config{Seed: 7, Customers: 5000}, 100000)
	c := take(t, Config{Seed: 8, Customers: 5000}, 1000)
	if len(a) != 100000 {
		t.Fatalf("got %d events", len(a))
	}
	differ := false
	for i := range c {
		if a[i].EventID != b[i].EventID || a[i].Time != b[i].Time || a[i].CustomerID != b[i].CustomerID || a[i].Amount != b[i].Amount {
			t.Fatalf("event %d differs between runs with the same seed", i)
		}
		if a[i].CustomerID != c[i].CustomerID {
			differ = true
		}
	}
	if !differ {
		t.Fatal("different seeds gave the same customers")
	}
	var types [schemas.NumEventTypes]int
	ids := map[string]bool{}
	perCustomer := map[string]int{}
	profiled := map[string]bool{}
	for i, e := range a {
		types[e.Type]++
		if ids[e.EventID] {
			t.Fatalf("duplicate event id %s", e.EventID)
		}
		ids[e.EventID] = true
		if i > 0 && e.Time < a[i-1].Time {
			t.Fatalf("time went back at %d", i)
		}
		if err := e.Validate(0, 0); err != nil {
			t.Fatalf("event %d invalid: %v", i, err)
		}
		if e.Type == schemas.EventProfile {
			profiled[e.CustomerID] = true
		} else if !profiled[e.CustomerID] {
			t.Fatalf("event %d for %s before its profile", i, e.CustomerID)
		}
		if e.Type == schemas.EventPurchase && (e.Amount <= 0 || len(e.Categories) == 0 || len(e.ProductIDs) == 0) {
			t.Fatalf("bad purchase %+v", e)
		}
		perCustomer[e.CustomerID]++
	}
	activity := types[schemas.EventBrowse] + types[schemas.EventEngagement] + types[schemas.EventPurchase]
	for _, m := range []struct {
		typ  schemas.EventType
		want float64
	}{{schemas.EventBrowse, 0.75}, {schemas.EventEngagement, 0.15}, {schemas.EventPurchase, 0.10}} {
		got := float64(types[m.typ]) / float64(activity)
		if got < m.want-0.02 || got > m.want+0.02 {
			t.Errorf("%s share %.3f, want %.2f±0.02", m.typ, got, m.want)
		}
	}
	counts := make([]int, 0, len(perCustomer))
	for _, n := range perCustomer {
		counts = append(counts, n)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(counts)))
	top := 0
	for _, n := range counts[:50] { // top 1% of 5000
		top += n
	}
	if share := float64(top) / float64(len(a)); share < 0.3 {
		t.Errorf("top 1%% of customers have %.2f of events; want a Zipf skew (> 0.3)", share)
	}
}

func TestValidate(t *testing.T) {
	_, err := New(Config{Customers: -1, ZipfS: 0.5, EventsPerHour: -3})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"Customers (-1)", "ZipfS (0.5) must be > 1", "EventsPerHour (-3)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}

func BenchmarkNext(b *testing.B) {
	g, err := New(Config{Customers: 100000})
	if err != nil {
		b.Fatal(err)
	}
	var e schemas.Event
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		g.Next(&e)
	}
}

// TestPacingKeepsCustomersRealisticAtAnyRate drives NextAt as live traffic
// does (event time = the time it is sent) at a low and a high rate for ten
// minutes of event time: at both rates no customer acts more than one
// session's worth, no customer's events come closer than MinEventGap, no
// event is stamped after the time asked for, and the higher rate reaches
// more customers instead of making each act faster.
func TestPacingKeepsCustomersRealisticAtAnyRate(t *testing.T) {
	const span = 10 * 60_000 // ms of event time
	pc := RealisticPacing()
	type result struct {
		customers, maxEvents, maxOrders int
	}
	run := func(rate int) result {
		g, err := New(Config{Customers: 2000, Pacing: pc})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
		events := map[string]int{}
		orders := map[string]int{}
		last := map[string]int64{}
		var e schemas.Event
		for i := 0; i < span*rate/1000; i++ {
			at := start + int64(i)*1000/int64(rate)
			g.NextAt(&e, at)
			if e.Time > at {
				t.Fatalf("rate %d: event %d stamped %d, after the time it was sent (%d)", rate, i, e.Time, at)
			}
			if e.Type == schemas.EventProfile {
				continue // a profile update precedes activity at the same instant
			}
			if prev, ok := last[e.CustomerID]; ok && e.Time-prev < pc.MinEventGap {
				t.Fatalf("rate %d: %s acted %d ms after its previous event (MinEventGap %d)", rate, e.CustomerID, e.Time-prev, pc.MinEventGap)
			}
			last[e.CustomerID] = e.Time
			events[e.CustomerID]++
			if e.Type == schemas.EventPurchase {
				orders[e.CustomerID]++
			}
		}
		var r result
		r.customers = len(events)
		for id, n := range events {
			r.maxEvents = max(r.maxEvents, n)
			r.maxOrders = max(r.maxOrders, orders[id])
		}
		return r
	}
	low, high := run(20), run(2000)
	t.Logf("20 ev/s: %+v; 2000 ev/s: %+v", low, high)
	// Ten minutes hold at most one session per customer (rests are 6 h+),
	// and a session has at most 4x the mean events.
	limit := 4 * pc.SessionEvents
	for _, r := range []result{low, high} {
		if r.maxEvents > limit {
			t.Errorf("a customer made %d events in 10 minutes (one session: at most %d)", r.maxEvents, limit)
		}
		if r.maxOrders > 1 {
			t.Errorf("a customer ordered %d times in 10 minutes (a session ends with its order)", r.maxOrders)
		}
	}
	if high.customers < 50*low.customers {
		t.Errorf("100x the rate reached %d customers vs %d: a higher rate must mean more customers active", high.customers, low.customers)
	}
}
