package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/segd/segd/engine"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// runReplay implements `segd replay`: rebuild state from event files.
func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("segd replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rulesFile := fs.String("rules", "", "rules file (required)")
	stateDir := fs.String("state-dir", "", "fresh state directory to build (required)")
	var inputs stringList
	fs.Var(&inputs, "input", "JSON-lines event file (repeatable; read in order)")
	output := fs.String("output", "", "write SegmentChanges as JSON lines to this file")
	retailCSV := fs.String("retail", "", "also read the UCI Online Retail CSV (.csv or .csv.gz) as purchase and profile events")
	dryRun := fs.Bool("dry-run", false, "write no changes; print per-segment counts and sizes")
	partitions := fs.Int("partitions", 1, "split customers over this many partitions (murmur2, like Kafka)")
	logFormat := fs.String("log-format", "console", "json or console")
	configPath := fs.String("config", "", "with --from-topics: the config `segd run` will use (its state.dir must be empty)")
	fromTopics := fs.Bool("from-topics", false, "replay the config's input topics from their earliest offsets to their current ends; `segd run` with the same config then continues where the replay stopped")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usage := "usage: segd replay --rules FILE --state-dir DIR --input FILE... (--output FILE | --dry-run)\n       segd replay --config FILE --from-topics (--output FILE | --dry-run)"
	if *fromTopics {
		if *configPath == "" || (*output == "" && !*dryRun) {
			fmt.Fprintln(stderr, usage)
			return 2
		}
		return replayTopics(ctx, *configPath, *output, *logFormat, stdout, stderr)
	}
	if *rulesFile == "" || *stateDir == "" || (len(inputs) == 0 && *retailCSV == "") || (*output == "" && !*dryRun) {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	log, err := newLogger(stderr, *logFormat, "info")
	if err != nil {
		fmt.Fprintln(stderr, "segd replay:", err)
		return 2
	}
	opt := engine.ReplayOptions{RulesFile: *rulesFile, StateDir: *stateDir, Inputs: inputs, Retail: *retailCSV, Partitions: *partitions, Log: log}
	var bw *bufio.Writer
	if *output != "" && !*dryRun {
		f, err := os.Create(*output)
		if err != nil {
			fmt.Fprintln(stderr, "segd replay:", err)
			return 1
		}
		defer f.Close()
		bw = bufio.NewWriterSize(f, 1<<20)
		opt.Output = bw
	}
	sum, err := engine.Replay(ctx, opt)
	if err != nil {
		fmt.Fprintln(stderr, "segd replay:", err)
		return 1
	}
	if bw != nil {
		if err := bw.Flush(); err != nil {
			fmt.Fprintln(stderr, "segd replay:", err)
			return 1
		}
		fmt.Fprintf(stdout, "%d changes written to %s\n", sum.ChangesWritten, *output)
	}
	sum.WriteSummary(stdout)
	return 0
}

func replayTopics(ctx context.Context, configPath, output, logFormat string, stdout, stderr io.Writer) int {
	cfg, err := engine.LoadConfig(configPath, os.Environ())
	if err != nil {
		fmt.Fprintln(stderr, "segd replay:", err)
		return 1
	}
	log, err := newLogger(stderr, logFormat, "info")
	if err != nil {
		fmt.Fprintln(stderr, "segd replay:", err)
		return 2
	}
	var out io.Writer
	var bw *bufio.Writer
	if output != "" {
		f, err := os.Create(output)
		if err != nil {
			fmt.Fprintln(stderr, "segd replay:", err)
			return 1
		}
		defer f.Close()
		bw = bufio.NewWriterSize(f, 1<<20)
		out = bw
	}
	sum, err := engine.ReplayTopics(ctx, cfg, out, log)
	if err != nil {
		fmt.Fprintln(stderr, "segd replay:", err)
		return 1
	}
	if bw != nil {
		if err := bw.Flush(); err != nil {
			fmt.Fprintln(stderr, "segd replay:", err)
			return 1
		}
	}
	sum.WriteSummary(stdout)
	fmt.Fprintf(stdout, "state in %s; start `segd run --config %s` to continue live from here\n", cfg.State.Dir, configPath)
	return 0
}
