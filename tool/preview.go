package tool

import (
	"fmt"
	"io"
	"os"

	"github.com/segd/segd/rules"
	"github.com/segd/segd/segment"
	"github.com/segd/segd/state"
)

// PreviewOptions say what to preview against.
type PreviewOptions struct {
	// StateDir is the store of a stopped segd. Required.
	StateDir string
	// Candidate is the rules file to preview. Required.
	Candidate string
	// Current is the running rules file, to tell new traits exactly.
	// Default none: traits without state in the store count as new.
	Current string
	// ConsentAttribute is consent.attribute. Default consent_marketing.
	ConsentAttribute string
	// Sample is how many customer ids to keep per segment and direction.
	Sample int
}

// Preview evaluates a candidate rules file against the customers in a
// state directory (not in use by a running segd). It opens the store read
// only and changes no file; a directory without a segd store is refused
// (state.ErrNotStore). Each customer is evaluated at its partition's
// committed clock; traits the candidate adds start empty, as they would
// after a reload (PreviewSegment.NoHistory names them).
func Preview(stateDir, candidate string, sample int) ([]segment.PreviewSegment, error) {
	return PreviewWith(PreviewOptions{StateDir: stateDir, Candidate: candidate, Sample: sample})
}

// PreviewWith is Preview with every option.
func PreviewWith(opt PreviewOptions) ([]segment.PreviewSegment, error) {
	if opt.ConsentAttribute == "" {
		opt.ConsentAttribute = segment.DefaultConsentAttribute
	}
	if _, err := os.Stat(opt.StateDir); err != nil {
		return nil, fmt.Errorf("preview: state dir: %w", err)
	}
	rs, err := rules.CompileFile(opt.Candidate)
	if err != nil {
		return nil, err
	}
	var current *rules.RuleSet
	if opt.Current != "" {
		if current, err = rules.CompileFile(opt.Current); err != nil {
			return nil, fmt.Errorf("running rules: %w", err)
		}
	}
	st, err := segment.OpenStore(opt.StateDir, func() *rules.RuleSet { return rs }, state.Options{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("preview: %w", err)
	}
	defer st.Close()
	return segment.Preview(st, rs, current, opt.ConsentAttribute, opt.Sample, nil)
}

// WritePreview prints a preview as a table.
func WritePreview(w io.Writer, segs []segment.PreviewSegment) {
	fmt.Fprintf(w, "%-24s %9s %9s %9s %9s  %s\n", "segment", "size now", "size new", "enter", "exit", "sample")
	for _, s := range segs {
		sample := append(append([]string{}, s.SampleEnter...), s.SampleExit...)
		fmt.Fprintf(w, "%-24s %9d %9d %9d %9d  %v\n", s.ID, s.SizeNow, s.SizeNew, s.WouldEnter, s.WouldExit, sample)
	}
}
