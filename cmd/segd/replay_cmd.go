package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/segd/segd/segment"

	"github.com/segd/segd/tool"

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
	partitions := fs.Int("partitions", tool.DefaultReplayPartitions, "split customers over this many partitions (murmur2, like Kafka); the output depends on it, never on the machine")
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "goroutines applying events, each owning whole partitions (default: every core); the output never depends on it")
	logFormat := fs.String("log-format", "console", "json or console")
	configPath := fs.String("config", "", "with --from-topics: the config `FILE` segd run will use (its state.dir must be empty)")
	fromTopics := fs.Bool("from-topics", false, "replay the config's input topics from their earliest offsets to their current ends; segd run with the same config then continues where the replay stopped")
	consentAttr := fs.String("consent-attribute", segment.DefaultConsentAttribute, "the profile attribute that, when false, keeps a customer out of requires_consent segments (consent.attribute of segd run's config)")
	strict := fs.Bool("strict", false, "stop at the first bad input line (file:line) instead of skipping it")
	maxLineBytes := fs.Int("max-line-bytes", tool.DefaultReplayMaxLineBytes, "skip input lines longer than this (too_large)")
	maxFutureSkew := fs.Duration("max-future-skew", time.Hour, "skip lines stamped later than the wall clock plus this (future_timestamp); input.max_future_skew with --from-topics")
	maxJump := fs.Duration("max-jump", tool.DefaultReplayMaxJump*time.Millisecond, "skip lines this far ahead of their neighbours in the input (out_of_order_future)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := firstError(intBetween("--partitions", *partitions, 1, maxPartitions), intBetween("--workers", *workers, 1, 1024), intBetween("--max-line-bytes", *maxLineBytes, 1024, 1<<30),
		nonNegativeDuration("--max-future-skew", *maxFutureSkew), positiveDuration("--max-jump", *maxJump)); err != nil {
		fmt.Fprintln(stderr, "segd replay:", err)
		return 2
	}
	usage := "usage: segd replay --rules FILE --state-dir DIR --input FILE... (--output FILE | --dry-run)\n       segd replay --config FILE --from-topics (--output FILE | --dry-run)"
	if *fromTopics {
		if *configPath == "" || (*output == "" && !*dryRun) {
			fmt.Fprintln(stderr, usage)
			return 2
		}
		return replayTopics(ctx, *configPath, *output, *dryRun, *logFormat, stdout, stderr)
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
	opt := tool.ReplayOptions{RulesFile: *rulesFile, StateDir: *stateDir, Inputs: inputs, Retail: *retailCSV, Partitions: *partitions, Workers: *workers, Log: log,
		ConsentAttribute: *consentAttr, Strict: *strict, MaxLineBytes: *maxLineBytes, MaxFutureSkew: *maxFutureSkew, MaxJump: *maxJump}
	out, err := openReplayOutput(*output, *dryRun)
	if err != nil {
		fmt.Fprintln(stderr, "segd replay:", err)
		return 1
	}
	opt.Output = out.writer()
	sum, err := tool.Replay(ctx, opt)
	if err == nil {
		err = out.finish()
	}
	if err != nil {
		out.abort()
		fmt.Fprintln(stderr, "segd replay:", err)
		if *output != "" && !*dryRun {
			fmt.Fprintf(stderr, "segd replay: nothing was written to %s\n", *output)
		}
		return 1
	}
	if opt.Output != nil {
		fmt.Fprintf(stdout, "%d changes written to %s\n", sum.ChangesWritten, *output)
	}
	sum.WriteSummary(stdout)
	return 0
}

func replayTopics(ctx context.Context, configPath, output string, dryRun bool, logFormat string, stdout, stderr io.Writer) int {
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
	out, err := openReplayOutput(output, dryRun)
	if err != nil {
		fmt.Fprintln(stderr, "segd replay:", err)
		return 1
	}
	sum, err := engine.Backfill(ctx, cfg, out.writer(), log)
	if err == nil {
		err = out.finish()
	}
	if err != nil {
		out.abort()
		fmt.Fprintln(stderr, "segd replay:", err)
		if output != "" && !dryRun {
			fmt.Fprintf(stderr, "segd replay: nothing was written to %s\n", output)
		}
		return 1
	}
	sum.WriteSummary(stdout)
	fmt.Fprintf(stdout, "state in %s; start `segd run --config %s` to continue live from here\n", cfg.State.Dir, configPath)
	return 0
}

// replayOutput is the --output file, buffered; with --dry-run there is
// none. It is written to a temporary file in the same directory, renamed
// into place by finish: a failed replay (abort) leaves no partial output
// and an earlier file of that name untouched.
type replayOutput struct {
	path string
	f    *os.File
	bw   *bufio.Writer
}

func openReplayOutput(path string, dryRun bool) (*replayOutput, error) {
	if path == "" || dryRun {
		return &replayOutput{}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("output: %w", err)
	}
	return &replayOutput{path: path, f: f, bw: bufio.NewWriterSize(f, 1<<20)}, nil
}

func (o *replayOutput) writer() io.Writer {
	if o.bw == nil {
		return nil
	}
	return o.bw
}

// finish flushes the output and renames it into place.
func (o *replayOutput) finish() error {
	if o.f == nil {
		return nil
	}
	err := o.bw.Flush()
	if err == nil {
		err = o.f.Sync()
	}
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(o.f.Name(), o.path)
	}
	if err != nil {
		os.Remove(o.f.Name())
		o.f = nil
		return fmt.Errorf("output %s: %w", o.path, err)
	}
	o.f = nil
	return nil
}

// abort removes the temporary output. Safe after finish.
func (o *replayOutput) abort() {
	if o.f == nil {
		return
	}
	o.f.Close()
	os.Remove(o.f.Name())
	o.f = nil
}
