// Command segd is the streaming customer segmentation engine.
//
//	segd run --config FILE          consume, segment, publish (live)
//	segd demo                       embedded broker + generator + engine
//	segd gen --brokers HOST:PORT    send generated traffic to a Kafka cluster
//	segd replay ...                 rebuild state from event files
//	segd rules validate FILE...     check rules files
//	segd rules explain FILE         show the compiled plan
//	segd config check FILE          validate a config file
//	segd changes --brokers HOST:PORT print segment changes as text
//	segd version                    version and commit
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `segd: streaming customer segmentation on Kafka

usage:
  segd run --config FILE [--log-format json|console]
  segd demo [--rules FILE] [--rate N] [--customers N] [--port N]
  segd gen --brokers HOST:PORT [--rate N] [--customers N] [--count N]
  segd replay --rules FILE --state-dir DIR --input FILE... (--output FILE | --dry-run)
  segd customers delete --brokers HOST:PORT ID...
  segd state scrub --state-dir DIR
  segd rules validate FILE...
  segd rules explain FILE
  segd rules preview FILE (--state-dir DIR | --config FILE)
  segd config check FILE
  segd changes (--brokers HOST:PORT | --config FILE | --file FILE)   segment changes as text
  segd broker [--port N]      in-memory Kafka-protocol broker for development
  segd version                (also --version)

Run 'segd <command> -h' for a command's flags. Docs: README.md and docs/.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version", "--version", "-version", "-v":
		fmt.Fprintln(stdout, versionLine())
		return 0
	case "-h", "--help", "-help", "help":
		if len(args) == 1 {
			fmt.Fprint(stdout, usage)
			return 0
		}
		args = append(args[1:], "-h")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cmd, ok := helpRequest(args); ok {
		// The command prints its usage to the writer it was given for
		// errors: here stdout, and asking for help is a success.
		dispatch(ctx, cmd, stdout, stdout)
		return 0
	}
	return dispatch(ctx, args, stdout, stderr)
}

// dispatch runs the command args[0].
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	switch args[0] {
	case "run":
		return runRun(ctx, args[1:], stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "gen":
		return runGen(ctx, args[1:], stdout, stderr)
	case "replay":
		return runReplay(ctx, args[1:], stdout, stderr)
	case "customers":
		return runCustomers(ctx, args[1:], stdout, stderr)
	case "state":
		return runState(args[1:], stdout, stderr)
	case "rules":
		return runRules(args[1:], stdout, stderr)
	case "config":
		return runConfig(args[1:], stdout, stderr)
	case "broker":
		return runBroker(ctx, args[1:], stdout, stderr)
	case "changes":
		return runChanges(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "segd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// subcommands are the commands with a second word (segd rules validate).
var subcommands = map[string]bool{"rules": true, "config": true, "customers": true, "state": true}

// helpRequest reports whether args ask for help (-h, -help or --help
// before any "--") and returns the command line that prints it: the
// command, its subcommand if it has one, and -h, so that every command
// parses -h first and prints its own usage.
func helpRequest(args []string) ([]string, bool) {
	asked := false
	for _, a := range args[1:] {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			asked = true
			break
		}
	}
	if !asked {
		return nil, false
	}
	cmd := []string{args[0]}
	if subcommands[args[0]] && len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		cmd = append(cmd, args[1])
	}
	return append(cmd, "-h"), true
}
