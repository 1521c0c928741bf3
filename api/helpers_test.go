package api

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/engine"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/internal/segdtest"
	"github.com/segd/segd/schemas"
)

// waitFor polls cond until it is true or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	segdtest.WaitFor(t, timeout, what, cond)
}

// syncBuffer is the shared log sink safe for concurrent writers.
type syncBuffer = segdtest.SyncBuffer

// localEngineWith opens a real engine over a fresh state dir with
// examples/rules.yaml, configured by configure, and a one-partition Local
// for in-process feeding (Kafka is never dialled). Both close when the
// test ends.
func localEngineWith(tb testing.TB, configure func(*engine.Config)) (*engine.Engine, *engine.Local, *engine.Config) {
	tb.Helper()
	cfg := &engine.Config{}
	cfg.Kafka.Brokers = []string{"127.0.0.1:1"}
	cfg.Rules.File = "../examples/rules.yaml"
	cfg.State.Dir = filepath.Join(tb.TempDir(), "state")
	if configure != nil {
		configure(cfg)
	}
	cfg.EnsureDefaults()
	eng, err := engine.New(cfg, engine.Options{Logger: zerolog.Nop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { eng.Close() })
	l, err := eng.OpenLocal(1)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return eng, l, cfg
}

// localServerWith is localEngineWith and the API of its engine.
func localServerWith(tb testing.TB, configure func(*engine.Config)) (*engine.Engine, *Server, *engine.Local) {
	tb.Helper()
	eng, l, cfg := localEngineWith(tb, configure)
	srv, err := New(eng, &cfg.API, zerolog.Nop())
	if err != nil {
		tb.Fatal(err)
	}
	return eng, srv, l
}

// feedGenerated hands every event of a generator configured by gc to l as
// Avro records on the default topics, commits, and returns the customer
// ids in order of first appearance.
func feedGenerated(tb testing.TB, l *engine.Local, gc gen.Config) []string {
	tb.Helper()
	g, err := gen.New(gc)
	if err != nil {
		tb.Fatal(err)
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		tb.Fatal(err)
	}
	topics := map[schemas.EventType]string{schemas.EventPurchase: engine.DefaultPurchasesTopic, schemas.EventBrowse: engine.DefaultBrowsesTopic,
		schemas.EventEngagement: engine.DefaultEngagementsTopic, schemas.EventProfile: engine.DefaultProfilesTopic}
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

// segmentSizes maps each segment of eng's running rules to its size.
func segmentSizes(t testing.TB, eng Engine) map[string]engine.SegmentSize {
	t.Helper()
	all, err := eng.SegmentSizes()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]engine.SegmentSize{}
	for _, s := range all {
		out[s.Segment.ID] = s
	}
	return out
}
