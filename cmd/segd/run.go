package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/engine"
)

// newLogger builds the process's one logger.
func newLogger(w io.Writer, format, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("log level %q: %w", level, err)
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	switch format {
	case "json", "":
		return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
	case "console":
		return zerolog.New(zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}).Level(lvl).With().Timestamp().Logger(), nil
	}
	return zerolog.Nop(), fmt.Errorf("log format %q: want json or console", format)
}

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("segd run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (YAML); every field can also come from a SEGD_* environment variable")
	logFormat := fs.String("log-format", "", "json or console (overrides log.format)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := engine.LoadConfig(*configPath, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "segd run: %v\n", err)
		return 1
	}
	if *logFormat != "" {
		cfg.Log.Format = *logFormat
	}
	log, err := newLogger(stderr, cfg.Log.Format, cfg.Log.Level)
	if err != nil {
		fmt.Fprintf(stderr, "segd run: %v\n", err)
		return 2
	}
	eng, err := engine.New(cfg, engine.Options{Logger: log})
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return 1
	}
	// The API serves beside the engine, from its read model.
	srv, stopAPI, err := startAPI(eng, cfg, log)
	if err != nil {
		eng.Close()
		log.Error().Err(err).Msg("cannot start")
		return 1
	}
	// SIGHUP reloads the rules file (as POST /v1/rules/reload does).
	stopHangup := reloadOnHangup(ctx, eng, srv, log, nil)
	err = eng.Run(ctx)
	stopHangup()
	stopAPI()
	if cerr := eng.Close(); err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error().Err(err).Msg("stopped with an error")
		return 1
	}
	log.Info().Msg("stopped")
	return 0
}

func runConfig(args []string, stdout, stderr io.Writer) int {
	const use = "usage: segd config check FILE"
	if len(args) < 1 || args[0] != "check" {
		fmt.Fprintln(stderr, use)
		return 2
	}
	fs := flag.NewFlagSet("segd config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), use)
		fmt.Fprintln(fs.Output(), "Loads the config as segd run would (SEGD_* variables included), compiles its rules file and reads every file it names; prints each problem and exits 1 on any.")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	path := fs.Arg(0)
	cfg, err := engine.LoadConfig(path, os.Environ())
	var ce *engine.ConfigError
	if errors.As(err, &ce) {
		// One problem a line: a file can have many.
		for _, p := range ce.Problems {
			fmt.Fprintf(stderr, "%s: %s\n", path, p)
		}
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	if problems := cfg.CheckFiles(); len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(stderr, "%s: %s\n", path, p)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (brokers %v, rules %s, state %s)\n", path, cfg.Kafka.Brokers, cfg.Rules.File, cfg.State.Dir)
	return 0
}
