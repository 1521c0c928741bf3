package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/internal/faultfs"
	"github.com/segd/segd/state"
)

// runLogged runs an engine with its logs in logs until the returned stop
// is called.
func runLogged(t *testing.T, cfg *Config, opt Options, logs *syncBuffer) (*Engine, func()) {
	t.Helper()
	opt.Logger = zerolog.New(logs)
	eng, err := New(cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	return eng, func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
		eng.Close()
	}
}

// flipSSTByte flips a byte near the start of the largest sstable in dir,
// in its first data block.
func flipSSTByte(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var best string
	var size int64
	for _, e := range ents {
		if info, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".sst") && info.Size() > size {
			best, size = e.Name(), info.Size()
		}
	}
	if best == "" {
		t.Fatalf("no sstable in %s", dir)
	}
	path := filepath.Join(dir, best)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[16] ^= 0x5a
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A corrupt store (one flipped sstable byte) with the changelog on: the
// next start says so, wipes the store, restores the partition from the
// changelog and ends with the state it had.
func TestCorruptStoreIsRestoredFromTheChangelog(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, _ := jsonTestConfig(t, brokers)
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.State.Changelog != "on" {
		t.Fatalf("state.changelog is %q, want on", cfg.State.Changelog)
	}
	producePurchases(t, brokers, 0, 40)
	eng, stop := runLogged(t, cfg, Options{}, &syncBuffer{})
	waitFor(t, 30*time.Second, "every event applied", func() bool { return eng.Progress().Events == 40 })
	stop()

	// The state as it was, then everything into sstables, then one byte off.
	st, err := state.Open(cfg.State.Dir, state.Options{Decode: func(string, []byte) (state.Record, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	want := storeContents(t, st, 0)
	if !strings.Contains(want, "offset "+DefaultPurchasesTopic+"=40") {
		t.Fatalf("the first run did not commit every offset:\n%s", want)
	}
	if err := st.Compact(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	flipSSTByte(t, cfg.State.Dir)

	logs := &syncBuffer{}
	eng, stop = runLogged(t, cfg, Options{}, logs)
	defer stop()
	waitFor(t, 30*time.Second, "the restarted engine to run", func() bool { return eng.ready.Load() })
	if !strings.Contains(logs.String(), "STATE STORE CORRUPT") {
		t.Errorf("no error line about the corrupt store in the logs:\n%s", logs)
	}
	if n := counterSum(t, eng, "segd_restore_records_total", "", ""); n == 0 {
		t.Errorf("restored %v changelog records, want the partition's", n)
	}
	if got := storeContents(t, eng.st, 0); got != want {
		t.Fatalf("state after the restore differs:\n got %s\nwant %s", got, want)
	}
}

// storeContents is partitionContents of a store.
func storeContents(t *testing.T, st *state.Store, p int32) string {
	t.Helper()
	return partitionContents(t, &Engine{st: st}, p)
}

// A store on a disk that fills up while the engine runs: the partition
// pauses (logged, segd_state_disk_full 1, /readyz says so), nothing
// fails, and once space returns it resumes by itself and applies every
// record exactly once.
func TestFullDiskPausesAndResumes(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, _ := jsonTestConfig(t, brokers)
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	fs := faultfs.NewDiskFull(nil)
	logs := &syncBuffer{}
	eng, stop := runLogged(t, cfg, Options{StateFS: fs}, logs)
	defer stop()
	producePurchases(t, brokers, 0, 20)
	waitFor(t, 30*time.Second, "the first events applied", func() bool { return eng.Progress().Events == 20 })

	fs.SetFull(true)
	producePurchases(t, brokers, 20, 40)
	// The commit of these meets the full disk (its changelog entry's
	// write, or Pebble's write-ahead log writer): the write waits for
	// space, and the partition applies nothing meanwhile, whether its
	// task waits inside that commit or paused before its next poll.
	waitFor(t, 30*time.Second, "the store to report the full disk", func() bool {
		return eng.st.DiskFull() && strings.Contains(logs.String(), "disk full: state writes wait and every partition pauses")
	})
	if g := gaugeSum(t, eng, "segd_state_disk_full"); g != 1 {
		t.Fatalf("segd_state_disk_full is %v while the disk is full", g)
	}
	// Paused: more input is not applied while the disk is full.
	applied := eng.Progress().Events
	producePurchases(t, brokers, 60, 20)
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if got := eng.Progress().Events; got != applied {
			t.Fatalf("applied %v events with the disk full, %v before", got, applied)
		}
	}
	if err := eng.st.Err(); err != nil {
		t.Fatalf("the store failed on a full disk: %v", err)
	}
	if st := eng.Status(); st.DiskFullSince.IsZero() {
		t.Errorf("the status does not tell of the full disk: %+v", st)
	}

	fs.SetFull(false)
	waitFor(t, 30*time.Second, "the partition to resume and apply every event", func() bool {
		offs, err := eng.st.CommittedOffsets(0)
		return err == nil && !eng.st.DiskFull() && offs[DefaultPurchasesTopic] == 80
	})
	if g := gaugeSum(t, eng, "segd_state_disk_full"); g != 0 {
		t.Fatalf("segd_state_disk_full is %v after space returned", g)
	}
	if err := eng.st.Err(); err != nil {
		t.Fatalf("the store failed: %v", err)
	}
	if got := eng.Progress().Events; got != 80 {
		t.Fatalf("applied %v events, want 80 (each once)", got)
	}
	if n, err := eng.st.CountCustomers(0); err != nil || n != 60 {
		t.Fatalf("%d customers (%v), want 60", n, err)
	}
	if !strings.Contains(logs.String(), "disk space is back") {
		t.Errorf("no log line about space coming back:\n%s", logs)
	}
}

// gaugeSum is the sum of a gauge's series.
func gaugeSum(t *testing.T, eng *Engine, name string) float64 {
	t.Helper()
	mfs, err := eng.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.Metric {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
