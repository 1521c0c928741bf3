package rules

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/segd/segd/schemas"
)

// mostFrequentRef is the straightforward computation the running totals
// replace: merge the counts of every bucket in the window, then take the
// highest count, the smallest value on ties.
func mostFrequentRef(bs []bucket) (string, bool) {
	var tot []valCount
	for i := range bs {
	vals:
		for _, v := range bs[i].values() {
			for k := range tot {
				if tot[k].v == v.v {
					tot[k].n += v.n
					continue vals
				}
			}
			tot = append(tot, v)
		}
	}
	best, bestN := "", uint32(0)
	for _, v := range tot {
		if v.n > bestN || (v.n == bestN && v.v < best) {
			best, bestN = v.v, v.n
		}
	}
	return best, bestN > 0
}

const freqRules = `version: 1
traits:
  top_4h: most_frequent(browse.category) over 4h
  cats_2d: most_frequent(purchase.categories) over 2d bucket 6h
  top_ever: most_frequent(browse.category)
  pages_3h: most_frequent(browse.page) over 3h
segments:
  a: { when: "top_4h == \"c1\" or cats_2d == \"c2\"" }
  b: { when: "top_ever == \"c0\" and pages_3h != \"p7\"" }
`

// freqEvent is a random browse or purchase event near t. Categories come
// from a small alphabet, so counts tie often; pages from one larger than
// a bucket holds (maxDistinctPerBucket), so that the bound is reached.
func freqEvent(r *rand.Rand, t int64) *schemas.Event {
	if r.IntN(3) == 0 {
		cats := make([]string, r.IntN(4))
		for i := range cats {
			cats[i] = "c" + strconv.Itoa(r.IntN(4))
		}
		return &schemas.Event{Type: schemas.EventPurchase, CustomerID: "c", Time: t, Categories: cats}
	}
	return &schemas.Event{Type: schemas.EventBrowse, CustomerID: "c", Time: t,
		Category: "c" + strconv.Itoa(r.IntN(4)), Page: "p" + strconv.Itoa(r.IntN(300))}
}

// checkFreq fails unless every most_frequent trait's totals equal the sum
// of its buckets, and its value at each probe equals mostFrequentRef over
// the window, including probes that leave stored buckets outside it.
func checkFreq(t *testing.T, rs *RuleSet, s *State, clock int64, probes []int64, what string) {
	t.Helper()
	for _, tr := range rs.Traits() {
		ts := s.get(tr.Index)
		want := map[string]uint32{}
		for i := range ts.buckets {
			for _, v := range ts.buckets[i].values() {
				want[v.v] += v.n
			}
		}
		for v, n := range want {
			if n == 0 {
				delete(want, v)
			}
		}
		got := map[string]uint32{}
		for _, v := range ts.rx().freq {
			if _, dup := got[v.v]; dup || v.n == 0 {
				t.Fatalf("%s: trait %s: totals hold %q twice or with count 0: %v", what, tr.Name, v.v, ts.rx().freq)
			}
			got[v.v] = v.n
		}
		if len(got) != len(want) {
			t.Fatalf("%s: trait %s: totals %v, buckets sum to %v", what, tr.Name, got, want)
		}
		for v, n := range want {
			if got[v] != n {
				t.Fatalf("%s: trait %s: total of %q is %d, buckets sum to %d", what, tr.Name, v, got[v], n)
			}
		}
		for _, p := range probes {
			gotV, gotOK := computeStr(tr, s, p)
			wantV, wantOK := mostFrequentRef(ts.window(s, tr, p))
			if gotV != wantV || gotOK != wantOK {
				t.Fatalf("%s: trait %s at clock%+d: got %q %v, want %q %v", what, tr.Name, p-clock, gotV, gotOK, wantV, wantOK)
			}
		}
	}
}

// TestMostFrequentMatchesMerge drives most_frequent traits with random
// events (some late, some older than their window), merges, encoding
// round trips and clock jumps that roll whole windows out, and compares
// the incremental totals with a fresh merge of the buckets after every
// step.
func TestMostFrequentMatchesMerge(t *testing.T) {
	rs := mustCompile(t, freqRules)
	r := rand.New(rand.NewPCG(21, 22))
	base := at("2024-03-01T00:00:00Z")
	for iter := 0; iter < 200; iter++ {
		s, other := rs.NewState(), rs.NewState()
		clock := base
		for step := 0; step < 60; step++ {
			switch op := r.IntN(20); {
			case op == 0:
				// A round trip through the stored encoding rebuilds
				// the totals from the buckets.
				dec := rs.NewState()
				if err := rs.DecodeState(s.AppendBinary(nil), dec); err != nil {
					t.Fatal(err)
				}
				s = dec
			case op == 1:
				rs.Merge(s, other, clock)
				other.Reset()
			case op == 2:
				clock += int64(r.IntN(3 * 86400_000)) // windows roll out
			case op == 3:
				// A burst past the per-bucket bound of distinct values.
				for range 2 * maxDistinctPerBucket {
					rs.Apply(s, freqEvent(r, clock), clock)
				}
			case op < 6:
				rs.Apply(other, freqEvent(r, clock-int64(r.IntN(3600_000))), clock)
			default:
				clock += int64(r.IntN(1800_000))
				// Late by up to 5h: inside some windows, outside others.
				rs.Apply(s, freqEvent(r, clock-int64(r.IntN(5*3600_000))), clock)
			}
			probes := []int64{clock, clock + 1, clock - int64(r.IntN(6*3600_000)), clock + int64(r.IntN(3*86400_000))}
			checkFreq(t, rs, s, clock, probes, "iteration "+strconv.Itoa(iter)+" step "+strconv.Itoa(step))
		}
	}
}

// TestMostFrequentAllocatesNothing: reading a most_frequent value, with
// the window covering every stored bucket or not, does not allocate once
// the scratch space has grown.
func TestMostFrequentAllocatesNothing(t *testing.T) {
	rs := mustCompile(t, freqRules)
	r := rand.New(rand.NewPCG(5, 6))
	s := rs.NewState()
	clock := at("2024-03-01T00:00:00Z")
	for range 200 {
		clock += 600_000
		rs.Apply(s, freqEvent(r, clock), clock)
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, p := range []int64{clock, clock + 2*3600_000} {
			for _, tr := range rs.Traits() {
				computeStr(tr, s, p)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per read, want 0", allocs)
	}
}
