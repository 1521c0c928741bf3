package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/segd/segd/segment"
	"github.com/segd/segd/tool"

	"github.com/segd/segd/engine"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/state"
)

// rulesUsage is the synopsis of `segd rules`.
const rulesUsage = "usage: segd rules validate FILE...\n       segd rules explain FILE\n       segd rules preview FILE (--state-dir DIR [--rules RUNNING] | --config FILE) [--sample N]"

// runRules implements `segd rules validate FILE...`, `segd rules explain
// FILE` and `segd rules preview`.
func runRules(args []string, stdout, stderr io.Writer) int {
	if len(args) >= 1 && args[0] == "preview" {
		return runPreview(args[1:], stdout, stderr)
	}
	if len(args) < 1 || (args[0] != "validate" && args[0] != "explain") {
		fmt.Fprintln(stderr, rulesUsage)
		return 2
	}
	fs := flag.NewFlagSet("segd rules "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		if args[0] == "explain" {
			fmt.Fprintln(fs.Output(), "usage: segd rules explain FILE\nPrints the compiled plan of a rules file: what each segment reads and what triggers its evaluation.")
		} else {
			fmt.Fprintln(fs.Output(), "usage: segd rules validate FILE...\nCompiles rules files; prints file:line:col errors and exits 1 on any.")
		}
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	args = append(args[:1], fs.Args()...)
	if len(args) < 2 || (args[0] == "explain" && len(args) != 2) {
		fs.Usage()
		return 2
	}
	if args[0] == "explain" {
		rs, err := rules.CompileFile(args[1])
		if err != nil {
			printRulesError(stderr, err)
			return 1
		}
		if err := rules.WriteExplain(stdout, rs); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	code := 0
	for _, path := range args[1:] {
		rs, err := rules.CompileFile(path)
		if err != nil {
			printRulesError(stderr, err)
			code = 1
			continue
		}
		fmt.Fprintf(stdout, "%s: ok: version %d, %d traits, %d segments, hash %s\n", path, rs.Version(), len(rs.Traits()), len(rs.Segments()), rs.Hash()[:12])
		for _, s := range rs.Segments() {
			fmt.Fprintf(stdout, "  %-24s reads %s\n", s.ID, rs.DescribeReads(s))
		}
		for _, w := range rs.Warnings() {
			fmt.Fprintln(stdout, w)
		}
	}
	return code
}

func printRulesError(w io.Writer, err error) {
	var errs rules.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(w, e)
		}
		return
	}
	fmt.Fprintln(w, err)
}

// runPreview implements `segd rules preview NEW.yaml --state-dir DIR`.
func runPreview(args []string, stdout, stderr io.Writer) int {
	const use = "usage: segd rules preview FILE (--state-dir DIR [--rules RUNNING] | --config FILE) [--sample N]"
	fs := flag.NewFlagSet("segd rules preview", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), use)
		fmt.Fprintln(fs.Output(), "Evaluates the rules FILE against a stopped segd's state, read only, and prints what would change.")
		fs.PrintDefaults()
	}
	stateDir := fs.String("state-dir", "", "the state `DIR` of a stopped segd (default: state.dir of --config)")
	current := fs.String("rules", "", "the running rules `FILE`, to name exactly the traits the new file adds (default: rules.file of --config)")
	configPath := fs.String("config", "", "the `FILE` segd run uses: state.dir, rules.file and consent.attribute come from it")
	sample := fs.Int("sample", 5, "customer ids to show per segment")
	// Accept the file before or after the flags.
	var file string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		file, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if file == "" && fs.NArg() == 1 {
		file = fs.Arg(0)
	} else if fs.NArg() > 0 {
		fmt.Fprintln(stderr, use)
		return 2
	}
	opt := tool.PreviewOptions{Candidate: file, StateDir: *stateDir, Current: *current, Sample: *sample}
	if *configPath != "" {
		cfg, err := engine.LoadConfig(*configPath, os.Environ())
		if err != nil {
			fmt.Fprintln(stderr, "segd rules preview:", err)
			return 1
		}
		if opt.StateDir == "" {
			opt.StateDir = cfg.State.Dir
		}
		if opt.Current == "" {
			opt.Current = cfg.Rules.File
		}
		opt.ConsentAttribute = cfg.Consent.Attribute
	}
	if file == "" || opt.StateDir == "" {
		fmt.Fprintln(stderr, use)
		return 2
	}
	if err := positiveInt("--sample", *sample); err != nil {
		fmt.Fprintln(stderr, "segd rules preview:", err)
		return 2
	}
	res, err := tool.PreviewWith(opt)
	if errors.Is(err, state.ErrNotStore) {
		fmt.Fprintf(stderr, "segd rules preview: %s is not a segd state directory: give the state.dir of a stopped segd run, or a replay's --state-dir (%v)\n", opt.StateDir, err)
		return 1
	}
	if err != nil {
		printRulesError(stderr, err)
		return 1
	}
	tool.WritePreview(stdout, res)
	if note := segment.NoHistoryNote(res, file, opt.Current); note != "" {
		fmt.Fprintln(stdout)
		fmt.Fprintln(stdout, note)
	}
	return 0
}
