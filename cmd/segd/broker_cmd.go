package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/segd/segd/connectors"
)

// runBroker serves the embedded Kafka-protocol broker (the one `segd demo`
// uses) until interrupted: a Kafka for local development and for tests
// that run segd as separate processes. It keeps everything in memory.
func runBroker(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("segd broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.Int("port", 0, "loopback port to listen on (0: any free port)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *port < 0 || *port > 65535 {
		fmt.Fprintf(stderr, "segd broker: --port %d is not a port\n", *port)
		return 2
	}
	b, err := connectors.StartEmbeddedBroker(*port, 1)
	if err != nil {
		fmt.Fprintf(stderr, "segd broker: %v\n", err)
		return 1
	}
	defer b.Close()
	// The first line is the address, for scripts and tests to read.
	for _, a := range b.Addrs() {
		fmt.Fprintln(stdout, a)
	}
	<-ctx.Done()
	return 0
}
