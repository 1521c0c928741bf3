package main

// The flows README.md and docs/ describe, run as a person runs them: the
// built binary, started from an empty directory with the documented
// commands and environment, watched long enough to reach steady state (a
// live phase of over a minute, not the first seconds).

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/internal/segdtest"
	"github.com/segd/segd/schemas"
)

// userProc is the binary run as a person runs it, its output lines kept
// with the time each was read.
type userProc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu    sync.Mutex
	lines []timedLine
	errb  strings.Builder
}

type timedLine struct {
	at   time.Time
	text string
}

// startUser starts `segd args...` in dir with the environment plus env.
func startUser(t *testing.T, name, dir string, env []string, args ...string) *userProc {
	t.Helper()
	p := &userProc{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(segdBinary(t), args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, timedLine{at: time.Now(), text: sc.Text()})
			p.mu.Unlock()
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		defer readers.Done()
		b := make([]byte, 32<<10)
		for {
			n, err := stderr.Read(b)
			p.mu.Lock()
			if p.errb.Len() < 4<<20 {
				p.errb.Write(b[:n])
			}
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		readers.Wait()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s stdout (last lines):\n%s\n%s stderr (tail):\n%s", p.name, p.tail(30), p.name, tailString(p.stderr(), 4000))
		}
	})
	return p
}

func (p *userProc) snapshot() []timedLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]timedLine(nil), p.lines...)
}

func (p *userProc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errb.String()
}

func (p *userProc) tail(n int) string {
	ls := p.snapshot()
	var b strings.Builder
	for _, l := range ls[max(0, len(ls)-n):] {
		b.WriteString(l.text + "\n")
	}
	return b.String()
}

func (p *userProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitLine waits for a stdout line matching re and returns its index.
func (p *userProc) waitLine(re *regexp.Regexp, timeout time.Duration) int {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for i, l := range p.snapshot() {
			if re.MatchString(l.text) {
				return i
			}
		}
		if p.exited() {
			p.t.Fatalf("%s exited (%v) before printing %q", p.name, p.err, re)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s printed no line matching %q within %s", p.name, re, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends sig and waits for the exit, which must be clean.
func (p *userProc) stop(sig os.Signal, timeout time.Duration) {
	p.t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not stop within %s of %v", p.name, timeout, sig)
	}
	if p.err != nil {
		p.t.Fatalf("%s exited with %v", p.name, p.err)
	}
}

func tailString(s string, n int) string { return s[max(0, len(s)-n):] }

var (
	statusLine = regexp.MustCompile(`^-- status: sent (\d+), applied (\d+) \([^)]*\), lag (-?\d+), .* dead letters (\d+),`)
	changeLine = regexp.MustCompile(`^(\S+) (ENTER|EXIT) +\S+ +c\d+ +\((event \S+|timer|rule_change)\)`)
)

type demoStatus struct {
	at                  time.Time
	sent, applied, dead int
}

// TestFlowDemo runs `segd demo` with its defaults from an empty directory
// (the README's `make demo`), through the history and over a minute of the
// live phase: events keep being applied to the end, nothing is
// dead-lettered, no change is stamped after the wall clock (a timer firing
// early would be), and SIGHUP reloads the rules instead of killing it.
func TestFlowDemo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	demo := startUser(t, "segd demo", dir, nil, "demo")
	live := demo.waitLine(regexp.MustCompile(`^-- history done`), 3*time.Minute)
	liveFrom := demo.snapshot()[live].at
	// Over a minute of live traffic; a reload half way.
	for time.Since(liveFrom) < 35*time.Second {
		if demo.exited() {
			t.Fatalf("demo exited during the live phase: %v", demo.err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	demo.cmd.Process.Signal(syscall.SIGHUP)
	demo.waitLine(regexp.MustCompile(`^-- rules reloaded \(SIGHUP\)`), 30*time.Second)
	for time.Since(liveFrom) < 70*time.Second {
		if demo.exited() {
			t.Fatalf("demo exited during the live phase: %v", demo.err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	demo.stop(os.Interrupt, 30*time.Second)

	lines := demo.snapshot()
	var statuses []demoStatus
	var liveChanges, timers int
	for i, l := range lines {
		if m := statusLine.FindStringSubmatch(l.text); m != nil {
			s := demoStatus{at: l.at}
			s.sent, _ = strconv.Atoi(m[1])
			s.applied, _ = strconv.Atoi(m[2])
			s.dead, _ = strconv.Atoi(m[4])
			if lag, _ := strconv.Atoi(m[3]); lag < 0 {
				t.Errorf("line %d: negative lag %d: %s", i, lag, l.text)
			}
			if s.dead != 0 {
				t.Errorf("line %d: %d dead letters: %s", i, s.dead, l.text)
			}
			if i > live {
				statuses = append(statuses, s)
			}
			continue
		}
		if m := changeLine.FindStringSubmatch(l.text); m != nil {
			at, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				t.Fatalf("line %d: time %q: %v", i, m[1], err)
			}
			if at.After(l.at) {
				t.Errorf("line %d: change stamped %s, %s after the wall clock when printed: %s", i, at, at.Sub(l.at), l.text)
			}
			if i > live {
				liveChanges++
				if m[3] == "timer" {
					timers++
				}
			}
		}
	}
	if len(statuses) < 15 {
		t.Fatalf("%d status lines in the live phase, want one every 3 s over 70 s", len(statuses))
	}
	last := statuses[len(statuses)-1]
	var before demoStatus
	for _, s := range statuses {
		if last.at.Sub(s.at) >= 20*time.Second {
			before = s
		}
	}
	// 50 events/s live: at least half of that in the last 20 s.
	if got := last.applied - before.applied; got < 500 {
		t.Errorf("applied grew by %d in the last %s of the live phase (%d -> %d), want >= 500", got, last.at.Sub(before.at).Round(time.Second), before.applied, last.applied)
	}
	if lag := last.sent - last.applied - last.dead; lag > 1000 {
		t.Errorf("lag %d at the end: the engine does not keep up with 50 events/s", lag)
	}
	if liveChanges == 0 {
		t.Error("no segment change printed in the live phase")
	}
	if !strings.Contains(lines[len(lines)-1].text, "segd demo: stopped after") {
		t.Errorf("last line %q, want the stop summary", lines[len(lines)-1].text)
	}
	t.Logf("live phase: %d status lines, applied %d -> %d in the last %s, %d changes printed (%d by timers)",
		len(statuses), before.applied, last.applied, last.at.Sub(before.at).Round(time.Second), liveChanges, timers)
}

// TestFlowReadmeRun follows README's "Running it on your Kafka" with the
// in-memory broker it suggests: `segd broker`, `segd gen --create-topics 12
// --rate 1000`, `segd run` with SEGD_KAFKA_BROKERS and SEGD_RULES_FILE, from
// an empty directory holding only examples/rules.yaml. Over a minute of
// live traffic it must apply events to the end, dead-letter nothing,
// publish changes a Kafka client can read (segd creates the changes and
// dead-letter topics), stay ready with no publish failure, and create a
// segment's own topic when a reload adds one.
func TestFlowReadmeRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "examples"), 0o755); err != nil {
		t.Fatal(err)
	}
	rulesSrc, err := os.ReadFile("../../examples/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rulesPath := filepath.Join(dir, "examples", "rules.yaml")
	if err := os.WriteFile(rulesPath, rulesSrc, 0o644); err != nil {
		t.Fatal(err)
	}
	broker := startUser(t, "segd broker", dir, nil, "broker")
	broker.waitLine(regexp.MustCompile(`^127\.0\.0\.1:\d+$`), 30*time.Second)
	addr := broker.snapshot()[0].text
	gen := startUser(t, "segd gen", dir, nil, "gen", "--brokers", addr, "--create-topics", "12", "--rate", "1000")
	// gen creates the input topics first; segd refuses to start without them.
	waitFor(t, 30*time.Second, "the input topics", func() bool {
		_, err := (connectors.Cluster{Brokers: []string{addr}, Security: nil}).PartitionCounts(t.Context(), []string{"customer.purchases", "customer.profiles"})
		return err == nil
	})
	api := freeLoopback(t)
	run := startUser(t, "segd run", dir, []string{"SEGD_KAFKA_BROKERS=" + addr, "SEGD_RULES_FILE=examples/rules.yaml", "SEGD_API_ADDR=" + api}, "run")
	metric := func(name string) float64 { return scrapeMetric(t, api, name) }
	waitFor(t, time.Minute, "segd run applying events", func() bool { return metric("segd_events_applied_total") > 0 })
	start := time.Now()
	type sample struct {
		at                       time.Time
		applied, dead, published float64
	}
	var samples []sample
	var reloadAt time.Time
	for time.Since(start) < 70*time.Second {
		if run.exited() || gen.exited() {
			t.Fatalf("a process exited: run %v, gen %v", run.err, gen.err)
		}
		samples = append(samples, sample{time.Now(), metric("segd_events_applied_total"), metric("segd_dead_letters_total"), metric("segd_outbox_published_total")})
		if reloadAt.IsZero() && time.Since(start) > 30*time.Second {
			// A new segment with a topic of its own: the reload creates it.
			extra := "  vip_feed:\n    description: vip, routed to its own topic\n    topic: segd.vip-feed\n    when: spend_90d >= 100\n"
			if err := os.WriteFile(rulesPath, append(append([]byte(nil), rulesSrc...), extra...), 0o644); err != nil {
				t.Fatal(err)
			}
			reloadAt = time.Now()
			run.cmd.Process.Signal(syscall.SIGHUP)
		}
		time.Sleep(5 * time.Second)
	}
	last := samples[len(samples)-1]
	var before sample
	for _, s := range samples {
		if last.at.Sub(s.at) >= 20*time.Second {
			before = s
		}
	}
	if last.applied-before.applied < 5000 {
		t.Errorf("applied grew by %.0f in the last %s (1000 events/s sent)", last.applied-before.applied, last.at.Sub(before.at).Round(time.Second))
	}
	if last.published-before.published <= 0 {
		t.Errorf("published grew by %.0f in the last %s: no change reaches Kafka", last.published-before.published, last.at.Sub(before.at).Round(time.Second))
	}
	if last.dead != 0 {
		t.Errorf("%.0f dead letters", last.dead)
	}
	if f := metric("segd_publish_failing"); f != 0 {
		t.Errorf("segd_publish_failing sums to %.0f", f)
	}
	status, body := httpGet(t, "http://"+api+"/readyz")
	if status != http.StatusOK || !strings.Contains(body, `"status":"ready"`) || strings.Contains(body, "publish_failing") {
		t.Errorf("/readyz: %d %s", status, body)
	}
	// A topic created a moment ago may answer "unknown" to a producer
	// for a second (its metadata is cached); the publisher retries. Any
	// other publish failure is a defect.
	for _, l := range strings.Split(run.stderr(), "\n") {
		if !strings.Contains(l, "publish failed") {
			continue
		}
		var rec struct {
			Time time.Time `json:"time"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Time.Before(reloadAt) || rec.Time.After(reloadAt.Add(10*time.Second)) {
			t.Errorf("publish failure outside the 10 s after the reload that created a topic (%s): %s", reloadAt.Format(time.RFC3339Nano), l)
			break
		}
	}
	if !strings.Contains(run.stderr(), "rules reloaded") {
		t.Errorf("no reload logged after SIGHUP")
	}
	// What a consumer of the changes topic reads.
	changes := readTopic(t, addr, "segment.changes", 12)
	if len(changes) == 0 {
		t.Fatal("segment.changes is empty")
	}
	for _, m := range changes[:min(len(changes), 1000)] {
		var sc schemas.SegmentChange
		if err := schemas.DecodeSegmentChangeAvro(m.Value, &sc); err != nil {
			t.Fatalf("segment.changes offset %d: %v", m.Offset, err)
		}
	}
	if vip := readTopic(t, addr, "segd.vip-feed", 12); len(vip) == 0 {
		t.Error("the reloaded rules' segment topic segd.vip-feed got no change")
	}
	t.Logf("last 20 s: applied %.0f -> %.0f, published %.0f -> %.0f; %d records on segment.changes", before.applied, last.applied, before.published, last.published, len(changes))
	run.stop(os.Interrupt, 30*time.Second)
	gen.stop(os.Interrupt, 10*time.Second)
}

// TestFlowRunRefusesMissingOutputTopics: with kafka.create_topics false
// segd refuses to start and names the topics it would write but cannot.
func TestFlowRunRefusesMissingOutputTopics(t *testing.T) {
	t.Parallel()
	b, err := connectors.StartEmbeddedBroker(0, 3, "customer.purchases", "customer.browses", "customer.engagements", "customer.profiles")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dir := t.TempDir()
	run := startUser(t, "segd run", dir, []string{"SEGD_KAFKA_BROKERS=" + b.Addrs()[0], "SEGD_RULES_FILE=" + absPath(t, "../../examples/rules.yaml"),
		"SEGD_API_ADDR=off", "SEGD_KAFKA_CREATE_TOPICS=false"}, "run")
	select {
	case <-run.done:
	case <-time.After(time.Minute):
		t.Fatal("segd run did not refuse to start")
	}
	if run.err == nil {
		t.Fatal("segd run exited 0 without its output topics")
	}
	for _, want := range []string{"segment.changes", "segd.deadletter", "kafka.create_topics"} {
		if !strings.Contains(run.stderr(), want) {
			t.Errorf("the error does not name %s:\n%s", want, tailString(run.stderr(), 2000))
		}
	}
}

func absPath(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	segdtest.WaitFor(t, timeout, what, cond)
}

// scrapeMetric sums a metric family's samples on api's /metrics (-1 when
// the endpoint does not answer, 0 when the family has no sample).
func scrapeMetric(t *testing.T, api, name string) float64 {
	in := &instance{api: api, done: make(chan struct{})}
	return in.metric(name)
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// readTopic reads every record of topic's partitions up to their end.
func readTopic(t *testing.T, addr, topic string, partitions int) []connectors.Message {
	t.Helper()
	return segdtest.ReadTopic(t, []string{addr}, topic, partitions, 0, 0)
}
