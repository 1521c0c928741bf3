package state

import (
	"math/rand/v2"
	"testing"
)

// TestTimerItemOrder: the prefix compare orders timers as (time, id)
// does, for ids short and long, sharing prefixes, and holding zero bytes.
func TestTimerItemOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte{0, 1, 'a', 'b', 'c', 0xff}
	id := func() string {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 200000 {
		a, b := newTimerItem(int64(rng.IntN(3)), id()), newTimerItem(int64(rng.IntN(3)), id())
		want := a.at < b.at || a.at == b.at && a.id < b.id
		if got := a.less(b); got != want {
			t.Fatalf("(%d, %q) less (%d, %q) = %v, want %v", a.at, a.id, b.at, b.id, got, want)
		}
	}
}

// BenchmarkTimerHeap pushes and pops 200k timers over 30 distinct times
// (a window's leave times fall on bucket boundaries), their ids scattered
// on the heap as a cache's are.
func BenchmarkTimerHeap(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 200000
	items := make([]timerItem, n)
	for i, j := range rng.Perm(n) {
		id := string(append([]byte("c"), []byte(fmtID(j))...))
		items[i] = newTimerItem(int64(rng.IntN(30)), id)
	}
	var t timerIndex
	t.p = &Partition{}
	b.ResetTimer()
	for range b.N {
		for _, it := range items {
			t.push(it)
		}
		for len(t.heap) > 0 {
			t.pop()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/timer")
}

func fmtID(j int) string {
	b := []byte("0000000")
	for k := len(b) - 1; k >= 0 && j > 0; k-- {
		b[k] = byte('0' + j%10)
		j /= 10
	}
	return string(b)
}
