package segment

import (
	"fmt"
	"sort"
	"strings"

	"github.com/segd/segd/rules"
	"github.com/segd/segd/state"
)

// PreviewSegment is what a candidate rule set would do to one segment.
type PreviewSegment struct {
	ID          string
	SizeNow     int64 // members under the running rules (0 for a new segment)
	SizeNew     int64 // members under the candidate rules
	WouldEnter  int64
	WouldExit   int64
	SampleEnter []string
	SampleExit  []string
	// NoHistory lists the traits the segment reads that start without
	// history: with the running rules known, the traits whose definition
	// they lack; otherwise the traits no customer of the store holds state
	// for (which also catches traits no event fed yet). A rule change
	// backfills nothing, so SizeNew is what the change would do, not what
	// a replay of the history with the candidate would give.
	NoHistory []string
}

// Preview evaluates candidate rules rs against every committed
// customer of st, each at its partition's committed clock. It reads a
// snapshot and writes nothing, so it runs beside a live engine. current,
// the running rules, may be nil (see PreviewSegment.NoHistory). include,
// if set, keeps only the partitions it returns true for: a live engine's
// store also holds stale copies of partitions another instance runs now
// (where an erased customer may still be).
func Preview(st *state.Store, rs *rules.RuleSet, current *rules.RuleSet, consentAttr string, sample int, include func(int32) bool) ([]PreviewSegment, error) {
	all, err := st.PartitionsWithCustomers()
	if err != nil {
		return nil, err
	}
	var parts []int32
	for _, p := range all {
		if include == nil || include(p) {
			parts = append(parts, p)
		}
	}
	out := map[string]*PreviewSegment{}
	get := func(id string) *PreviewSegment {
		if out[id] == nil {
			out[id] = &PreviewSegment{ID: id}
		}
		return out[id]
	}
	for _, s := range rs.Segments() {
		get(s.ID)
	}
	history := make([]bool, len(rs.Traits()))
	var sc rules.Scratch // one for every record: they are evaluated one at a time
	lists := NewSegmentLists(st)
	for _, p := range parts {
		offs, err := st.CommittedOffsets(p)
		if err != nil {
			return nil, err
		}
		clock := offs[ClockOffsetKey]
		err = st.RangeCommitted(p, func(id string, data []byte) error {
			c, err := DecodeCustomer(rs, lists, data)
			if err != nil {
				return fmt.Errorf("customer %s: %w", id, err)
			}
			c.traits.UseScratch(&sc)
			for _, o := range c.orphans {
				if o.m.in() {
					ps := get(o.segment)
					ps.SizeNow++
					ps.WouldExit++
					if len(ps.SampleExit) < sample {
						ps.SampleExit = append(ps.SampleExit, id)
					}
				}
			}
			for i := range history {
				history[i] = history[i] || c.traits.HasHistory(i)
			}
			consent := consentGiven(&c.traits, consentAttr)
			for i, s := range rs.Segments() {
				ps := get(s.ID)
				was := c.member(i).in()
				now := rs.Eval(i, &c.traits, clock) && (consent || !s.RequiresConsent)
				if was {
					ps.SizeNow++
				}
				if now {
					ps.SizeNew++
				}
				switch {
				case now && !was:
					ps.WouldEnter++
					if len(ps.SampleEnter) < sample {
						ps.SampleEnter = append(ps.SampleEnter, id)
					}
				case was && !now:
					ps.WouldExit++
					if len(ps.SampleExit) < sample {
						ps.SampleExit = append(ps.SampleExit, id)
					}
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if current != nil {
		defs := map[string]bool{}
		for _, t := range current.Traits() {
			defs[t.Def] = true
		}
		for i, t := range rs.Traits() {
			history[i] = defs[t.Def]
		}
	}
	for _, s := range rs.Segments() {
		ps := get(s.ID)
		for _, ti := range s.Reads {
			if !history[ti] {
				ps.NoHistory = append(ps.NoHistory, rs.Traits()[ti].Name)
			}
		}
	}
	res := make([]PreviewSegment, 0, len(out))
	for _, ps := range out {
		res = append(res, *ps)
	}
	sort.Slice(res, func(i, j int) bool { return res[i].ID < res[j].ID })
	return res, nil
}

// NoHistoryNote explains, when some segment of a preview reads traits
// without history, that those numbers are not a backfill's and names the
// command that gives them; "" when there is none. candidate is the rules
// file as the user named it; current the running rules file the preview
// compared with, "" if none.
func NoHistoryNote(segs []PreviewSegment, candidate, current string) string {
	var traits, segments []string
	seen := map[string]bool{}
	for _, s := range segs {
		if len(s.NoHistory) == 0 {
			continue
		}
		segments = append(segments, s.ID)
		for _, t := range s.NoHistory {
			if !seen[t] {
				seen[t] = true
				traits = append(traits, t)
			}
		}
	}
	if len(traits) == 0 {
		return ""
	}
	sort.Strings(traits)
	var what string
	if current != "" {
		what = fmt.Sprintf("new trait(s) %s (not in the running rules %s)", strings.Join(traits, ", "), current)
	} else {
		what = fmt.Sprintf("trait(s) %s, which no customer in this store holds state for (new traits; traits no event fed yet show here too: pass the running rules to tell them apart)", strings.Join(traits, ", "))
	}
	return fmt.Sprintf("note: %s start without history: a rule change backfills nothing, "+
		"so the numbers of %s are what the change would do now, not what a backfill would give. "+
		"For the real numbers replay the history with the new rules into a fresh directory: "+
		"segd replay --rules %s --state-dir NEW_DIR --input EVENTS.jsonl --dry-run "+
		"(or segd replay --config CONFIG --from-topics --dry-run, the config with rules.file %s and an empty state.dir; docs/replay.md)",
		what, strings.Join(segments, ", "), candidate, candidate)
}
