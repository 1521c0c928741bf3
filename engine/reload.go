package engine

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
)

// reload switches the processor to rs and re-evaluates every customer of
// the partition at its clock, so that no member is stale: a customer who no
// longer qualifies EXITs, one who now qualifies ENTERs, members of removed
// segments EXIT, all with cause RULE_CHANGE and the new rules version.
// Traits whose definitions did not change keep their state (rules keys
// trait state by definition), so the re-evaluation is exact for them; new
// traits start empty. The caller holds the task (it must not run) and
// commits after. It returns the number of changes emitted.
func (p *processor) reload(rs *rules.RuleSet, commitEvery int) (int, error) {
	if err := p.commit(); err != nil {
		return 0, err
	}
	old, oldCurrent := p.rs, p.rulesCurrent
	p.setRules(rs)
	// Until every customer is re-evaluated, commits must not record rs as
	// the state's rules: a crash half way reconciles again at restart.
	p.rulesCurrent = false
	before := p.stats.enters + p.stats.exits
	n := 0
	err := p.part.Range(func(id string, rec stateRecord) error {
		c, ok := rec.(*customer)
		if !ok {
			return fmt.Errorf("customer %s: record is %T", id, rec)
		}
		if !sameSegments(c.segments, rs.Segments()) {
			// Decoded under the old rules (cached): re-key it by going
			// through its stored form.
			nc, err := decodeCustomer(rs, c.AppendBinary(nil))
			if err != nil {
				return fmt.Errorf("customer %s: %w", id, err)
			}
			c = nc
		}
		for i := range c.orphans {
			o := &c.orphans[i]
			if o.m.in() {
				p.emitOrphanExit(c, id, o, p.clock, schemas.CauseRuleChange, "")
			}
		}
		if err := p.evaluate(c, id, p.allSegs, p.clock, schemas.CauseRuleChange, ""); err != nil {
			return err
		}
		p.part.MarkDirty(id, c)
		n++
		if n%commitEvery == 0 {
			return p.commit()
		}
		return nil
	})
	if err != nil {
		p.setRules(old)
		p.rulesCurrent = oldCurrent
		return 0, fmt.Errorf("reload rules: %w", err)
	}
	p.rulesCurrent = true // every customer is evaluated with rs now
	if err := p.commit(); err != nil {
		return 0, err
	}
	return int(p.stats.enters + p.stats.exits - before), nil
}

func sameSegments(a, b []*rules.Segment) bool {
	return len(a) == len(b) && (len(a) == 0 || a[0] == b[0])
}

// emitOrphanExit EXITs a customer from a segment the rules no longer have
// (a reload, or an erasure or merge of a customer still recorded in one),
// removing its membership index entry and count.
func (p *processor) emitOrphanExit(c *customer, id string, o *orphanMember, at int64, cause schemas.CauseKind, causeEvent string) {
	o.m.seq++
	o.m.since = at
	ch := &p.change
	*ch = schemas.SegmentChange{
		ID: changeID(id, o.segment, o.m.seq, at, c.born), CustomerID: id, SegmentID: o.segment, Kind: schemas.Exit,
		Seq: o.m.seq, Time: at, Cause: cause, CauseEventID: causeEvent, RulesVersion: p.rs.Version(), RulesHash: p.rs.Hash(),
		Traits: ch.Traits[:0],
	}
	p.stats.exits++
	var err error
	p.buf, err = p.opt.encodeChange(p.buf[:0], ch)
	if err != nil {
		return
	}
	p.env = appendEnvelope(p.env[:0], p.opt.changesTopic, id, nil, p.buf)
	p.part.AppendOutbox(p.env)
	p.part.SetMember(o.segment, id, false)
}

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
	sort.Slice(parts, func(i, j int) bool { return parts[i].task.id < parts[j].task.id })
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
		n, err := rp.task.proc.reload(rs, 10000)
		if err != nil {
			errs = append(errs, fmt.Errorf("partition %d: %w", rp.task.id, err))
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
