package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/engine"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

// runGen sends generated traffic to any Kafka cluster.
func runGen(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("segd gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "", "comma-separated `HOST:PORT` list (default: kafka.brokers of --config or SEGD_KAFKA_BROKERS)")
	configPath := fs.String("config", "", "the config `FILE` of segd run: brokers, TLS/SASL, the input topics' names and formats (SEGD_* variables apply, as to segd run)")
	rate := fs.Int("rate", 1000, "events per second")
	count := fs.Uint64("count", 0, "stop after this many events (0: never)")
	customers := fs.Int("customers", 10000, "initial customer population (it grows when the rate needs more customers active at once)")
	seed := fs.Uint64("seed", 1, "random seed (same seed, same events)")
	format := fs.String("format", "", "avro or json (default: the input topics' formats in --config, else avro)")
	create := fs.Int("create-topics", 0, "create the input topics with this many partitions if missing")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "segd gen: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := firstError(intBetween("--rate", *rate, 1, maxRate), intBetween("--customers", *customers, 1, maxCustomers), intBetween("--create-topics", *create, 0, maxPartitions)); err != nil {
		fmt.Fprintln(stderr, "segd gen:", err)
		return 2
	}
	if *format != "" && *format != "avro" && *format != "json" {
		fmt.Fprintf(stderr, "segd gen: --format %q: want avro or json\n", *format)
		return 2
	}
	target, err := loadKafkaTarget(*brokers, *configPath)
	if err != nil {
		fmt.Fprintln(stderr, "segd gen:", err)
		if errors.Is(err, errNoTarget) {
			return 2
		}
		return 1
	}
	topics, err := genTopics(target.cfg, *format)
	if err != nil {
		fmt.Fprintln(stderr, "segd gen:", err)
		return 2
	}
	if *create > 0 {
		var specs []connectors.TopicSpec
		for _, t := range topics {
			specs = append(specs, connectors.TopicSpec{Name: t.name, Partitions: *create, Compacted: t.typ == schemas.EventProfile})
		}
		if err := target.cluster().EnsureTopics(ctx, specs); err != nil {
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
	prod, err := target.producer()
	if err != nil {
		fmt.Fprintln(stderr, "segd gen:", err)
		return 1
	}
	defer prod.Close()
	snd, err := newSender(prod, false)
	if err != nil {
		fmt.Fprintln(stderr, "segd gen:", err)
		return 1
	}
	for _, t := range topics {
		snd.topics[t.typ], snd.json[t.typ] = t.name, t.json
	}
	start := time.Now()
	if err := snd.paceLive(ctx, g, *rate, *count); err != nil {
		fmt.Fprintln(stderr, "segd gen:", err)
		return 1
	}
	fmt.Fprintf(stdout, "segd gen: sent %d events in %s\n", snd.sent.Load(), time.Since(start).Round(time.Millisecond))
	return 0
}

// genTopic is where segd gen writes one event type, and how.
type genTopic struct {
	typ  schemas.EventType
	name string
	json bool
}

// genTopics lists the input topics gen writes: the default names, or
// those of cfg. The format is --format (want) when given; with a config
// it must match each topic's, which is the default. gen writes segd's own
// schemas as plain Avro or JSON: a topic in the Confluent format, or
// with a writer schema of its own, would dead-letter all it sent.
func genTopics(cfg *engine.Config, want string) ([]genTopic, error) {
	if cfg == nil {
		return []genTopic{
			{schemas.EventPurchase, engine.DefaultPurchasesTopic, want == "json"},
			{schemas.EventBrowse, engine.DefaultBrowsesTopic, want == "json"},
			{schemas.EventEngagement, engine.DefaultEngagementsTopic, want == "json"},
			{schemas.EventProfile, engine.DefaultProfilesTopic, want == "json"},
		}, nil
	}
	tc := cfg.Kafka.Topics
	in := []struct {
		typ  schemas.EventType
		role string
		t    engine.InputTopic
	}{
		{schemas.EventPurchase, "purchases", tc.Purchases},
		{schemas.EventBrowse, "browses", tc.Browses},
		{schemas.EventEngagement, "engagements", tc.Engagements},
		{schemas.EventProfile, "profiles", tc.Profiles},
	}
	var out []genTopic
	for _, x := range in {
		switch {
		case x.t.Format != "avro" && x.t.Format != "json":
			return nil, fmt.Errorf("kafka.topics.%s.format is %s: segd gen writes plain Avro or JSON", x.role, x.t.Format)
		case x.t.SchemaFile != "":
			return nil, fmt.Errorf("kafka.topics.%s.schema_file is set: segd gen writes segd's own schemas (schemas/), which segd would read with %s", x.role, x.t.SchemaFile)
		case want != "" && want != x.t.Format:
			return nil, fmt.Errorf("--format %s, but kafka.topics.%s.format is %s: segd would dead-letter every event (leave --format out to follow the config)", want, x.role, x.t.Format)
		}
		out = append(out, genTopic{x.typ, x.t.Name, x.t.Format == "json"})
	}
	return out, nil
}
