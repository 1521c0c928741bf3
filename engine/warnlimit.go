package engine

import (
	"sync"
	"time"
)

// warnLimiter lets a warning that can repeat in a loop through at most
// once per every, counting what it held back in between. Safe for
// concurrent use: a partition's fetchers report from several goroutines.
type warnLimiter struct {
	every time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int64
}

// allow reports whether to log now and, if so, how many warnings were
// held back since the last one logged.
func (l *warnLimiter) allow() (suppressed int64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); l.last.IsZero() || now.Sub(l.last) >= l.every {
		suppressed, l.suppressed, l.last = l.suppressed, 0, now
		return suppressed, true
	}
	l.suppressed++
	return 0, false
}
