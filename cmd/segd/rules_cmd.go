package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/segd/segd/engine"

	"github.com/segd/segd/rules"
)

// runRules implements `segd rules validate FILE...` and `segd rules explain FILE`.
func runRules(args []string, stdout, stderr io.Writer) int {
	if len(args) >= 1 && args[0] == "preview" {
		return runPreview(args[1:], stdout, stderr)
	}
	if len(args) < 2 || (args[0] != "validate" && args[0] != "explain") || (args[0] == "explain" && len(args) != 2) {
		fmt.Fprintln(stderr, "usage: segd rules validate FILE...\n       segd rules explain FILE\n       segd rules preview FILE --state-dir DIR")
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
	fs := flag.NewFlagSet("segd rules preview", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", "", "state directory of a stopped segd (required)")
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
	}
	if file == "" || *stateDir == "" {
		fmt.Fprintln(stderr, "usage: segd rules preview FILE --state-dir DIR [--sample N]")
		return 2
	}
	res, err := engine.Preview(*stateDir, file, *sample)
	if err != nil {
		printRulesError(stderr, err)
		return 1
	}
	engine.WritePreview(stdout, res)
	return 0
}
