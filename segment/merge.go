package segment

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
)

// Identity merge. A profile event with alias_of, keyed by the aliased id
// (say an anonymous visitor), reaches the partition that owns that id.
// There the customer EXITs every segment (cause MERGE) and is deleted, and
// its trait state travels in a merge record to segd's merges topic, keyed
// by the target id, so the partition that owns the target folds it in
// (rules.Merge), re-evaluates every segment (cause MERGE) and reschedules
// the target's timer. The record goes through the outbox, so it is sent
// at least once and exactly when the alias is committed; the target
// applies a merge id once (the recent-event-id set).

// mergeRecordVersion is the first byte of a merge record.
const mergeRecordVersion = 1

// ErrBadMerge marks a merge record that cannot be used (dead-lettered).
var ErrBadMerge = errors.New("bad merge record")

// AppendMergeRecord encodes: version, merge id, source id, time (varint),
// then the source's trait state (rules encoding) to the end.
func AppendMergeRecord(dst []byte, id, from string, at int64, traits []byte) []byte {
	dst = append(dst, mergeRecordVersion)
	dst = binary.AppendUvarint(dst, uint64(len(id)))
	dst = append(dst, id...)
	dst = binary.AppendUvarint(dst, uint64(len(from)))
	dst = append(dst, from...)
	dst = binary.AppendVarint(dst, at)
	return append(dst, traits...)
}

func DecodeMergeRecord(b []byte) (id, from string, at int64, traits []byte, err error) {
	if len(b) == 0 || b[0] != mergeRecordVersion {
		return "", "", 0, nil, fmt.Errorf("%w: version", ErrBadMerge)
	}
	b = b[1:]
	str := func() (string, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return "", false
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, true
	}
	var ok bool
	if id, ok = str(); !ok || id == "" {
		return "", "", 0, nil, fmt.Errorf("%w: merge id", ErrBadMerge)
	}
	if from, ok = str(); !ok {
		return "", "", 0, nil, fmt.Errorf("%w: source id", ErrBadMerge)
	}
	at, k := binary.Varint(b)
	if k <= 0 {
		return "", "", 0, nil, fmt.Errorf("%w: time", ErrBadMerge)
	}
	return id, from, at, b[k:], nil
}

// alias handles a profile event with alias_of: the event's customer is
// folded into alias_of.
func (p *Processor) alias(e *schemas.Event, now int64) error {
	from, to := e.CustomerID, e.AliasOf
	if from == to {
		return nil // nothing to merge; counted as an applied event
	}
	c, err := p.load(from, e.EventID)
	if err != nil {
		return err
	}
	// Attributes on the alias event travel with the state.
	p.rs.Apply(&c.traits, e, now)
	id := e.EventID
	if id == "" {
		id = fmt.Sprintf("%s>%s@%d", from, to, e.Time)
	}
	rec := AppendMergeRecord(nil, id, from, now, c.traits.AppendBinary(nil))
	for j := 0; j < len(c.members); j++ {
		if sm := c.members[j]; sm.m.in() {
			p.emit(c, from, int(sm.seg), &c.members[j].m, false, now, schemas.CauseMerge, id)
		}
	}
	p.exitOrphans(c, from, now, schemas.CauseMerge, id)
	if c.timerAt != 0 {
		p.part.MoveTimer(from, c.timerAt, 0)
	}
	p.part.Delete(from)
	p.stats.Merged++
	if p.opt.DeliverMerge != nil {
		return p.opt.DeliverMerge(to, rec)
	}
	p.env = AppendEnvelope(p.env[:0], p.opt.MergesTopic, to, nil, rec)
	p.part.AppendOutbox(p.env)
	return nil
}

// merge folds a merge record into target. A bad record returns an error
// wrapping ErrBadMerge (the caller dead-letters it); other errors are
// state failures.
func (p *Processor) Merge(target string, value []byte) error {
	if target == "" {
		return fmt.Errorf("%w: no target (key)", ErrBadMerge)
	}
	id, _, at, traits, err := DecodeMergeRecord(value)
	if err != nil {
		return err
	}
	if p.maxTime > 0 && at > p.maxTime {
		// The source partition's clock is ahead of the wall clock: taking
		// it would move this partition's watermark too.
		return fmt.Errorf("%w: merge time %d is %d ms past the allowed bound (input.max_future_skew)", ErrBadMerge, at, at-p.maxTime)
	}
	if p.mergeSrc == nil {
		p.mergeSrc = p.rs.NewState()
		p.mergeSrc.UseScratch(&p.scratch)
	}
	if err := p.rs.DecodeState(traits, p.mergeSrc); err != nil {
		return fmt.Errorf("%w: trait state: %v", ErrBadMerge, err)
	}
	if err := p.Advance(at); err != nil {
		return err
	}
	now := p.clock
	c, err := p.load(target, "merge\x00"+id)
	if err != nil {
		return err
	}
	h := eventIDHash("merge\x00" + id)
	if c.seen(h) {
		p.stats.Duplicates++
		return nil
	}
	c.remember(h, now)
	if p.opt.MaxAttributes > 0 {
		// The merged customer keeps within the attribute bounds: the
		// target's attributes win, then the source's in order while
		// they fit.
		if n := p.mergeSrc.FitAttrsInto(&c.traits, p.opt.MaxAttributes, p.opt.MaxAttributeBytes); n > 0 {
			p.opt.Log.Warn().Int("dropped", n).Str("merge_id", id).Msg("merge dropped attributes beyond input.max_attributes or input.max_attribute_bytes")
		}
	}
	p.rs.Merge(&c.traits, p.mergeSrc, now)
	p.evaluate(c, target, p.allSegs, rules.TouchedAll, now, schemas.CauseMerge, id)
	p.part.MarkDirty(target, c)
	p.stats.MergedInto++
	return nil
}
