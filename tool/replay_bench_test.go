package tool

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

// BenchmarkReplayDedup measures a file replay of 50,000 events with the
// replay-wide de-duplication (every event id looked up and stored in the
// seen set): unique, where every lookup misses, and dup25, where the
// input is the same 40,000 events plus 10,000 of them again in a second
// file. ns/op is per replay; lines/s is reported. The horizon-only runs
// leave the seen set out (only the live one-hour horizon): the difference
// is the cost of replay-wide de-duplication.
func BenchmarkReplayDedup(b *testing.B) {
	g, err := gen.New(gen.Config{Seed: 5, Customers: 5000, EventsPerHour: 2000, Start: ts("2011-03-01T00:00:00Z")})
	if err != nil {
		b.Fatal(err)
	}
	var e schemas.Event
	lines := make([]string, 50000)
	for i := range lines {
		g.Next(&e)
		lines[i] = string(schemas.AppendJSON(nil, &e))
	}
	dir := b.TempDir()
	write := func(name string, ls []string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(strings.Join(ls, "\n")+"\n"), 0o644)
		return p
	}
	cases := []struct {
		name   string
		inputs []string
	}{
		{"unique", []string{write("all.jsonl", lines)}},
		{"dup25", []string{write("first.jsonl", lines[:40000]), write("again.jsonl", lines[30000:40000])}},
	}
	for _, c := range cases {
		for _, noSeen := range []bool{false, true} {
			name := c.name
			if noSeen {
				name += "/horizon-only"
			}
			b.Run(name, func(b *testing.B) {
				var events int64
				for i := 0; i < b.N; i++ {
					sum, err := Replay(context.Background(), ReplayOptions{RulesFile: "../examples/rules.yaml", StateDir: filepath.Join(b.TempDir(), "state"), Inputs: c.inputs, Now: replayNow, noSeen: noSeen})
					if err != nil {
						b.Fatal(err)
					}
					events += sum.Events + sum.Duplicates
				}
				b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "lines/s")
			})
		}
	}
}

// BenchmarkReplayWorkers replays 200,000 generated events over 20,000
// customers on 16 partitions with 1 and with 2 workers (goroutines
// applying events): the speed-up on a 2-core machine. events/s is
// reported; the output is the same bytes either way
// (TestReplayOutputDoesNotDependOnWorkers).
func BenchmarkReplayWorkers(b *testing.B) {
	g, err := gen.New(gen.Config{Seed: 7, Customers: 20000, EventsPerHour: 20000, Start: ts("2011-03-01T00:00:00Z")})
	if err != nil {
		b.Fatal(err)
	}
	var e schemas.Event
	var buf []byte
	for i := 0; i < 200000 && g.Next(&e); i++ {
		buf = schemas.AppendJSON(buf, &e)
		buf = append(buf, '\n')
	}
	input := filepath.Join(b.TempDir(), "events.jsonl")
	if err := os.WriteFile(input, buf, 0o644); err != nil {
		b.Fatal(err)
	}
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			var events int64
			for i := 0; i < b.N; i++ {
				sum, err := Replay(context.Background(), ReplayOptions{RulesFile: "../bench/standard.yaml", StateDir: filepath.Join(b.TempDir(), "state"),
					Inputs: []string{input}, Partitions: 16, Workers: workers, Now: replayNow, Log: zerolog.Nop()})
				if err != nil {
					b.Fatal(err)
				}
				events += sum.Events
			}
			b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
