package engine

import (
	"testing"
	"time"
)

func TestWarnLimiterLetsOneThroughPerPeriodAndCountsTheRest(t *testing.T) {
	l := &warnLimiter{every: 50 * time.Millisecond}
	if n, ok := l.allow(); !ok || n != 0 {
		t.Fatalf("first warning: allow = %d, %v; want 0, true", n, ok)
	}
	for i := range 3 {
		if _, ok := l.allow(); ok {
			t.Fatalf("warning %d within the period was let through", i+2)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n, ok := l.allow(); ok {
			// The three held back, plus those the polling itself made.
			if n < 3 {
				t.Fatalf("after the period: suppressed = %d, want at least 3", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no warning let through after the period")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, ok := l.allow(); ok {
		t.Fatal("a warning right after one let through was let through too")
	}
}
