package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// testRecord is shaped like a real customer record: a few counters and a
// payload.
type testRecord struct {
	n    uint64
	data []byte
}

func (r *testRecord) AppendBinary(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, r.n)
	return append(dst, r.data...)
}

func (r *testRecord) SizeBytes() int { return 48 + len(r.data) }

func decodeTest(_ string, data []byte) (Record, error) {
	if data == nil {
		return &testRecord{}, nil
	}
	n, k := binary.Uvarint(data)
	if k <= 0 {
		return nil, errors.New("bad test record")
	}
	return &testRecord{n: n, data: append([]byte(nil), data[k:]...)}, nil
}

func openMem(t testing.TB, fs vfs.FS, opts Options) *Store {
	t.Helper()
	opts.FS = fs
	if opts.Decode == nil {
		opts.Decode = decodeTest
	}
	s, err := Open("db", opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOptionsValidateNamesFields(t *testing.T) {
	_, err := Open("x", Options{FS: vfs.NewMem(), CacheBytes: 5, MemTableBytes: 1, Sync: 7})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"CacheBytes (5) must be >= 1048576", "MemTableBytes (1)", "Sync (7)", "Decode is nil"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestRecordsOffsetsOutboxSurviveReopen(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	p, err := s.Partition(3)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := p.Get("alice")
	if err != nil {
		t.Fatal(err)
	}
	rec.(*testRecord).n = 42
	rec.(*testRecord).data = []byte("+vip")
	p.MarkDirty("alice", rec)
	p.SetOffset("customer.purchases", 17)
	if seq := p.AppendOutbox([]byte("one")); seq != 1 {
		t.Fatalf("first seq %d", seq)
	}
	// Nothing is visible before Commit.
	if d := p.OutboxDepth(); d != 0 {
		t.Fatalf("depth before commit %d", d)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	// A second commit: its value is a group of its own, so deleting the
	// first leaves it (a commit's values are deleted together).
	p.AppendOutbox([]byte("two"))
	p.CountMember("vip", true)
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if d := p.OutboxDepth(); d != 2 {
		t.Fatalf("depth %d, want 2", d)
	}
	if err := p.DeleteOutbox(1); err != nil {
		t.Fatal(err)
	}
	// Uncommitted changes are dropped by Close, as by a crash.
	p.SetOffset("customer.purchases", 99)
	p.AppendOutbox([]byte("lost"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s = openMem(t, fs, Options{})
	defer s.Close()
	p, err = s.Partition(3)
	if err != nil {
		t.Fatal(err)
	}
	offs, err := p.Offsets()
	if err != nil || offs["customer.purchases"] != 17 {
		t.Fatalf("offsets %v %v", offs, err)
	}
	rec, err = p.Get("alice")
	if err != nil || rec.(*testRecord).n != 42 {
		t.Fatalf("alice %+v %v", rec, err)
	}
	var got []string
	if err := p.ReadOutbox(0, 10, func(seq uint64, v []byte) error {
		got = append(got, fmt.Sprintf("%d:%s", seq, v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "2:two" {
		t.Fatalf("outbox %v", got)
	}
	if seq := p.AppendOutbox([]byte("three")); seq != 3 {
		t.Fatalf("seq after restart %d, want 3", seq)
	}
	n, err := s.CountMembers("vip")
	if err != nil || n != 1 {
		t.Fatalf("count %d %v", n, err)
	}
	ids, next, err := s.MembersOf(vipMatch, "", 10, nil)
	if err != nil || len(ids) != 1 || ids[0] != "alice" || next != "" {
		t.Fatalf("members %v %q %v", ids, next, err)
	}
}

func TestTimersOrderReplaceAndRefill(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{})
	defer s.Close()
	p, _ := s.Partition(0)
	// More timers than one refill loads, committed in several batches,
	// some moved and cancelled before and after commits.
	const n = timerRefill*2 + 100
	for i := 1; i <= n; i++ {
		p.MoveTimer(fmt.Sprintf("c%05d", i), 0, int64(i*10))
		if i%1000 == 0 {
			if err := p.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	p.MoveTimer("c00005", 50, 0)        // cancel
	p.MoveTimer("c00007", 70, 5)        // move earlier
	p.MoveTimer("c08000", 80000, 35)    // far timer moved into the horizon
	p.MoveTimer("c00009", 90, n*10+500) // near timer moved past everything
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	var got []timerItem
	if err := p.PopDue(1<<62, func(id string, at int64) error {
		got = append(got, newTimerItem(at, id))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != n-1 {
		t.Fatalf("popped %d, want %d", len(got), n-1)
	}
	for i := 1; i < len(got); i++ {
		if got[i].less(got[i-1]) {
			t.Fatalf("out of order at %d: %v after %v", i, got[i], got[i-1])
		}
	}
	if got[0] != newTimerItem(5, "c00007") || got[4] != newTimerItem(35, "c08000") || got[len(got)-1] != newTimerItem(n*10+500, "c00009") {
		t.Fatalf("first %v fifth %v last %v", got[0], got[4], got[len(got)-1])
	}
	for _, it := range got {
		if it.id == "c00005" {
			t.Fatal("cancelled timer fired")
		}
	}
	if _, ok := p.NextTimer(); ok {
		t.Fatal("timers left")
	}
	// Pops are durable after commit.
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	p, _ = s.Partition(0)
	if at, ok := p.NextTimer(); ok {
		t.Fatalf("timer at %d survived its pop", at)
	}
}

// NextTimer remembers that the top timer is live: moving that timer
// away, pushing an earlier one or popping must each be seen by the next
// call, as they are when every call checks the removed set.
func TestNextTimerFollowsTheTop(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{})
	defer s.Close()
	p, _ := s.Partition(0)
	next := func(want int64) {
		t.Helper()
		at, ok := p.NextTimer()
		if !ok || at != want {
			t.Fatalf("NextTimer = %d, %v; want %d", at, ok, want)
		}
	}
	p.MoveTimer("a", 0, 10)
	p.MoveTimer("b", 0, 20)
	next(10)
	next(10)
	p.MoveTimer("a", 10, 30) // the top moves away
	next(20)
	p.MoveTimer("c", 0, 5) // an earlier one arrives
	next(5)
	p.MoveTimer("c", 5, 20) // the top moves to a time another holds
	next(20)
	p.MoveTimer("b", 20, 0) // and that one is cancelled
	next(20)
	var got []string
	if err := p.PopDue(25, func(id string, at int64) error {
		got = append(got, fmt.Sprintf("%s@%d", id, at))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "c@20" {
		t.Fatalf("popped %v, want c@20", got)
	}
	next(30)
	p.MoveTimer("a", 30, 0)
	if at, ok := p.NextTimer(); ok {
		t.Fatalf("timer at %d left", at)
	}
}

func TestCacheStaysBounded(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{CacheBytes: 1 << 20})
	defer s.Close()
	p, _ := s.Partition(0)
	payload := bytes.Repeat([]byte("x"), 100)
	for i := 0; i < 50000; i++ {
		id := fmt.Sprintf("c%d", i)
		rec, err := p.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		r := rec.(*testRecord)
		r.n++
		r.data = payload
		p.MarkDirty(id, r)
		if p.NeedsCommit() || i%1000 == 999 {
			if err := p.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if b := p.cacheBytes.Load(); b > 1<<20 {
		t.Fatalf("cache holds %d bytes, budget %d", b, 1<<20)
	}
	// Evicted records come back from Pebble.
	rec, err := p.Get("c7")
	if err != nil || rec.(*testRecord).n != 1 || len(rec.(*testRecord).data) != 100 {
		t.Fatalf("c7 = %+v, %v", rec, err)
	}
}

// TestCacheCountsWhatRecordsGrowTo: records enter the cache empty (new
// customers) and grow; the budget counts their size as of the last
// commit, not as of their arrival.
func TestCacheCountsWhatRecordsGrowTo(t *testing.T) {
	const budget = 1 << 20
	s := openMem(t, vfs.NewMem(), Options{CacheBytes: budget})
	defer s.Close()
	p, _ := s.Partition(0)
	payload := bytes.Repeat([]byte("x"), 1000)
	for i := range 20000 {
		setData(t, p, fmt.Sprintf("c%d", i), payload)
		if i%100 == 99 {
			if err := p.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	var held int64
	for id, e := range p.cache {
		held += entrySize(id, e.rec)
	}
	if got := p.cacheBytes.Load(); got != held {
		t.Fatalf("cache accounts %d bytes, its records hold %d", got, held)
	}
	if held > budget {
		t.Fatalf("cache holds %d bytes (%d records), budget %d", held, len(p.cache), budget)
	}
}

func TestDeleteLeavesNoTrace(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Decode: decodeTest})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := s.Partition(0)
	secret := "customer-4f1d-secret-id"
	rec, _ := p.Get(secret)
	rec.(*testRecord).data = []byte("private-payload-data")
	p.MarkDirty(secret, rec)
	p.MoveTimer(secret, 0, 1000)
	p.CountMember("vip", true)
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	p.Delete(secret)
	p.MoveTimer(secret, 1000, 0)
	p.CountMember("vip", false)
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	rec, err = p.Get(secret)
	if err != nil || rec.(*testRecord).n != 0 || len(rec.(*testRecord).data) != 0 {
		t.Fatalf("deleted customer came back: %+v %v", rec, err)
	}
	// Other customers keep going meanwhile.
	for i := 0; i < 100; i++ {
		id := fmt.Sprintf("other-%d", i)
		r, _ := p.Get(id)
		r.(*testRecord).n++
		p.MarkDirty(id, r)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Scrub(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, Options{Decode: decodeTest}); err != nil {
		t.Fatal(err)
	}
	p, _ = s.Partition(0)
	if r, err := p.Get("other-7"); err != nil || r.(*testRecord).n != 1 {
		t.Fatalf("other customer after scrub: %+v %v", r, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var scanned int
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		scanned++
		b, _ := os.ReadFile(path)
		if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte("private-payload-data")) {
			t.Errorf("deleted customer's data still in %s", filepath.Base(path))
		}
		return nil
	})
	if scanned < 3 {
		t.Fatalf("scanned only %d files", scanned)
	}
}

func TestNewerFormatRefused(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	if err := s.db.Set(formatKey, []byte{FormatVersion + 1}, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open("db", Options{FS: fs, Decode: decodeTest})
	if !errors.Is(err, ErrNewerFormat) {
		t.Fatalf("got %v, want ErrNewerFormat", err)
	}
}

// TestFormat2StoreIsMarked3: a store of format 2 (uncompressed outbox
// groups) opens as it is; it is marked format 3 once opened for writing,
// so that an older segd refuses it once it may hold compressed groups,
// and not when opened read-only.
func TestFormat2StoreIsMarked4(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	b := s.db.NewBatch()
	b.Set(outboxKey(nil, 0, 1), []byte{outboxGroupMark, 2, 'o', 'k', 3, 'y', 'e', 's'}, nil)
	b.Set(partPrefix(ksOutboxSeq, 0), be64(3), nil)
	// The membership index of format 3 and older: 'm', the segment's
	// length and id, the customer's; the partition as the value.
	b.Set([]byte("m\x03vipalice"), []byte{0, 0, 0, 0}, nil)
	b.Set([]byte("m\x03vipbob"), []byte{0, 0, 0, 0}, nil)
	b.Set(formatKey, []byte{2}, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.Close()
	format := func() byte {
		t.Helper()
		v, closer, err := s.db.Get(formatKey)
		if err != nil {
			t.Fatal(err)
		}
		defer closer.Close()
		return v[0]
	}
	s, err := Open("db", Options{FS: fs, Decode: decodeTest, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if f := format(); f != 2 {
		t.Fatalf("format %d after a read-only open, want 2", f)
	}
	s.Close()
	s = openMem(t, fs, Options{})
	defer s.Close()
	if f := format(); f != FormatVersion || FormatVersion != 4 {
		t.Fatalf("format %d after opening, want %d (4)", f, FormatVersion)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{ksMember}, UpperBound: []byte{ksMember + 1}})
	if err != nil {
		t.Fatal(err)
	}
	for it.First(); it.Valid(); it.Next() {
		t.Errorf("membership index key %q left after opening", it.Key())
	}
	it.Close()
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := p.ReadOutbox(0, 10, func(_ uint64, v []byte) error { got = append(got, string(v)); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[ok yes]" {
		t.Fatalf("format 2 group read as %q", got)
	}
}

// TestRestoreSkipsMembershipIndexKeys: a changelog an older segd wrote
// carries membership index keys, which a restore leaves out.
func TestRestoreSkipsMembershipIndexKeys(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{})
	defer s.Close()
	r, err := s.Restore(2)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range [][]byte{[]byte("m\x03vipalice"), customerKey(nil, 2, "alice")} {
		if err := r.Apply(k, []byte{recordEnvelope, 1}, false); err != nil {
			t.Fatalf("Apply(%q): %v", k, err)
		}
	}
	if err := r.Finish(10); err != nil {
		t.Fatal(err)
	}
	if _, closer, err := s.db.Get([]byte("m\x03vipalice")); err == nil {
		closer.Close()
		t.Fatal("the membership index key was restored")
	}
	if _, found, err := s.Lookup(2, "alice"); err != nil || !found {
		t.Fatalf("alice restored: %v %v", found, err)
	}
}

// vipMatch is the membership of the tests' records: a payload holding
// "+vip" is in segment vip.
func vipMatch(_ int32, data []byte) (bool, error) {
	return bytes.Contains(data, []byte("+vip")), nil
}

// listAll follows MembersOf's pages to the end.
func listAll(t *testing.T, s *Store, limit, budget int, include func(int32) bool) (ids []string, pages int) {
	t.Helper()
	cursor := ""
	for {
		if pages > 1000 {
			t.Fatal("pagination does not end")
		}
		page, next, err := s.membersOf(vipMatch, cursor, limit, include, budget)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page) > limit {
			t.Fatalf("page of %d ids, limit %d", len(page), limit)
		}
		ids = append(ids, page...)
		if next == "" {
			return ids, pages
		}
		if next <= cursor {
			t.Fatalf("cursor went from %q back to %q", cursor, next)
		}
		cursor = next
	}
}

// MembersOf reads the members from the records: only the included
// partitions', in id order across them, page by page, so an instance
// leaves out partitions it no longer runs; a page reads at most its
// budget of records, and the pages still add up to every member once.
func TestMembersOfFiltersByPartition(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{})
	defer s.Close()
	// Ids interleave across the partitions: c00 in 0, c01 in 1, c02 in
	// 2, c03 in 0... Every other customer is a member; uncommitted
	// records and members are not listed.
	var parts [3]*Partition
	for id := int32(0); id < 3; id++ {
		p, err := s.Partition(id)
		if err != nil {
			t.Fatal(err)
		}
		parts[id] = p
	}
	for i := 0; i < 15; i++ {
		p := parts[i%3]
		id := fmt.Sprintf("c%02d", i)
		rec, _ := p.Get(id)
		rec.(*testRecord).data = []byte("-vip")
		if i%2 == 0 {
			rec.(*testRecord).data = []byte("+vip")
			p.CountMember("vip", true)
		}
		p.MarkDirty(id, rec)
	}
	for _, p := range parts {
		if err := p.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	rec, _ := parts[0].Get("c99")
	rec.(*testRecord).data = []byte("+vip")
	parts[0].MarkDirty("c99", rec)

	cases := []struct {
		name    string
		include func(int32) bool
		want    string
	}{
		{"all", nil, "c00 c02 c04 c06 c08 c10 c12 c14"},
		{"one", func(p int32) bool { return p == 1 }, "c04 c10"},
		{"two", func(p int32) bool { return p != 1 }, "c00 c02 c06 c08 c12 c14"},
		{"none", func(int32) bool { return false }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, budget := range []int{membersScanRecords, 4, 1} {
				got, pages := listAll(t, s, 3, budget, tc.include)
				if strings.Join(got, " ") != tc.want {
					t.Fatalf("budget %d: members\n got %s\nwant %s", budget, strings.Join(got, " "), tc.want)
				}
				if budget == 1 && tc.include == nil && pages < 15 {
					t.Fatalf("budget 1: %d pages for 15 records", pages)
				}
			}
			want := int64(len(strings.Fields(tc.want)))
			if c, err := s.CountMembersOf("vip", tc.include); err != nil || c != want {
				t.Fatalf("count %d %v, want %d", c, err, want)
			}
		})
	}
	// A match that fails fails the page, naming the customer.
	_, _, err := s.MembersOf(func(int32, []byte) (bool, error) { return false, errors.New("unreadable") }, "", 3, nil)
	if err == nil || !strings.Contains(err.Error(), `"c00"`) || !strings.Contains(err.Error(), "unreadable") {
		t.Fatalf("error %v", err)
	}
}

// TestWALWritesBackInTheBackground: commits do not fsync, so the WAL must
// be written back as it grows; otherwise switching to a new WAL syncs a
// whole memtable's worth while every commit waits (the latency p99's
// stalls; docs/operations.md, "Latency"). Pebble records its options in
// the store directory.
func TestWALWritesBackInTheBackground(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Decode: decodeTest})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	files, err := filepath.Glob(filepath.Join(dir, "OPTIONS-*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Pebble OPTIONS file in %s: %v", dir, err)
	}
	data, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "wal_bytes_per_sync=1048576") {
		t.Fatalf("the store's WAL is not written back every 1 MiB; its options:\n%s", data)
	}
}

// TestCommitBytesCutsACommit: without a changelog, NeedsCommit asks for a
// commit once what the next one would write passes Options.CommitBytes,
// whatever the cache budget says (a rule set with many segments stages
// megabytes of changes in a few thousand events).
func TestCommitBytesCutsACommit(t *testing.T) {
	for _, c := range []struct {
		commitBytes int64
		wantCut     bool
	}{
		{64 << 10, true},
		{0, false}, // the default, 32 MiB: far more than 200 records
	} {
		s := openMem(t, vfs.NewMem(), Options{CacheBytes: 1 << 30, CommitBytes: c.commitBytes})
		p, _ := s.Partition(0)
		payload := bytes.Repeat([]byte("x"), 1000)
		cutAt := -1
		for i := 0; i < 200 && cutAt < 0; i++ {
			setData(t, p, fmt.Sprintf("c%d", i), payload)
			if p.NeedsCommit() {
				cutAt = i
				if n := p.PendingCommitBytes(); n <= 64<<10 {
					t.Fatalf("cut at %d pending bytes, bound %d", n, 64<<10)
				}
			}
		}
		if got := cutAt >= 0; got != c.wantCut {
			t.Fatalf("CommitBytes %d: cut after record %d, want a cut: %v", c.commitBytes, cutAt, c.wantCut)
		}
		// About 1 KiB a record: the cut comes once 64 KiB are pending,
		// not before.
		if c.wantCut && (cutAt < 40 || cutAt > 70) {
			t.Fatalf("cut after record %d, want one near 64 KiB of records", cutAt)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := (&Options{CommitBytes: 100, Decode: func(string, []byte) (Record, error) { return nil, nil }}).Validate(); err == nil || !strings.Contains(err.Error(), "CommitBytes (100)") {
		t.Fatalf("Validate = %v, want CommitBytes refused", err)
	}
}

// setData gives customer id's record the payload and marks it dirty.
func setData(t *testing.T, p *Partition, id string, payload []byte) {
	t.Helper()
	rec, err := p.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	r := rec.(*testRecord)
	r.data = payload
	p.MarkDirty(id, r)
}

// TestStagedBatchKeepsItsBuffer: a commit past the 4 MiB a batch kept
// before leaves its buffer for the next commit instead of growing one
// from 1 KiB again, and a commit that uses little of a big buffer gives
// it back. Both commit paths: synchronous and pipelined.
func TestStagedBatchKeepsItsBuffer(t *testing.T) {
	for _, async := range []bool{false, true} {
		s := openMem(t, vfs.NewMem(), Options{CacheBytes: 1 << 30})
		p, _ := s.Partition(0)
		commit := func(n int, size int) int {
			t.Helper()
			payload := bytes.Repeat([]byte("x"), size)
			for i := 0; i < n; i++ {
				setData(t, p, fmt.Sprintf("c%d", i), payload)
			}
			if async {
				if _, err := p.CommitAsync(); err != nil {
					t.Fatal(err)
				}
				if _, err := p.Settle(true); err != nil {
					t.Fatal(err)
				}
				return cap(p.spareBatch.Repr())
			}
			if err := p.Commit(); err != nil {
				t.Fatal(err)
			}
			return cap(p.staged.Repr())
		}
		if got := commit(6000, 1000); got < 6<<20 {
			t.Fatalf("async %v: after a 6 MB commit the batch holds %d bytes, want its buffer kept", async, got)
		}
		if got := commit(10, 1000); got > stagedBatchKeepBytes {
			t.Fatalf("async %v: after a 10 kB commit the batch holds %d bytes, want the big buffer given back", async, got)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
