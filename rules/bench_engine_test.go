package rules

import (
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/segd/segd/schemas"
)

// standardRules reads testdata/standard.yaml, the benchmark rule set of
// bench/standard.yaml: 10 traits and 20 segments.
func standardRules(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile("testdata/standard.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// withSegments returns src with its segments replaced by n segments, as
// segd-bench's sweep builds its large rule sets: the file's own
// conditions, repeated under new ids. With distinct, copy k adds k to
// every number in its condition (thresholds and durations), so that no
// two segments share a condition but every one keeps its shape.
func withSegments(tb testing.TB, src string, n int, distinct bool) string {
	tb.Helper()
	base := mustCompile(tb, src).Segments()
	head, _, ok := strings.Cut(src, "\nsegments:\n")
	if !ok {
		tb.Fatal("no segments: section")
	}
	var b strings.Builder
	b.WriteString(head + "\nsegments:\n")
	for i := 0; i < n; i++ {
		s, k := base[i%len(base)], i/len(base)
		when := s.When
		if distinct && k > 0 {
			when = shiftNumbers(when, k)
		}
		fmt.Fprintf(&b, "  %s_%d: { when: %s }\n", s.ID, k, strconv.Quote(when))
	}
	return b.String()
}

// numberLit matches an integer literal, with an optional duration unit,
// that is not part of a name (orders_30d).
var numberLit = regexp.MustCompile(`(^|[^\w.])(\d+)([dhms]?)\b`)

func shiftNumbers(when string, k int) string {
	return numberLit.ReplaceAllStringFunc(when, func(m string) string {
		p := numberLit.FindStringSubmatch(m)
		n, _ := strconv.Atoi(p[2])
		return p[1] + strconv.Itoa(n+k) + p[3]
	})
}

// benchTraffic returns events for customers over 30 days in the shape of
// the benchmark workload (internal/gen, which rules may not import): Zipf
// activity, 75% browse in sessions on a favourite category, 15% email and
// push engagement, 10% purchases, and a profile event (country) before a
// customer's first event.
func benchTraffic(tb testing.TB, customers, events int) []schemas.Event {
	tb.Helper()
	const days = 30
	r := rand.New(rand.NewPCG(42, 42))
	zipf := rand.NewZipf(r, 1.1, 1, uint64(customers-1))
	cats := []string{"shoes", "electronics", "books", "toys", "garden", "beauty", "sports", "food"}
	pages := []string{"home", "search", "category", "product", "product", "cart", "checkout"}
	countries := []string{"United Kingdom", "France", "Germany", "Spain"}
	favorite := make([]string, customers)
	clock := at("2026-01-01T00:00:00Z")
	mean := float64(days*86400_000) / float64(events)
	var evs []schemas.Event
	for len(evs) < events {
		clock += int64(r.ExpFloat64() * mean)
		c := int(zipf.Uint64())
		id := fmt.Sprintf("c%07d", c)
		if favorite[c] == "" {
			favorite[c] = cats[r.IntN(len(cats))]
			evs = append(evs, schemas.Event{Type: schemas.EventProfile, CustomerID: id, Time: clock,
				Attributes: []schemas.Attribute{{Name: "country", Value: schemas.String(countries[r.IntN(len(countries))])}}})
		}
		e := schemas.Event{CustomerID: id, Time: clock}
		cat := favorite[c]
		if r.IntN(10) < 4 {
			cat = cats[r.IntN(len(cats))]
		}
		switch x := r.IntN(100); {
		case x < 75:
			e.Type, e.Page, e.Category = schemas.EventBrowse, pages[r.IntN(len(pages))], cat
		case x < 90:
			e.Type, e.Channel, e.Action = schemas.EventEngagement, []string{"email", "push"}[r.IntN(2)], []string{"send", "open", "click"}[r.IntN(3)]
		default:
			e.Type, e.Amount, e.Categories = schemas.EventPurchase, float64(500+r.IntN(30000))/100, []string{cat}
		}
		evs = append(evs, e)
	}
	return evs
}

// benchSets are the rule sets the engine-shaped benchmarks run: the
// standard 20 segments, 1000 segments repeating them (segd-bench's sweep)
// and 1000 segments of the same shapes with distinct conditions.
func benchSets(tb testing.TB) []struct {
	name string
	rs   *RuleSet
} {
	src := standardRules(tb)
	return []struct {
		name string
		rs   *RuleSet
	}{
		{"std20", mustCompile(tb, src)},
		{"repeat1000", mustCompile(tb, withSegments(tb, src, 1000, false))},
		{"distinct1000", mustCompile(tb, withSegments(tb, src, 1000, true))},
	}
}

// BenchmarkApplyEvaluate replays benchTraffic through the rules
// step the engine runs per event (processor.apply): Apply, SegmentsTouched
// (every profile segment for a profile event), EvalSegments and
// NextChangeAll. One op is the whole replay from empty states; ns/event is
// the per-event cost.
func BenchmarkApplyEvaluate(b *testing.B) {
	evs := benchTraffic(b, 500, 5000)
	for _, set := range benchSets(b) {
		b.Run(set.name, func(b *testing.B) {
			rs := set.rs
			states := map[string]*State{}
			for i := range evs {
				if states[evs[i].CustomerID] == nil {
					states[evs[i].CustomerID] = rs.NewState()
				}
			}
			profileSegs := rs.SegmentsFor(schemas.EventProfile)
			var touchedSegs, segs []int
			var res []bool
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for _, s := range states {
					s.Reset()
				}
				b.StartTimer()
				var clock int64
				for i := range evs {
					e := &evs[i]
					clock = max(clock, e.Time)
					s := states[e.CustomerID]
					touched := rs.Apply(s, e, clock)
					if e.Type == schemas.EventProfile {
						segs = profileSegs
					} else {
						touchedSegs = rs.SegmentsTouched(e.Type, touched, touchedSegs[:0])
						segs = touchedSegs
					}
					res = rs.EvalSegments(s, clock, segs, res[:0])
					rs.NextChangeAll(s, clock)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(evs)), "ns/event")
		})
	}
}

// busiestState replays the traffic and returns the state of the customer
// with the most events and the clock at the end.
func busiestState(tb testing.TB, rs *RuleSet, evs []schemas.Event) (*State, int64) {
	n := map[string]int{}
	top := ""
	for i := range evs {
		id := evs[i].CustomerID
		n[id]++
		if n[id] > n[top] {
			top = id
		}
	}
	s := rs.NewState()
	var clock int64
	for i := range evs {
		clock = max(clock, evs[i].Time)
		if evs[i].CustomerID == top {
			rs.Apply(s, &evs[i], clock)
		}
	}
	return s, clock
}

// BenchmarkNextChangeAll is NextChangeAll on the busiest customer's state
// at a clock that moves every other call, so that half of the calls find
// no memoized trait value (as after an event).
func BenchmarkNextChangeAll(b *testing.B) {
	evs := benchTraffic(b, 500, 5000)
	for _, set := range benchSets(b) {
		b.Run(set.name, func(b *testing.B) {
			s, now := busiestState(b, set.rs, evs)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				set.rs.NextChangeAll(s, now+int64(i&1))
			}
		})
	}
}

// BenchmarkEvalSegments evaluates every segment a browse event can affect
// (SegmentsTouched with every browse trait touched, then EvalSegments) on
// the busiest customer's state, the clock moving every other call.
func BenchmarkEvalSegments(b *testing.B) {
	evs := benchTraffic(b, 500, 5000)
	for _, set := range benchSets(b) {
		b.Run(set.name, func(b *testing.B) {
			rs := set.rs
			s, now := busiestState(b, rs, evs)
			var all Touched
			for _, t := range rs.byType[schemas.EventBrowse] {
				all |= traitBit(t.Index)
			}
			segs := rs.SegmentsTouched(schemas.EventBrowse, all, nil)
			res := make([]bool, 0, len(segs))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				segs = rs.SegmentsTouched(schemas.EventBrowse, all, segs[:0])
				res = rs.EvalSegments(s, now+int64(i&1), segs, res[:0])
			}
		})
	}
}

// BenchmarkMostFrequent reads a most_frequent trait over 30 daily buckets
// holding vals distinct values each, after a new event (no memoized
// value). in-window: every stored bucket is in the window; one-out: the
// oldest has left it but is not yet pruned (a timer's evaluation, before
// the customer's next event prunes it).
func BenchmarkMostFrequent(b *testing.B) {
	rs := mustCompile(b, "version: 1\ntraits:\n  top: most_frequent(browse.category) over 30d\nsegments:\n  x: { when: \"top == \\\"c0\\\"\" }\n")
	for _, vals := range []int{3, 20} {
		for _, shape := range []string{"in-window", "one-out"} {
			b.Run(fmt.Sprintf("vals=%d/%s", vals, shape), func(b *testing.B) {
				s := rs.NewState()
				now := at("2024-01-01T00:00:00Z")
				for d := 0; d < 30; d++ {
					for v := 0; v < vals; v++ {
						e := &schemas.Event{Type: schemas.EventBrowse, Time: now, Category: "c" + strconv.Itoa((d+v)%(vals+3))}
						rs.Apply(s, e, now)
					}
					now += 86400_000
				}
				now -= 86400_000
				if shape == "one-out" {
					now += 86400_000
				}
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					s.changed() // as Apply does
					if _, ok := traitStr(rs.traits[0], s, now+int64(i&1)); !ok {
						b.Fatal("no value")
					}
				}
			})
		}
	}
}
