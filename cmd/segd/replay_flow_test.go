package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

// buildSegd returns the segd binary, built once per test process
// (segdBinary).
func buildSegd(t *testing.T) string {
	t.Helper()
	return segdBinary(t)
}

// runSegd runs the binary in dir and returns its exit code and output.
func runSegd(t *testing.T, bin, dir string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// flowEvents are n generated events of a 2011 shop, as JSON lines.
func flowEvents(t *testing.T, n int) []string {
	t.Helper()
	g, err := gen.New(gen.Config{Seed: 7, Customers: 200, EventsPerHour: 60, Start: time.Date(2011, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	var e schemas.Event
	out := make([]string, n)
	for i := range out {
		g.Next(&e)
		out[i] = string(schemas.AppendJSON(nil, &e))
	}
	return out
}

// TestReplayFlowSkipsBadLines runs the built segd replay as a user would,
// from an empty directory, on a file with every kind of bad line mixed into
// good ones: the summary counts them by reason and names the first five by
// file:line, and the output file is byte for byte the replay of the good
// lines alone. A --strict run fails at the first bad line, leaves no output
// and no state, and the same command without --strict then works.
func TestReplayFlowSkipsBadLines(t *testing.T) {
	bin := buildSegd(t)
	rules, err := filepath.Abs("../../examples/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	good := flowEvents(t, 3000)
	bad := []string{
		`{"type":"purchase", "event_id": broken`,
		`{"type":"purchase","event_id":"x1","customer_id":"c1","ts":"2011-03-01 10:00","amount":5}`,
		`{"type":"purchase","event_id":"x2","customer_id":"c1","ts":253402300800000,"amount":5}`,
		`{"type":"purchase","event_id":"x3","customer_id":"c1","ts":-86400000,"amount":5}`,
		`{"type":"purchase","event_id":"x4","customer_id":"c1","ts":"2204-03-02T09:00:00Z","amount":5}`,
		`{"type":"purchase","event_id":"x5","customer_id":"c2","ts":"2020-06-01T00:00:00Z","amount":5000}`,
		`{"type":"purchase","event_id":"x6","ts":"2011-03-01T10:00:00Z","amount":5}`,
		`{"type":"browse","customer_id":"c3","ts":"2011-03-01T10:00:00Z","page":"product"}`,
		`{"type":"purchase","event_id":"x8","customer_id":"c3","ts":"2011-03-01T10:00:00Z","amount":5,"categories":["` + strings.Repeat("z", 1<<20+10) + `"]}`,
		`{"type":"profile","event_id":"x9","customer_id":"c4","ts":"2011-03-01T10:00:00Z","delete":"true"}`,
	}
	dir := t.TempDir()
	var mixed, clean strings.Builder
	var badAt []int
	line := 0
	for i, g := range good {
		if i%200 == 100 && len(badAt) < len(bad) {
			mixed.WriteString(bad[len(badAt)] + "\n")
			line++
			badAt = append(badAt, line)
		}
		mixed.WriteString(g + "\n")
		clean.WriteString(g + "\n")
		line++
	}
	os.WriteFile(filepath.Join(dir, "events.jsonl"), []byte(mixed.String()), 0o644)
	os.WriteFile(filepath.Join(dir, "clean.jsonl"), []byte(clean.String()), 0o644)

	// --strict: the first bad line stops it; nothing is left behind.
	code, _, stderr := runSegd(t, bin, dir, "replay", "--rules", rules, "--state-dir", "state", "--input", "events.jsonl", "--output", "out.jsonl", "--strict")
	if code != 1 || !strings.Contains(stderr, fmt.Sprintf("events.jsonl:%d: json_decode", badAt[0])) || !strings.Contains(stderr, "nothing was written to out.jsonl") {
		t.Fatalf("--strict: exit %d\n%s", code, stderr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("a failed replay left files: %v", entries)
	}

	code, stdout, log := runSegd(t, bin, dir, "replay", "--rules", rules, "--state-dir", "state", "--input", "events.jsonl", "--output", "out.jsonl", "--log-format", "json")
	if code != 0 {
		t.Fatalf("replay: exit %d\n%s", code, log)
	}
	code, _, stderr = runSegd(t, bin, dir, "replay", "--rules", rules, "--state-dir", "state-clean", "--input", "clean.jsonl", "--output", "clean-out.jsonl")
	if code != 0 {
		t.Fatalf("clean replay: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{
		fmt.Sprintf("3000 events (%d invalid skipped)", len(bad)),
		"skipped: bad_field=1 bad_timestamp=3 future_timestamp=1 json_decode=1 missing_customer_id=1 missing_event_id=1 out_of_order_future=1 too_large=1\n",
		fmt.Sprintf("  events.jsonl:%d: json_decode: ", badAt[0]),
		fmt.Sprintf("  events.jsonl:%d: bad_timestamp: ", badAt[1]),
		fmt.Sprintf("  events.jsonl:%d: bad_timestamp: ", badAt[2]),
		fmt.Sprintf("  events.jsonl:%d: bad_timestamp: ", badAt[3]),
		fmt.Sprintf("  events.jsonl:%d: future_timestamp: ", badAt[4]),
		"  ... and 5 more (each is in the log)",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	// Every skipped line is in the log with its file and line.
	for i, at := range badAt {
		if !regexp.MustCompile(fmt.Sprintf(`"file":"events.jsonl","line":%d[,}]`, at)).MatchString(log) {
			t.Errorf("bad line %d (line %d) not logged:\n%s", i, at, log)
		}
	}
	got, _ := os.ReadFile(filepath.Join(dir, "out.jsonl"))
	want, _ := os.ReadFile(filepath.Join(dir, "clean-out.jsonl"))
	if len(want) == 0 || !bytes.Equal(got, want) {
		t.Fatalf("output with bad lines (%d bytes) differs from the output without them (%d bytes)", len(got), len(want))
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(m) > 0 {
		t.Fatalf("temporary files left: %v", m)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "replay-seen")); !os.IsNotExist(err) {
		t.Fatalf("the replay's seen set is still in the state dir: %v", err)
	}
}

// TestReplayFlowOverlappingFiles: two exports that overlap by 500 events
// replay to the same bytes as one export holding each event once, and the
// summary says 500 duplicates were not applied.
func TestReplayFlowOverlappingFiles(t *testing.T) {
	bin := buildSegd(t)
	rules, _ := filepath.Abs("../../examples/rules.yaml")
	ev := flowEvents(t, 3000)
	dir := t.TempDir()
	write := func(name string, lines []string) {
		os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	}
	write("a.jsonl", ev[:1800])
	write("b.jsonl", ev[1300:])
	write("all.jsonl", ev)
	code, stdout, stderr := runSegd(t, bin, dir, "replay", "--rules", rules, "--state-dir", "s1", "--input", "a.jsonl", "--input", "b.jsonl", "--output", "ab.jsonl")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stdout, "500 duplicate events not applied") {
		t.Fatalf("summary:\n%s", stdout)
	}
	if code, _, stderr := runSegd(t, bin, dir, "replay", "--rules", rules, "--state-dir", "s2", "--input", "all.jsonl", "--output", "all-out.jsonl"); code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "ab.jsonl"))
	want, _ := os.ReadFile(filepath.Join(dir, "all-out.jsonl"))
	if len(want) == 0 || !bytes.Equal(got, want) {
		t.Fatalf("overlapping files give %d bytes of output, the union %d", len(got), len(want))
	}
}
