package state

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestPipelinedCommitWritesTheRecordsAsOfTheCommit holds the flight's
// writer while the task changes every record the flight writes: the
// store must get them as they were at CommitAsync, and the changes only
// with the next commit.
func TestPipelinedCommitWritesTheRecordsAsOfTheCommit(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	set := func(v uint64) {
		for i := range n {
			id := fmt.Sprintf("c%04d", i)
			rec, err := p.Get(id)
			if err != nil {
				t.Fatal(err)
			}
			r := rec.(*testRecord)
			r.n = v + uint64(i)
			r.data = append(r.data[:0], strings.Repeat(fmt.Sprint(v), 10)...)
			p.MarkDirty(id, r)
		}
	}
	set(1000)
	p.AppendOutbox([]byte("first"))
	p.SetOffset("in", 1)
	release := holdFlights()
	defer release()
	async, err := p.CommitAsync()
	if err != nil || !async {
		t.Fatalf("CommitAsync = %v, %v", async, err)
	}
	// In flight: nothing of it is committed yet.
	if !p.OutboxStaged() || p.OutboxDepth() != 0 {
		t.Fatalf("outbox staged %v depth %d while in flight", p.OutboxStaged(), p.OutboxDepth())
	}
	if done, err := p.Settle(false); done || err != nil {
		t.Fatalf("Settle(false) on a held flight = %v, %v", done, err)
	}
	set(2000) // every record copied before it changes
	release()
	if done, err := p.Settle(true); !done || err != nil {
		t.Fatalf("Settle(true) = %v, %v", done, err)
	}
	if done, _ := p.Settle(true); done {
		t.Fatal("a landed flight was reported twice")
	}
	if p.OutboxStaged() || p.OutboxDepth() != 1 {
		t.Fatalf("outbox staged %v depth %d after landing", p.OutboxStaged(), p.OutboxDepth())
	}
	// The second set is not committed: Close drops it, as a crash would.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openMem(t, fs, Options{})
	defer s.Close()
	p, err = s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		id := fmt.Sprintf("c%04d", i)
		rec, err := p.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		r := rec.(*testRecord)
		if r.n != 1000+uint64(i) || string(r.data) != strings.Repeat("1000", 10) {
			t.Fatalf("%s = %d %q, want it as of the commit", id, r.n, r.data)
		}
	}
	offs, err := p.Offsets()
	if err != nil || offs["in"] != 1 {
		t.Fatalf("offsets %v %v", offs, err)
	}
}

// TestCloseWaitsForTheFlight: a store closed with a commit in flight
// holds that commit when it opens again.
func TestCloseWaitsForTheFlight(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	p, _ := s.Partition(2)
	for i := range 2000 {
		id := fmt.Sprintf("c%d", i)
		rec, _ := p.Get(id)
		rec.(*testRecord).n = uint64(i) + 1
		p.MarkDirty(id, rec)
	}
	if async, err := p.CommitAsync(); err != nil || !async {
		t.Fatalf("CommitAsync = %v, %v", async, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openMem(t, fs, Options{})
	defer s.Close()
	p, _ = s.Partition(2)
	for _, i := range []int{0, 999, 1999} {
		rec, err := p.Get(fmt.Sprintf("c%d", i))
		if err != nil || rec.(*testRecord).n != uint64(i)+1 {
			t.Fatalf("c%d = %+v, %v", i, rec, err)
		}
	}
}

// TestPipelinedCommitsMatchAModel runs random operations on a partition
// with a small cache (records evicted and read back), committing now
// synchronously, now pipelined, and settling at random: every read must
// see the model, and the store opened again must hold the model as of
// the last commit, timers and counts included.
func TestPipelinedCommitsMatchAModel(t *testing.T) {
	for seed := range uint64(2) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { pipelineModelRun(t, seed) })
	}
}

type modelState struct {
	recs   map[string]uint64
	timers map[string]int64
	vip    map[string]bool
}

func (m modelState) clone() modelState {
	c := modelState{recs: map[string]uint64{}, timers: map[string]int64{}, vip: map[string]bool{}}
	for k, v := range m.recs {
		c.recs[k] = v
	}
	for k, v := range m.timers {
		c.timers[k] = v
	}
	for k, v := range m.vip {
		c.vip[k] = v
	}
	return c
}

func pipelineModelRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{CacheBytes: 1 << 20})
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("p", 200) // ~3,000 records fit the cache
	m := modelState{recs: map[string]uint64{}, timers: map[string]int64{}, vip: map[string]bool{}}
	var committed modelState
	clock := int64(1)
	// Each pipelined commit's writer is held until the test does
	// something that waits for it, so that reads, changes, deletes and
	// timers meet a flight that has not landed.
	release := func() {}
	defer func() { release() }()
	const customers = 8000
	for step := range 30000 {
		id := fmt.Sprintf("c%05d", rng.IntN(customers))
		switch op := rng.IntN(100); {
		case op < 70: // an event: read, check, change
			rec, err := p.Get(id)
			if err != nil {
				t.Fatal(err)
			}
			r := rec.(*testRecord)
			if r.n != m.recs[id] {
				t.Fatalf("step %d: %s = %d, model %d", step, id, r.n, m.recs[id])
			}
			r.n++
			r.data = append(r.data[:0], payload...)
			m.recs[id] = r.n
			at := clock + int64(rng.IntN(5000)) + 1
			p.MoveTimer(id, m.timers[id], at)
			m.timers[id] = at
			if r.n%3 == 0 && !m.vip[id] {
				p.CountMember("vip", true)
				m.vip[id] = true
			}
			if m.vip[id] {
				r.data = append(r.data, "+vip"...)
			}
			p.MarkDirty(id, r)
		case op < 73: // erase
			if _, ok := m.recs[id]; !ok {
				continue
			}
			p.Delete(id)
			p.MoveTimer(id, m.timers[id], 0)
			if m.vip[id] {
				p.CountMember("vip", false)
			}
			delete(m.recs, id)
			delete(m.timers, id)
			delete(m.vip, id)
		case op < 78: // time passes: due timers fire in order
			release() // a refill of the timer heap waits for the flight
			clock += int64(rng.IntN(400))
			var last timerItem
			if err := p.PopDue(clock, func(id string, at int64) error {
				if it := (newTimerItem(at, id)); it.less(last) {
					t.Fatalf("step %d: timer %v after %v", step, it, last)
				}
				last = newTimerItem(at, id)
				if m.timers[id] != at {
					t.Fatalf("step %d: timer %s at %d, model %d", step, id, at, m.timers[id])
				}
				delete(m.timers, id)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			for id, at := range m.timers {
				if step%20 != 0 {
					break // a full check now and then: it is slow under -race
				}
				if at <= clock {
					t.Fatalf("step %d: timer %s at %d not popped at %d", step, id, at, clock)
				}
			}
		case op < 80:
			release()
			if err := p.Commit(); err != nil {
				t.Fatal(err)
			}
			committed = m.clone()
		case op < 85:
			release()
			release = holdFlights()
			if _, err := p.CommitAsync(); err != nil {
				t.Fatal(err)
			}
			committed = m.clone()
		case op < 90:
			wait := rng.IntN(2) == 0
			if wait {
				release()
			}
			if _, err := p.Settle(wait); err != nil {
				t.Fatal(err)
			}
		}
	}
	release()
	release = holdFlights()
	if _, err := p.CommitAsync(); err != nil {
		t.Fatal(err)
	}
	committed = m.clone()
	// Changes after the last commit are dropped by Close, as by a crash;
	// these meet the last commit in flight.
	for i := range customers / 10 {
		id := fmt.Sprintf("c%05d", i)
		rec, err := p.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		rec.(*testRecord).n += 1000
		p.MarkDirty(id, rec)
	}
	release()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openMem(t, fs, Options{CacheBytes: 1 << 20})
	defer s.Close()
	p, err = s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]uint64{}
	if err := p.Range(func(id string, rec Record) error {
		stored[id] = rec.(*testRecord).n
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(stored) != len(committed.recs) {
		t.Fatalf("%d records stored, model %d", len(stored), len(committed.recs))
	}
	for id, n := range committed.recs {
		if stored[id] != n {
			t.Fatalf("%s stored %d, model %d", id, stored[id], n)
		}
	}
	var fired []string
	if err := p.PopDue(1<<62, func(id string, at int64) error {
		if committed.timers[id] != at {
			return fmt.Errorf("timer %s at %d, model %d", id, at, committed.timers[id])
		}
		fired = append(fired, id)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(fired) != len(committed.timers) {
		t.Fatalf("%d timers stored, model %d", len(fired), len(committed.timers))
	}
	vips := 0
	for range committed.vip {
		vips++
	}
	n, err := s.CountMembers("vip")
	if err != nil || n != int64(vips) {
		t.Fatalf("vip count %d (%v), model %d", n, err, vips)
	}
	ids, _, err := s.MembersOf(vipMatch, "", vips+10, nil)
	if err != nil || len(ids) != vips {
		t.Fatalf("vip members %d (%v), model %d", len(ids), err, vips)
	}
	for _, id := range ids {
		if !committed.vip[id] {
			t.Fatalf("%s listed in vip, not in the model", id)
		}
	}
	if !slices.IsSorted(ids) {
		t.Fatal("members not sorted")
	}
}

// TestRecordsInFlightStayCached: while a commit is in flight, its records
// are not in Pebble yet: however full the cache, they stay cached.
func TestRecordsInFlightStayCached(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{CacheBytes: 1 << 20})
	defer s.Close()
	p, _ := s.Partition(0)
	payload := []byte(strings.Repeat("x", 1000))
	for i := range 300 {
		id := fmt.Sprintf("flight%d", i)
		p.MarkDirty(id, &testRecord{n: uint64(i) + 1, data: payload})
	}
	release := holdFlights()
	defer release() // before Close, which waits for the flight
	if async, err := p.CommitAsync(); err != nil || !async {
		t.Fatalf("CommitAsync = %v, %v", async, err)
	}
	// Ten times the cache's worth of other customers, read twice over
	// (every entry passes the eviction's second chance).
	for range 2 {
		for i := range 10000 {
			if _, err := p.Get(fmt.Sprintf("other%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 300 {
		rec, err := p.Get(fmt.Sprintf("flight%d", i))
		if err != nil || rec.(*testRecord).n != uint64(i)+1 {
			t.Fatalf("flight%d = %+v, %v while in flight", i, rec, err)
		}
	}
	release()
	if _, err := p.Settle(true); err != nil {
		t.Fatal(err)
	}
}

// holdFlights holds the writers of the commits that go in flight until
// the returned release (safe to call twice) is called.
func holdFlights() (release func()) {
	gate := make(chan struct{})
	flightGate = gate
	return func() {
		if flightGate == gate {
			flightGate = nil
		}
		select {
		case <-gate:
		default:
			close(gate)
		}
	}
}

// panicRecord panics when encoded, as a bug in a record's encoder would.
type panicRecord struct{ testRecord }

func (r *panicRecord) AppendBinary([]byte) []byte { panic("encoder bug") }

// TestFailedFlightFailsThePartition: a flight whose writer fails (here a
// panicking encoder) reports its error when settled, and no later commit
// writes as if its records were stored.
func TestFailedFlightFailsThePartition(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{})
	defer s.Close()
	p, _ := s.Partition(0)
	p.MarkDirty("good", &testRecord{n: 1})
	p.MarkDirty("bad", &panicRecord{})
	async, err := p.CommitAsync()
	if err != nil || !async {
		t.Fatalf("CommitAsync = %v, %v", async, err)
	}
	done, err := p.Settle(true)
	if !done || err == nil || !strings.Contains(err.Error(), "encoder bug") {
		t.Fatalf("Settle = %v, %v; want the writer's panic", done, err)
	}
	p.MarkDirty("later", &testRecord{n: 2})
	if err := p.Commit(); err == nil {
		t.Fatal("a commit after a failed flight succeeded")
	}
	if _, err := p.CommitAsync(); err == nil {
		t.Fatal("a pipelined commit after a failed flight succeeded")
	}
	if !errors.Is(s.Err(), ErrStoreFailed) {
		t.Fatalf("store health %v, want failed", s.Err())
	}
}
