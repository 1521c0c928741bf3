package rules

import (
	"fmt"
	"io"
	"strings"

	"github.com/segd/segd/schemas"
)

// WriteExplain writes the compiled plan: traits with their windows and
// buckets, segments with what they read, and which event types trigger
// which segments.
func WriteExplain(w io.Writer, rs *RuleSet) error {
	var b strings.Builder
	fmt.Fprintf(&b, "rules %s: version %d, hash %s\n\n", rs.file, rs.version, rs.hash[:12])
	fmt.Fprintf(&b, "traits (%d):\n", len(rs.traits))
	for _, t := range rs.traits {
		window := "lifetime"
		if t.Window > 0 {
			window = fmt.Sprintf("window %s in %d buckets of %s", formatDuration(t.Window), t.Window/t.Bucket, formatDuration(t.Bucket))
		}
		fmt.Fprintf(&b, "  %-20s %s\n  %-20s %s value, %s, updated by %s events\n", t.Name, t.Def, "", t.kind, window, t.Event)
	}
	fmt.Fprintf(&b, "\nsegments (%d):\n", len(rs.segments))
	for _, s := range rs.segments {
		fmt.Fprintf(&b, "  %s", s.ID)
		if s.Description != "" {
			fmt.Fprintf(&b, " - %s", s.Description)
		}
		fmt.Fprintf(&b, "\n    when      %s\n", s.When)
		fmt.Fprintf(&b, "    reads     %s\n", describeReads(rs, s))
		if s.TimeDependent {
			var why []string
			for _, ti := range s.wins {
				why = append(why, fmt.Sprintf("%s leaves its %s window at bucket boundaries", rs.traits[ti].Name, formatDuration(rs.traits[ti].Window)))
			}
			if len(s.sinces) > 0 {
				why = append(why, "since() thresholds")
			}
			fmt.Fprintf(&b, "    time      timers: %s\n", strings.Join(why, "; "))
		} else {
			b.WriteString("    time      changes only on events\n")
		}
		if s.RequiresConsent {
			b.WriteString("    consent   required\n")
		}
		if s.Topic != "" {
			fmt.Fprintf(&b, "    topic     %s\n", s.Topic)
		}
	}
	b.WriteString("\ntriggers (event type -> segments re-evaluated):\n")
	for t := schemas.EventPurchase; t <= schemas.EventProfile; t++ {
		var ids []string
		for _, i := range rs.segsFor[t] {
			ids = append(ids, rs.segments[i].ID)
		}
		if len(ids) == 0 {
			ids = []string{"(none)"}
		}
		fmt.Fprintf(&b, "  %-10s -> %s\n", t, strings.Join(ids, ", "))
	}
	for _, warn := range rs.warnings {
		fmt.Fprintf(&b, "\n%s", warn)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func describeReads(rs *RuleSet, s *Segment) string {
	var parts []string
	for _, ti := range s.Reads {
		parts = append(parts, rs.traits[ti].Name)
	}
	for _, a := range s.ReadsProfile {
		parts = append(parts, "profile."+a)
	}
	if len(parts) == 0 {
		return "(nothing)"
	}
	return strings.Join(parts, ", ")
}

// DescribeReads lists what a segment reads: trait names and profile.<attr>.
func (rs *RuleSet) DescribeReads(s *Segment) string { return describeReads(rs, s) }
