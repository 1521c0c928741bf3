package engine

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

func writeEvents(t *testing.T, path string, n int) {
	t.Helper()
	g, err := gen.New(gen.Config{Seed: 3, Customers: 300, EventsPerHour: 40, Start: ts("2024-01-01T00:00:00Z")})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var e schemas.Event
	for i := 0; i < n; i++ {
		g.Next(&e)
		buf.Write(schemas.AppendJSON(nil, &e))
		buf.WriteByte('\n')
	}
	buf.WriteString("{\"type\":\"purchase\", broken\n")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func replayTo(t *testing.T, input string, partitions, commit int) ([]byte, *ReplaySummary) {
	t.Helper()
	var out bytes.Buffer
	sum, err := Replay(context.Background(), ReplayOptions{
		RulesFile: "../examples/rules.yaml", StateDir: filepath.Join(t.TempDir(), "state"),
		Inputs: []string{input}, Partitions: partitions, Output: &out, CommitEvents: commit,
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), sum
}

// perCustomer groups change lines by customer, keeping their order.
func perCustomer(t *testing.T, out []byte) map[string][]string {
	t.Helper()
	m := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var c schemas.SegmentChange
		if err := schemas.DecodeSegmentChangeJSON(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		m[c.CustomerID] = append(m[c.CustomerID], sc.Text())
	}
	return m
}

func TestReplayIsDeterministic(t *testing.T) {
	input := filepath.Join(t.TempDir(), "events.jsonl")
	writeEvents(t, input, 6000)
	a, sum := replayTo(t, input, 1, 10000)
	b, _ := replayTo(t, input, 1, 7)
	if !bytes.Equal(a, b) {
		t.Fatal("output depends on the commit size")
	}
	if sum.Events != 6000 || sum.Invalid != 1 {
		t.Fatalf("events %d invalid %d", sum.Events, sum.Invalid)
	}
	if sum.ChangesWritten < 100 {
		t.Fatalf("only %d changes", sum.ChangesWritten)
	}
	c, sum3 := replayTo(t, input, 3, 500)
	pa, pc := perCustomer(t, a), perCustomer(t, c)
	if len(pa) != len(pc) {
		t.Fatalf("%d customers with changes on 1 partition, %d on 3", len(pa), len(pc))
	}
	for id, seq := range pa {
		if strings.Join(seq, "\n") != strings.Join(pc[id], "\n") {
			t.Fatalf("customer %s: change sequence differs between 1 and 3 partitions", id)
		}
	}
	for id, n := range sum.Sizes {
		if sum3.Sizes[id] != n || sum.Enters[id]-sum.Exits[id] != n {
			t.Fatalf("segment %s: size %d (1 partition) vs %d (3), enters-exits %d", id, n, sum3.Sizes[id], sum.Enters[id]-sum.Exits[id])
		}
	}
	var w bytes.Buffer
	sum.WriteSummary(&w)
	if !strings.Contains(w.String(), "vip") {
		t.Fatalf("summary %s", w.String())
	}
}

// Re-evaluating only the segments that read a trait the event updated
// gives exactly the output of re-evaluating every segment of its type.
func TestIncrementalEvaluationIsExact(t *testing.T) {
	input := filepath.Join(t.TempDir(), "events.jsonl")
	writeEvents(t, input, 6000)
	run := func(all bool) []byte {
		var out bytes.Buffer
		_, err := Replay(context.Background(), ReplayOptions{
			RulesFile: "../examples/rules.yaml", StateDir: filepath.Join(t.TempDir(), "state"),
			Inputs: []string{input}, Output: &out, evalAll: all,
		})
		if err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	inc, all := run(false), run(true)
	if len(inc) == 0 || !bytes.Equal(inc, all) {
		t.Fatalf("incremental output (%d bytes) differs from full re-evaluation (%d bytes)", len(inc), len(all))
	}
}
