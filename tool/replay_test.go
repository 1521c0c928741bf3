package tool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segd/segd/segment"

	"github.com/segd/segd/rules"
	"github.com/segd/segd/state"

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

func replayTo(t *testing.T, input string, partitions, commit int, cacheBytes ...int64) ([]byte, *segment.ReplaySummary) {
	t.Helper()
	var out bytes.Buffer
	opt := ReplayOptions{
		RulesFile: "../examples/rules.yaml", StateDir: filepath.Join(t.TempDir(), "state"),
		Inputs: []string{input}, Partitions: partitions, Output: &out, CommitEvents: commit,
	}
	if len(cacheBytes) > 0 {
		opt.CacheBytes = cacheBytes[0]
	}
	sum, err := Replay(context.Background(), opt)
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
	// Three settings: big commits and a big cache; tiny commits; a cache
	// of 1 MiB that must evict constantly.
	a, sum := replayTo(t, input, 1, 10000)
	b, _ := replayTo(t, input, 1, 7)
	c1, _ := replayTo(t, input, 1, 333, 1<<20)
	if !bytes.Equal(a, b) || !bytes.Equal(a, c1) {
		t.Fatal("output depends on the commit size or the cache size")
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
	run := func(all bool) ([]byte, int64) {
		var out bytes.Buffer
		sum, err := Replay(context.Background(), ReplayOptions{
			RulesFile: "../examples/rules.yaml", StateDir: filepath.Join(t.TempDir(), "state"),
			Inputs: []string{input}, Output: &out, evalAll: all,
		})
		if err != nil {
			t.Fatal(err)
		}
		return out.Bytes(), sum.Evaluations
	}
	inc, incWork := run(false)
	all, allWork := run(true)
	if len(inc) == 0 || !bytes.Equal(inc, all) {
		t.Fatalf("incremental output (%d bytes) differs from full re-evaluation (%d bytes)", len(inc), len(all))
	}
	// Both runs must have done what they say: the comparison means
	// nothing if evalAll does not reach the processor.
	if incWork == 0 || allWork <= incWork {
		t.Fatalf("evaluations: incremental %d, every segment %d: want fewer incremental ones", incWork, allWork)
	}
	t.Logf("evaluations: incremental %d, every segment %d", incWork, allWork)
}

// A segment edited in a running engine leaves no stale member: replaying
// with rules A, then reloading rules B, ends with exactly the members of a
// replay with B from the start (B's traits all exist in A).
func TestRuleChangeLeavesNoStaleMember(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "events.jsonl")
	writeEvents(t, input, 6000)
	rulesB := filepath.Join(dir, "b.yaml")
	os.WriteFile(rulesB, []byte(`version: 2
traits:
  orders_30d: count(purchase) over 30d
  spend_90d: sum(purchase.amount) over 90d
  last_order_at: last(purchase.ts)
  product_views_24h: count(browse where page == "product") over 24h
segments:
  vip: { when: "spend_90d >= 300 and orders_30d >= 1" }
  repeat_buyer: { when: "orders_30d >= 2" }
  lapsed: { when: "last_order_at is not null and since(last_order_at) > 3d" }
  browser: { when: "product_views_24h >= 2" }
`), 0o644)

	// Rules A (examples/rules.yaml), then reload B on the same state.
	stA := filepath.Join(dir, "a")
	// One partition: the reload below runs it.
	if _, err := Replay(context.Background(), ReplayOptions{RulesFile: "../examples/rules.yaml", StateDir: stA, Inputs: []string{input}, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	rsB, err := rules.CompileFile(rulesB)
	if err != nil {
		t.Fatal(err)
	}
	current := rsB
	st, err := segment.OpenStore(stA, func() *rules.RuleSet { return current }, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	part, _ := st.Partition(0)
	rsA, _ := rules.CompileFile("../examples/rules.yaml")
	proc, err := segment.New(rsA, part, segment.Options{ChangesTopic: segment.DefaultChangesTopic, DeadLetterTopic: segment.DefaultDeadLetterTopic,
		EncodeChange: schemas.AppendSegmentChangeJSON, ConsentAttribute: segment.DefaultConsentAttribute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proc.Reload(rsB, 100); err != nil {
		t.Fatal(err)
	}
	// Rules B from the start.
	sumB, err := Replay(context.Background(), ReplayOptions{RulesFile: rulesB, StateDir: filepath.Join(dir, "b-state"), Inputs: []string{input}})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range rsB.Segments() {
		got, err := segment.AllMembers(st, rsB, s.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		stB, _ := segment.OpenStore(filepath.Join(dir, "b-state"), func() *rules.RuleSet { return rsB }, state.Options{})
		want, _ := segment.AllMembers(stB, rsB, s.ID, nil)
		stB.Close()
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("segment %s after reload: %d members, replay with the new rules: %d", s.ID, len(got), len(want))
		}
		if int64(len(want)) != sumB.Sizes[s.ID] || len(want) == 0 {
			t.Errorf("segment %s: %d members listed, %d counted", s.ID, len(want), sumB.Sizes[s.ID])
		}
	}
}

// Preview predicts a rule change without making it: its new sizes equal
// a replay with the candidate rules, and running it twice changes nothing.
func TestPreviewPredictsRuleChange(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "events.jsonl")
	writeEvents(t, input, 6000)
	stA := filepath.Join(dir, "a")
	sumA, err := Replay(context.Background(), ReplayOptions{RulesFile: "../examples/rules.yaml", StateDir: stA, Inputs: []string{input}})
	if err != nil {
		t.Fatal(err)
	}
	candidate := filepath.Join(dir, "b.yaml")
	os.WriteFile(candidate, []byte(`version: 2
traits:
  orders_30d: count(purchase) over 30d
  spend_90d: sum(purchase.amount) over 90d
segments:
  vip: { when: "spend_90d >= 300 and orders_30d >= 1" }
  repeat_buyer: { when: "orders_30d >= 2" }
`), 0o644)
	first, err := Preview(stA, candidate, 3)
	if err != nil {
		t.Fatal(err)
	}
	second, err := Preview(stA, candidate, 3)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(first) != fmt.Sprint(second) {
		t.Fatal("preview changed the state")
	}
	sumB, err := Replay(context.Background(), ReplayOptions{RulesFile: candidate, StateDir: filepath.Join(dir, "b"), Inputs: []string{input}})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, p := range first {
		if p.SizeNow-p.WouldExit+p.WouldEnter != p.SizeNew {
			t.Errorf("%s: %d now - %d exit + %d enter != %d new", p.ID, p.SizeNow, p.WouldExit, p.WouldEnter, p.SizeNew)
		}
		if want, ok := sumB.Sizes[p.ID]; ok {
			seen++
			if p.SizeNew != want {
				t.Errorf("%s: preview says %d members, a replay with the candidate has %d", p.ID, p.SizeNew, want)
			}
		} else if p.SizeNew != 0 || p.SizeNow != sumA.Sizes[p.ID] {
			t.Errorf("removed segment %s: now %d (store %d), new %d", p.ID, p.SizeNow, sumA.Sizes[p.ID], p.SizeNew)
		}
	}
	if seen != 2 {
		t.Fatalf("preview covered %d of the candidate's segments", seen)
	}
	var w bytes.Buffer
	WritePreview(&w, first)
	if !strings.Contains(w.String(), "repeat_buyer") {
		t.Fatal(w.String())
	}
}
