package handoff

import (
	"sync"
	"testing"
	"time"
)

// TestYieldWithNothingExpected: background work runs on when no helper
// waits, without allocating.
func TestYieldWithNothingExpected(t *testing.T) {
	if n := testing.AllocsPerRun(100, Yield); n != 0 {
		t.Fatalf("Yield with no helper expected: %.0f allocations", n)
	}
}

// TestYieldWaitsForTheHelper: a Yield while a helper is expected returns
// once the helper has started, not before.
func TestYieldWaitsForTheHelper(t *testing.T) {
	defer func(d time.Duration) { maxWait = d }(maxWait)
	maxWait = time.Minute // only the helper's start returns it
	Expect()
	Expect() // two helpers: both must start
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		Yield()
	}()
	Started()
	select {
	case <-returned:
		t.Fatal("Yield returned while a helper was still to start")
	case <-time.After(20 * time.Millisecond):
	}
	Started()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("Yield did not return after the helpers started")
	}
	if waiting.Load() != 0 {
		t.Fatalf("%d helpers still counted as waiting", waiting.Load())
	}
}

// TestYieldIsBounded: a helper that never starts stalls background work
// for about maxWait per Yield, and later Yields wait again until it does.
func TestYieldIsBounded(t *testing.T) {
	defer func(d time.Duration) { maxWait = d }(maxWait)
	maxWait = 20 * time.Millisecond
	Expect()
	defer Started()
	start := time.Now()
	Yield()
	if el := time.Since(start); el < maxWait {
		t.Fatalf("Yield returned after %v with a helper expected, want about %v", el, maxWait)
	}
}

// TestConcurrentExpectAndYield runs helpers and yielders side by side
// (under -race: the counter and the channel stay consistent).
func TestConcurrentExpectAndYield(t *testing.T) {
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 200 {
				Expect()
				go Started()
			}
		}()
		go func() {
			defer wg.Done()
			for range 200 {
				Yield()
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for waiting.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d helpers counted as waiting after all started", waiting.Load())
		}
		time.Sleep(time.Millisecond)
	}
}
