package api

import (
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/segd/segd/engine"
	"github.com/segd/segd/internal/gen"
)

// BenchmarkGetCustomer serves GET /v1/customers/{id} in process (the
// handler, no network) for random known customers of a store with the
// customers of 300k generated events, on every core, and reports requests/s and the p50/p99
// latency of one request.
func BenchmarkGetCustomer(b *testing.B) {
	_, srv, l := localServerWith(b, func(c *engine.Config) { c.Rules.File = "../bench/standard.yaml" })
	ids := feedGenerated(b, l, gen.Config{Customers: 200_000, EventsPerHour: 5_000, Duration: 60 * 3600_000})
	h := srv.Handler()
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
			req.Host = "localhost" // api.allowed_hosts
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
