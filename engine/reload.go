package engine

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/segd/segd/rules"
)

// ReloadResult describes a rule reload.
type ReloadResult struct {
	Version int64
	Hash    string
	Changes int // RULE_CHANGE transitions emitted
	At      time.Time
}

// Reload compiles the rules file again and switches every running
// partition to it: each task commits and pauses, its customers are
// re-evaluated (see processor.reload) and it resumes. A file with errors
// changes nothing and the error (with file:line:col) is returned and kept
// for GET /v1/rules. Safe for concurrent use; reloads are serialized.
func (e *Engine) Reload(ctx context.Context) (*ReloadResult, error) {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	rs, err := rules.CompileFile(e.cfg.Rules.File)
	if err != nil {
		e.setReloadErr(err)
		return nil, err
	}
	e.mu.Lock()
	layout := e.layout
	e.mu.Unlock()
	if layout.partitions > 0 {
		// New segment topics must exist before a change is routed there.
		if err := e.ensureOutputTopics(ctx, rs, layout); err != nil {
			err = fmt.Errorf("reload: %w", err)
			e.setReloadErr(err)
			return nil, err
		}
	}
	e.mu.Lock()
	var parts []*runningPartition
	for _, rp := range e.parts {
		parts = append(parts, rp)
	}
	e.mu.Unlock()
	sort.Slice(parts, func(i, j int) bool { return parts[i].task.partition < parts[j].task.partition })
	// Pause every task first: the store's decoder follows e.rs, so all
	// partitions switch together.
	var paused []*runningPartition
	var resumes []chan struct{}
	defer func() {
		for _, r := range resumes {
			close(r)
		}
	}()
	for _, rp := range parts {
		req := pauseReq{paused: make(chan struct{}), resume: make(chan struct{})}
		select {
		case rp.task.control <- req:
		case <-rp.task.done:
			continue
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		resumes = append(resumes, req.resume)
		select {
		case <-req.paused:
			paused = append(paused, rp)
		case <-rp.task.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	e.rs.Store(rs)
	res := &ReloadResult{Version: rs.Version(), Hash: rs.Hash(), At: time.Now()}
	var errs []error
	for _, rp := range paused {
		n, err := rp.task.proc.Reload(rs, 10000)
		if err != nil {
			errs = append(errs, fmt.Errorf("partition %d: %w", rp.task.partition, err))
			continue
		}
		res.Changes += n
		rp.pub.poke()
	}
	if len(errs) > 0 {
		err := fmt.Errorf("reload: %v", errs)
		e.setReloadErr(err)
		return res, err
	}
	e.setReloadErr(nil)
	e.log.Info().Int64("rules_version", res.Version).Str("rules_hash", res.Hash).Int("changes", res.Changes).Int("partitions", len(paused)).Msg("rules reloaded")
	return res, nil
}

func (e *Engine) setReloadErr(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastReloadErr = err
}

// watchRules reloads the rules when the file's size or modification time
// changes, until ctx is done.
func (e *Engine) watchRules(ctx context.Context) {
	if e.cfg.Rules.WatchInterval < 0 {
		return
	}
	stamp := func() string {
		fi, err := os.Stat(e.cfg.Rules.File)
		if err != nil {
			return ""
		}
		return fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	}
	last := stamp()
	t := time.NewTicker(e.cfg.Rules.WatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := stamp()
		if now == last || now == "" {
			continue
		}
		last = now
		if _, err := e.Reload(ctx); err != nil && ctx.Err() == nil {
			e.log.Error().Err(err).Str("file", e.cfg.Rules.File).Msg("rules file changed but does not load; the running rules stay")
		}
	}
}
