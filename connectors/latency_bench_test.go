package connectors

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BenchmarkTransportLatency is the floor under segd's event-to-change
// latency: records offered at 10,000/s over four topics of four partitions
// on the embedded broker, from just before the produce call to a
// PartitionConsumer's Poll returning them (the path an input record takes
// before segd touches it). Run with -benchtime 1x; it offers load for 10 s
// and reports p50/p99/p999 in ms.
func BenchmarkTransportLatency(b *testing.B) {
	for n := 0; n < b.N; n++ {
		benchTransportLatency(b)
	}
}

func benchTransportLatency(b *testing.B) {
	topics := []string{"a", "b", "c", "d"}
	br, err := StartEmbeddedBroker(0, 4, topics...)
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	p := testProducer(b, br.Addrs())
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat []time.Duration
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for part := 0; part < 4; part++ {
		c, err := NewPartitionConsumer(PartitionConsumerOptions{Brokers: br.Addrs(), Topics: topics, Partition: part})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			buf := make([]Message, 0, 512)
			for ctx.Err() == nil {
				msgs, _ := c.Poll(ctx, buf[:0], 5*time.Millisecond)
				now := time.Now()
				mu.Lock()
				for _, m := range msgs {
					lat = append(lat, now.Sub(sent[string(m.Value)]))
				}
				mu.Unlock()
			}
		}()
	}
	// The segd workload's mix: most records on one topic, few on another.
	mix := []string{"a", "a", "a", "a", "a", "a", "a", "b", "b", "c"}
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	i := 0
	var batch []Message
	for time.Since(start) < 10*time.Second {
		<-tick.C
		due := int(time.Since(start).Seconds() * 10000)
		batch = batch[:0]
		t0 := time.Now()
		mu.Lock()
		for ; i < due; i++ {
			v := strconv.Itoa(i)
			sent[v] = t0
			topic := mix[i%len(mix)]
			if i%100 == 99 {
				topic = "d"
			}
			batch = append(batch, Message{Topic: topic, Key: []byte("k" + strconv.Itoa(i%1000)), Value: []byte(v), Time: t0})
		}
		mu.Unlock()
		if len(batch) > 0 {
			if err := p.Write(ctx, batch...); err != nil {
				b.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		got := len(lat)
		mu.Unlock()
		if got >= i {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if len(lat) < i {
		b.Fatalf("consumed %d of %d records", len(lat), i)
	}
	sort.Slice(lat, func(x, y int) bool { return lat[x] < lat[y] })
	q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))]) / 1e6 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(0.999), "p999-ms")
}
