package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/segd/segd/internal/segdtest"

	"gopkg.in/yaml.v3"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

const engineChildEnv = "SEGD_ENGINE_CHILD_CONFIG"

func TestMain(m *testing.M) {
	if path := os.Getenv(engineChildEnv); path != "" {
		os.Exit(runChild(path))
	}
	os.Exit(m.Run())
}

// runChild runs an engine from a config file until SIGTERM (or SIGKILL).
func runChild(path string) int {
	cfg, err := LoadConfig(path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	eng, err := New(cfg, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 4
	}
	err = eng.Run(ctx)
	eng.Close()
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, err)
		return 5
	}
	return 0
}

func writeChildConfig(t *testing.T, dir string, brokers []string, changes string) string {
	t.Helper()
	cfg := map[string]any{
		"kafka": map[string]any{"brokers": brokers, "max_wait": "50ms", "max_task_idle": "10s", "group": "segd-" + changes,
			"topics": map[string]any{"changes": changes}},
		"rules":  map[string]any{"file": "../examples/rules.yaml"},
		"state":  map[string]any{"dir": filepath.Join(dir, "state")},
		"commit": map[string]any{"interval": "30ms", "max_events": 200},
		"clock":  map[string]any{"idle_after": "-1s"},
		"api":    map[string]any{"addr": "off"},
	}
	b, _ := yaml.Marshal(cfg)
	path := filepath.Join(dir, "segd.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// readAll reads every partition of topic until nothing new arrives for
// quiet, or until want records (0: no target) arrived.
// readAll reads every partition of topic until it holds want records
// (segdtest.ReadTopic).
func readAll(t *testing.T, brokers []string, topic string, partitions int, want int, timeout time.Duration) []connectors.Message {
	t.Helper()
	return segdtest.ReadTopic(t, brokers, topic, partitions, want, timeout)
}

// TestCrashRecoveryEffectivelyOnce kills an engine process with SIGKILL at
// random moments while it works through a backlog, restarts it each time,
// and checks that its output, deduplicated by change id, equals the output
// of one uninterrupted run over the same input, and that every duplicate is
// a byte-identical copy.
func TestCrashRecoveryEffectivelyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test runs engine processes; skipped with -short")
	}
	const partitions = 2
	topics := []string{DefaultPurchasesTopic, DefaultBrowsesTopic, DefaultEngagementsTopic, DefaultProfilesTopic, "ref.changes", "crash.changes", DefaultDeadLetterTopic}
	broker, err := connectors.StartEmbeddedBroker(0, partitions, topics...)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	brokers := broker.Addrs()

	// The input: a deterministic backlog, produced before any engine runs.
	g, err := gen.New(gen.Config{Seed: 5, Customers: 400, EventsPerHour: 60, Start: ts("2024-01-01T00:00:00Z")})
	if err != nil {
		t.Fatal(err)
	}
	codecs, _ := schemas.NewCodecs()
	prod, _ := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	defer prod.Close()
	topicOf := map[schemas.EventType]string{schemas.EventPurchase: DefaultPurchasesTopic, schemas.EventBrowse: DefaultBrowsesTopic, schemas.EventEngagement: DefaultEngagementsTopic, schemas.EventProfile: DefaultProfilesTopic}
	const events = 8000
	var batch []connectors.Message
	var e schemas.Event
	for i := 0; i < events; i++ {
		g.Next(&e)
		v, err := codecs[e.Type].AppendEncode(nil, &e)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, connectors.Message{Topic: topicOf[e.Type], Key: []byte(e.CustomerID), Value: v, Time: time.UnixMilli(e.Time)})
		if len(batch) == 500 {
			if err := prod.Write(context.Background(), batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}

	start := func(dir string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), engineChildEnv+"="+filepath.Join(dir, "segd.yaml"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	inputs := []string{DefaultPurchasesTopic, DefaultBrowsesTopic, DefaultEngagementsTopic, DefaultProfilesTopic}
	// consumed reports whether the engine writing to topic has committed
	// every input record (its consumer group's offsets reached the ends).
	consumed := func(topic string) bool {
		gc := (connectors.Cluster{Brokers: brokers, Security: nil}).GroupOffsetCommitter("segd-" + topic)
		defer gc.Close()
		for p := 0; p < partitions; p++ {
			_, end, err := (connectors.Cluster{Brokers: brokers, Security: nil}).EndOffsets(context.Background(), inputs, p)
			if err != nil {
				return false
			}
			got, err := gc.Committed(context.Background(), p, inputs)
			if err != nil {
				return false
			}
			for _, in := range inputs {
				if got[in] != end[in] {
					return false
				}
			}
		}
		return true
	}
	// finish lets an engine run until it consumed all input and its output
	// stopped growing, then stops it.
	finish := func(cmd *exec.Cmd, topic string) {
		last, stable := -1, 0
		// Generous: under the race detector on a shared 2-core machine a
		// restarted engine takes its time.
		deadline := time.Now().Add(4 * time.Minute)
		for stable < 2 || !consumed(topic) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("engine output on %s did not settle", topic)
			}
			time.Sleep(time.Second)
			n := len(readAll(t, brokers, topic, partitions, 0, time.Second))
			if n == last && n > 0 {
				stable++
			} else {
				stable = 0
			}
			last = n
		}
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}

	refDir, crashDir := t.TempDir(), t.TempDir()
	writeChildConfig(t, refDir, brokers, "ref.changes")
	writeChildConfig(t, crashDir, brokers, "crash.changes")
	finish(start(refDir), "ref.changes")
	ref := readAll(t, brokers, "ref.changes", partitions, 0, time.Second)
	if len(ref) < 200 {
		t.Fatalf("reference run produced only %d changes", len(ref))
	}

	r := rand.New(rand.NewPCG(11, 12))
	for kill := 0; kill < 10; kill++ {
		cmd := start(crashDir)
		// The kill moment is the randomness under test, not a wait.
		time.Sleep(time.Duration(300+r.IntN(1200)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("engine %d exited before the kill: %v", kill, cmd.ProcessState)
		}
	}
	finish(start(crashDir), "crash.changes")
	got := readAll(t, brokers, "crash.changes", partitions, 0, time.Second)

	refByID := map[string][]byte{}
	for _, m := range ref {
		refByID[changeKey(t, m)] = m.Value
	}
	gotByID := map[string][]byte{}
	dups := 0
	for _, m := range got {
		id := changeKey(t, m)
		if prev, ok := gotByID[id]; ok {
			dups++
			if !bytes.Equal(prev, m.Value) {
				t.Fatalf("duplicate %s is not an exact copy", id)
			}
			continue
		}
		gotByID[id] = m.Value
	}
	for id, v := range refByID {
		if g, ok := gotByID[id]; !ok {
			t.Errorf("change %s of the uninterrupted run is missing after crashes", id)
		} else if !bytes.Equal(g, v) {
			t.Errorf("change %s differs from the uninterrupted run", id)
		}
	}
	for id := range gotByID {
		if _, ok := refByID[id]; !ok {
			t.Errorf("change %s was not in the uninterrupted run", id)
		}
	}
	parts := map[int]int{}
	for _, m := range ref {
		parts[m.Partition]++
	}
	t.Logf("reference %d changes (by partition %v); crashed run %d records, %d duplicates, 10 SIGKILLs", len(ref), parts, len(got), dups)
}

func changeKey(t *testing.T, m connectors.Message) string {
	var c schemas.SegmentChange
	if err := schemas.DecodeSegmentChangeAvro(m.Value, &c); err != nil {
		t.Fatal(err)
	}
	return c.ID
}
