// Command segd-bench runs segd's standard benchmark (bench/README.md): one
// deterministic workload, measured in one run as
//
//   - the Go-map limit: decode + a plain Go map of trait states + the
//     compiled rules, no persistence (what the machine can do at most);
//   - segd engine only: the same records through engine.Local (decode,
//     state cache over Pebble, rules, timers, outbox, atomic commits);
//   - segd end to end through the embedded Kafka broker;
//   - the goka baseline (bench/goka, its own module) on the same broker and
//     input;
//   - event-to-change latency at a fixed offered rate, with the changelog
//     off and on, against the transport alone (producer -> broker ->
//     partition consumer) in the same setup, and against a relay that
//     produces what it consumes with segd's producer and does nothing
//     else (the floor under segd's latency);
//   - segd's decoders against encoding/json and goavro, and a file replay
//     (tool.Replay) with 1 and 2 workers;
//   - optionally, the restart of a store with many active customers.
//
// It ends with one line per performance target (bench/README.md).
//
// The Go-map limit, segd and goka must agree on the final memberships
// (compared as a digest of the sorted customer/segment pairs at the
// workload's last event time) before any speed is reported.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/bench/membership"
	"github.com/segd/segd/connectors"
	"github.com/segd/segd/engine"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
)

type options struct {
	customers     int
	events        int
	days          int
	partitions    int
	rules         string
	gokaDir       string
	skipGoka      bool
	latencyFor    time.Duration
	rate          int
	latCommit     time.Duration
	latCaughtUp   string
	latencyRounds int
	e2eRounds     int
	engineRounds  int
	out           string
	markdown      string
	cpuProfile    string
	e2eProfile    string
	latProfile    string
	label         string
	sweep         string
	// targets lists the target numbers to measure and report ("" all).
	targets       string
	decodeEvents  int
	decodeRounds  int
	replayEvents  int
	replayRounds  int
	restartActive int
}

func main() {
	var o options
	flag.IntVar(&o.customers, "customers", 1_000_000, "distinct customers")
	flag.IntVar(&o.events, "events", 2_000_000, "input events")
	flag.IntVar(&o.days, "days", 30, "simulated days the events span")
	flag.IntVar(&o.partitions, "partitions", 4, "partitions of the input topics (end to end and goka)")
	flag.StringVar(&o.rules, "rules", "bench/standard.yaml", "rules file")
	flag.StringVar(&o.gokaDir, "goka-dir", "bench/goka", "directory of the goka baseline module")
	flag.BoolVar(&o.skipGoka, "skip-goka", false, "do not run the goka baseline")
	flag.DurationVar(&o.latencyFor, "latency-for", 20*time.Second, "how long to offer load for the latency measurement (0: skip)")
	flag.IntVar(&o.rate, "rate", 10_000, "offered events/s for the latency measurement")
	flag.DurationVar(&o.latCommit, "latency-commit-interval", 0, "commit.interval of the engine in the latency measurement (0: the default config's, 200ms; a partition that has caught up commits at once anyway: commit.when_caught_up)")
	flag.IntVar(&o.latencyRounds, "latency-rounds", 2, "target 4: rounds of the three latency runs, in alternating order, their samples pooled")
	flag.IntVar(&o.engineRounds, "engine-rounds", 3, "targets 2 and 6a: rounds of the Go-map limit and segd engine only, in alternating order (limit, segd, then segd, limit, ...), each segd run from a fresh store; the rates are of their summed times")
	flag.IntVar(&o.e2eRounds, "e2e-rounds", 1, "target 5: rounds of the end-to-end and goka runs, in alternating order (segd, goka, then goka, segd, ...), each from a fresh state; the rates are of their summed times")
	flag.StringVar(&o.latCaughtUp, "latency-when-caught-up", "on", "commit.when_caught_up of the engine in the latency measurement (on, the default config's, or off)")
	flag.StringVar(&o.out, "out", "", "write the results as JSON here")
	flag.StringVar(&o.markdown, "markdown", "", "write the results table as markdown here")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the engine-only run here")
	flag.StringVar(&o.e2eProfile, "e2e-cpuprofile", "", "write a CPU profile of the end-to-end run here (the embedded broker included: it runs in this process)")
	flag.StringVar(&o.latProfile, "latency-cpuprofile", "", "write CPU profiles of the first round's latency runs to this path plus -transport, -relay, -off and -on (the load generator and broker included)")
	flag.StringVar(&o.label, "label", "standard", "name of this run in the results")
	flag.StringVar(&o.sweep, "sweep", "", "after the main run, measure the limit and segd engine only at these customers:events:segments points, comma-separated")
	flag.StringVar(&o.targets, "targets", "1,2,3,4,5,6", "the performance targets to report, comma-separated numbers (decode and replay run only for 1 and 3)")
	flag.IntVar(&o.decodeEvents, "decode-events", 300_000, "target 1: decode this many of the workload's records (0: all)")
	flag.IntVar(&o.decodeRounds, "decode-rounds", 3, "target 1: passes over them")
	flag.IntVar(&o.replayEvents, "replay-events", 300_000, "target 3: replay this many of the workload's events from a JSON-lines file (0: all)")
	flag.IntVar(&o.replayRounds, "replay-rounds", 2, "target 3: rounds of one replay with 1 worker and one with 2")
	flag.IntVar(&o.restartActive, "restart-active", 0, "target 6: build a store with this many active customers and time its restart (0: skip)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "segd-bench:", err)
		os.Exit(1)
	}
}

// Results is what one run measured; bench/results/latest.json holds one.
type Results struct {
	Label       string    `json:"label"`
	Date        time.Time `json:"date"`
	GoVersion   string    `json:"go_version"`
	CPUs        int       `json:"cpus"`
	MemoryBytes uint64    `json:"memory_bytes,omitempty"`
	// LoadStart and LoadEnd are the machine's 1-minute load average when
	// the run started and ended (other processes share the cores).
	LoadStart  float64 `json:"load_avg_start"`
	LoadEnd    float64 `json:"load_avg_end"`
	Customers  int     `json:"customers"`
	Events     int     `json:"events"`
	Active     int     `json:"active_customers"`
	Traits     int     `json:"traits"`
	Segments   int     `json:"segments"`
	Partitions int     `json:"partitions"`

	MapLimit   Throughput  `json:"go_map_limit"`
	EngineOnly Throughput  `json:"segd_engine_only"`
	EndToEnd   *Throughput `json:"segd_end_to_end,omitempty"`
	Goka       *Throughput `json:"goka_baseline,omitempty"`
	// Latency is the segd latency run with state.changelog on (the
	// default), LatencyOff with it off, Transport the transport alone.
	Latency    *Latency `json:"latency,omitempty"`
	LatencyOff *Latency `json:"latency_changelog_off,omitempty"`
	Transport  *Latency `json:"transport_latency,omitempty"`
	// Relay is the floor under the segd runs: the transport run's
	// consumers producing one record in six on with acks=all, as segd
	// publishes a change, and doing nothing else (relayLatency).
	Relay *Latency `json:"relay_latency,omitempty"`
	// RelayVsTransport is the relay's p99 over the transport's: the
	// part of targets 4a and 4b no processing can remove.
	RelayVsTransport float64 `json:"relay_vs_transport_p99,omitempty"`
	// LatencyOffVsTransport and LatencyOnVsTransport are p99 ratios.
	LatencyOffVsTransport float64        `json:"latency_off_vs_transport_p99,omitempty"`
	LatencyOnVsTransport  float64        `json:"latency_on_vs_transport_p99,omitempty"`
	Decode                *DecodeRatios  `json:"decode,omitempty"`
	Replay                *ReplayWorkers `json:"replay_workers,omitempty"`
	Restart               *RestartActive `json:"restart_active,omitempty"`
	Targets               []Target       `json:"targets,omitempty"`

	EngineVsLimit float64 `json:"engine_only_vs_go_map_limit"`
	EndToEndVsGo  float64 `json:"end_to_end_vs_goka,omitempty"`
	Members       int     `json:"final_members"`
	Digest        string  `json:"final_membership_digest"`
	Agree         string  `json:"memberships_agree"`
	StateBytes    int64   `json:"engine_only_state_bytes"`
	CacheHits     float64 `json:"engine_only_cache_hits"`
	CacheMisses   float64 `json:"engine_only_cache_misses"`
	// FilterSkips and ColdHits are the cache misses answered without a
	// Pebble read: by the customer-id filter (a new customer) and by the
	// cold tier. The rest were Pebble lookups.
	FilterSkips float64 `json:"engine_only_filter_skips"`
	ColdHits    float64 `json:"engine_only_cold_hits"`
	CacheBytes  float64 `json:"engine_only_cache_bytes"`
	// RestartSeconds is the time to open the engine-only store again and
	// be ready to resume.
	RestartSeconds float64      `json:"engine_only_restart_seconds"`
	Scaling        []ScalePoint `json:"scaling,omitempty"`
	PeakHeapBytes  uint64       `json:"engine_only_heap_bytes"`
}

// Throughput is one system's run over the workload.
type Throughput struct {
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	Changes      int64   `json:"changes"`
	// CPUSeconds is the process's CPU time over the run (engine only):
	// on a machine this noisy the steadier of the two costs.
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	// Rounds holds each round's rate when the figure pools several
	// (--e2e-rounds): Seconds is their sum, EventsPerSec the events of
	// all rounds over it.
	Rounds []float64 `json:"rounds_events_per_sec,omitempty"`
}

// addRound pools one more round of n events into t.
func (t *Throughput) addRound(r Throughput) {
	t.Rounds = append(t.Rounds, r.EventsPerSec)
	t.Seconds += r.Seconds
	t.EventsPerSec = r.EventsPerSec * r.Seconds * float64(len(t.Rounds)) / t.Seconds
	t.Changes = r.Changes
}

// Latency is event-to-change latency at an offered rate.
type Latency struct {
	Rate           int     `json:"offered_events_per_sec"`
	CommitInterval string  `json:"commit_interval,omitempty"`
	WhenCaughtUp   string  `json:"when_caught_up,omitempty"`
	Changelog      string  `json:"changelog,omitempty"`
	Seconds        float64 `json:"seconds"`
	// Offered is how many records the run offered.
	Offered int `json:"offered"`
	Samples int `json:"samples"`
	// Rounds is how many runs the samples were pooled from (--latency-rounds).
	Rounds int     `json:"rounds"`
	P50ms  float64 `json:"p50_ms"`
	P99ms  float64 `json:"p99_ms"`
	P999ms float64 `json:"p999_ms"`
	// samples are the run's measurements, kept for pooling rounds.
	samples []time.Duration
}

// record is one pre-encoded input record.
type record struct {
	typ   schemas.EventType
	key   []byte
	value []byte
	time  int64
	id    string
}

// topicOf is segd's default input topic of each event type.
var topicOf = [schemas.NumEventTypes]string{
	schemas.EventPurchase: engine.DefaultPurchasesTopic, schemas.EventBrowse: engine.DefaultBrowsesTopic,
	schemas.EventEngagement: engine.DefaultEngagementsTopic, schemas.EventProfile: engine.DefaultProfilesTopic,
}

func run(o options) error {
	rs, err := rules.CompileFile(o.rules)
	if err != nil {
		return err
	}
	res := &Results{Label: o.label, Date: time.Now().UTC(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(),
		MemoryBytes: memTotal(), LoadStart: loadAvg(), Customers: o.customers, Events: o.events, Traits: len(rs.Traits()), Segments: len(rs.Segments()), Partitions: o.partitions}
	logf("workload: %d events over %d days, %d customers, rules %s (%d traits, %d segments)", o.events, o.days, o.customers, o.rules, res.Traits, res.Segments)
	recs, end, active, err := workload(o)
	if err != nil {
		return err
	}
	res.Active = active

	var gokaBin string
	if !o.skipGoka {
		// Build the baseline first so its compile time is not measured.
		binDir, err := os.MkdirTemp("", "segd-goka-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(binDir)
		gokaBin = filepath.Join(binDir, "goka-baseline")
		cmd := exec.Command("go", "build", "-o", gokaBin, ".")
		cmd.Dir = o.gokaDir
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build the goka baseline: %w", err)
		}
	}

	if err := limitAndEngine(o, rs, recs, end, res); err != nil {
		return err
	}
	res.Agree = "go-map limit = segd"
	res.EngineVsLimit = res.EngineOnly.EventsPerSec / res.MapLimit.EventsPerSec

	if o.wants(1) || o.wants(3) {
		upTo := func(n int) int {
			if n <= 0 || n > len(recs) {
				return len(recs)
			}
			return n
		}
		nDecode, nReplay := upTo(o.decodeEvents), upTo(o.replayEvents)
		lines, err := jsonLines(recs, max(nDecode, nReplay))
		if err != nil {
			return err
		}
		if o.wants(1) {
			if res.Decode, err = decodeRatios(recs, lines[:nDecode], max(1, o.decodeRounds)); err != nil {
				return err
			}
			logf("decode (%d records): JSON %.0f ns vs encoding/json %.0f ns (%.2fx); Avro %.0f ns vs goavro %.0f ns (%.2fx)",
				res.Decode.Records, res.Decode.JSONNs, res.Decode.StdJSONNs, res.Decode.JSONRatio, res.Decode.AvroNs, res.Decode.GoavroNs, res.Decode.AvroRatio)
		}
		if o.wants(3) {
			if res.Replay, err = replayWorkers(o, lines[:nReplay], end, max(1, o.replayRounds)); err != nil {
				return err
			}
			logf("file replay (%d events): 1 worker %.0f events/s (%.1f cores used), 2 workers %.0f events/s (%.1f cores used): %.2fx, same output: %v; load average %.1f",
				res.Replay.Events, res.Replay.EventsPerSec1, res.Replay.Cores1, res.Replay.EventsPerSec2, res.Replay.Cores2, res.Replay.Speedup, res.Replay.SameOutput, loadAvg())
		}
	}

	// Rounds alternate (segd, goka, then goka, segd): the machine's load
	// drifts over minutes, and one run of each decided target 5 by it.
	// Every run gets a broker of its own holding the input alone: the
	// broker keeps every topic in this process's memory, and a run after
	// another would pay for collecting what the earlier one wrote (a second
	// segd round ran a quarter slower on one shared broker).
	res.EndToEnd = &Throughput{}
	if gokaBin != "" {
		res.Goka = &Throughput{}
	}
	withBroker := func(fn func(brokers []string) (*Throughput, error)) (*Throughput, error) {
		broker, err := connectors.StartEmbeddedBroker(0, int32(o.partitions))
		if err != nil {
			return nil, err
		}
		defer broker.Close()
		if err := produceAll(broker.Addrs(), o.partitions, recs); err != nil {
			return nil, err
		}
		runtime.GC() // the producer's garbage is not the run's
		return fn(broker.Addrs())
	}
	for r := 0; r < max(1, o.e2eRounds); r++ {
		segdFirst := r%2 == 0
		for k := 0; k < 2; k++ {
			if (k == 0) == segdFirst {
				t, err := withBroker(func(brokers []string) (*Throughput, error) { return endToEnd(o, brokers, len(recs), r) })
				if err != nil {
					return err
				}
				res.EndToEnd.addRound(*t)
				logf("segd end to end (round %d): %.0f events/s", r+1, t.EventsPerSec)
			} else if gokaBin != "" {
				t, err := withBroker(func(brokers []string) (*Throughput, error) {
					return gokaBaseline(gokaBin, o, brokers, len(recs), end, res)
				})
				if err != nil {
					return err
				}
				res.Goka.addRound(*t)
				logf("goka baseline (round %d): %.0f events/s", r+1, t.EventsPerSec)
			}
		}
	}
	logf("segd end to end: %.0f events/s", res.EndToEnd.EventsPerSec)
	if gokaBin != "" {
		res.EndToEndVsGo = res.EndToEnd.EventsPerSec / res.Goka.EventsPerSec
		logf("goka baseline: %.0f events/s; segd end to end is %.1fx", res.Goka.EventsPerSec, res.EndToEndVsGo)
	}
	// The end-to-end brokers are closed (each held every record produced
	// and consumed, over a GiB at 1M customers); the latency runs start
	// their own. The workload beyond what the latency runs offer is not
	// kept either: a garbage collector marking it would be the
	// benchmark's tail, not segd's.
	if o.latencyFor > 0 {
		recs = latencyRecords(recs, o)
		runtime.GC()
		show := func(name string, l *Latency) {
			logf("%s at %d events/s: p50 %.2f ms, p99 %.2f ms, p999 %.2f ms (%d samples)", name, l.Rate, l.P50ms, l.P99ms, l.P999ms, l.Samples)
		}
		// Rounds alternate the order (transport, off, on, then on, off,
		// transport) and their samples are pooled: one 20 s run's p99 is
		// decided by a handful of stalls of this shared machine.
		var runs [4][]*Latency
		names := [4]string{"transport only", "latency, changelog off", "latency, changelog on", "relay floor"}
		measure := [4]func() (*Latency, error){
			func() (*Latency, error) { return transportLatency(o, recs) },
			func() (*Latency, error) { return latency(o, recs, "off") },
			func() (*Latency, error) { return latency(o, recs, "on") },
			func() (*Latency, error) { return relayLatency(o, recs) },
		}
		for r := 0; r < max(1, o.latencyRounds); r++ {
			order := []int{0, 3, 1, 2}
			if r%2 == 1 {
				order = []int{2, 1, 3, 0}
			}
			for _, k := range order {
				stop := func() {}
				if r == 0 && o.latProfile != "" {
					if stop, err = startProfile(o.latProfile + "-" + [4]string{"transport", "off", "on", "relay"}[k]); err != nil {
						return err
					}
				}
				l, err := measure[k]()
				stop()
				if err != nil {
					return err
				}
				show(fmt.Sprintf("%s (round %d)", names[k], r+1), l)
				runs[k] = append(runs[k], l)
			}
		}
		res.Transport, res.LatencyOff, res.Latency, res.Relay = pooled(runs[0]), pooled(runs[1]), pooled(runs[2]), pooled(runs[3])
		for k, l := range []*Latency{res.Transport, res.LatencyOff, res.Latency, res.Relay} {
			show(names[k]+", all rounds", l)
		}
		res.LatencyOffVsTransport = res.LatencyOff.P99ms / res.Transport.P99ms
		res.LatencyOnVsTransport = res.Latency.P99ms / res.Transport.P99ms
		res.RelayVsTransport = res.Relay.P99ms / res.Transport.P99ms
	}
	if o.sweep != "" {
		pts, err := parseSweep(o.sweep)
		if err != nil {
			return err
		}
		if err := sweep(o, pts, res); err != nil {
			return err
		}
	}
	if o.restartActive > 0 && o.wants(6) {
		logf("restart: building a store with %d active customers", o.restartActive)
		if res.Restart, err = restartActive(o, o.restartActive); err != nil {
			return err
		}
		logf("restart: built in %.1fs (%.0f MiB), opened again in %.2fs, first event %.1f ms", res.Restart.BuildSeconds,
			float64(res.Restart.StateBytes)/(1<<20), res.Restart.Seconds, 1000*res.Restart.FirstEventSeconds)
	}
	res.LoadEnd = loadAvg()
	res.Targets = evalTargets(o, res)
	table := targetsMarkdown(res.Targets) + "\n" + markdown(res) + sweepMarkdown(res.Scaling)
	fmt.Print(table)
	fmt.Println()
	for _, t := range res.Targets {
		fmt.Println(t.Line())
	}
	if o.out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if o.markdown != "" {
		if err := os.WriteFile(o.markdown, []byte(table), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// workload generates and Avro-encodes the events; end is the last event
// time, active the number of customers with at least one event.
func workload(o options) ([]record, int64, int, error) {
	hours := float64(o.days * 24)
	g, err := gen.New(gen.Config{Seed: 42, Customers: o.customers, EventsPerHour: float64(o.events) / hours})
	if err != nil {
		return nil, 0, 0, err
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, 0, 0, err
	}
	recs := make([]record, 0, o.events)
	seen := map[string]struct{}{}
	var e schemas.Event
	var end int64
	for len(recs) < o.events && g.Next(&e) {
		v, err := codecs[e.Type].AppendEncode(nil, &e)
		if err != nil {
			return nil, 0, 0, err
		}
		recs = append(recs, record{typ: e.Type, key: []byte(e.CustomerID), value: v, time: e.Time, id: e.EventID})
		seen[e.CustomerID] = struct{}{}
		end = max(end, e.Time)
	}
	return recs, end, len(seen), nil
}

// mapLimit is the pipeline with state in a Go map and no persistence:
// decode, read-modify-write of the customer's trait state, the rules
// (apply, then the segments the event touched), membership bits.
// limitAndEngine measures the Go-map limit and segd engine only in
// o.engineRounds rounds of alternating order (limit, segd, then segd,
// limit, ...: a steady drift of the machine's speed weighs alike on both
// sides), each segd run from a fresh store; both rates are pooled ones
// (the events of all runs over their summed times). One run of the limit
// moved 516k-690k events/s between runs minutes apart, one of segd
// 332k-469k, and two consecutive segd runs 493k and 585k: more rounds
// narrow the ratio's spread, not its centre. Every run must end with the
// same memberships. The first segd run is the profiled one, and its other
// figures (cache, state, restart) stand for all.
func limitAndEngine(o options, rs *rules.RuleSet, recs []record, end int64, res *Results) error {
	rounds := max(1, o.engineRounds)
	var limits, engines []Throughput
	var digest string
	limit := func() error {
		var r Results
		d, err := mapLimit(rs, recs, end, &r)
		if err != nil {
			return err
		}
		if digest != "" && d != digest {
			return fmt.Errorf("the go-map limit's runs end with different memberships: %s, %s", digest, d)
		}
		digest = d
		limits = append(limits, r.MapLimit)
		logf("go-map limit (run %d): %.0f events/s", len(limits), r.MapLimit.EventsPerSec)
		return nil
	}
	engineRun := func() error {
		// The first run fills res (and is the profiled one); the others
		// only have to end with its memberships.
		run, ro := res, o
		if len(engines) > 0 {
			run = &Results{Active: res.Active} // for its log lines
			ro.cpuProfile = ""
		}
		if err := engineOnly(ro, recs, end, run); err != nil {
			return err
		}
		if run.Digest != res.Digest {
			return fmt.Errorf("segd engine only's runs end with different memberships: %s, %s", res.Digest, run.Digest)
		}
		engines = append(engines, run.EngineOnly)
		logf("segd engine only (run %d): %.0f events/s", len(engines), run.EngineOnly.EventsPerSec)
		return nil
	}
	for r := range rounds {
		first, second := limit, engineRun
		if r%2 == 1 {
			first, second = engineRun, limit
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
	}
	if digest != res.Digest {
		return fmt.Errorf("final memberships differ: go-map limit %s, segd %s", digest, res.Digest)
	}
	res.EngineOnly = pooledThroughput(engines, len(recs))
	res.MapLimit = pooledThroughput(limits, len(recs))
	logf("segd engine only: %.0f events/s (%.0f%% of the limit's %.0f, both pooled over %d runs); %.2f CPU s over %.2f s", res.EngineOnly.EventsPerSec, 100*res.EngineOnly.EventsPerSec/res.MapLimit.EventsPerSec, res.MapLimit.EventsPerSec, rounds, res.EngineOnly.CPUSeconds, res.EngineOnly.Seconds)
	return nil
}

// pooledThroughput is runs of the same n events as one: the events of
// all over their summed times (and mean CPU), the changes of the first.
func pooledThroughput(runs []Throughput, n int) Throughput {
	var secs, cpu float64
	for _, r := range runs {
		secs += r.Seconds
		cpu += r.CPUSeconds
	}
	k := float64(len(runs))
	return Throughput{Seconds: secs / k, EventsPerSec: k * float64(n) / secs, Changes: runs[0].Changes, CPUSeconds: cpu / k}
}

func mapLimit(rs *rules.RuleSet, recs []record, end int64, res *Results) (string, error) {
	var decoders [schemas.NumEventTypes]*connectors.Decoder
	for t := schemas.EventPurchase; t <= schemas.EventProfile; t++ {
		d, err := connectors.NewDecoder(connectors.DecoderOptions{Type: t, Format: connectors.FormatAvro})
		if err != nil {
			return "", err
		}
		decoders[t] = d
	}
	type entry struct {
		s       *rules.State
		members []uint64 // bit per segment
	}
	m := make(map[string]*entry)
	var e schemas.Event
	var segs []int
	var out []bool
	var changes int64
	var evalScratch rules.Scratch
	var clock int64
	runtime.GC()
	start := time.Now()
	for i := range recs {
		r := &recs[i]
		e.Reset()
		if err := decoders[r.typ].Decode(r.value, &e); err != nil {
			return "", err
		}
		clock = max(clock, e.Time)
		c := m[e.CustomerID]
		if c == nil {
			c = &entry{s: rs.NewState(), members: make([]uint64, (len(rs.Segments())+63)/64)}
			c.s.UseScratch(&evalScratch) // as segd's processor does: one per goroutine
			m[strings.Clone(e.CustomerID)] = c
		}
		touched := rs.Apply(c.s, &e, clock)
		if e.Type == schemas.EventProfile {
			segs = rs.SegmentsFor(schemas.EventProfile)
		} else {
			segs = rs.SegmentsTouched(e.Type, touched, segs[:0])
		}
		out = rs.EvalSegments(c.s, clock, segs, out[:0])
		for j, in := range out {
			w, bit := segs[j]/64, uint64(1)<<uint(segs[j]%64)
			if in != (c.members[w]&bit != 0) {
				c.members[w] ^= bit
				changes++
			}
		}
	}
	el := time.Since(start)
	res.MapLimit = Throughput{Seconds: el.Seconds(), EventsPerSec: float64(len(recs)) / el.Seconds(), Changes: changes}
	var pairs []string
	all := make([]int, len(rs.Segments()))
	for i := range all {
		all[i] = i
	}
	for id, c := range m {
		out = rs.EvalSegments(c.s, end, all, out[:0])
		for j, in := range out {
			if in {
				pairs = append(pairs, membership.Pair(id, rs.Segments()[j].ID))
			}
		}
	}
	return membership.Digest(pairs), nil
}

// engineConfig is a segd config for the benchmark's runs.
func engineConfig(o options, name string, brokers []string) (cfg *engine.Config, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "segd-bench-"+name+"-")
	if err != nil {
		return nil, nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	cfg = &engine.Config{}
	cfg.Kafka.Brokers = brokers
	cfg.Rules.File = o.rules
	cfg.State.Dir = dir
	cfg.API.Addr = "off"
	cfg.Clock.IdleAfter = -1 // event time only: the workload's clock is simulated
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		cleanup()
		return nil, nil, err
	}
	return cfg, cleanup, nil
}

// engineOnly feeds the records to engine.Local on one partition (one
// core's worth of work) and reads the final memberships back.
func engineOnly(o options, recs []record, end int64, res *Results) error {
	cfg, cleanup, err := engineConfig(o, "engine", []string{"127.0.0.1:1"})
	if err != nil {
		return err
	}
	defer cleanup()
	eng, err := engine.New(cfg, engine.Options{Logger: zerolog.Nop()})
	if err != nil {
		return err
	}
	defer eng.Close()
	l, err := eng.OpenLocal(1)
	if err != nil {
		return err
	}
	defer l.Close()
	var topics [schemas.NumEventTypes]string
	for t := range topics {
		topics[t] = topicOf[t]
	}
	stopProfile, err := startProfile(o.cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile() // on an early return; stopping twice is harmless
	runtime.GC()
	start, cpuStart := time.Now(), cpuSeconds()
	// In polls of 512 records, as a running engine reads them from Kafka.
	poll := make([]connectors.Message, 0, 512)
	for i := range recs {
		r := &recs[i]
		poll = append(poll, connectors.Message{Topic: topics[r.typ], Offset: int64(i), Key: r.key, Value: r.value, Time: time.UnixMilli(r.time)})
		if len(poll) == cap(poll) || i == len(recs)-1 {
			if err := l.HandlePoll(0, poll); err != nil {
				return err
			}
			poll = poll[:0]
		}
	}
	if err := l.Commit(); err != nil {
		return err
	}
	el, cpu := time.Since(start), cpuSeconds()-cpuStart
	stopProfile()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.PeakHeapBytes = ms.HeapInuse
	if mfs, err := eng.Registry().Gather(); err == nil {
		for _, mf := range mfs {
			for _, m := range mf.Metric {
				switch mf.GetName() {
				case "segd_cache_hits_total":
					res.CacheHits += m.GetCounter().GetValue()
				case "segd_cache_misses_total":
					res.CacheMisses += m.GetCounter().GetValue()
				case "segd_state_filter_skips_total":
					res.FilterSkips += m.GetCounter().GetValue()
				case "segd_cache_cold_hits_total":
					res.ColdHits += m.GetCounter().GetValue()
				case "segd_cache_bytes":
					res.CacheBytes += m.GetGauge().GetValue()
				}
			}
		}
	}
	if err := l.Advance(0, end); err != nil {
		return err
	}
	if err := l.Commit(); err != nil {
		return err
	}
	var changes, deadLetters int64
	if err := l.Drain(func(topic string, _, _ []byte) error {
		if topic == cfg.Kafka.Topics.Changes {
			changes++
		} else {
			deadLetters++
		}
		return nil
	}); err != nil {
		return err
	}
	if deadLetters > 0 {
		return fmt.Errorf("engine only: %d of %d records dead-lettered", deadLetters, len(recs))
	}
	res.EngineOnly = Throughput{Seconds: el.Seconds(), EventsPerSec: float64(len(recs)) / el.Seconds(), Changes: changes, CPUSeconds: cpu}
	rs, err := rules.CompileFile(o.rules)
	if err != nil {
		return err
	}
	// The memberships in one pass over the records; the listing a person
	// uses (the members API's, a pass per segment) must agree with it on
	// the first segments.
	var pairs []string
	bySegment := map[string][]string{}
	if err := l.Memberships(func(id, seg string) {
		pairs = append(pairs, membership.Pair(id, seg))
		bySegment[seg] = append(bySegment[seg], id)
	}); err != nil {
		return err
	}
	for _, s := range rs.Segments()[:min(3, len(rs.Segments()))] {
		listStart := time.Now()
		ids, err := l.Members(s.ID)
		if err != nil {
			return err
		}
		logf("listed segment %s: %d members of %d customers in %v", s.ID, len(ids), res.Active, time.Since(listStart).Round(time.Millisecond))
		want := bySegment[s.ID]
		slices.Sort(want)
		if !slices.Equal(ids, want) {
			return fmt.Errorf("engine only: segment %s lists %d members, the records hold %d", s.ID, len(ids), len(want))
		}
	}
	res.Members = len(pairs)
	res.Digest = membership.Digest(pairs)
	if err := l.Close(); err != nil {
		return err
	}
	if err := eng.Close(); err != nil {
		return err
	}
	res.StateBytes = dirSize(cfg.State.Dir)
	// Restart: open the store and the partition again, ready to resume.
	start = time.Now()
	eng2, err := engine.New(cfg, engine.Options{Logger: zerolog.Nop()})
	if err != nil {
		return err
	}
	l2, err := eng2.OpenLocal(1)
	if err != nil {
		eng2.Close()
		return err
	}
	res.RestartSeconds = time.Since(start).Seconds()
	l2.Close()
	return eng2.Close()
}

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// createTopics creates segd's input and output topics, and the goka
// baseline's output topic (goka creates only its table).
func createTopics(brokers []string, partitions int) error {
	var specs []connectors.TopicSpec
	for _, t := range append(topicOf[1:], engine.DefaultChangesTopic, engine.DefaultDeadLetterTopic, "goka.changes") {
		specs = append(specs, connectors.TopicSpec{Name: t, Partitions: partitions})
	}
	return (connectors.Cluster{Brokers: brokers, Security: nil}).EnsureTopics(context.Background(), specs)
}

// produceAll writes the records to the input topics, keyed by customer.
func produceAll(brokers []string, partitions int, recs []record) error {
	ctx := context.Background()
	if err := createTopics(brokers, partitions); err != nil {
		return err
	}
	p, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		return err
	}
	defer p.Close()
	start := time.Now()
	batch := make([]connectors.Message, 0, 4096)
	for i := range recs {
		r := &recs[i]
		batch = append(batch, connectors.Message{Topic: topicOf[r.typ], Key: r.key, Value: r.value, Time: time.UnixMilli(r.time)})
		if len(batch) == cap(batch) || i == len(recs)-1 {
			if err := p.Write(ctx, batch...); err != nil {
				return fmt.Errorf("produce: %w", err)
			}
			batch = batch[:0]
		}
	}
	logf("produced %d records in %.1fs", len(recs), time.Since(start).Seconds())
	return nil
}

// endToEnd runs a segd engine against the broker from a fresh state until
// it applied every record and Kafka acknowledged every change.
func endToEnd(o options, brokers []string, n, round int) (*Throughput, error) {
	cfg, cleanup, err := engineConfig(o, "e2e", brokers)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	eng, err := engine.New(cfg, engine.Options{Logger: zerolog.Nop()})
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	profile := o.e2eProfile
	if round > 0 {
		profile = "" // the first round's
	}
	stopProfile, err := startProfile(profile)
	if err != nil {
		return nil, err
	}
	defer stopProfile()
	start := time.Now()
	go func() { done <- eng.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	var res *Throughput
	for {
		p := eng.Progress()
		if int(p.Events+p.DeadLetters) >= n && p.OutboxDepth == 0 && p.Published >= p.Enters+p.Exits {
			el := time.Since(start)
			res = &Throughput{Seconds: el.Seconds(), EventsPerSec: float64(n) / el.Seconds(), Changes: int64(p.Enters + p.Exits)}
			break
		}
		select {
		case err := <-done:
			return nil, fmt.Errorf("engine stopped early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("end to end: timed out at %+v", p)
		}
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	return res, nil
}

// gokaBaseline runs bench/goka over the same topics.
func gokaBaseline(bin string, o options, brokers []string, n int, end int64, res *Results) (*Throughput, error) {
	cmd := exec.Command(bin, "--brokers", brokers[0], "--rules", o.rules, "--events", fmt.Sprint(n), "--end", fmt.Sprint(end),
		"--topics", strings.Join(topicOf[1:], ","))
	cmd.Stderr = io.Discard
	if os.Getenv("SEGD_BENCH_VERBOSE") != "" {
		cmd.Stderr = os.Stderr
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("goka baseline: %w", err)
	}
	var g struct {
		Events  int64   `json:"events"`
		Seconds float64 `json:"seconds"`
		Changes int64   `json:"changes"`
		Digest  string  `json:"digest"`
	}
	if err := json.Unmarshal(out, &g); err != nil {
		return nil, fmt.Errorf("goka baseline output %q: %w", out, err)
	}
	if g.Digest != res.Digest {
		return nil, fmt.Errorf("final memberships differ: segd %s, goka %s", res.Digest, g.Digest)
	}
	res.Agree = "go-map limit = segd = goka"
	return &Throughput{Seconds: g.Seconds, EventsPerSec: float64(g.Events) / g.Seconds, Changes: g.Changes}, nil
}

// latency offers o.rate events/s to a running engine (state.changelog
// changelog) on a fresh broker and measures, for every change an event
// caused, the time from just before the event's produce call to Kafka's
// acknowledgement of the change.
func latency(o options, recs []record, changelog string) (*Latency, error) {
	broker, err := connectors.StartEmbeddedBroker(0, int32(o.partitions))
	if err != nil {
		return nil, err
	}
	defer broker.Close()
	brokers := broker.Addrs()
	if err := createTopics(brokers, o.partitions); err != nil {
		return nil, err
	}
	cfg, cleanup, err := engineConfig(o, "latency", brokers)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	// Changes are published after the commit that holds them: with
	// commit.when_caught_up on (the default) a partition that has caught
	// up with its input commits at once; off, the commit interval is the
	// latency knob.
	cfg.Commit.Interval = o.latCommit
	cfg.Commit.WhenCaughtUp = o.latCaughtUp
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.State.Changelog = changelog
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var samples []time.Duration
	var change schemas.SegmentChange
	eng, err := engine.New(cfg, engine.Options{Logger: zerolog.Nop(), OnPublished: func(topic string, _, value []byte) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if err := schemas.DecodeSegmentChangeAvro(value, &change); err != nil || change.Cause != schemas.CauseEvent {
			return
		}
		if t, ok := sent[change.CauseEventID]; ok {
			samples = append(samples, now.Sub(t))
		}
	}})
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	// Offer load once the engine runs every partition: the run measures
	// steady state, not the engine's start (the transport run's consumers
	// are running before it offers, too).
	if err := waitOwned(eng, o.partitions, done); err != nil {
		return nil, err
	}
	n, offered, err := offer(ctx, o, brokers, recs, &mu, func(r *record, t time.Time) { sent[r.id] = t })
	if err != nil {
		return nil, err
	}
	// Let the last changes arrive.
	waitUntil := time.Now().Add(5 * time.Second)
	for time.Now().Before(waitUntil) {
		pr := eng.Progress()
		if int(pr.Events+pr.DeadLetters) >= n && pr.OutboxDepth == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(samples) == 0 {
		return nil, errors.New("latency: no change was caused by an offered event")
	}
	l := &Latency{Offered: n, Rate: int(float64(n) / offered.Seconds()), CommitInterval: cfg.Commit.Interval.String(), WhenCaughtUp: cfg.Commit.WhenCaughtUp, Changelog: changelog, Seconds: offered.Seconds()}
	quantiles(l, samples)
	return l, nil
}

// startProfile writes a CPU profile to path until the returned stop is
// called; with path empty it does nothing.
func startProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// pooled merges rounds of one latency measurement: their samples together,
// the offered rate averaged, the seconds summed.
func pooled(runs []*Latency) *Latency {
	out := *runs[0]
	out.samples, out.Seconds, out.Rate, out.Offered = nil, 0, 0, 0
	for _, l := range runs {
		out.samples = append(out.samples, l.samples...)
		out.Seconds += l.Seconds
		out.Rate += l.Rate
		out.Offered += l.Offered
	}
	out.Rate /= len(runs)
	out.Rounds = len(runs)
	quantiles(&out, out.samples)
	return &out
}

// latencyRecords copies the records the latency runs can offer (o.rate
// per second for o.latencyFor, with room to spare), so the rest of the
// workload can be collected.
func latencyRecords(recs []record, o options) []record {
	n := min(len(recs), int(float64(o.rate)*o.latencyFor.Seconds()*1.2)+1000)
	out := make([]record, n)
	for i := range out {
		r := recs[i]
		r.key, r.value = slices.Clone(r.key), slices.Clone(r.value)
		out[i] = r
	}
	return out
}

// roundRates lists per-round rates, e.g. "182k, 190k".
func roundRates(rates []float64) string {
	var parts []string
	for _, r := range rates {
		parts = append(parts, fmt.Sprintf("%.0fk", r/1000))
	}
	return strings.Join(parts, ", ")
}

// waitOwned waits until the engine runs n partitions.
func waitOwned(eng *engine.Engine, n int, done chan error) error {
	deadline := time.Now().Add(time.Minute)
	for {
		owned := 0.0
		if mfs, err := eng.Registry().Gather(); err == nil {
			for _, mf := range mfs {
				if mf.GetName() == "segd_owned_partitions" {
					for _, m := range mf.Metric {
						owned += m.GetGauge().GetValue()
					}
				}
			}
		}
		if int(owned) >= n {
			return nil
		}
		select {
		case err := <-done:
			return fmt.Errorf("engine stopped before running its partitions: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("engine runs %.0f of %d partitions after a minute", owned, n)
		}
	}
}

// markdown renders the results as the table bench/README.md holds.
func markdown(r *Results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run %q on %s: %d CPUs (load average %.1f at the start, %.1f at the end), %.1f GiB, %s; %d events, %d customers (%d active), %d traits, %d segments, %d partitions.\n\n",
		r.Label, r.Date.Format("2006-01-02"), r.CPUs, r.LoadStart, r.LoadEnd, float64(r.MemoryBytes)/(1<<30), r.GoVersion, r.Events, r.Customers, r.Active, r.Traits, r.Segments, r.Partitions)
	b.WriteString("| system | events/s | seconds | changes | vs |\n|---|---:|---:|---:|---|\n")
	row := func(name string, t *Throughput, vs string) {
		if t == nil {
			return
		}
		if len(t.Rounds) > 1 {
			name += fmt.Sprintf(", %d rounds (%s events/s; seconds summed)", len(t.Rounds), roundRates(t.Rounds))
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.2f | %d | %s |\n", name, t.EventsPerSec, t.Seconds, t.Changes, vs)
	}
	row("Go-map limit (decode + map + rules, no persistence, 1 core)", &r.MapLimit, "")
	row("segd engine only (1 partition; commits written beside it)", &r.EngineOnly, fmt.Sprintf("%.0f%% of the limit", 100*r.EngineVsLimit))
	row("segd end to end (embedded broker)", r.EndToEnd, "")
	if r.Goka != nil {
		row("goka baseline (same input, embedded broker)", r.Goka, fmt.Sprintf("segd end to end is %.1fx", r.EndToEndVsGo))
	}
	if r.Latency != nil {
		fmt.Fprintf(&b, "\nLatency at %d events/s offered, %d round(s) of %.0f s per row in alternating order, samples pooled; commit.interval %s, commit.when_caught_up %s (one fresh broker per run):\n\n",
			r.Latency.Rate, r.Latency.Rounds, r.Latency.Seconds/float64(max(1, r.Latency.Rounds)), r.Latency.CommitInterval, r.Latency.WhenCaughtUp)
		b.WriteString("| run | samples | p50 ms | p99 ms | p999 ms | p99 vs transport |\n|---|---:|---:|---:|---:|---:|\n")
		lrow := func(name string, l *Latency, vs string) {
			if l != nil {
				fmt.Fprintf(&b, "| %s | %d | %.2f | %.2f | %.2f | %s |\n", name, l.Samples, l.P50ms, l.P99ms, l.P999ms, vs)
			}
		}
		lrow("transport only: produce -> broker -> partition consumer (per record)", r.Transport, "")
		if r.Transport != nil {
			lrow("relay floor: produce -> broker -> partition consumer -> produce (acks=all) -> acknowledged, nothing else (1 record in 6)", r.Relay, fmt.Sprintf("%.2fx", r.RelayVsTransport))
			lrow("segd, changelog off: produce -> change acknowledged (per change)", r.LatencyOff, fmt.Sprintf("%.2fx", r.LatencyOffVsTransport))
			lrow("segd, changelog on: produce -> change acknowledged (per change)", r.Latency, fmt.Sprintf("%.2fx", r.LatencyOnVsTransport))
		} else {
			lrow("segd, changelog off", r.LatencyOff, "")
			lrow("segd, changelog on", r.Latency, "")
		}
	}
	if d := r.Decode; d != nil {
		fmt.Fprintf(&b, "\nDecode, %d of the workload's records x %d rounds (ns per event): JSON %.0f vs encoding/json into a map %.0f (%.2fx); compiled Avro %.0f vs goavro into a map %.0f (%.2fx); every embedded schema compiled: %v.\n",
			d.Records, d.Rounds, d.JSONNs, d.StdJSONNs, d.JSONRatio, d.AvroNs, d.GoavroNs, d.AvroRatio, d.AvroCompiled)
	}
	if rw := r.Replay; rw != nil {
		fmt.Fprintf(&b, "\nFile replay (tool.Replay, %d events as JSON lines, %d partitions, %d round(s) of each): 1 worker %.0f events/s (%.1f cores used), 2 workers %.0f events/s (%.1f cores used) (%.2fx); %d changes, output sha256 %s (1 worker) and %s (2 workers): %s.\n",
			rw.Events, rw.Partitions, rw.Rounds, rw.EventsPerSec1, rw.Cores1, rw.EventsPerSec2, rw.Cores2, rw.Speedup, rw.Changes, rw.SHA256w1[:16], rw.SHA256w2[:16], map[bool]string{true: "same bytes", false: "DIFFERENT"}[rw.SameOutput])
	}
	if rs := r.Restart; rs != nil {
		fmt.Fprintf(&b, "\nRestart: a store with %d active customers (one event each, built in %.1f s, %.0f MiB on disk) opened again (engine.New + OpenLocal) in %.2f s; its first event (an existing customer's, read from the store) then applied and committed in %.1f ms.\n",
			rs.Active, rs.BuildSeconds, float64(rs.StateBytes)/(1<<20), rs.Seconds, 1000*rs.FirstEventSeconds)
	}
	fmt.Fprintf(&b, "\nFinal memberships: %d (customer, segment) pairs, digest %s…, agree: %s.\n", r.Members, r.Digest[:12], r.Agree)
	fmt.Fprintf(&b, "\nEngine only: state on disk %.1f MiB (%.0f B per active customer); cache hit ratio %.3f (%.0f misses: %.0f new customers the id filter answered, %.0f from the cold tier, %.0f Pebble lookups), %.0f MiB of decoded records cached; process heap after the run %.0f MiB (including the workload held in memory).\n",
		float64(r.StateBytes)/(1<<20), float64(r.StateBytes)/float64(max(r.Active, 1)), r.CacheHits/max(r.CacheHits+r.CacheMisses, 1), r.CacheMisses,
		r.FilterSkips, r.ColdHits, r.CacheMisses-r.FilterSkips-r.ColdHits, r.CacheBytes/(1<<20), float64(r.PeakHeapBytes)/(1<<20))
	return b.String()
}

// memTotal reads the machine's memory from /proc/meminfo (0 if unknown).
func memTotal() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kb uint64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "MemTotal:") {
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "MemTotal:")), "%d", &kb)
		}
	}
	return kb * 1024
}
