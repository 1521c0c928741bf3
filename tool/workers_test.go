package tool

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

// TestReplayOutputDoesNotDependOnWorkers: the same input and partition
// count give the same bytes (changes, sizes, skipped lines) whatever the
// number of goroutines applying events, aliases that fold customers across
// partitions and bad lines included.
func TestReplayOutputDoesNotDependOnWorkers(t *testing.T) {
	input := filepath.Join(t.TempDir(), "events.jsonl")
	g, err := gen.New(gen.Config{Seed: 11, Customers: 400, EventsPerHour: 60, Start: ts("2024-01-01T00:00:00Z")})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var e schemas.Event
	for i := 0; i < 8000 && g.Next(&e); i++ {
		buf.Write(schemas.AppendJSON(nil, &e))
		buf.WriteByte('\n')
		if i%400 == 399 {
			// Fold this customer into another one, likely on another
			// partition: a merge through the barrier.
			alias := schemas.Event{Type: schemas.EventProfile, EventID: fmt.Sprint("alias-", i), CustomerID: e.CustomerID, AliasOf: fmt.Sprint("c-merged-", i%3), Time: e.Time}
			buf.Write(schemas.AppendJSON(nil, &alias))
			buf.WriteByte('\n')
		}
		if i%1000 == 500 {
			buf.WriteString("{\"type\":\"purchase\", broken\n")
		}
	}
	if err := os.WriteFile(input, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(workers int) (string, string) {
		var out, summary bytes.Buffer
		sum, err := Replay(context.Background(), ReplayOptions{RulesFile: "../examples/rules.yaml", StateDir: filepath.Join(t.TempDir(), "state"),
			Inputs: []string{input}, Partitions: 8, Workers: workers, Output: &out, CommitEvents: 700, Now: replayNow})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Invalid != 8 || sum.ChangesWritten < 500 {
			t.Fatalf("workers %d: %d invalid, %d changes", workers, sum.Invalid, sum.ChangesWritten)
		}
		sum.Elapsed = 0
		sum.WriteSummary(&summary)
		return out.String(), summary.String()
	}
	out1, sum1 := run(1)
	for _, w := range []int{2, 3, 8} {
		out, sum := run(w)
		if out != out1 {
			t.Fatalf("workers %d: output differs from one worker's (%d vs %d bytes)", w, len(out), len(out1))
		}
		if sum != sum1 {
			t.Fatalf("workers %d: summary differs:\n%s\none worker:\n%s", w, sum, sum1)
		}
	}
}
