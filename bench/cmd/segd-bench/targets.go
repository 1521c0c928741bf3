package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/engine"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/tool"
)

// The performance targets (bench/README.md, "Targets"). Every ratio is
// measured in the run that reports it.
const (
	goalJSONDecode      = 4.0  // schemas.DecodeJSON vs encoding/json into a map
	goalAvroDecode      = 2.5  // compiled Avro decoder vs goavro
	goalEngineVsLimit   = 0.60 // engine only at 1M customers, of the Go-map limit
	goalEngine1000Segs  = 0.40 // engine only with 1000 segments, of the limit
	goalReplaySpeedup   = 1.7  // file replay, 2 workers vs 1
	goalLatencyOff      = 2.0  // p99 event-to-change, changelog off, vs transport p99
	goalLatencyOn       = 3.0  // the same with the changelog on
	goalEndToEndVsGoka  = 5.0  // end to end vs the goka baseline at 1M customers
	goalScaleVsLimit    = 0.50 // the 10M-customer row of the sweep, of its limit
	goalRestartSeconds  = 5.0  // restart of a store with >= 2M active customers
	restartTargetActive = 2_000_000
)

// DecodeRatios compares segd's decoders with the reference codecs over the
// workload's own records, timed in alternating chunks of the same records.
type DecodeRatios struct {
	Records int `json:"records"`
	Rounds  int `json:"rounds"`
	// AvroCompiled: every input type's embedded schema decodes with the
	// compiled decoder (what connectors.Decoder with FormatAvro, and so
	// the Go-map limit and segd, use), not the goavro fallback.
	AvroCompiled bool    `json:"avro_compiled"`
	AvroNs       float64 `json:"avro_compiled_ns_per_event"`
	GoavroNs     float64 `json:"goavro_ns_per_event"`
	AvroRatio    float64 `json:"avro_vs_goavro"`
	JSONNs       float64 `json:"json_ns_per_event"`
	StdJSONNs    float64 `json:"encoding_json_ns_per_event"`
	JSONRatio    float64 `json:"json_vs_encoding_json"`
}

// decodeRatios times, over the same records: the compiled Avro decoder
// (schemas.AvroCodec.Decode into an event) against goavro's
// NativeFromBinary into a map, and schemas.DecodeJSON against
// encoding/json into a map[string]any (json.Decoder with UseNumber, as
// the schemas package's reference decoder does). The references stop at
// the map: the schemas test benchmarks' references also project the map
// into an event, so these ratios are lower bounds of theirs.
func decodeRatios(recs []record, lines [][]byte, rounds int) (*DecodeRatios, error) {
	n := len(lines)
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, err
	}
	var ref [schemas.NumEventTypes]*goavro.Codec
	compiled := true
	for t := schemas.EventPurchase; t <= schemas.EventProfile; t++ {
		if ref[t], err = goavro.NewCodec(schemas.SchemaText(t)); err != nil {
			return nil, err
		}
		compiled = compiled && codecs[t].Compiled()
	}
	// Check every path decodes every record before timing any.
	var e, je schemas.Event
	for i := 0; i < n; i++ {
		r := &recs[i]
		if err := codecs[r.typ].Decode(r.value, &e); err != nil {
			return nil, fmt.Errorf("decode record %d: %w", i, err)
		}
		if err := schemas.DecodeJSON(lines[i], &je); err != nil {
			return nil, fmt.Errorf("decode JSON line %d: %w", i, err)
		}
		if e.CustomerID != string(r.key) || je.CustomerID != e.CustomerID || je.EventID != e.EventID || je.Time != e.Time || je.Type != e.Type {
			return nil, fmt.Errorf("record %d: Avro and JSON decode to different events", i)
		}
	}
	const chunk = 10000
	var tAvro, tGoavro, tJSON, tStd time.Duration
	var m map[string]any
	runtime.GC()
	for range rounds {
		for lo := 0; lo < n; lo += chunk {
			hi := min(n, lo+chunk)
			t0 := time.Now()
			for i := lo; i < hi; i++ {
				if err := codecs[recs[i].typ].Decode(recs[i].value, &e); err != nil {
					return nil, err
				}
			}
			t1 := time.Now()
			for i := lo; i < hi; i++ {
				native, rest, err := ref[recs[i].typ].NativeFromBinary(recs[i].value)
				if err != nil || len(rest) != 0 {
					return nil, fmt.Errorf("goavro: record %d: %v (%d bytes left)", i, err, len(rest))
				}
				if _, ok := native.(map[string]any); !ok {
					return nil, fmt.Errorf("goavro: record %d is %T", i, native)
				}
			}
			t2 := time.Now()
			for i := lo; i < hi; i++ {
				if err := schemas.DecodeJSON(lines[i], &e); err != nil {
					return nil, err
				}
			}
			t3 := time.Now()
			for i := lo; i < hi; i++ {
				m = nil
				dec := json.NewDecoder(bytes.NewReader(lines[i]))
				dec.UseNumber()
				if err := dec.Decode(&m); err != nil {
					return nil, fmt.Errorf("encoding/json: line %d: %w", i, err)
				}
				if _, err := dec.Token(); err != io.EOF {
					return nil, fmt.Errorf("encoding/json: line %d: data after the object", i)
				}
			}
			t4 := time.Now()
			tAvro += t1.Sub(t0)
			tGoavro += t2.Sub(t1)
			tJSON += t3.Sub(t2)
			tStd += t4.Sub(t3)
		}
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(n*rounds) }
	return &DecodeRatios{Records: n, Rounds: rounds, AvroCompiled: compiled,
		AvroNs: per(tAvro), GoavroNs: per(tGoavro), AvroRatio: tGoavro.Seconds() / tAvro.Seconds(),
		JSONNs: per(tJSON), StdJSONNs: per(tStd), JSONRatio: tStd.Seconds() / tJSON.Seconds()}, nil
}

// jsonLines renders the first n records as JSON lines (schemas.AppendJSON
// of the decoded event).
func jsonLines(recs []record, n int) ([][]byte, error) {
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, err
	}
	lines := make([][]byte, n)
	var e schemas.Event
	for i := range lines {
		if err := codecs[recs[i].typ].Decode(recs[i].value, &e); err != nil {
			return nil, err
		}
		lines[i] = schemas.AppendJSON(nil, &e)
	}
	return lines, nil
}

// ReplayWorkers is a file replay (tool.Replay) of the workload's first
// events with 1 and with 2 workers.
type ReplayWorkers struct {
	Events     int64 `json:"events"`
	Partitions int   `json:"partitions"`
	// Rounds of one run each, in the order 1,2 then 2,1, ...; the
	// seconds are the sums over the rounds.
	Rounds        int     `json:"rounds"`
	Seconds1      float64 `json:"workers_1_seconds"`
	Seconds2      float64 `json:"workers_2_seconds"`
	EventsPerSec1 float64 `json:"workers_1_events_per_sec"`
	EventsPerSec2 float64 `json:"workers_2_events_per_sec"`
	Speedup       float64 `json:"speedup"`
	// Cores1 and Cores2 are the process's CPU time over the wall time of
	// the runs: what the replay got of the machine (another process
	// holding a core shows as Cores2 well under 2).
	Cores1      float64 `json:"workers_1_cores_used"`
	Cores2      float64 `json:"workers_2_cores_used"`
	Changes     int64   `json:"changes"`
	OutputBytes int64   `json:"output_bytes"`
	SHA256w1    string  `json:"workers_1_output_sha256"`
	SHA256w2    string  `json:"workers_2_output_sha256"`
	SameOutput  bool    `json:"same_output"`
}

// replayWorkers writes lines to a JSON-lines file and replays it with the
// rules file on 16 partitions with 1 and 2 workers, hashing each run's
// output (the SegmentChange lines).
func replayWorkers(o options, lines [][]byte, end int64, rounds int) (*ReplayWorkers, error) {
	dir, err := os.MkdirTemp("", "segd-bench-replay-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	input := filepath.Join(dir, "events.jsonl")
	var buf bytes.Buffer
	for _, l := range lines {
		buf.Write(l)
		buf.WriteByte('\n')
	}
	if err := os.WriteFile(input, buf.Bytes(), 0o644); err != nil {
		return nil, err
	}
	buf = bytes.Buffer{}
	// The wall clock a day after the last event: no line is in the future,
	// whatever the machine's date.
	now := func() time.Time { return time.UnixMilli(end).Add(24 * time.Hour) }
	res := &ReplayWorkers{Partitions: tool.DefaultReplayPartitions, Rounds: rounds}
	hashes := map[int]string{}
	var secs, cpu [3]float64
	run := func(workers int) error {
		h := sha256.New()
		cw := &countingWriter{w: h}
		stateDir := filepath.Join(dir, fmt.Sprintf("state-%d", workers))
		runtime.GC()
		start, cpu0 := time.Now(), cpuSeconds()
		sum, err := tool.Replay(context.Background(), tool.ReplayOptions{RulesFile: o.rules, StateDir: stateDir,
			Inputs: []string{input}, Partitions: res.Partitions, Workers: workers, Output: cw, Now: now, Log: zerolog.Nop()})
		el, used := time.Since(start), cpuSeconds()-cpu0
		os.RemoveAll(stateDir)
		if err != nil {
			return fmt.Errorf("replay with %d workers: %w", workers, err)
		}
		if sum.Invalid != 0 || sum.Duplicates != 0 || sum.Events != int64(len(lines)) {
			return fmt.Errorf("replay with %d workers: %d of %d events applied, %d invalid, %d duplicates", workers, sum.Events, len(lines), sum.Invalid, sum.Duplicates)
		}
		secs[workers] += el.Seconds()
		cpu[workers] += used
		sha := hex.EncodeToString(h.Sum(nil))
		if prev, ok := hashes[workers]; ok && prev != sha {
			return fmt.Errorf("replay with %d workers: output differs between two runs", workers)
		}
		hashes[workers] = sha
		res.Events, res.Changes, res.OutputBytes = sum.Events, sum.ChangesWritten, cw.n
		return nil
	}
	for r := range rounds {
		order := []int{1, 2}
		if r%2 == 1 {
			order = []int{2, 1}
		}
		for _, w := range order {
			if err := run(w); err != nil {
				return nil, err
			}
		}
	}
	res.Seconds1, res.Seconds2 = secs[1], secs[2]
	res.EventsPerSec1 = float64(res.Events) * float64(rounds) / secs[1]
	res.EventsPerSec2 = float64(res.Events) * float64(rounds) / secs[2]
	res.Speedup = secs[1] / secs[2]
	res.Cores1, res.Cores2 = cpu[1]/secs[1], cpu[2]/secs[2]
	res.SHA256w1, res.SHA256w2 = hashes[1], hashes[2]
	res.SameOutput = hashes[1] == hashes[2]
	return res, nil
}

// cpuSeconds is the user and system CPU time of this process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// loadAvg is the machine's 1-minute load average (0 if unknown).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	fmt.Sscanf(string(b), "%g", &l)
	return l
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// offer produces recs at o.rate events/s for o.latencyFor in 1 ms slices
// (the latency runs' load). mark is called under mu with each record and
// the time just before the produce call that carries it. It returns how
// many records were offered and for how long.
func offer(ctx context.Context, o options, brokers []string, recs []record, mu *sync.Mutex, mark func(r *record, t time.Time)) (int, time.Duration, error) {
	p, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		return 0, 0, err
	}
	defer p.Close()
	perTick := max(1, o.rate/1000)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	i := 0
	batch := make([]connectors.Message, 0, perTick)
	for time.Since(start) < o.latencyFor && i < len(recs) {
		<-tick.C
		due := int(time.Since(start).Seconds() * float64(o.rate))
		batch = batch[:0]
		t0 := time.Now()
		mu.Lock()
		for ; i < due && i < len(recs) && len(batch) < cap(batch)*4; i++ {
			r := &recs[i]
			mark(r, t0)
			batch = append(batch, connectors.Message{Topic: topicOf[r.typ], Key: r.key, Value: r.value, Time: time.UnixMilli(r.time)})
		}
		mu.Unlock()
		if len(batch) > 0 {
			if err := p.Write(ctx, batch...); err != nil {
				return i, 0, err
			}
		}
	}
	return i, time.Since(start), nil
}

// quantiles fills l's percentiles from samples (sorted here).
func quantiles(l *Latency, samples []time.Duration) {
	sort.Slice(samples, func(a, b int) bool { return samples[a] < samples[b] })
	q := func(f float64) float64 {
		return float64(samples[min(len(samples)-1, int(f*float64(len(samples))))]) / 1e6
	}
	l.Samples, l.P50ms, l.P99ms, l.P999ms = len(samples), q(0.5), q(0.99), q(0.999)
	l.samples = samples
	if l.Rounds == 0 {
		l.Rounds = 1
	}
}

// transportLatency is the floor under the latency runs, in the same setup:
// a fresh embedded broker with segd's topics, the same producer and
// offered load, and one connectors.PartitionConsumer per partition
// configured as segd's engine configures its own (the same topics,
// including the merges topic, max_task_idle, max_wait, buffer bounds).
// A sample is the time from just before a record's produce call to Poll
// returning it.
func transportLatency(o options, recs []record) (*Latency, error) {
	return consumeLatency(o, recs, false)
}

// relayEvery: the relay run passes on one offered record in relayEvery,
// about the share of events that cause a change in the segd runs (32k
// changes for 200k events), so its second produce carries the load
// segd's publishing does.
const relayEvery = 6

// relayLatency is the floor under segd's latency runs: the transport run's
// consumers, each also a relay that produces one record in relayEvery of
// each poll to an output topic with the producer segd publishes with
// (acks=all), as segd publishes a change, and nothing else: no decoding,
// state, rules or commit. A sample is the time from just before a
// relayed record's first produce call to its relay write returning
// (Kafka acknowledged it): what segd's samples measure, with segd's own
// work taken out.
func relayLatency(o options, recs []record) (*Latency, error) {
	return consumeLatency(o, recs, true)
}

// consumeLatency runs the transport run, or with relay the relay run.
func consumeLatency(o options, recs []record, relay bool) (*Latency, error) {
	broker, err := connectors.StartEmbeddedBroker(0, int32(o.partitions))
	if err != nil {
		return nil, err
	}
	defer broker.Close()
	brokers := broker.Addrs()
	cfg, cleanup, err := engineConfig(o, "transport", brokers)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	if err := createTopics(brokers, o.partitions); err != nil {
		return nil, err
	}
	k := cfg.Kafka
	if err := (connectors.Cluster{Brokers: brokers}).EnsureTopics(context.Background(), []connectors.TopicSpec{{Name: k.Topics.Merges, Partitions: o.partitions}}); err != nil {
		return nil, err
	}
	topics := []string{k.Topics.Purchases.Name, k.Topics.Browses.Name, k.Topics.Engagements.Name, k.Topics.Profiles.Name, k.Topics.Merges}
	const relayTopic = "bench.relay"
	var out *connectors.Producer
	if relay {
		if err := (connectors.Cluster{Brokers: brokers}).EnsureTopics(context.Background(), []connectors.TopicSpec{{Name: relayTopic, Partitions: o.partitions}}); err != nil {
			return nil, err
		}
		if out, err = connectors.NewProducer(brokers, connectors.ProducerOptions{}); err != nil {
			return nil, err
		}
		defer out.Close()
	}
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var samples []time.Duration
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for part := 0; part < o.partitions; part++ {
		c, err := connectors.NewPartitionConsumer(connectors.PartitionConsumerOptions{Brokers: brokers, Topics: topics, Partition: part,
			MaxIdle: k.MaxTaskIdle, FetchMaxWait: k.MaxWait, MaxBufferedRecords: k.MaxBufferedRecords, MaxBufferedBytes: k.MaxBufferedBytes})
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			buf := make([]connectors.Message, 0, 512)
			var relayed []connectors.Message
			var relayedAt []time.Time
			for ctx.Err() == nil {
				msgs, _ := c.Poll(ctx, buf[:0], k.MaxWait)
				if relay {
					relayed, relayedAt = relayed[:0], relayedAt[:0]
					mu.Lock()
					for _, m := range msgs {
						if t, ok := sent[string(m.Value)]; ok {
							relayed = append(relayed, connectors.Message{Topic: relayTopic, Key: m.Key, Value: m.Value})
							relayedAt = append(relayedAt, t)
						}
					}
					mu.Unlock()
					if len(relayed) == 0 || out.Write(ctx, relayed...) != nil {
						continue
					}
					msgs = nil
				}
				now := time.Now()
				mu.Lock()
				for _, m := range msgs {
					if t, ok := sent[string(m.Value)]; ok {
						samples = append(samples, now.Sub(t))
					}
				}
				for _, t := range relayedAt {
					samples = append(samples, now.Sub(t))
				}
				relayedAt = relayedAt[:0]
				mu.Unlock()
			}
		}()
	}
	offered := 0
	n, took, err := offer(ctx, o, brokers, recs, &mu, func(r *record, t time.Time) {
		if !relay || offered%relayEvery == 0 {
			sent[string(r.value)] = t
		}
		offered++
	})
	if err != nil {
		return nil, err
	}
	want := n
	if relay {
		want = (n + relayEvery - 1) / relayEvery
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		got := len(samples)
		mu.Unlock()
		if got >= want {
			break
		}
	}
	cancel()
	wg.Wait()
	if len(samples) < want {
		return nil, fmt.Errorf("transport latency (relay %v): %d samples of %d records", relay, len(samples), want)
	}
	offeredFor := took
	l := &Latency{Offered: n, Rate: int(float64(n) / offeredFor.Seconds()), Seconds: offeredFor.Seconds()}
	quantiles(l, samples)
	return l, nil
}

// RestartActive is the restart of a store holding many active customers.
type RestartActive struct {
	Active       int     `json:"active_customers"`
	Events       int     `json:"events"`
	BuildSeconds float64 `json:"build_seconds"`
	StateBytes   int64   `json:"state_bytes"`
	// Seconds: engine.New + OpenLocal on the closed store, until ready to
	// resume.
	Seconds float64 `json:"restart_seconds"`
	// FirstEventSeconds: then one event of an existing customer applied
	// and committed (read from Pebble, not the cache).
	FirstEventSeconds float64 `json:"first_event_seconds"`
}

// restartActive builds a store with n active customers through
// engine.Local (one generated event each, the standard rules, one
// partition), closes it, and times opening it again.
func restartActive(o options, n int) (*RestartActive, error) {
	cfg, cleanup, err := engineConfig(o, "restart", []string{"127.0.0.1:1"})
	if err != nil {
		return nil, err
	}
	defer cleanup()
	eng, err := engine.New(cfg, engine.Options{Logger: zerolog.Nop()})
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	l, err := eng.OpenLocal(1)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	g, err := gen.New(gen.Config{Seed: 43, Customers: max(n, 1000), EventsPerHour: float64(n) / float64(o.days*24)})
	if err != nil {
		return nil, err
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, err
	}
	width := len(strconv.Itoa(n))
	var e schemas.Event
	var value []byte
	var last schemas.Event
	start := time.Now()
	for i := 0; i < n && g.Next(&e); i++ {
		// Every event to a customer of its own: n active customers.
		e.CustomerID = fmt.Sprintf("r%0*d", width, i)
		if value, err = codecs[e.Type].AppendEncode(value[:0], &e); err != nil {
			return nil, err
		}
		if err := l.Handle(0, topicOf[e.Type], int64(i), []byte(e.CustomerID), value, time.UnixMilli(e.Time)); err != nil {
			return nil, err
		}
		if i == 0 {
			last = e
			last.EventID = strings.Clone(e.EventID) + "-again"
			last.CustomerID = strings.Clone(e.CustomerID)
		}
		if (i+1)%500000 == 0 {
			logf("restart store: %d customers written", i+1)
		}
		last.Time = e.Time
	}
	if err := l.Close(); err != nil {
		return nil, err
	}
	if err := eng.Close(); err != nil {
		return nil, err
	}
	res := &RestartActive{Active: n, Events: n, BuildSeconds: time.Since(start).Seconds(), StateBytes: dirSize(cfg.State.Dir)}
	runtime.GC()
	start = time.Now()
	eng2, err := engine.New(cfg, engine.Options{Logger: zerolog.Nop()})
	if err != nil {
		return nil, err
	}
	defer eng2.Close()
	l2, err := eng2.OpenLocal(1)
	if err != nil {
		return nil, err
	}
	defer l2.Close()
	res.Seconds = time.Since(start).Seconds()
	// Ready: the first customer's next event is handled and committed
	// (Handle and Commit return no error).
	start = time.Now()
	if value, err = codecs[last.Type].AppendEncode(value[:0], &last); err != nil {
		return nil, err
	}
	if err := l2.Handle(0, topicOf[last.Type], int64(n), []byte(last.CustomerID), value, time.UnixMilli(last.Time)); err != nil {
		return nil, err
	}
	if err := l2.Commit(); err != nil {
		return nil, err
	}
	res.FirstEventSeconds = time.Since(start).Seconds()
	if err := l2.Close(); err != nil {
		return nil, err
	}
	return res, eng2.Close()
}

// Target is one performance target as this run measured it.
type Target struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Measured string   `json:"measured"`
	Goal     string   `json:"goal"`
	Value    *float64 `json:"value,omitempty"`
	// Status is "met", "NOT MET" or "not measured" (in this run).
	Status string `json:"status"`
	Note   string `json:"note,omitempty"`
}

// Line is the console line of the target.
func (t Target) Line() string {
	s := fmt.Sprintf("target %s %s: %s (%s) %s", t.ID, t.Name, t.Measured, t.Goal, t.Status)
	if t.Note != "" {
		s += " [" + t.Note + "]"
	}
	return s
}

func status(met bool) string {
	if met {
		return "met"
	}
	return "NOT MET"
}

func fptr(v float64) *float64 { return &v }

// shown formats v*scale with prec decimals, and more (up to 4) while a
// value that misses its goal would read the same as the goal: 49.95% of
// the limit is "49.95%", not a "50%" next to NOT MET.
func shown(v, goal, scale float64, prec int, met bool) string {
	for ; !met && prec < 4; prec++ {
		if fmt.Sprintf("%.*f", prec, v*scale) != fmt.Sprintf("%.*f", prec, goal*scale) {
			break
		}
	}
	return fmt.Sprintf("%.*f", prec, v*scale)
}

// wants reports whether target id (its number) is reported by this run.
func (o options) wants(id int) bool {
	if o.targets == "" {
		return true
	}
	for _, f := range strings.Split(o.targets, ",") {
		if strings.TrimSpace(f) == strconv.Itoa(id) {
			return true
		}
	}
	return false
}

// evalTargets turns the run's measurements into the targets' lines.
func evalTargets(o options, r *Results) []Target {
	var ts []Target
	none := func(id, name, goal, note string) {
		ts = append(ts, Target{ID: id, Name: name, Measured: "not measured in this run", Goal: goal, Status: "not measured", Note: note})
	}
	ratio := func(id, name string, v float64, what string, goal float64, below bool, note string) {
		met := v >= goal
		g := fmt.Sprintf(">= %gx", goal)
		if below {
			met, g = v <= goal, fmt.Sprintf("<= %gx", goal)
		}
		ts = append(ts, Target{ID: id, Name: name, Measured: shown(v, goal, 1, 2, met) + "x" + what, Goal: g, Value: fptr(v), Status: status(met), Note: note})
	}
	pct := func(id, name string, v, goal float64, note string) {
		ts = append(ts, Target{ID: id, Name: name, Measured: shown(v, goal, 100, 0, v >= goal) + "% of the limit", Goal: fmt.Sprintf(">= %.0f%%", 100*goal), Value: fptr(v), Status: status(v >= goal), Note: note})
	}
	if o.wants(1) {
		if d := r.Decode; d != nil {
			note := fmt.Sprintf("%d records x %d rounds", d.Records, d.Rounds)
			ratio("1a", "decode JSON", d.JSONRatio, " encoding/json", goalJSONDecode, false, note)
			if !d.AvroCompiled {
				note += "; an embedded schema falls back to goavro"
			}
			ratio("1b", "decode Avro", d.AvroRatio, " goavro", goalAvroDecode, false, note)
		} else {
			none("1a", "decode JSON", fmt.Sprintf(">= %gx", goalJSONDecode), "")
			none("1b", "decode Avro", fmt.Sprintf(">= %gx", goalAvroDecode), "")
		}
	}
	if o.wants(2) {
		note := ""
		if r.Customers != 1_000_000 {
			note = fmt.Sprintf("run at %d customers; the target is at 1M", r.Customers)
		}
		pct("2a", "engine only", r.EngineVsLimit, goalEngineVsLimit, note)
		var seg *ScalePoint
		for i := range r.Scaling {
			if r.Scaling[i].Segments == 1000 {
				seg = &r.Scaling[i]
			}
		}
		if seg != nil {
			pct("2b", "engine only, 1000 segments", seg.EngineVsLimit, goalEngine1000Segs, fmt.Sprintf("sweep row %d customers, %d events", seg.Customers, seg.Events))
		} else {
			none("2b", "engine only, 1000 segments", fmt.Sprintf(">= %.0f%%", 100*goalEngine1000Segs), "no 1000-segment row in --sweep")
		}
	}
	if o.wants(3) {
		if rw := r.Replay; rw != nil {
			note := fmt.Sprintf("%d events, %d partitions, %.1f cores used with 2 workers; output sha256 %s… with 1 worker, %s… with 2", rw.Events, rw.Partitions, rw.Cores2, rw.SHA256w1[:12], rw.SHA256w2[:12])
			if !rw.SameOutput {
				note = "OUTPUTS DIFFER; " + note
			}
			ts = append(ts, Target{ID: "3", Name: "every core", Measured: fmt.Sprintf("%.2fx", rw.Speedup), Goal: fmt.Sprintf(">= %gx, same output", goalReplaySpeedup),
				Value: fptr(rw.Speedup), Status: status(rw.Speedup >= goalReplaySpeedup && rw.SameOutput), Note: note})
		} else {
			none("3", "every core", fmt.Sprintf(">= %gx, same output", goalReplaySpeedup), "")
		}
	}
	if o.wants(4) {
		if r.Transport != nil && r.LatencyOff != nil && r.Latency != nil {
			ratio("4a", "tail latency, changelog off", r.LatencyOff.P99ms/r.Transport.P99ms, " the transport p99", goalLatencyOff, true,
				fmt.Sprintf("p99 %.1f ms vs %.1f ms", r.LatencyOff.P99ms, r.Transport.P99ms))
			ratio("4b", "tail latency, changelog on", r.Latency.P99ms/r.Transport.P99ms, " the transport p99", goalLatencyOn, true,
				fmt.Sprintf("p99 %.1f ms vs %.1f ms", r.Latency.P99ms, r.Transport.P99ms))
		} else {
			none("4a", "tail latency, changelog off", fmt.Sprintf("<= %gx", goalLatencyOff), "--latency-for 0")
			none("4b", "tail latency, changelog on", fmt.Sprintf("<= %gx", goalLatencyOn), "--latency-for 0")
		}
	}
	if o.wants(5) {
		if r.Goka != nil {
			var notes []string
			if r.Customers != 1_000_000 {
				notes = append(notes, fmt.Sprintf("run at %d customers; the target is at 1M", r.Customers))
			}
			if n := len(r.Goka.Rounds); n > 1 && r.EndToEnd != nil {
				notes = append(notes, fmt.Sprintf("%d rounds alternating: segd %s, goka %s events/s", n, roundRates(r.EndToEnd.Rounds), roundRates(r.Goka.Rounds)))
			}
			ratio("5", "end to end", r.EndToEndVsGo, " goka", goalEndToEndVsGoka, false, strings.Join(notes, "; "))
		} else {
			none("5", "end to end", fmt.Sprintf(">= %gx", goalEndToEndVsGoka), "--skip-goka")
		}
	}
	if o.wants(6) {
		var big *ScalePoint
		for i := range r.Scaling {
			if r.Scaling[i].Customers >= 10_000_000 {
				big = &r.Scaling[i]
			}
		}
		if big != nil {
			pct("6a", "scale, 10M customers", big.EngineVsLimit, goalScaleVsLimit, fmt.Sprintf("sweep row %d customers (%d active), %d events", big.Customers, big.Active, big.Events))
		} else {
			none("6a", "scale, 10M customers", fmt.Sprintf(">= %.0f%%", 100*goalScaleVsLimit), "make bench-scaling")
		}
		if rs := r.Restart; rs != nil {
			note := fmt.Sprintf("%d active customers, %.0f MiB on disk", rs.Active, float64(rs.StateBytes)/(1<<20))
			if rs.Active < restartTargetActive {
				note += fmt.Sprintf("; the target is at >= %d", restartTargetActive)
			}
			ts = append(ts, Target{ID: "6b", Name: "restart", Measured: fmt.Sprintf("%.2f s", rs.Seconds), Goal: fmt.Sprintf("< %g s", goalRestartSeconds),
				Value: fptr(rs.Seconds), Status: status(rs.Seconds < goalRestartSeconds), Note: note})
		} else {
			none("6b", "restart", fmt.Sprintf("< %g s", goalRestartSeconds), "make bench-scaling")
		}
	}
	return ts
}

// targetsMarkdown is the "Targets" table.
func targetsMarkdown(ts []Target) string {
	if len(ts) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("Targets (every ratio measured in this run):\n\n| target | measured | goal | met? | |\n|---|---|---|---|---|\n")
	for _, t := range ts {
		fmt.Fprintf(&b, "| %s %s | %s | %s | %s | %s |\n", t.ID, t.Name, t.Measured, t.Goal, t.Status, t.Note)
	}
	return b.String()
}
