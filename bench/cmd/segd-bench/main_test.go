package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSmallRunAgrees runs the whole benchmark on a small workload: the
// Go-map limit, segd (engine only) and the goka baseline must reach the
// same final memberships (run fails otherwise), and every section must
// have measured something.
func TestSmallRunAgrees(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the goka baseline")
	}
	dir := t.TempDir()
	o := options{
		customers: 2000, events: 20000, days: 30, partitions: 2,
		rules: "../../standard.yaml", gokaDir: "../../goka",
		latencyFor: 2 * time.Second, rate: 2000, latCommit: 5 * time.Millisecond,
		label: "test", out: filepath.Join(dir, "r.json"), markdown: filepath.Join(dir, "r.md"),
	}
	if err := run(o); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(o.out)
	if err != nil {
		t.Fatal(err)
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Agree != "go-map limit = segd = goka" {
		t.Fatalf("agree = %q", r.Agree)
	}
	if r.Members == 0 || r.EngineOnly.Changes == 0 || r.EndToEnd == nil || r.EndToEnd.Changes == 0 || r.Goka == nil || r.Goka.Changes == 0 {
		t.Fatalf("a section measured nothing: %+v", r)
	}
	if r.Latency == nil || r.Latency.Samples == 0 {
		t.Fatalf("no latency samples: %+v", r.Latency)
	}
	if r.Events != 20000 || r.Active == 0 || r.Active > 2000 {
		t.Fatalf("workload: %d events, %d active customers", r.Events, r.Active)
	}
	md, _ := os.ReadFile(o.markdown)
	if len(md) == 0 {
		t.Fatal("empty markdown")
	}
}
