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
		latencyFor: 2 * time.Second, rate: 2000, latCaughtUp: "on", e2eRounds: 2,
		label: "test", out: filepath.Join(dir, "r.json"), markdown: filepath.Join(dir, "r.md"),
		targets: "1,2,3,4,5,6", decodeEvents: 5000, decodeRounds: 1, replayEvents: 5000, replayRounds: 1,
		sweep: "500:2000:1000", restartActive: 3000,
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
	if len(r.EndToEnd.Rounds) != 2 || len(r.Goka.Rounds) != 2 || r.EndToEnd.Rounds[1] == 0 || r.Goka.Rounds[1] == 0 {
		t.Fatalf("end to end rounds %v, goka rounds %v: want two measured rounds each", r.EndToEnd.Rounds, r.Goka.Rounds)
	}
	if lo, hi := min(r.EndToEnd.Rounds[0], r.EndToEnd.Rounds[1]), max(r.EndToEnd.Rounds[0], r.EndToEnd.Rounds[1]); r.EndToEnd.EventsPerSec < lo || r.EndToEnd.EventsPerSec > hi {
		t.Fatalf("pooled end-to-end rate %.0f outside its rounds' %v", r.EndToEnd.EventsPerSec, r.EndToEnd.Rounds)
	}
	if r.Latency == nil || r.Latency.Samples == 0 {
		t.Fatalf("no latency samples: %+v", r.Latency)
	}
	if r.Events != 20000 || r.Active == 0 || r.Active > 2000 {
		t.Fatalf("workload: %d events, %d active customers", r.Events, r.Active)
	}
	if r.Transport == nil || r.Transport.Samples == 0 || r.LatencyOff == nil || r.LatencyOff.Samples == 0 || r.LatencyOnVsTransport == 0 {
		t.Fatalf("latency runs: transport %+v, changelog off %+v", r.Transport, r.LatencyOff)
	}
	// The relay passes on one offered record in six, each sampled once;
	// the transport samples every record once.
	if r.Relay == nil || r.Relay.Offered == 0 || r.Relay.Samples != (r.Relay.Offered+5)/6 || r.RelayVsTransport == 0 || r.Transport.Samples != r.Transport.Offered {
		t.Fatalf("relay run: %+v; transport %d samples of %d offered", r.Relay, r.Transport.Samples, r.Transport.Offered)
	}
	if r.Decode == nil || r.Decode.Records != 5000 || r.Decode.JSONRatio == 0 || r.Decode.AvroRatio == 0 || !r.Decode.AvroCompiled {
		t.Fatalf("decode: %+v", r.Decode)
	}
	if r.Replay == nil || r.Replay.Events != 5000 || r.Replay.Changes == 0 || !r.Replay.SameOutput {
		t.Fatalf("replay: %+v", r.Replay)
	}
	if r.Restart == nil || r.Restart.Active != 3000 || r.Restart.Seconds == 0 {
		t.Fatalf("restart: %+v", r.Restart)
	}
	// Every target has a line; only 6a (a 10M-customer sweep row) is
	// left to make bench-scaling.
	ids := map[string]string{}
	for _, tg := range r.Targets {
		ids[tg.ID] = tg.Status
	}
	for _, id := range []string{"1a", "1b", "2a", "2b", "3", "4a", "4b", "5", "6a", "6b"} {
		st, ok := ids[id]
		if !ok || (st == "not measured") != (id == "6a") {
			t.Errorf("target %s: status %q", id, st)
		}
	}
	md, _ := os.ReadFile(o.markdown)
	if len(md) == 0 {
		t.Fatal("empty markdown")
	}
}

// TestShownNeverReadsAsTheGoalItMisses: a value just under its goal gets
// the decimals that tell them apart; other values keep the usual ones.
func TestShownNeverReadsAsTheGoalItMisses(t *testing.T) {
	for _, c := range []struct {
		v, goal, scale float64
		prec           int
		met            bool
		want           string
	}{
		{0.4995, 0.5, 100, 0, false, "49.95"},
		{0.499, 0.5, 100, 0, false, "49.9"},
		{0.44, 0.6, 100, 0, false, "44"},
		{0.5004, 0.5, 100, 0, true, "50"},
		{1.9999, 2, 1, 2, true, "2.00"},
		{2.003, 2, 1, 2, false, "2.003"},
		{2.03, 2, 1, 2, false, "2.03"},
	} {
		if got := shown(c.v, c.goal, c.scale, c.prec, c.met); got != c.want {
			t.Errorf("shown(%v, goal %v) = %q, want %q", c.v, c.goal, got, c.want)
		}
	}
}
