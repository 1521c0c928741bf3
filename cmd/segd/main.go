// Command segd is the streaming customer segmentation engine.
//
//	segd run --config FILE          consume, segment, publish (live)
//	segd demo                       embedded broker + generator + engine
//	segd gen --brokers HOST:PORT    send generated traffic to a Kafka cluster
//	segd replay ...                 rebuild state from event files
//	segd rules validate FILE...     check rules files
//	segd rules explain FILE         show the compiled plan
//	segd config check FILE          validate a config file
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
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
  segd config check FILE
  segd broker [--port N]      in-memory Kafka-protocol broker for development

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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "segd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
