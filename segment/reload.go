package segment

import (
	"fmt"

	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/state"
)

// reload switches the processor to rs and re-evaluates every customer of
// the partition at its clock, so that no member is stale: a customer who no
// longer qualifies EXITs, one who now qualifies ENTERs, members of removed
// segments EXIT, all with cause RULE_CHANGE and the new rules version.
// Traits whose definitions did not change keep their state (rules keys
// trait state by definition), so the re-evaluation is exact for them; new
// traits start empty. The caller holds the task (it must not run) and
// commits after. It returns the number of changes emitted.
func (p *Processor) Reload(rs *rules.RuleSet, commitEvery int) (int, error) {
	if err := p.Commit(); err != nil {
		return 0, err
	}
	old, oldCurrent := p.rs, p.rulesCurrent
	p.setRules(rs)
	// Until every customer is re-evaluated, commits must not record rs as
	// the state's rules: a crash half way reconciles again at restart.
	p.rulesCurrent = false
	before := p.stats.Enters + p.stats.Exits
	n := 0
	err := p.part.Range(func(id string, rec state.Record) error {
		c, ok := rec.(*Customer)
		if !ok {
			return fmt.Errorf("customer %s: record is %T", id, rec)
		}
		if c.rs != rs {
			// Decoded under the old rules (cached): re-key it by going
			// through its stored form.
			nc, err := DecodeCustomer(rs, ruleSetList{c.rs}, c.AppendBinary(nil))
			if err != nil {
				return fmt.Errorf("customer %s: %w", id, err)
			}
			c = nc
		}
		c.traits.UseScratch(&p.scratch)
		for i := range c.orphans {
			o := &c.orphans[i]
			if o.m.in() {
				p.emitOrphanExit(c, id, o, p.clock, schemas.CauseRuleChange, "")
			}
		}
		p.evaluate(c, id, p.allSegs, rules.TouchedAll, p.clock, schemas.CauseRuleChange, "")
		p.part.MarkDirty(id, c)
		n++
		if n%commitEvery == 0 {
			return p.Commit()
		}
		return nil
	})
	if err != nil {
		p.setRules(old)
		p.rulesCurrent = oldCurrent
		return 0, fmt.Errorf("reload rules: %w", err)
	}
	p.rulesCurrent = true // every customer is evaluated with rs now
	if err := p.Commit(); err != nil {
		return 0, err
	}
	return int(p.stats.Enters + p.stats.Exits - before), nil
}
