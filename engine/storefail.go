package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segd/segd/segment"

	"github.com/segd/segd/state"
)

// openState opens the state store. A corrupt store is wiped and reopened
// empty when the changelog is on (each partition is then restored from
// it as it starts: prepareState finds no local state); with the changelog
// off it is refused, since nothing could rebuild it.
func (e *Engine) openState() (*state.Store, error) {
	dir := e.cfg.State.Dir
	opts := state.Options{
		FS:              e.opt.StateFS,
		CacheBytes:      e.cfg.State.CacheBytes,
		BlockCacheBytes: e.cfg.State.BlockCacheBytes,
		ColdCacheBytes:  e.cfg.State.ColdCacheBytes,
		CommitBytes:     e.cfg.Commit.MaxBytes,
		Logger:          e.opt.Logger.With().Str("component", "state").Logger(),
	}
	st, err := segment.OpenStore(dir, e.rs.Load, opts)
	if err == nil || !errors.Is(err, state.ErrCorrupt) {
		return st, err
	}
	if !e.changelogOn() {
		return nil, fmt.Errorf("%w; state.changelog is off, so segd cannot rebuild it: replay the input into an empty state directory (segd replay, docs/replay.md), or remove %s to start with empty state", err, dir)
	}
	e.log.Error().Err(err).Str("state_dir", dir).
		Msg("STATE STORE CORRUPT: wiping it; every partition this instance runs is restored from the changelog before it starts")
	if err := state.Wipe(opts.FS, dir); err != nil {
		return nil, err
	}
	return segment.OpenStore(dir, e.rs.Load, opts)
}

// pauseForSpace holds the task while the state disk is full: nothing is
// applied or committed, so no offset moves past the state, and the input
// not yet committed stays applied in the cache, to be committed once
// space returns. It reports false when ctx ended meanwhile: the task then
// stops without committing (it could not), and whoever runs the partition
// next re-reads the uncommitted input from Kafka.
func (t *task) pauseForSpace(ctx context.Context) bool {
	part := t.part
	if !part.DiskFull() {
		return true
	}
	start := time.Now()
	t.log.Error().Int("uncommitted_records", t.pending).
		Msg("disk full: partition paused; resumes when space returns")
	wait := 20 * time.Millisecond
	for part.DiskFull() {
		select {
		case <-ctx.Done():
			t.log.Warn().Int("uncommitted_records", t.pending).
				Msg("partition stopped while the disk is full: its uncommitted input is read again by its next run")
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
	t.log.Warn().Dur("paused", time.Since(start)).Msg("disk space is back: partition resumes")
	return true
}

// waitTasks waits for the tasks of runPartitions to return. A task can be
// stuck inside a commit that waits for disk space; if the tasks do not
// return within a few seconds while the disk is full, the store gives up
// waiting (the store fails; segd must restart once space is back).
func (e *Engine) waitTasks(wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	stuck := 0
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		if !e.st.DiskFull() {
			stuck = 0
			continue
		}
		if stuck++; stuck == 5 {
			e.log.Error().Msg("partitions cannot stop: a commit waits for disk space; giving up on it (restart segd once space is back)")
			e.st.AbandonDiskWait()
		}
	}
}
