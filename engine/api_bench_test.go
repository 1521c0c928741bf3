package engine

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

// BenchmarkGetCustomer serves GET /v1/customers/{id} in process (the
// handler, no network) for random known customers of a store with the
// customers of 300k generated events, on every core, and reports requests/s and the p50/p99
// latency of one request.
func BenchmarkGetCustomer(b *testing.B) {
	dir := b.TempDir()
	cfg := &Config{}
	cfg.Kafka.Brokers = []string{"127.0.0.1:1"}
	cfg.Rules.File = "../bench/standard.yaml"
	cfg.State.Dir = filepath.Join(dir, "state")
	cfg.EnsureDefaults()
	eng, err := New(cfg, Options{Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	l, err := eng.OpenLocal(1)
	if err != nil {
		b.Fatal(err)
	}
	g, err := gen.New(gen.Config{Customers: 200_000, EventsPerHour: 5_000, Duration: 60 * 3600_000})
	if err != nil {
		b.Fatal(err)
	}
	codecs, _ := schemas.NewCodecs()
	topics := map[schemas.EventType]string{schemas.EventPurchase: DefaultPurchasesTopic, schemas.EventBrowse: DefaultBrowsesTopic,
		schemas.EventEngagement: DefaultEngagementsTopic, schemas.EventProfile: DefaultProfilesTopic}
	seen := map[string]bool{}
	var ids []string
	var e schemas.Event
	var off int64
	for g.Next(&e) {
		v, _ := codecs[e.Type].AppendEncode(nil, &e)
		if err := l.Handle(0, topics[e.Type], off, []byte(e.CustomerID), v, time.UnixMilli(e.Time)); err != nil {
			b.Fatal(err)
		}
		off++
		if !seen[e.CustomerID] {
			seen[e.CustomerID] = true
			ids = append(ids, e.CustomerID)
		}
	}
	if err := l.Commit(); err != nil {
		b.Fatal(err)
	}
	h := eng.Handler()
	var mu sync.Mutex
	var lat []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		i := len(local) * 7919
		for pb.Next() {
			i++
			req := httptest.NewRequest(http.MethodGet, "/v1/customers/"+ids[(i*7919)%len(ids)], nil)
			rec := httptest.NewRecorder()
			t0 := time.Now()
			h.ServeHTTP(rec, req)
			local = append(local, time.Since(t0))
			if rec.Code != http.StatusOK {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	el := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(x, y int) bool { return lat[x] < lat[y] })
	b.ReportMetric(float64(b.N)/el.Seconds(), "req/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
	b.ReportMetric(float64(len(ids)), "customers")
}
