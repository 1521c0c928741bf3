package engine

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/internal/segdtest"
	"github.com/segd/segd/schemas"
)

// BenchmarkBackfill backfills 200,000 generated events over 20,000
// customers (2 partitions, the embedded broker) into a fresh state per
// run: what `segd backfill` does, producing excluded.
func BenchmarkBackfill(b *testing.B) {
	const partitions, events = 2, 200000
	_, brokers := segdtest.StartBroker(b, partitions, DefaultPurchasesTopic, DefaultBrowsesTopic, DefaultEngagementsTopic, DefaultProfilesTopic,
		DefaultChangesTopic, DefaultDeadLetterTopic, DefaultMergesTopic)
	g, err := gen.New(gen.Config{Seed: 9, Customers: 20000, EventsPerHour: events / (30 * 24.0), Start: ts("2024-01-01T00:00:00Z")})
	if err != nil {
		b.Fatal(err)
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		b.Fatal(err)
	}
	topicOf := map[schemas.EventType]string{schemas.EventPurchase: DefaultPurchasesTopic, schemas.EventBrowse: DefaultBrowsesTopic, schemas.EventEngagement: DefaultEngagementsTopic, schemas.EventProfile: DefaultProfilesTopic}
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer prod.Close()
	var msgs []connectors.Message
	var e schemas.Event
	for i := 0; i < events && g.Next(&e); i++ {
		v, err := codecs[e.Type].AppendEncode(nil, &e)
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, connectors.Message{Topic: topicOf[e.Type], Key: []byte(e.CustomerID), Value: v, Time: time.UnixMilli(e.Time)})
		if len(msgs) == 5000 {
			if err := prod.Write(context.Background(), msgs...); err != nil {
				b.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	if err := prod.Write(context.Background(), msgs...); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var applied int64
	for b.Loop() {
		cfg := &Config{}
		cfg.Kafka.Brokers = brokers
		cfg.Rules.File = "../bench/standard.yaml"
		cfg.State.Dir = filepath.Join(b.TempDir(), "state")
		cfg.API.Addr = "off"
		cfg.EnsureDefaults()
		if err := cfg.Validate(); err != nil {
			b.Fatal(err)
		}
		sum, err := Backfill(context.Background(), cfg, nil, zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		applied = sum.Events
	}
	if applied < events*9/10 {
		b.Fatalf("backfill applied %d of %d events", applied, events)
	}
	b.ReportMetric(float64(applied)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
