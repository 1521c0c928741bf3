package tool

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/state"
)

// BenchmarkDiskBytesPerCustomer replays 30 simulated days of generated
// traffic (100k customers, Zipf(1.1) activity) through the standard rule
// set of bench/standard.yaml, compacts the store and reports what a real
// customer record costs: the encoded record size before Pebble's block
// compression (record-B/customer) and the .sst bytes per customer on disk
// (disk-B/customer, which also carries keys, the membership index, index
// blocks and bloom filters). Run with -benchtime 1x: one replay is the
// measurement.
func BenchmarkDiskBytesPerCustomer(b *testing.B) {
	for i := 0; i < b.N; i++ {
		benchDiskBytes(b)
	}
}

func benchDiskBytes(b *testing.B) {
	dir := b.TempDir()
	input := filepath.Join(dir, "events.jsonl")
	f, err := os.Create(input)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	g, err := gen.New(gen.Config{Customers: 100_000, EventsPerHour: 1500, Duration: 30 * 86400_000})
	if err != nil {
		b.Fatal(err)
	}
	var e schemas.Event
	var buf []byte
	for g.Next(&e) {
		buf = schemas.AppendJSON(buf[:0], &e)
		buf = append(buf, '\n')
		w.Write(buf)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	stateDir := filepath.Join(dir, "state")
	sum, err := Replay(context.Background(), ReplayOptions{
		RulesFile:  "../bench/standard.yaml",
		StateDir:   stateDir,
		Inputs:     []string{input},
		Partitions: 1,
		Output:     io.Discard,
		Log:        zerolog.Nop(),
	})
	if err != nil {
		b.Fatal(err)
	}
	st, err := state.Open(stateDir, state.Options{Decode: func(_ string, data []byte) (state.Record, error) {
		return rawRecord(data), nil
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	customers, recordBytes := 0, 0
	p, err := st.Partition(0)
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Range(func(id string, rec state.Record) error {
		customers++
		recordBytes += len(rec.(rawRecord))
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	if customers == 0 {
		b.Fatal("no customers in the store")
	}
	if err := st.Compact(); err != nil {
		b.Fatal(err)
	}
	usage, err := st.DiskUsage()
	if err != nil {
		b.Fatal(err)
	}
	// Pebble deletes the files a compaction replaced in the background;
	// count what remains once the store is closed.
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	var sst int64
	filepath.Walk(stateDir, func(path string, info os.FileInfo, err error) error {
		if err == nil && filepath.Ext(path) == ".sst" {
			sst += info.Size()
		}
		return nil
	})
	b.ReportMetric(float64(sum.Events), "events")
	b.ReportMetric(float64(customers), "customers")
	b.ReportMetric(float64(recordBytes)/float64(customers), "record-B/customer")
	b.ReportMetric(float64(sst)/float64(customers), "disk-B/customer")
	per := func(n uint64) float64 { return float64(n) / float64(customers) }
	b.ReportMetric(per(usage.Customers), "records-disk-B/customer")
	b.ReportMetric(per(usage.Timers), "timers-disk-B/customer")
	b.ReportMetric(per(usage.Outbox+usage.Other), "other-disk-B/customer")
}
