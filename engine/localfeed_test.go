package engine

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

// localEngine opens an engine over a fresh state dir with rulesFile and a
// one-partition Local for in-process feeding (Kafka is never dialled).
// Both close when the test ends.
func localEngine(tb testing.TB, rulesFile string) (*Engine, *Local) {
	tb.Helper()
	cfg := &Config{}
	cfg.Kafka.Brokers = []string{"127.0.0.1:1"}
	cfg.Rules.File = rulesFile
	cfg.State.Dir = filepath.Join(tb.TempDir(), "state")
	cfg.EnsureDefaults()
	eng, err := New(cfg, Options{Logger: zerolog.Nop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { eng.Close() })
	l, err := eng.OpenLocal(1)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return eng, l
}

// feedGenerated hands every event of a generator configured by gc to l as
// Avro records on the default topics, commits, and returns the customer
// ids in order of first appearance.
func feedGenerated(tb testing.TB, l *Local, gc gen.Config) []string {
	tb.Helper()
	g, err := gen.New(gc)
	if err != nil {
		tb.Fatal(err)
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		tb.Fatal(err)
	}
	topics := map[schemas.EventType]string{schemas.EventPurchase: DefaultPurchasesTopic, schemas.EventBrowse: DefaultBrowsesTopic,
		schemas.EventEngagement: DefaultEngagementsTopic, schemas.EventProfile: DefaultProfilesTopic}
	seen := map[string]bool{}
	var ids []string
	var e schemas.Event
	var off int64
	for g.Next(&e) {
		v, err := codecs[e.Type].AppendEncode(nil, &e)
		if err != nil {
			tb.Fatal(err)
		}
		if err := l.Handle(0, topics[e.Type], off, []byte(e.CustomerID), v, time.UnixMilli(e.Time)); err != nil {
			tb.Fatal(err)
		}
		off++
		if !seen[e.CustomerID] {
			seen[e.CustomerID] = true
			ids = append(ids, e.CustomerID)
		}
	}
	if err := l.Commit(); err != nil {
		tb.Fatal(err)
	}
	return ids
}
