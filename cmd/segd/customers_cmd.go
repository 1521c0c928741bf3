package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/engine"
)

// runCustomers implements `segd customers delete ID...`: erasure requests
// written as tombstones to the profile topic, applied by whichever segd
// instance owns each customer.
func runCustomers(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) < 1 || args[0] != "delete" {
		fmt.Fprintln(stderr, "usage: segd customers delete --brokers HOST:PORT [--topic T] ID...")
		return 2
	}
	fs := flag.NewFlagSet("segd customers delete", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "", "comma-separated host:port list (required)")
	topic := fs.String("topic", engine.DefaultProfilesTopic, "the profile topic")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *brokers == "" || fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: segd customers delete --brokers HOST:PORT [--topic T] ID...")
		return 2
	}
	prod, err := connectors.NewProducer(strings.Split(*brokers, ","), connectors.ProducerOptions{})
	if err != nil {
		fmt.Fprintln(stderr, "segd customers delete:", err)
		return 1
	}
	defer prod.Close()
	var msgs []connectors.Message
	for _, id := range fs.Args() {
		if id == "" || len(id) > 256 {
			fmt.Fprintf(stderr, "segd customers delete: bad customer id %q\n", id)
			return 2
		}
		msgs = append(msgs, engine.DeletionRequest(*topic, id, time.Now()))
	}
	if err := prod.Write(ctx, msgs...); err != nil {
		fmt.Fprintln(stderr, "segd customers delete:", err)
		return 1
	}
	fmt.Fprintf(stdout, "deletion requested for %d customer(s) on %s\n", len(msgs), *topic)
	return 0
}
