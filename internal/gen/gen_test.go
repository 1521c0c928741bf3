package gen

import (
	"sort"
	"strings"
	"testing"

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
