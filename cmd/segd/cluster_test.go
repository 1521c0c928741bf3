package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

// This file is the harness of the scale-out and failover tests: real
// `segd run` processes (the binary, built once), sharing a consumer group
// over a real Kafka-protocol broker, killed with SIGKILL. The broker is
// the embedded one in `make test`, and real Apache Kafka (one broker, and
// a 3-broker cluster) in `make test-kafka`.

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// segdBinary builds cmd/segd once per test process.
func segdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "segd-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "segd")
		out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// pipeline is one set of topics and the config the instances share.
type pipeline struct {
	brokers    []string
	prefix     string
	partitions int
	group      string
	changes    string
	// extraEnv is appended to every instance's environment.
	extraEnv []string
	// maxTaskIdle is kafka.max_task_idle; default 60s.
	maxTaskIdle string
}

func (p pipeline) inputTopics() []string {
	return []string{p.prefix + "purchases", p.prefix + "browses", p.prefix + "engagements", p.prefix + "profiles"}
}

func (p pipeline) taskIdle() string {
	if p.maxTaskIdle == "" {
		// 10 s was not enough on a loaded machine: in a clean-clone CI
		// run of 2026-12-06 the fetches of one topic partition failed
		// with i/o timeouts for over 17 s (the race detector, two
		// instances and the broker sharing two cores), the merge went
		// on without it, and the kill test's output differed from the
		// reference run's by thousands of changes processed in another
		// order.
		return "60s"
	}
	return p.maxTaskIdle
}

// env is the instance's configuration as SEGD_* variables.
func (p pipeline) env(stateDir, apiAddr string) []string {
	t := p.inputTopics()
	return append([]string{
		"SEGD_KAFKA_BROKERS=" + strings.Join(p.brokers, ","),
		"SEGD_KAFKA_GROUP=" + p.group,
		"SEGD_KAFKA_TOPICS_PURCHASES_NAME=" + t[0],
		"SEGD_KAFKA_TOPICS_BROWSES_NAME=" + t[1],
		"SEGD_KAFKA_TOPICS_ENGAGEMENTS_NAME=" + t[2],
		"SEGD_KAFKA_TOPICS_PROFILES_NAME=" + t[3],
		"SEGD_KAFKA_TOPICS_CHANGES=" + p.changes,
		"SEGD_KAFKA_TOPICS_DEAD_LETTER=" + p.prefix + "deadletter",
		"SEGD_KAFKA_TOPICS_MERGES=" + p.prefix + "merges",
		"SEGD_KAFKA_TOPICS_CHANGELOG=" + p.group + "-changelog",
		// Every record is in Kafka before the instances start, so a
		// partition's merge of its topics is the same in every run as
		// long as a topic that is behind is waited for (long enough to
		// ride out a broker's leader election in the broker test).
		"SEGD_KAFKA_MAX_TASK_IDLE=" + p.taskIdle(),
		"SEGD_KAFKA_SESSION_TIMEOUT=6s",
		"SEGD_KAFKA_HEARTBEAT_INTERVAL=500ms",
		"SEGD_RULES_FILE=../../examples/rules.yaml",
		"SEGD_RULES_WATCH_INTERVAL=-1s",
		"SEGD_STATE_DIR=" + stateDir,
		"SEGD_COMMIT_INTERVAL=20ms",
		// Event time only: the output is then a function of the input.
		"SEGD_CLOCK_IDLE_AFTER=-1s",
		"SEGD_API_ADDR=" + apiAddr,
		"SEGD_LOG_LEVEL=info",
	}, p.extraEnv...)
}

// keepForever turns off time retention. The generated events are stamped
// with event times weeks in the past, and Kafka's time retention (7 days by
// default, judged by record timestamps, checked every 5 minutes) deletes
// such records, active segment included: a run that started reading after
// the check found its input gone, and waited for it forever.
var keepForever = map[string]string{"retention.ms": "-1"}

// createTopics makes the pipeline's topics with replication rf.
func (p pipeline) createTopics(t *testing.T, rf int, extra ...string) {
	t.Helper()
	var specs []connectors.TopicSpec
	for _, name := range append(append(p.inputTopics(), p.prefix+"deadletter", p.prefix+"merges"), extra...) {
		specs = append(specs, connectors.TopicSpec{Name: name, Partitions: p.partitions, Replication: rf, Configs: keepForever})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := (connectors.Cluster{Brokers: p.brokers, Security: nil}).EnsureTopics(ctx, specs); err != nil {
		t.Fatalf("create topics: %v", err)
	}
	// A new topic reaches every broker's metadata a little later; wait
	// until each partition has a leader that answers.
	for _, sp := range specs {
		for part := 0; part < p.partitions; part++ {
			if _, _, err := (connectors.Cluster{Brokers: p.brokers, Security: nil}).EndOffsets(ctx, []string{sp.Name}, part); err != nil {
				t.Fatalf("topic %s not ready: %v", sp.Name, err)
			}
		}
	}
}

// produce writes n generated events (continuing g) to the input topics.
func (p pipeline) produce(t *testing.T, g *gen.Generator, n int) {
	t.Helper()
	prod, err := connectors.NewProducer(p.brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	topics := p.inputTopics()
	var batch []connectors.Message
	var e schemas.Event
	flush := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := prod.Write(ctx, batch...); err != nil {
			t.Fatalf("produce: %v", err)
		}
		batch = batch[:0]
	}
	for i := 0; i < n && g.Next(&e); i++ {
		v, err := codecs[e.Type].AppendEncode(nil, &e)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, connectors.Message{Topic: topics[int(e.Type)-int(schemas.EventPurchase)], Key: []byte(e.CustomerID), Value: v, Time: time.UnixMilli(e.Time)})
		if len(batch) == 5000 {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
}

// endOffsets returns the end offset of every input topic partition.
func (p pipeline) endOffsets(t *testing.T) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for part := 0; part < p.partitions; part++ {
		_, end, err := (connectors.Cluster{Brokers: p.brokers, Security: nil}).EndOffsets(ctx, p.inputTopics(), part)
		if err != nil {
			t.Fatal(err)
		}
		for topic, off := range end {
			out[fmt.Sprintf("%s/%d", topic, part)] = off
		}
	}
	return out
}

// committed returns the group's committed offsets (what segd reports from
// its store) of every input topic partition; missing ones are absent.
func (p pipeline) committed(t *testing.T) map[string]int64 {
	t.Helper()
	gc := (connectors.Cluster{Brokers: p.brokers, Security: nil}).GroupOffsetCommitter(p.group)
	defer gc.Close()
	out := map[string]int64{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for part := 0; part < p.partitions; part++ {
		offs, err := gc.Committed(ctx, part, p.inputTopics())
		if err != nil {
			continue // the coordinator may be moving; the caller polls
		}
		for topic, off := range offs {
			if off >= 0 {
				out[fmt.Sprintf("%s/%d", topic, part)] = off
			}
		}
	}
	return out
}

// caughtUp reports whether the group committed the end of every input.
func (p pipeline) caughtUp(t *testing.T, end map[string]int64) bool {
	got := p.committed(t)
	for k, v := range end {
		if got[k] != v {
			return false
		}
	}
	return true
}

// change is a SegmentChange as compared across runs.
type change struct {
	customer, segment, kind, cause, causeEvent string
	seq                                        uint64
	at                                         int64
}

// readChanges reads every record of the changes topic and returns them by
// change id, failing if one id carries two different changes.
func (p pipeline) readChanges(t *testing.T) (byID map[string]change, records int) {
	t.Helper()
	byID = map[string]change{}
	for part := 0; part < p.partitions; part++ {
		c, err := connectors.NewPartitionConsumer(connectors.PartitionConsumerOptions{
			Brokers: p.brokers, Topics: []string{p.changes}, Partition: part, StopAtEnd: true, FetchMaxWait: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		var buf []connectors.Message
		for {
			msgs, err := c.Poll(ctx, buf[:0], time.Second)
			for _, m := range msgs {
				var sc schemas.SegmentChange
				if err := schemas.DecodeSegmentChangeAvro(m.Value, &sc); err != nil {
					t.Fatalf("%s/%d offset %d: %v", p.changes, part, m.Offset, err)
				}
				records++
				ch := change{customer: sc.CustomerID, segment: sc.SegmentID, kind: sc.Kind.String(), cause: sc.Cause.String(), causeEvent: sc.CauseEventID, seq: sc.Seq, at: sc.Time}
				if prev, dup := byID[sc.ID]; dup && prev != ch {
					t.Fatalf("change id %s carries two different changes: %+v and %+v", sc.ID, prev, ch)
				}
				byID[sc.ID] = ch
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("read %s/%d: %v", p.changes, part, err)
			}
		}
		cancel()
		c.Close()
	}
	return byID, records
}

// checkAlternation: per (customer, segment) the changes are seq 1..n,
// ENTER first, alternating.
func checkAlternation(t *testing.T, byID map[string]change) {
	t.Helper()
	pairs := map[string][]change{}
	for _, c := range byID {
		if c.segment == "" && c.seq == 0 {
			continue // an erasure notice, not a transition
		}
		k := c.customer + "/" + c.segment
		pairs[k] = append(pairs[k], c)
	}
	for k, cs := range pairs {
		sort.Slice(cs, func(i, j int) bool { return cs[i].seq < cs[j].seq })
		for i, c := range cs {
			want := "ENTER"
			if i%2 == 1 {
				want = "EXIT"
			}
			if c.seq != uint64(i+1) || c.kind != want {
				t.Fatalf("%s: change %d is seq %d %s, want seq %d %s (a lost or extra transition)", k, i, c.seq, c.kind, i+1, want)
			}
		}
	}
}

// compareChanges fails unless got and want hold the same changes.
func compareChanges(t *testing.T, got, want map[string]change) {
	t.Helper()
	var missing, extra []string
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			missing = append(missing, fmt.Sprintf("%s %+v", id, w))
		} else if g != w {
			t.Errorf("change %s differs: got %+v, want %+v", id, g, w)
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			extra = append(extra, fmt.Sprintf("%s %+v", id, g))
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("%d changes missing (first: %v), %d extra (first: %v); want %d", len(missing), first(missing, 5), len(extra), first(extra, 5), len(want))
	}
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

// instance is one `segd run` child process.
type instance struct {
	t        *testing.T
	name     string
	cmd      *exec.Cmd
	stateDir string
	api      string
	logPath  string
	done     chan struct{}
	exitErr  error
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startInstance starts `segd run` with the pipeline's config and stateDir.
func startInstance(t *testing.T, p pipeline, name, stateDir string) *instance {
	t.Helper()
	in := &instance{t: t, name: name, stateDir: stateDir, api: freeLoopback(t), done: make(chan struct{})}
	// With SEGD_ARTIFACTS (make test sets it) the logs outlive the test.
	logDir := t.TempDir()
	if a := os.Getenv("SEGD_ARTIFACTS"); a != "" {
		broker := "embedded"
		if v := os.Getenv("SEGD_KAFKA_VERSION"); v != "" {
			broker = "kafka-" + v
		}
		logDir = filepath.Join(a, "failover", broker, t.Name())
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	in.logPath = filepath.Join(logDir, name+".log")
	logf, err := os.Create(in.logPath)
	if err != nil {
		t.Fatal(err)
	}
	in.cmd = exec.Command(segdBinary(t), "run")
	in.cmd.Env = append(os.Environ(), p.env(stateDir, in.api)...)
	in.cmd.Stdout, in.cmd.Stderr = logf, logf
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		in.exitErr = in.cmd.Wait()
		logf.Close()
		close(in.done)
	}()
	t.Cleanup(func() {
		in.kill()
		if t.Failed() {
			in.dumpLog(40)
		}
	})
	return in
}

func (in *instance) exited() bool {
	select {
	case <-in.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (in *instance) kill() {
	if in.exited() {
		return
	}
	in.cmd.Process.Signal(syscall.SIGKILL)
	<-in.done
}

// stop sends SIGTERM and waits for a clean exit.
func (in *instance) stop(t *testing.T) {
	t.Helper()
	in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.done:
	case <-time.After(90 * time.Second):
		t.Fatalf("%s did not stop within 90s of SIGTERM", in.name)
	}
	if in.exitErr != nil {
		in.dumpLog(30)
		t.Fatalf("%s exited with %v", in.name, in.exitErr)
	}
}

func (in *instance) dumpLog(n int) {
	f, err := os.Open(in.logPath)
	if err != nil {
		return
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	in.t.Logf("last lines of %s's log:\n%s", in.name, strings.Join(lines[max(0, len(lines)-n):], "\n"))
}

// metric returns the sum of every sample of a metric family from the
// instance's /metrics, or -1 if it cannot be read.
func (in *instance) metric(name string) float64 {
	if in.exited() {
		return -1
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + in.api + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	total, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			total += v
			found = true
		}
	}
	if !found {
		return 0
	}
	return total
}

// partitionLabels returns the partition labels of a metric family's
// samples on the instance's /metrics.
func (in *instance) partitionLabels(t *testing.T, name string) map[string]bool {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + in.api + "/metrics")
	if err != nil {
		t.Fatalf("%s: /metrics: %v", in.name, err)
	}
	defer resp.Body.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		if _, rest, ok := strings.Cut(line, `partition="`); ok {
			if p, _, ok := strings.Cut(rest, `"`); ok {
				out[p] = true
			}
		}
	}
	return out
}

// checkPartitionGauges: each live instance reports its partitions'
// gauges for the partitions it runs only, so the instances' series do not
// overlap. A handed-over partition's last outbox depth or lag left behind
// would hold alerts (and this harness's settled check) forever. A
// rebalance may be under way (after a broker kill the group can move
// again late), so it polls for a consistent view.
func checkPartitionGauges(t *testing.T, live ...*instance) {
	t.Helper()
	last := ""
	deadline := time.Now().Add(30 * time.Second)
	for {
		if last = gaugeMismatch(t, live...); last == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// gaugeMismatch describes the first way the instances' partition gauges
// disagree with the partitions they run, or returns "".
func gaugeMismatch(t *testing.T, live ...*instance) string {
	t.Helper()
	for _, name := range []string{"segd_outbox_depth", "segd_changelog_depth", "segd_watermark_seconds", "segd_consumer_lag"} {
		by := map[string]string{}
		for _, in := range live {
			ps := in.partitionLabels(t, name)
			if owned := in.metric("segd_owned_partitions"); float64(len(ps)) != owned {
				return fmt.Sprintf("%s reports %s for partitions %v but runs %v partitions", in.name, name, ps, owned)
			}
			for p := range ps {
				if other, dup := by[p]; dup {
					return fmt.Sprintf("%s of partition %s is reported by %s and by %s", name, p, other, in.name)
				}
				by[p] = in.name
			}
		}
	}
	return ""
}

// members lists a segment's members through the instance's API, page by
// page.
func (in *instance) members(t *testing.T, segment string) []string {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	var ids []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("%s: the members of %s do not end", in.name, segment)
		}
		resp, err := c.Get(fmt.Sprintf("http://%s/v1/segments/%s/members?limit=1000&cursor=%s", in.api, url.PathEscape(segment), url.QueryEscape(cursor)))
		if err != nil {
			t.Fatalf("%s: members of %s: %v", in.name, segment, err)
		}
		var page struct {
			Members    []string `json:"members"`
			NextCursor string   `json:"next_cursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: members of %s: status %d, %v", in.name, segment, resp.StatusCode, err)
		}
		ids = append(ids, page.Members...)
		if page.NextCursor == "" {
			return ids
		}
		cursor = page.NextCursor
	}
}

// checkMembers: the members the live instances list (each its own
// partitions) do not overlap, and together they are the memberships the
// changes end in. A store still holds the partitions its instance ran
// before a rebalance; listing those would show stale members twice.
func checkMembers(t *testing.T, byID map[string]change, live ...*instance) {
	t.Helper()
	type pair struct{ customer, segment string }
	last := map[pair]change{}
	for _, c := range byID {
		k := pair{c.customer, c.segment}
		if c.seq > last[k].seq {
			last[k] = c
		}
	}
	want := map[string]map[string]bool{}
	for k, c := range last {
		if want[k.segment] == nil {
			want[k.segment] = map[string]bool{}
		}
		if c.kind == "ENTER" {
			want[k.segment][k.customer] = true
		}
	}
	total := 0
	for seg, members := range want {
		by := map[string]string{}
		for _, in := range live {
			for _, id := range in.members(t, seg) {
				if other, dup := by[id]; dup {
					t.Fatalf("segment %s: %s is listed by %s and by %s", seg, id, other, in.name)
				}
				by[id] = in.name
			}
		}
		for id, who := range by {
			if !members[id] {
				t.Fatalf("segment %s: %s lists %s, whose changes end outside it", seg, who, id)
			}
		}
		if len(by) != len(members) {
			t.Fatalf("segment %s: the instances list %d members, the changes end with %d", seg, len(by), len(members))
		}
		total += len(members)
	}
	t.Logf("%d memberships over %d segments listed exactly once by the live instances", total, len(want))
}

// saveMetrics writes the instance's /metrics next to its log, for
// whoever debugs a stall.
func (in *instance) saveMetrics() {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + in.api + "/metrics")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	os.WriteFile(strings.TrimSuffix(in.logPath, ".log")+".metrics", body, 0o644)
}

// logCount counts the lines of the instance's log that contain s.
func (in *instance) logCount(s string) int {
	b, err := os.ReadFile(in.logPath)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), s)
}

// logLines returns the lines of the instance's log that contain s.
func (in *instance) logLines(s string) []string {
	b, _ := os.ReadFile(in.logPath)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// waitUntil polls cond until it holds or the deadline passes; instances
// that exit meanwhile fail the test at once.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool, alive ...*instance) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		for _, in := range alive {
			if in.exited() {
				in.dumpLog(40)
				t.Fatalf("%s exited (%v) while waiting for %s", in.name, in.exitErr, what)
			}
		}
		if time.Now().After(deadline) {
			// A goroutine dump of every live instance lands in its log
			// (kept under SEGD_ARTIFACTS) for whoever debugs the stall.
			for _, in := range alive {
				if !in.exited() {
					in.saveMetrics()
					in.cmd.Process.Signal(syscall.SIGQUIT)
					<-in.done
				}
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// settled waits until the group committed the end of every input and the
// live instances published their whole outbox.
func settled(t *testing.T, p pipeline, timeout time.Duration, live ...*instance) {
	t.Helper()
	end := p.endOffsets(t)
	var behind []string
	t.Cleanup(func() {
		if t.Failed() && len(behind) > 0 {
			t.Logf("%s: committed behind the end at the last poll: %s", p.group, strings.Join(behind, ", "))
		}
	})
	waitUntil(t, timeout, p.group+" to consume and publish everything", func() bool {
		got := p.committed(t)
		behind = behind[:0]
		for k, v := range end {
			if got[k] != v {
				behind = append(behind, fmt.Sprintf("%s %d/%d", k, got[k], v))
			}
		}
		sort.Strings(behind)
		if len(behind) > 0 {
			return false
		}
		for _, in := range live {
			if in.metric("segd_outbox_depth") != 0 || in.metric("segd_changelog_depth") != 0 {
				return false
			}
		}
		return true
	}, live...)
}

// referenceRun runs one uninterrupted instance over everything in the
// pipeline's input topics, in its own group with its own changes topic,
// and returns its changes.
func referenceRun(t *testing.T, p pipeline) map[string]change {
	t.Helper()
	ref := p
	ref.group = p.group + "-ref"
	ref.changes = p.changes + "-ref"
	ref.extraEnv = nil // default commit sizes: the output must not depend on them
	in := startInstance(t, ref, "reference", filepath.Join(t.TempDir(), "ref-state"))
	settled(t, ref, 5*time.Minute, in)
	in.stop(t)
	got, _ := ref.readChanges(t)
	if len(got) == 0 {
		t.Fatal("the reference run published no change")
	}
	return got
}
