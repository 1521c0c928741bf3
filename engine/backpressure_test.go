package engine

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segd/segd/connectors"
)

// An engine started on a 100k-record backlog of three input topics keeps
// what its partition buffers within the default kafka.max_buffered_records
// and kafka.max_buffered_bytes all along, as its gauges report them, and
// applies every event. Without the bound the gauge passed 50k records.
func TestEngineBufferBoundedUnderBacklog(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, _ := jsonTestConfig(t, brokers)
	cfg.Rules.WatchInterval = -1
	// A bound well under the backlog: 30k records (the connectors test
	// drains 100k with the defaults; under the race detector on a busy
	// 2-core machine an engine applies 100k in minutes).
	cfg.Kafka.MaxBufferedRecords = 1000
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	const total = 30000
	var batch []connectors.Message
	for i := 0; i < total; i++ {
		at := base.Add(time.Duration(i) * time.Second)
		cust := fmt.Sprintf("c%d", i%500)
		var topic, body string
		switch i % 4 {
		case 0, 1:
			topic, body = DefaultBrowsesTopic, fmt.Sprintf(`{"type":"browse","event_id":"b%d","customer_id":%q,"ts":%d,"page":"product"}`, i, cust, at.UnixMilli())
		case 2:
			topic, body = DefaultPurchasesTopic, fmt.Sprintf(`{"type":"purchase","event_id":"p%d","customer_id":%q,"ts":%d,"amount":10}`, i, cust, at.UnixMilli())
		default:
			topic, body = DefaultEngagementsTopic, fmt.Sprintf(`{"type":"engagement","event_id":"e%d","customer_id":%q,"ts":%d,"channel":"email","action":"open"}`, i, cust, at.UnixMilli())
		}
		batch = append(batch, connectors.Message{Topic: topic, Key: []byte(cust), Value: []byte(body), Time: at})
		if len(batch) == 1000 {
			if err := prod.Write(context.Background(), batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}

	eng := startEngineWith(t, cfg, Options{Logger: warnLogger(t)})
	var (
		mu                     sync.Mutex
		records, bytes, paused float64
		samples                int
	)
	sample := func() {
		r, b, p := gaugeValue(t, eng, "segd_consumer_buffered_records"), gaugeValue(t, eng, "segd_consumer_buffered_bytes"), gaugeValue(t, eng, "segd_consumer_paused_topics")
		mu.Lock()
		defer mu.Unlock()
		records, bytes, paused = max(records, r), max(bytes, b), max(paused, p)
		samples++
	}
	waitFor(t, 5*time.Minute, fmt.Sprintf("%d events applied", total), func() bool {
		sample()
		return eng.Progress().Events == total
	})
	t.Logf("%d samples: at most %.0f records, %.0f bytes buffered, %.0f topics paused; bounds %d records, %d bytes",
		samples, records, bytes, paused, cfg.Kafka.MaxBufferedRecords, cfg.Kafka.MaxBufferedBytes)
	if records > float64(cfg.Kafka.MaxBufferedRecords) || bytes > float64(cfg.Kafka.MaxBufferedBytes) {
		t.Errorf("buffered up to %.0f records, %.0f bytes; bounds %d records, %d bytes", records, bytes, cfg.Kafka.MaxBufferedRecords, cfg.Kafka.MaxBufferedBytes)
	}
	if records == 0 || paused == 0 {
		t.Errorf("saw at most %.0f records buffered and %.0f topics paused: want both above 0, or the backlog did not test the bound", records, paused)
	}
}

// gaugeValue returns the sum of the gauge family name's samples (0 if it
// has none).
func gaugeValue(t *testing.T, eng *Engine, name string) float64 {
	t.Helper()
	mfs, err := eng.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			sum += m.GetGauge().GetValue()
		}
	}
	return sum
}
