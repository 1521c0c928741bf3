package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestRulesValidate(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("version: 1\ntraits:\n  orders_30d: count(purchase) over 30d\nsegments:\n  vip: { when: \"order_30d >= 2\" }\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"rules", "validate", bad}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1; stderr %s", code, errb.String())
	}
	if !regexp.MustCompile(`bad\.yaml:5:17: segment vip: unknown trait "order_30d" \(did you mean "orders_30d"\?\)`).MatchString(errb.String()) {
		t.Fatalf("stderr %q lacks file:line:col", errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"rules", "validate", "../../examples/rules.yaml"}, &out, &errb); code != 0 {
		t.Fatalf("examples: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "vip") || !strings.Contains(out.String(), "reads orders_30d, spend_90d") {
		t.Fatalf("validate output %q", out.String())
	}
	out.Reset()
	if code := run([]string{"rules", "explain", "../../examples/rules.yaml"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "triggers") {
		t.Fatalf("explain: exit %d %q", code, out.String())
	}
	if code := run([]string{"rules"}, &out, &errb); code != 2 {
		t.Fatalf("usage exit %d", code)
	}
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte("kafka: {brokers: [a:1]}\ncommit: {max_events: 0, interval: 5m}\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"config", "check", path}, &out, &errb); code != 1 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"rules.file is empty", "commit.interval (5m0s) must be between 1ms and 1m"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("%q lacks %q", errb.String(), want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the demo's goroutines.
type syncBuffer struct {
	mu chan struct{}
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.String()
}

// The demo prints segment ENTER and EXIT lines within seconds.
func TestDemoPrintsChanges(t *testing.T) {
	out := &syncBuffer{mu: make(chan struct{}, 1)}
	errb := &syncBuffer{mu: make(chan struct{}, 1)}
	done := make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		done <- runDemo(ctx, []string{"--rules", "../../examples/rules.yaml", "--duration", "60s", "--customers", "2000", "--history-events", "20000", "--api", "off"}, out, errb)
	}()
	enter := regexp.MustCompile(`(?m)^\S+ ENTER \S+ +c\d+ `)
	exit := regexp.MustCompile(`(?m)^\S+ EXIT  \S+ +c\d+ `)
	deadline := time.Now().Add(15 * time.Second)
	for !(enter.MatchString(out.String()) && exit.MatchString(out.String())) {
		if time.Now().After(deadline) {
			t.Fatalf("no ENTER and EXIT lines within 15s; stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("demo exit %d: %s", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("demo did not stop")
	}
	if !strings.Contains(out.String(), "segd changes --brokers 127.0.0.1:") {
		t.Fatal("broker address not printed")
	}
}

func TestReplayCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "changes.jsonl")
	var stdout, stderr bytes.Buffer
	code := run([]string{"replay", "--rules", "../../examples/rules.yaml", "--state-dir", filepath.Join(dir, "state"),
		"--retail", "../../internal/retail/testdata/small.csv", "--output", out, "--log-format", "json"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"segment_id":"new_customer"`) || !strings.Contains(stdout.String(), "new_customer") {
		t.Fatalf("output %s\nstdout %s", b, stdout.String())
	}
	// The state directory must be fresh.
	if code := run([]string{"replay", "--rules", "../../examples/rules.yaml", "--state-dir", filepath.Join(dir, "state"),
		"--retail", "../../internal/retail/testdata/small.csv", "--dry-run"}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "not empty") {
		t.Fatalf("second replay into the same dir: exit %d, %s", code, stderr.String())
	}
}

// TestErasureLeavesNoTrace: a customer with history is deleted (a delete
// record on the profile topic's stream), other customers keep going, and
// after `segd state scrub` not one file of the state directory contains the
// customer's id or any of their values.
func TestErasureLeavesNoTrace(t *testing.T) {
	dir := t.TempDir()
	const secret = "cust-7f3a9e-erase-me"
	var in strings.Builder
	for i := 0; i < 50; i++ {
		day := fmt.Sprintf("2024-01-%02dT10:00:00Z", 1+i%28)
		fmt.Fprintf(&in, `{"type":"purchase","event_id":"s%d","customer_id":%q,"ts":%q,"amount":%d,"categories":["secret-category-q9"]}`+"\n", i, secret, day, 100+i)
		fmt.Fprintf(&in, `{"type":"purchase","event_id":"o%d","customer_id":"other-%d","ts":%q,"amount":%d}`+"\n", i, i%7, day, 20+i)
	}
	fmt.Fprintf(&in, `{"type":"profile","event_id":"p1","customer_id":%q,"ts":"2024-01-29T00:00:00Z","attributes":{"country":"secret-country-z1"}}`+"\n", secret)
	fmt.Fprintf(&in, `{"type":"profile","event_id":"d1","customer_id":%q,"ts":"2024-01-30T00:00:00Z","delete":true}`+"\n", secret)
	fmt.Fprintf(&in, `{"type":"purchase","event_id":"o-last","customer_id":"other-1","ts":"2024-01-31T00:00:00Z","amount":5}`+"\n")
	input := filepath.Join(dir, "events.jsonl")
	if err := os.WriteFile(input, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(dir, "state")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"replay", "--rules", "../../examples/rules.yaml", "--state-dir", stateDir, "--input", input, "--dry-run"}, &stdout, &stderr); code != 0 {
		t.Fatalf("replay: exit %d: %s", code, stderr.String())
	}
	traces := func() []string {
		var found []string
		filepath.Walk(stateDir, func(path string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return err
			}
			b, _ := os.ReadFile(path)
			for _, s := range []string{secret, "secret-category-q9", "secret-country-z1"} {
				if bytes.Contains(b, []byte(s)) {
					found = append(found, filepath.Base(path)+": "+s)
				}
			}
			return nil
		})
		return found
	}
	if len(traces()) == 0 {
		t.Fatal("the customer left no bytes before the scrub either: the test would prove nothing")
	}
	stdout.Reset()
	if code := run([]string{"state", "scrub", "--state-dir", stateDir}, &stdout, &stderr); code != 0 {
		t.Fatalf("scrub: exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "scrubbed") {
		t.Fatalf("scrub output %q", stdout.String())
	}
	if found := traces(); len(found) > 0 {
		t.Fatalf("erased customer still in the state directory: %v", found)
	}
	// The other customers are intact: a second scrub still finds a store.
	if code := run([]string{"state", "scrub", "--state-dir", filepath.Join(dir, "nope")}, &stdout, &stderr); code != 1 {
		t.Fatalf("scrub of a missing dir: exit %d", code)
	}
}
