// Package handoff gives a latency-critical helper goroutine the CPU ahead
// of background work on a machine with few cores.
//
// A task that hands work to a helper (its records to a decoder) readies
// the helper on its own processor, where it waits until another processor
// is free to take it. On a two-core machine the other processor is
// usually running background work (a partition's commit writer) that
// keeps it for up to the Go scheduler's 10 ms time slice, while a poll's
// records take the task about 1 ms: the helper started too late for most
// polls and the task decoded them itself. Background loops now call
// Yield between units of their work: it returns at once unless a helper
// is waiting to be started, and then parks the caller until the helper
// runs (bounded by a millisecond), which frees its processor for the
// helper.
package handoff

import (
	"sync"
	"sync/atomic"
	"time"
)

// maxWait bounds one Yield: background work stalls no longer than this
// for a helper that does not start. A variable for tests.
var maxWait = time.Millisecond

var (
	waiting atomic.Int32 // helpers expected and not yet started (fast path)
	mu      sync.Mutex
	started chan struct{} // closed when the helpers expected have started
)

// Expect announces that a helper is about to be readied (before the
// channel send that readies it). Every Expect is followed by one Started.
func Expect() {
	mu.Lock()
	if waiting.Load() == 0 {
		started = make(chan struct{})
	}
	waiting.Add(1)
	mu.Unlock()
}

// Started is the helper's first step once it runs.
func Started() {
	mu.Lock()
	if waiting.Add(-1) == 0 {
		close(started)
	}
	mu.Unlock()
}

// Yield parks the calling background goroutine while a helper waits to be
// started, for at most maxWait.
func Yield() {
	if waiting.Load() == 0 {
		return
	}
	mu.Lock()
	ch := started
	wait := waiting.Load() > 0
	mu.Unlock()
	if !wait {
		return
	}
	t := time.NewTimer(maxWait)
	select {
	case <-ch:
	case <-t.C:
	}
	t.Stop()
}
