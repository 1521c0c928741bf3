package engine

import (
	"context"
	"time"
)

// staleSweepInterval is how often an instance looks for copies of
// partitions it no longer runs.
const staleSweepInterval = 5 * time.Minute

// sweepStaleCopies drops, every staleSweepInterval until ctx is done, the
// local copies of partitions this process no longer runs once they are
// too old to catch up from (catchUpWindow): a later hand-over restores
// them from the changelog in full anyway, and they would keep customers
// the owner has since erased. Only with the changelog on and consumer
// group assignment: without a changelog the local copy is the only state.
func (e *Engine) sweepStaleCopies(ctx context.Context) {
	if !e.changelogOn() || e.cfg.Kafka.Assignment != "group" {
		return
	}
	t := time.NewTicker(staleSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.dropStaleCopies()
	}
}

// dropStaleCopies is one sweep. Partitions restore and start under
// lifecycleMu, so none does while a copy is checked and dropped.
func (e *Engine) dropStaleCopies() {
	e.lifecycleMu.Lock()
	defer e.lifecycleMu.Unlock()
	parts, err := e.st.PartitionsWithCustomers()
	if err != nil {
		e.log.Warn().Err(err).Msg("stale partition sweep: list partitions")
		return
	}
	owned := e.ownedFilter()
	for _, p := range parts {
		if owned(p) {
			continue
		}
		at, ok, err := e.st.SyncedAt(p)
		if err != nil {
			e.log.Warn().Err(err).Int32("partition", p).Msg("stale partition sweep: read sync time")
			continue
		}
		if ok && e.opt.Now().Sub(at) <= catchUpWindow {
			continue // still useful to catch up from if it comes back
		}
		if err := e.st.Drop(p); err != nil {
			e.log.Warn().Err(err).Int32("partition", p).Msg("stale partition sweep: drop")
			continue
		}
		e.log.Info().Int32("partition", p).Msg("dropped the local copy of a partition another instance runs (too old to catch up from; it may hold customers erased since)")
	}
}
