package state

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

const crashChildEnv = "SEGD_STATE_CRASH_CHILD"

// crashChild writes commit batches forever, with the changelog on. Batch
// i sets ten customers' records to i, moves their timers to i*1000, sets
// offset "t" to i and appends outbox entry "i"; every 50th batch marks the
// changelog entries but the last three sent. The parent kills it with
// SIGKILL.
func crashChild(dir string) {
	s, err := Open(dir, Options{Decode: decodeTest, CacheBytes: 1 << 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	p, err := s.Partition(0)
	if err != nil {
		os.Exit(3)
	}
	if err := p.EnableChangelog(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	offs, _ := p.Offsets()
	for i := offs["t"] + 1; ; i++ {
		for k := int64(0); k < 10; k++ {
			id := "c" + strconv.FormatInt((i*7+k)%500, 10)
			rec, err := p.Get(id)
			if err != nil {
				os.Exit(4)
			}
			r := rec.(*testRecord)
			p.MoveTimer(id, int64(r.n)*1000, i*1000)
			r.n = uint64(i)
			p.MarkDirty(id, r)
		}
		p.SetOffset("t", i)
		p.AppendOutbox([]byte(strconv.FormatInt(i, 10)))
		if err := p.Commit(); err != nil {
			os.Exit(5)
		}
		if i%37 == 0 {
			p.DeleteOutbox(uint64(i) - 20)
		}
		if c := p.clCommitted.Load(); i%50 == 0 && c > 3 {
			if err := p.ChangelogSent(c-3, i); err != nil {
				os.Exit(6)
			}
		}
	}
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	code := m.Run()
	removeBenchFixtures()
	os.Exit(code)
}

// TestCrashConsistency kills a writer with SIGKILL at random moments and
// checks after each restart that offsets, records, timers and outbox agree.
func TestCrashConsistency(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(9, 9))
	lastOffset := int64(0)
	kills := 0
	for kills < 20 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The kill moment is the randomness under test, not a wait.
		time.Sleep(time.Duration(30+r.IntN(250)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("child exited on its own: %v", err)
		}
		kills++
		lastOffset = checkCrashState(t, dir, lastOffset)
	}
	if lastOffset < 100 {
		t.Fatalf("only %d batches committed over %d kills: the test did not exercise much", lastOffset, kills)
	}
	t.Logf("%d kills, %d batches committed", kills, lastOffset)
}

func checkCrashState(t *testing.T, dir string, prevOffset int64) int64 {
	t.Helper()
	s, err := Open(dir, Options{Decode: decodeTest})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	offs, err := p.Offsets()
	if err != nil {
		t.Fatal(err)
	}
	o := offs["t"]
	if o < prevOffset {
		t.Fatalf("offset went back from %d to %d", prevOffset, o)
	}
	if o == 0 {
		return 0
	}
	// Records: none from the future, and all of batch o present.
	timersWant := map[string]int64{}
	if err := p.Range(func(id string, rec Record) error {
		n := int64(rec.(*testRecord).n)
		if n > o {
			return fmt.Errorf("record %s at batch %d, past offset %d", id, n, o)
		}
		if n > 0 {
			timersWant[id] = n * 1000
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for k := int64(0); k < 10; k++ {
		id := "c" + strconv.FormatInt((o*7+k)%500, 10)
		rec, err := p.Get(id)
		if err != nil || int64(rec.(*testRecord).n) != o {
			t.Fatalf("record %s = %+v, want batch %d (%v)", id, rec, o, err)
		}
	}
	// Timers: exactly one per record, at its batch.
	timersGot := map[string]int64{}
	if err := p.PopDue(1<<62, func(id string, at int64) error {
		if _, dup := timersGot[id]; dup {
			return fmt.Errorf("two timers for %s", id)
		}
		timersGot[id] = at
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(timersGot) != len(timersWant) {
		t.Fatalf("%d timers for %d records", len(timersGot), len(timersWant))
	}
	for id, at := range timersWant {
		if timersGot[id] != at {
			t.Fatalf("timer of %s at %d, want %d", id, timersGot[id], at)
		}
	}
	// Outbox: contiguous, ending with entry o.
	var last int64 = -1
	var prevSeq uint64
	if err := p.ReadOutbox(0, 1<<30, func(seq uint64, v []byte) error {
		n, _ := strconv.ParseInt(string(v), 10, 64)
		if prevSeq != 0 && (seq != prevSeq+1 || n != last+1) {
			return fmt.Errorf("outbox gap: seq %d after %d, value %d after %d", seq, prevSeq, n, last)
		}
		prevSeq, last = seq, n
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if last != o {
		t.Fatalf("last outbox entry %d, offset %d", last, o)
	}
	// A process crash never loses a committed changelog entry (the log
	// is written before the batch commits): no gap, and the last pending
	// entry is the last commit. (Enabled after the outbox check: with the
	// changelog on, the outbox holds back what the changelog has not sent.)
	if err := p.EnableChangelog(); err != nil {
		t.Fatalf("changelog after SIGKILL: %v", err)
	}
	checkCrashChangelog(t, p, o)
	return o
}

// checkCrashChangelog checks that partition p's pending changelog entries
// run without a hole up to the last commit, whose entry sets offset "t"
// to o.
func checkCrashChangelog(t *testing.T, p *Partition, o int64) {
	t.Helper()
	want := p.clDeletedTo.Load() + 1
	last := int64(-1)
	err := p.ReadChangelog(0, 1<<30, func(seq uint64, entry []byte) error {
		if seq != want {
			return fmt.Errorf("pending changelog entry %d, want %d", seq, want)
		}
		want++
		last = -1
		return ForEachChangelogOp(entry, func(op ChangelogOp) error {
			if op.Key[0] == ksOffset && string(op.Key[5:]) == "t" {
				last = int64(binary.BigEndian.Uint64(op.Value))
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if want-1 != p.clCommitted.Load() {
		t.Fatalf("pending changelog entries end at %d, the store committed %d", want-1, p.clCommitted.Load())
	}
	if want-1 > p.clDeletedTo.Load() && last != o {
		t.Fatalf("the last pending changelog entry sets offset %d, the store's offset is %d", last, o)
	}
}
