package state

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// dumpPartition returns every key of partition n that a restore must
// reproduce (the changelog bookkeeping aside) and the membership index
// entries of its customers, as "key=value" lines.
func dumpPartition(t *testing.T, s *Store, n int32) []string {
	t.Helper()
	var out []string
	ids := map[string]bool{}
	for _, ks := range []byte{ksCatalog, ksCustomer, ksOffset, ksTimer, ksOutbox, ksOutboxSeq, ksCount, ksRules} {
		p := partPrefix(ks, n)
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
		if err != nil {
			t.Fatal(err)
		}
		for it.First(); it.Valid(); it.Next() {
			out = append(out, fmt.Sprintf("%q=%x", it.Key(), it.Value()))
			if ks == ksCustomer {
				ids[string(it.Key()[5:])] = true
			}
		}
		it.Close()
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{ksMember}, UpperBound: []byte{ksMember + 1}})
	if err != nil {
		t.Fatal(err)
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		for id := range ids {
			if bytes.HasSuffix(k, []byte(id)) {
				out = append(out, fmt.Sprintf("%q", k))
				break
			}
		}
	}
	it.Close()
	sort.Strings(out)
	return out
}

// TestChangelogRestoreEqualsSource drives a partition through random
// commits (records, deletes, timers, outbox appends and publisher deletes,
// memberships, offsets), ships every pending changelog entry the way the
// engine does, and restores another store's copy of the partition from
// those records: the two must hold the same keys and values. The other
// store starts with stale data of the same partition (wiped by the
// restore) and data of another partition (left alone).
func TestChangelogRestoreEqualsSource(t *testing.T) {
	t.Run("synchronous", func(t *testing.T) { changelogRestoreRun(t, false) })
	// Every other commit pipelined (CommitAsync), its writer held until
	// the next commit: the writer logs the entry, settling publishes it.
	t.Run("pipelined", func(t *testing.T) { changelogRestoreRun(t, true) })
}

func changelogRestoreRun(t *testing.T, pipelined bool) {
	src := openMem(t, vfs.NewMem(), Options{})
	defer src.Close()
	dst := openMem(t, vfs.NewMem(), Options{})
	defer dst.Close()

	// Stale partition 0 and a live partition 1 in dst.
	for _, n := range []int32{0, 1} {
		p, err := dst.Partition(n)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 50; i++ {
			id := fmt.Sprintf("p%d-stale-%d", n, i)
			p.MarkDirty(id, &testRecord{n: 1, data: []byte("old")})
			p.CountMember("vip", true)
			p.MoveTimer(id, 0, 99)
		}
		p.SetOffset("in", 7)
		p.SetCatalog(uint64(100+n), []byte("stale list"))
		p.AppendOutbox([]byte("old change"))
		if err := p.Commit(); err != nil {
			t.Fatal(err)
		}
		p.Close()
	}
	other := dumpPartition(t, dst, 1)

	type record struct {
		key, value []byte
		deleted    bool
	}
	var topic []record
	ship := func(p *Partition, after uint64) uint64 {
		err := p.ReadChangelog(after, 1000, func(seq uint64, entry []byte) error {
			after = seq
			return ForEachChangelogOp(entry, func(op ChangelogOp) error {
				topic = append(topic, record{append([]byte(nil), op.Key...), append([]byte(nil), op.Value...), op.Deleted})
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.ChangelogSent(after, int64(len(topic))); err != nil {
			t.Fatal(err)
		}
		return after
	}

	p, err := src.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.EnableChangelog(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(3))
	timers := map[string]int64{}
	members := map[string]bool{}
	var shipped uint64
	release := func() {}
	defer func() { release() }()
	for c := 0; c < 200; c++ {
		for i := 0; i < 20; i++ {
			id := fmt.Sprintf("c%03d", rng.Intn(300))
			switch r := rng.Intn(10); {
			case r < 6:
				rec, err := p.Get(id)
				if err != nil {
					t.Fatal(err)
				}
				tr := rec.(*testRecord)
				p.MarkDirty(id, &testRecord{n: tr.n + 1, data: append(tr.data, byte(r))})
				at := int64(rng.Intn(1000) + 1)
				p.MoveTimer(id, timers[id], at)
				timers[id] = at
				if m := rng.Intn(2) == 0; m != members[id] {
					p.CountMember("vip", m)
					members[id] = m
				}
			case r < 7:
				p.Delete(id)
				p.MoveTimer(id, timers[id], 0)
				delete(timers, id)
				if members[id] {
					p.CountMember("vip", false)
					delete(members, id)
				}
			default:
				p.AppendOutbox([]byte(fmt.Sprintf("change %d/%d", c, i)))
			}
		}
		p.SetOffset("in", int64(c*20))
		if c%50 == 0 {
			p.SetCatalog(uint64(c), []byte(fmt.Sprintf("list %d", c)))
		}
		release()
		if pipelined && c%2 == 0 {
			release = holdFlights()
			if _, err := p.CommitAsync(); err != nil {
				t.Fatal(err)
			}
		} else if err := p.Commit(); err != nil {
			t.Fatal(err)
		}
		// The publisher confirms some of the outbox now and then.
		if c%3 == 0 && p.OutboxDepth() > 0 {
			if err := p.DeleteOutbox(p.committed.Load() - uint64(rng.Intn(int(p.OutboxDepth())))); err != nil {
				t.Fatal(err)
			}
		}
		if c%7 == 0 {
			shipped = ship(p, shipped)
		}
	}
	release()
	if _, err := p.Settle(true); err != nil {
		t.Fatal(err)
	}
	// A commit with nothing but the publisher's deletes is logged too.
	if err := p.DeleteOutbox(p.committed.Load()); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	ship(p, shipped)
	if d := p.ChangelogDepth(); d != 0 {
		t.Fatalf("changelog depth after shipping everything: %d", d)
	}
	if end, ok, err := src.SyncedEnd(0); err != nil || !ok || end != int64(len(topic)) {
		t.Fatalf("SyncedEnd = %d %v %v, want %d", end, ok, err, len(topic))
	}
	want := dumpPartition(t, src, 0)
	if len(want) < 100 {
		t.Fatalf("the source holds only %d keys: the test did not exercise much", len(want))
	}

	if _, err := dst.Restore(0); err != nil {
		t.Fatal(err)
	}
	// A second restore of the same partition while one runs is refused.
	if _, err := dst.Restore(0); err == nil {
		t.Fatal("second concurrent Restore of partition 0 accepted")
	}
	dst.unreserve(0)
	r, err := dst.Restore(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Partition(0); err == nil {
		t.Fatal("Partition opened a partition being restored")
	}
	for _, rec := range topic {
		if err := r.Apply(rec.key, rec.value, rec.deleted); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Finish(int64(len(topic))); err != nil {
		t.Fatal(err)
	}
	got := dumpPartition(t, dst, 0)
	if len(got) != len(want) {
		t.Fatalf("restored %d keys, source has %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("key %d: restored %s, source %s", i, got[i], want[i])
		}
	}
	if o := dumpPartition(t, dst, 1); fmt.Sprint(o) != fmt.Sprint(other) {
		t.Fatal("restoring partition 0 changed partition 1")
	}
	if end, ok, err := dst.SyncedEnd(0); err != nil || !ok || end != int64(len(topic)) {
		t.Fatalf("restored SyncedEnd = %d %v %v", end, ok, err)
	}
	// The restored partition opens and counts its members.
	rp, err := dst.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	n := 0
	for _, m := range members {
		if m {
			n++
		}
	}
	if c, err := dst.CountMembers("vip"); err != nil || c != int64(n+50) {
		t.Fatalf("CountMembers after restore = %d %v, want %d (partition 0) + 50 (partition 1)", c, err, n)
	}
}

// TestRestoreRefusesForeignKeys: a changelog record of another partition
// (a misconfigured changelog topic) is an error, not silent damage.
func TestRestoreRefusesForeignKeys(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{})
	defer s.Close()
	r, err := s.Restore(2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Abort()
	for _, k := range [][]byte{customerKey(nil, 3, "x"), []byte("zzz"), nil, partPrefix(ksChangelog, 2)} {
		if err := r.Apply(k, []byte("v"), false); !errors.Is(err, ErrChangelogKey) {
			t.Errorf("Apply(%q) = %v, want ErrChangelogKey", k, err)
		}
	}
	if err := r.Apply(customerKey(nil, 2, "x"), []byte("v"), false); err != nil {
		t.Fatal(err)
	}
}

func FuzzForEachChangelogOp(f *testing.F) {
	f.Add([]byte{})
	s := openMem(f, vfs.NewMem(), Options{})
	defer s.Close()
	bb := s.db.NewBatch()
	bb.Set([]byte("k"), []byte("v"), nil)
	bb.Delete([]byte("d"), nil)
	f.Add(append([]byte(nil), bb.Repr()...))
	bb.Close()
	f.Fuzz(func(t *testing.T, entry []byte) {
		_ = ForEachChangelogOp(entry, func(op ChangelogOp) error {
			if op.Deleted && op.Value != nil {
				t.Fatal("a delete with a value")
			}
			return nil
		})
	})
}

// TestOutboxWaitsForTheChangelog: with the changelog on, an outbox entry
// is released for publishing only once the changelog acknowledged the
// commit that wrote it, also across a restart in between. Published
// first, a change could be re-derived differently by a new owner that
// restores the older changelog (a second EXIT with another id).
func TestOutboxWaitsForTheChangelog(t *testing.T) {
	t.Run("synchronous", func(t *testing.T) { outboxWaitsRun(t, false) })
	// The first commit pipelined: its mark must count from its landing.
	t.Run("pipelined", func(t *testing.T) { outboxWaitsRun(t, true) })
}

func outboxWaitsRun(t *testing.T, pipelined bool) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.EnableChangelog(); err != nil {
		t.Fatal(err)
	}
	outbox := func(p *Partition) []string {
		var got []string
		if err := p.ReadOutbox(0, 100, func(seq uint64, v []byte) error {
			got = append(got, string(v))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	send := func(p *Partition, upTo uint64) {
		if err := p.ChangelogSent(upTo, int64(upTo)); err != nil {
			t.Fatal(err)
		}
	}
	commit := func(p *Partition, v string) {
		p.MarkDirty("c1", &testRecord{n: 1, data: []byte(v)})
		p.AppendOutbox([]byte(v))
		if err := p.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if pipelined {
		p.MarkDirty("c1", &testRecord{n: 1, data: []byte("a")})
		p.AppendOutbox([]byte("a"))
		if async, err := p.CommitAsync(); err != nil || !async {
			t.Fatalf("CommitAsync = %v, %v", async, err)
		}
		if _, err := p.Settle(true); err != nil {
			t.Fatal(err)
		}
	} else {
		commit(p, "a") // changelog entry 1
	}
	commit(p, "b") // changelog entry 2
	if got := outbox(p); len(got) != 0 {
		t.Fatalf("outbox readable before the changelog has its commit: %q", got)
	}
	send(p, 1)
	if got := outbox(p); fmt.Sprint(got) != "[a]" {
		t.Fatalf("after changelog entry 1: %q, want [a]", got)
	}
	// A restart with entry 2 still pending keeps b back.
	p.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openMem(t, fs, Options{})
	defer s.Close()
	p, err = s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.EnableChangelog(); err != nil {
		t.Fatal(err)
	}
	if got := outbox(p); fmt.Sprint(got) != "[a]" {
		t.Fatalf("after a restart with entry 2 pending: %q, want [a]", got)
	}
	commit(p, "c") // changelog entry 3
	send(p, 3)
	if got := outbox(p); fmt.Sprint(got) != "[a b c]" {
		t.Fatalf("after the changelog caught up: %q, want [a b c]", got)
	}
	if r := p.OutboxReleased(); r != 3 {
		t.Fatalf("OutboxReleased %d, want 3", r)
	}
	// Without the changelog nothing waits.
	q, err := s.Partition(1)
	if err != nil {
		t.Fatal(err)
	}
	commit(q, "x")
	if got := outbox(q); fmt.Sprint(got) != "[x]" {
		t.Fatalf("partition without changelog: %q", got)
	}
}

// TestOutboxDeletesReachTheChangelog: published outbox entries (which may
// name an erased customer) are flagged until a commit logs their deletes
// to the changelog, so an idle partition knows to commit for them.
func TestOutboxDeletesReachTheChangelog(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{})
	defer s.Close()
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.EnableChangelog(); err != nil {
		t.Fatal(err)
	}
	p.AppendOutbox([]byte("EXIT erased-customer"))
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := p.ChangelogSent(1, 1); err != nil {
		t.Fatal(err)
	}
	if p.OutboxDeletesUnlogged() {
		t.Fatal("deletes flagged before any publish")
	}
	if err := p.DeleteOutbox(1); err != nil {
		t.Fatal(err)
	}
	if !p.OutboxDeletesUnlogged() {
		t.Fatal("a published entry's delete is not flagged for the changelog")
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if p.OutboxDeletesUnlogged() {
		t.Fatal("still flagged after a commit")
	}
	if deletes := len(loggedOutboxDeletes(t, p, 1)); deletes != 1 {
		t.Fatalf("%d outbox deletes in the changelog entry, want 1", deletes)
	}
}

// TestReseedRebuildsTheChangelog: a changelog that lost what a store wrote
// (deleted and created again) gets the partition's whole state as pending
// entries; restoring another store from them gives the same partition.
func TestReseedRebuildsTheChangelog(t *testing.T) {
	src := openMem(t, vfs.NewMem(), Options{ChangelogCommitBytes: 4 << 10})
	defer src.Close()
	p, err := src.Partition(3)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		id := fmt.Sprintf("c%03d", i)
		p.MarkDirty(id, &testRecord{n: 1, data: bytes.Repeat([]byte{byte(i)}, 40)})
		if i%3 == 0 {
			p.CountMember("vip", true)
		}
		p.MoveTimer(id, 0, int64(1000+i))
	}
	p.SetOffset("in", 42)
	p.SetRulesHash("abc")
	p.SetCatalog(7, []byte("segment list"))
	p.AppendOutbox([]byte("unpublished change"))
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	n, err := src.Reseed(3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n < 2 {
		t.Fatalf("%d entries queued, want several (4 KiB each)", n)
	}
	// Ship every pending entry as the changelog publisher would, into a
	// restore of another store.
	dst := openMem(t, vfs.NewMem(), Options{})
	defer dst.Close()
	r, err := dst.Restore(3)
	if err != nil {
		t.Fatal(err)
	}
	p, err = src.Partition(3)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.EnableChangelog(); err != nil {
		t.Fatal(err)
	}
	if d := p.ChangelogDepth(); d != int64(n) {
		t.Fatalf("changelog depth %d, want the %d queued entries", d, n)
	}
	err = p.ReadChangelog(0, 1000, func(seq uint64, entry []byte) error {
		return ForEachChangelogOp(entry, func(op ChangelogOp) error { return r.Apply(op.Key, op.Value, op.Deleted) })
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Finish(1); err != nil {
		t.Fatal(err)
	}
	got, want := dumpPartition(t, dst, 3), dumpPartition(t, src, 3)
	if v, ok, err := dst.Catalog(7); err != nil || !ok || string(v) != "segment list" {
		t.Fatalf("restored catalog 7: %q %v %v", v, ok, err)
	}
	if len(want) < 600 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("restored partition differs: %d keys vs %d", len(got), len(want))
	}
}

// TestDeletesAfterTheLastCommitReachTheChangelog: outbox entries published
// (deleted) after a partition's last commit, before it closed, have their
// deletes logged by the first commit after it reopens. Lost, a new owner
// restoring the changelog re-published them and kept a hole in the outbox
// sequence its depth never got past.
func TestDeletesAfterTheLastCommitReachTheChangelog(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.EnableChangelog(); err != nil {
		t.Fatal(err)
	}
	p.AppendOutbox([]byte("a"))
	p.AppendOutbox([]byte("b"))
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := p.ChangelogSent(1, 1); err != nil {
		t.Fatal(err)
	}
	if err := p.DeleteOutbox(2); err != nil { // published at hand-over
		t.Fatal(err)
	}
	p.Close()
	s.Close()
	s = openMem(t, fs, Options{})
	defer s.Close()
	if p, err = s.Partition(0); err != nil {
		t.Fatal(err)
	}
	if err := p.EnableChangelog(); err != nil {
		t.Fatal(err)
	}
	p.SetOffset("in", 1)
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if deletes := len(loggedOutboxDeletes(t, p, 1)); deletes != 2 {
		t.Fatalf("%d outbox deletes logged after the reopen, want 2", deletes)
	}
}

// TestReadChangelogInOrder: pending entries come back in sequence order,
// from after, at most limit of them, each the commit that wrote it.
func TestReadChangelogInOrder(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{})
	defer s.Close()
	p := openChangelogPartition(t, s)
	defer p.Close()
	commitOffsets(t, p, 1, 5)
	if got, want := changelogOffsets(t, p, 0, 10), "1:1 2:2 3:3 4:4 5:5"; got != want {
		t.Fatalf("entries %q, want %q", got, want)
	}
	if got, want := changelogOffsets(t, p, 1, 2), "2:2 3:3"; got != want {
		t.Fatalf("after 1, limit 2: %q, want %q", got, want)
	}
}
