package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// runBinary runs the built segd with args and returns its stdout, stderr
// and exit code. A run longer than a minute is killed (exit -1).
func runBinary(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, segdBinary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("segd %v: %v", args, err)
		}
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// replayStore builds a real state directory with `segd replay` over a
// little generated-looking purchase history and returns it.
func replayStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var in strings.Builder
	for i := 0; i < 60; i++ {
		fmt.Fprintf(&in, `{"type":"purchase","event_id":"e%d","customer_id":"c%03d","ts":"2024-01-%02dT10:00:00Z","amount":%d.%02d}`+"\n", i, i%9, 1+i%28, 40+i*7, i%100)
	}
	input := filepath.Join(dir, "events.jsonl")
	if err := os.WriteFile(input, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(dir, "state")
	if _, errs, code := runBinary(t, "replay", "--rules", "../../examples/rules.yaml", "--state-dir", stateDir, "--input", input, "--dry-run", "--partitions", "2"); code != 0 {
		t.Fatalf("replay: exit %d: %s", code, errs)
	}
	return stateDir
}

// dirDigest names every file of dir with its size, mode, modification
// time and content hash. The empty LOCK file is named without its time:
// Pebble takes its directory lock (which keeps a preview off a running
// engine's store) by creating the file again, which bumps the time only.
func dirDigest(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if info.IsDir() {
			out = append(out, rel+"/ "+info.Mode().String())
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		mtime := info.ModTime().UTC().String()
		if rel == "LOCK" && len(b) == 0 {
			mtime = "(lock)"
		}
		out = append(out, fmt.Sprintf("%s %d %s %s %x", rel, info.Size(), info.Mode(), mtime, sha256.Sum256(b)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// TestPreviewRefusesNonStore: `segd rules preview` on a directory that
// holds no segd store says so, exits 1 and leaves the directory as it
// was (it used to create a Pebble store there and print zeros).
func TestPreviewRefusesNonStore(t *testing.T) {
	for _, files := range []map[string]string{{}, {"notes.txt": "hello"}} {
		dir := t.TempDir()
		for name, body := range files {
			os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644)
		}
		before := dirDigest(t, dir)
		out, errs, code := runBinary(t, "rules", "preview", "../../examples/rules.yaml", "--state-dir", dir)
		if code != 1 || !strings.Contains(errs, "is not a segd state directory") {
			t.Fatalf("exit %d, want 1 and a refusal; stdout %q stderr %q", code, out, errs)
		}
		if after := dirDigest(t, dir); strings.Join(after, "\n") != strings.Join(before, "\n") {
			t.Fatalf("preview changed a directory it refused:\nbefore %v\nafter  %v", before, after)
		}
	}
}

// TestPreviewChangesNothing: a preview of a real store leaves every file
// of it byte-identical, with the same modification times.
func TestPreviewChangesNothing(t *testing.T) {
	stateDir := replayStore(t)
	before := dirDigest(t, stateDir)
	out, errs, code := runBinary(t, "rules", "preview", "../../examples/rules.yaml", "--state-dir", stateDir, "--rules", "../../examples/rules.yaml")
	if code != 0 || !strings.Contains(out, "vip") {
		t.Fatalf("preview: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	if after := dirDigest(t, stateDir); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("preview changed the store:\nbefore %s\nafter  %s", strings.Join(before, "\n       "), strings.Join(after, "\n       "))
	}
	if strings.Contains(out, "note:") {
		t.Fatalf("the candidate is the running rules, yet preview warns:\n%s", out)
	}
}

// TestPreviewNamesTraitsWithoutHistory: a candidate that adds a trait
// makes preview say that the trait starts without history, which
// segments' numbers are therefore not a backfill's, and which command
// gives the real numbers: exactly with the running rules given, and from
// the store's contents without them.
func TestPreviewNamesTraitsWithoutHistory(t *testing.T) {
	stateDir := replayStore(t)
	candidate := filepath.Join(t.TempDir(), "new.yaml")
	os.WriteFile(candidate, []byte(`version: 2
traits:
  orders_30d: count(purchase) over 30d
  spend_60d: sum(purchase.amount) over 60d
  shoe_views_7d: count(browse where category == "shoes") over 7d
segments:
  repeat_buyer: { when: "orders_30d >= 3" }
  big_60d: { when: "spend_60d >= 100" }
  shoe_browser: { when: "shoe_views_7d >= 3" }
`), 0o644)
	common := []string{
		"start without history: a rule change backfills nothing",
		"segd replay --rules " + candidate + " --state-dir NEW_DIR --input EVENTS.jsonl --dry-run",
	}
	for _, tc := range []struct {
		args          []string
		want, notWant []string
	}{{
		// Against the running rules: only spend_60d is new.
		args:    []string{"--rules", "../../examples/rules.yaml"},
		want:    []string{"new trait(s) spend_60d (not in the running rules ../../examples/rules.yaml)", "the numbers of big_60d are what the change would do now, not what a backfill would give"},
		notWant: []string{"orders_30d", "shoe_views_7d"},
	}, {
		// From the store alone: shoe_views_7d has no state either (the
		// history has no browse event), and the note says why it may show.
		args:    nil,
		want:    []string{"trait(s) shoe_views_7d, spend_60d, which no customer in this store holds state for", "the numbers of big_60d, shoe_browser are"},
		notWant: []string{"orders_30d"},
	}} {
		out, errs, code := runBinary(t, append([]string{"rules", "preview", candidate, "--state-dir", stateDir}, tc.args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, code, errs)
		}
		_, note, _ := strings.Cut(out, "note:")
		for _, want := range append(tc.want, common...) {
			if !strings.Contains(note, want) {
				t.Errorf("%v: the note lacks %q:\n%s", tc.args, want, out)
			}
		}
		for _, bad := range tc.notWant {
			if strings.Contains(note, bad) {
				t.Errorf("%v: the note names %s, which has history:\n%s", tc.args, bad, out)
			}
		}
	}
}
