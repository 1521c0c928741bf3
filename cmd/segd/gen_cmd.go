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
	"github.com/segd/segd/internal/gen"
)

// runGen sends generated traffic to any Kafka cluster.
func runGen(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("segd gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "", "comma-separated host:port list (required)")
	rate := fs.Int("rate", 1000, "events per second")
	count := fs.Uint64("count", 0, "stop after this many events (0: never)")
	customers := fs.Int("customers", 10000, "initial customer population (it grows when the rate needs more customers active at once)")
	seed := fs.Uint64("seed", 1, "random seed (same seed, same events)")
	format := fs.String("format", "avro", "avro or json")
	create := fs.Int("create-topics", 0, "create the input topics with this many partitions if missing")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := firstError(intBetween("--rate", *rate, 1, maxRate), intBetween("--customers", *customers, 1, maxCustomers), intBetween("--create-topics", *create, 0, maxPartitions)); err != nil {
		fmt.Fprintln(stderr, "segd gen:", err)
		return 2
	}
	if *brokers == "" {
		fmt.Fprintln(stderr, "segd gen: --brokers is required")
		return 2
	}
	if *format != "avro" && *format != "json" {
		fmt.Fprintf(stderr, "segd gen: --format %q: want avro or json\n", *format)
		return 2
	}
	bl := strings.Split(*brokers, ",")
	if *create > 0 {
		specs := []connectors.TopicSpec{
			{Name: engine.DefaultPurchasesTopic, Partitions: *create},
			{Name: engine.DefaultBrowsesTopic, Partitions: *create},
			{Name: engine.DefaultEngagementsTopic, Partitions: *create},
			{Name: engine.DefaultProfilesTopic, Partitions: *create, Compacted: true},
		}
		if err := (connectors.Cluster{Brokers: bl}).EnsureTopics(ctx, specs); err != nil {
			fmt.Fprintln(stderr, "segd gen:", err)
			return 1
		}
	}
	// Pacing keeps each customer realistic at any --rate: a higher rate
	// brings more customers, not faster ones.
	g, err := gen.New(gen.Config{Seed: *seed, Customers: *customers, Pacing: gen.RealisticPacing()})
	if err != nil {
		fmt.Fprintln(stderr, "segd gen:", err)
		return 2
	}
	prod, err := connectors.NewProducer(bl, connectors.ProducerOptions{})
	if err != nil {
		fmt.Fprintln(stderr, "segd gen:", err)
		return 1
	}
	defer prod.Close()
	snd, err := newSender(prod, *format == "json")
	if err != nil {
		fmt.Fprintln(stderr, "segd gen:", err)
		return 1
	}
	start := time.Now()
	if err := snd.paceLive(ctx, g, *rate, *count); err != nil {
		fmt.Fprintln(stderr, "segd gen:", err)
		return 1
	}
	fmt.Fprintf(stdout, "segd gen: sent %d events in %s\n", snd.sent.Load(), time.Since(start).Round(time.Millisecond))
	return 0
}
