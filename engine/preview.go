package engine

import (
	"fmt"
	"io"
	"os"
	"sort"

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
}

// Preview evaluates a candidate rules file against the customers in a
// state directory (not in use by a running segd) and changes nothing. Each
// customer is evaluated at its partition's committed clock; traits the
// candidate adds start empty, as they would after a reload.
func Preview(stateDir, candidate string, sample int) ([]PreviewSegment, error) {
	if _, err := os.Stat(stateDir); err != nil {
		return nil, fmt.Errorf("preview: state dir: %w", err)
	}
	rs, err := rules.CompileFile(candidate)
	if err != nil {
		return nil, err
	}
	st, err := state.Open(stateDir, state.Options{Decode: func(_ string, data []byte) (state.Record, error) {
		return decodeCustomer(rs, data)
	}})
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", stateDir, err)
	}
	defer st.Close()
	return previewStore(st, rs, "consent_marketing", sample)
}

// previewStore evaluates candidate rules rs against every committed
// customer of st, each at its partition's committed clock. It reads a
// snapshot and writes nothing, so it runs beside a live engine.
func previewStore(st *state.Store, rs *rules.RuleSet, consentAttr string, sample int) ([]PreviewSegment, error) {
	parts, err := st.PartitionsWithCustomers()
	if err != nil {
		return nil, err
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
	consentOf := &processor{opt: processorOptions{consentAttr: consentAttr}}
	for _, pn := range parts {
		offs, err := st.CommittedOffsets(pn)
		if err != nil {
			return nil, err
		}
		clock := offs[clockOffsetKey]
		err = st.RangeCommitted(pn, func(id string, data []byte) error {
			c, err := decodeCustomer(rs, data)
			if err != nil {
				return fmt.Errorf("customer %s: %w", id, err)
			}
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
			consent := consentOf.consent(c)
			for i, s := range rs.Segments() {
				ps := get(s.ID)
				was := c.members[i].in()
				now := rs.Eval(i, c.traits, clock) && (consent || !s.RequiresConsent)
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
	res := make([]PreviewSegment, 0, len(out))
	for _, ps := range out {
		res = append(res, *ps)
	}
	sort.Slice(res, func(i, j int) bool { return res[i].ID < res[j].ID })
	return res, nil
}

// WritePreview prints a preview as a table.
func WritePreview(w io.Writer, segs []PreviewSegment) {
	fmt.Fprintf(w, "%-24s %9s %9s %9s %9s  %s\n", "segment", "size now", "size new", "enter", "exit", "sample")
	for _, s := range segs {
		sample := append(append([]string{}, s.SampleEnter...), s.SampleExit...)
		fmt.Fprintf(w, "%-24s %9d %9d %9d %9d  %v\n", s.ID, s.SizeNow, s.SizeNew, s.WouldEnter, s.WouldExit, sample)
	}
}
