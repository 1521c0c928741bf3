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
)

// runCustomers implements `segd customers delete ID...`: erasure requests
// written as tombstones to the profile topic, applied by whichever segd
// instance owns each customer.
func runCustomers(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const usage = "usage: segd customers delete [--brokers HOST:PORT] [--config FILE] [--topic T] ID...\n(the cluster from --brokers, --config or SEGD_KAFKA_* variables, as segd run reads them)"
	if len(args) < 1 || args[0] != "delete" {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("segd customers delete", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "", "comma-separated `HOST:PORT` list (default: kafka.brokers of --config or SEGD_KAFKA_BROKERS)")
	configPath := fs.String("config", "", "the config `FILE` of segd run: brokers, TLS/SASL, kafka.topics.profiles (SEGD_* variables apply, as to segd run)")
	topic := fs.String("topic", "", "the profile topic (default kafka.topics.profiles of --config, else "+engine.DefaultProfilesTopic+")")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	target, err := loadKafkaTarget(*brokers, *configPath)
	if errors.Is(err, errNoTarget) {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "segd customers delete:", err)
		return 1
	}
	if *topic == "" {
		*topic = engine.DefaultProfilesTopic
		if target.cfg != nil {
			*topic = target.cfg.Kafka.Topics.Profiles.Name
		}
	}
	prod, err := target.producer()
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
