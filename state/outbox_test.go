package state

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// outboxKeys lists the partition's stored outbox keys.
func outboxKeys(t *testing.T, s *Store, part int32) []uint64 {
	t.Helper()
	prefix := partPrefix(ksOutbox, part)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var keys []uint64
	for it.First(); it.Valid(); it.Next() {
		keys = append(keys, binary.BigEndian.Uint64(it.Key()[5:]))
	}
	return keys
}

func readAll(t *testing.T, p *Partition, after uint64, limit int) string {
	t.Helper()
	var got []string
	if err := p.ReadOutbox(after, limit, func(seq uint64, v []byte) error {
		got = append(got, fmt.Sprintf("%d:%s", seq, v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return strings.Join(got, ",")
}

// TestOutboxGroupsACommitsValues: a commit's values share one key (a new
// one past outboxGroupBytes), keep their own sequences, are read from any
// position and deleted a whole group at a time, before and after a
// reopen.
func TestOutboxGroupsACommitsValues(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	p, err := s.Partition(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"a", "b", "c"} {
		p.AppendOutbox([]byte(v))
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	p.AppendOutbox([]byte("d"))
	p.AppendOutbox([]byte("e"))
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(outboxKeys(t, s, 1)); got != "[1 4]" {
		t.Fatalf("keys %s, want one per commit [1 4]", got)
	}
	if got := readAll(t, p, 0, 100); got != "1:a,2:b,3:c,4:d,5:e" {
		t.Fatalf("read %s", got)
	}
	// A reader appending to a value (a line feed, say) must not write over
	// the next value of its group.
	var appended []string
	if err := p.ReadOutbox(0, 100, func(seq uint64, v []byte) error {
		appended = append(appended, string(append(v, '!')))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(appended, ","); got != "a!,b!,c!,d!,e!" {
		t.Fatalf("values appended to while read: %s", got)
	}
	if got := readAll(t, p, 2, 100); got != "3:c,4:d,5:e" {
		t.Fatalf("read after 2: %s", got)
	}
	// limit is checked between groups: the first group is read whole.
	if got := readAll(t, p, 0, 1); got != "1:a,2:b,3:c" {
		t.Fatalf("read with limit 1: %s", got)
	}
	if d := p.OutboxDepth(); d != 5 {
		t.Fatalf("depth %d, want 5", d)
	}
	// Deleting inside a group leaves it whole.
	if err := p.DeleteOutbox(2); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(outboxKeys(t, s, 1)); got != "[1 4]" {
		t.Fatalf("keys after a delete inside the first group %s", got)
	}
	if err := p.DeleteOutbox(3); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(outboxKeys(t, s, 1)); got != "[4]" {
		t.Fatalf("keys after deleting the first group %s", got)
	}
	if d := p.OutboxDepth(); d != 2 {
		t.Fatalf("depth %d, want 2", d)
	}
	if got := readAll(t, p, 3, 100); got != "4:d,5:e" {
		t.Fatalf("read after the delete: %s", got)
	}
	// A large commit starts new groups.
	big := bytes.Repeat([]byte("v"), outboxGroupBytes/3)
	for range 7 {
		p.AppendOutbox(big)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	keys := outboxKeys(t, s, 1)
	if len(keys) < 4 || keys[0] != 4 || keys[1] != 6 {
		t.Fatalf("keys after a large commit %v: want [4 6 ...] with several groups from 6", keys)
	}
	n := 0
	if err := p.ReadOutbox(5, 100, func(seq uint64, v []byte) error {
		n++
		if seq != uint64(5+n) || !bytes.Equal(v, big) {
			return fmt.Errorf("value %d: seq %d, %d bytes", n, seq, len(v))
		}
		return nil
	}); err != nil || n != 7 {
		t.Fatalf("large commit read %d values: %v", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openMem(t, fs, Options{})
	defer s.Close()
	if p, err = s.Partition(1); err != nil {
		t.Fatal(err)
	}
	if d := p.OutboxDepth(); d != 9 {
		t.Fatalf("depth after reopen %d, want 9", d)
	}
	if seq := p.AppendOutbox([]byte("f")); seq != 13 {
		t.Fatalf("seq after reopen %d, want 13", seq)
	}
	if err := p.DeleteOutbox(12); err != nil {
		t.Fatal(err)
	}
	if keys := outboxKeys(t, s, 1); len(keys) != 0 {
		t.Fatalf("keys left after deleting everything committed: %v", keys)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, p, 12, 100); got != "13:f" {
		t.Fatalf("read after reopen: %s", got)
	}
}

// TestOutboxReadsEntriesOfOneValue: a store written before groups holds
// one value per key; those are read and deleted as one-value entries.
func TestOutboxReadsEntriesOfOneValue(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs, Options{})
	// As segd wrote them: envelopes, whose first byte is a topic length.
	b := s.db.NewBatch()
	for seq := uint64(1); seq <= 3; seq++ {
		b.Set(outboxKey(nil, 2, seq), []byte(fmt.Sprintf("\x03old%d", seq)), nil)
	}
	b.Set(partPrefix(ksOutboxSeq, 2), be64(4), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openMem(t, fs, Options{})
	defer s.Close()
	p, err := s.Partition(2)
	if err != nil {
		t.Fatal(err)
	}
	p.AppendOutbox([]byte("new4"))
	p.AppendOutbox([]byte("new5"))
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, p, 1, 100); got != "2:\x03old2,3:\x03old3,4:new4,5:new5" {
		t.Fatalf("read %q", got)
	}
	if err := p.DeleteOutbox(2); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(outboxKeys(t, s, 2)); got != "[3 4]" {
		t.Fatalf("keys %s, want [3 4]", got)
	}
}

// TestOutboxCorruptGroup: a group whose value runs past its end fails the
// read with ErrCorrupt instead of returning garbage.
func TestOutboxCorruptGroup(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{})
	defer s.Close()
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	p.AppendOutbox([]byte("ok"))
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Set(outboxKey(nil, 0, 1), []byte{outboxGroupMark, 2, 'o', 'k', 9, 'x'}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	forgetHeld(p) // the stored copy is the one under test
	err = p.ReadOutbox(0, 10, func(uint64, []byte) error { return nil })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of a corrupt group: %v, want ErrCorrupt", err)
	}
	if err := p.DeleteOutbox(1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("delete of a corrupt group: %v, want ErrCorrupt", err)
	}
}

// TestChangelogLogsDeletedGroups: the changelog logs one delete per
// deleted group, not one per value.
func TestChangelogLogsDeletedGroups(t *testing.T) {
	s := openMem(t, vfs.NewMem(), Options{})
	defer s.Close()
	p, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.EnableChangelog(); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		p.AppendOutbox([]byte("change"))
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := p.ChangelogSent(1, 1); err != nil {
		t.Fatal(err)
	}
	if err := p.DeleteOutbox(50); err != nil {
		t.Fatal(err)
	}
	p.SetOffset("in", 1)
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(loggedOutboxDeletes(t, p, 1)); got != "[1]" {
		t.Fatalf("outbox deletes logged: %s, want the group's key 1 only", got)
	}
}

// loggedOutboxDeletes returns the outbox keys (sequences) the pending
// changelog entries after entry `after` delete.
func loggedOutboxDeletes(t *testing.T, p *Partition, after uint64) []uint64 {
	t.Helper()
	var seqs []uint64
	if err := p.ReadChangelog(after, 100, func(seq uint64, entry []byte) error {
		return ForEachChangelogOp(entry, func(op ChangelogOp) error {
			if op.Deleted && len(op.Key) == 13 && op.Key[0] == ksOutbox {
				seqs = append(seqs, binary.BigEndian.Uint64(op.Key[5:]))
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return seqs
}

func FuzzOutboxEntry(f *testing.F) {
	f.Add(uint64(1), []byte{outboxGroupMark, 1, 'a', 2, 'b', 'c'})
	f.Add(uint64(7), []byte("\x05topic..."))
	f.Add(uint64(3), []byte{outboxGroupMark})
	f.Add(uint64(3), []byte{outboxGroupMark, 0xff, 0xff})
	f.Add(uint64(5), appendOutboxEntry(nil, 40, testGroup(40, "segd.segment-changes")))
	f.Add(uint64(5), []byte(outboxCompressedGroupMark+"\x02\x05\x00"))
	f.Add(uint64(5), []byte(outboxCompressedGroupMark+"\x00"))
	f.Add(uint64(5), []byte("\xff\x01"))
	f.Fuzz(func(t *testing.T, key uint64, entry []byte) {
		if key == 0 || key > 1<<62 {
			return
		}
		var vals [][]byte
		var scratch []byte
		last, err := forEachOutboxValue(key, entry, &scratch, func(seq uint64, v []byte) error {
			if seq != key+uint64(len(vals)) {
				t.Fatalf("value %d has seq %d under key %d", len(vals), seq, key)
			}
			vals = append(vals, bytes.Clone(v))
			return nil
		})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if last != key+uint64(len(vals))-1 {
			t.Fatalf("last %d for %d values under key %d", last, len(vals), key)
		}
		// What a delete reads (the header alone) ends where the values do.
		if end, err := forEachOutboxValue(key, entry, nil, nil); err != nil || end != last {
			t.Fatalf("entry's end without its values: %d, %v; with them %d", end, err, last)
		}
		if len(entry) == 0 || entry[0] != outboxGroupMark && entry[0] != outboxCompressedGroupMark[0] {
			return
		}
		// A group re-encodes, compressed or not, to the same values.
		group := []byte{outboxGroupMark}
		for _, v := range vals {
			group = binary.AppendUvarint(group, uint64(len(v)))
			group = append(group, v...)
		}
		enc := appendOutboxEntry(nil, uint64(len(vals)), group)
		var again [][]byte
		end, err := forEachOutboxValue(key, enc, &scratch, func(_ uint64, v []byte) error {
			again = append(again, bytes.Clone(v))
			return nil
		})
		if err != nil || end != last || len(again) != len(vals) {
			t.Fatalf("re-encoded group: end %d, %d values, %v; want end %d, %d values", end, len(again), err, last, len(vals))
		}
		for i := range vals {
			if !bytes.Equal(again[i], vals[i]) {
				t.Fatalf("re-encoded group's value %d: %q, want %q", i, again[i], vals[i])
			}
		}
	})
}

// testGroup is an uncompressed group of n envelope-like values on topic.
func testGroup(n int, topic string) []byte {
	g := []byte{outboxGroupMark}
	for i := range n {
		v := fmt.Appendf(nil, "%c%s%c%s:seg-%d:ENTER:rules-hash-0123456789abcdef", len(topic), topic, 10, "cust-00042", i)
		g = binary.AppendUvarint(g, uint64(len(v)))
		g = append(g, v...)
	}
	return g
}

// TestOutboxGroupsAreStoredCompressed: a commit's groups of changes,
// which repeat most of their bytes, are stored compressed, by a
// synchronous commit and by a pipelined one's writer; values that do not
// compress are stored as they are; the publisher reads the same values
// either way, and a delete finds a compressed group's end from its header.
func TestOutboxGroupsAreStoredCompressed(t *testing.T) {
	for _, pipelined := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelined=%v", pipelined), func(t *testing.T) {
			s := openMem(t, vfs.NewMem(), Options{})
			defer s.Close()
			p, err := s.Partition(0)
			if err != nil {
				t.Fatal(err)
			}
			var want [][]byte
			commit := func() {
				t.Helper()
				rec, err := p.Get("c1")
				if err != nil {
					t.Fatal(err)
				}
				rec.(*testRecord).n++
				p.MarkDirty("c1", rec)
				if !pipelined {
					if err := p.Commit(); err != nil {
						t.Fatal(err)
					}
					return
				}
				if async, err := p.CommitAsync(); err != nil || !async {
					t.Fatalf("CommitAsync = %v, %v", async, err)
				}
				if done, err := p.Settle(true); !done || err != nil {
					t.Fatalf("Settle = %v, %v", done, err)
				}
			}
			// About 150 KiB of changes: three groups.
			raw := 0
			for i := range 2000 {
				v := fmt.Appendf(nil, "\x14segd.segment-changes\x0acust-%05d:segment-%d:ENTER:hash-0123456789abcdef0123456789abcdef", i%7, i%40)
				want = append(want, v)
				raw += len(v)
				p.AppendOutbox(v)
			}
			commit()
			// Values that do not compress.
			rnd := rand.New(rand.NewPCG(1, 2))
			for range 100 {
				v := make([]byte, 200)
				for j := range v {
					v[j] = byte(rnd.Uint32())
				}
				want = append(want, v)
				p.AppendOutbox(v)
			}
			commit()

			marks, stored := map[byte]int{}, 0
			it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: partPrefix(ksOutbox, 0), UpperBound: prefixEnd(partPrefix(ksOutbox, 0))})
			if err != nil {
				t.Fatal(err)
			}
			for ok := it.First(); ok; ok = it.Next() {
				marks[it.Value()[0]]++
				if v := it.Value(); bytes.HasPrefix(v, []byte(outboxCompressedGroupMark)) {
					stored += len(v)
					// What a segd from before compressed groups reads
					// as the topic length of a one-value entry: longer
					// than the entry, so it cannot publish it.
					if n, k := binary.Uvarint(v); k <= 0 || n <= uint64(len(v)) {
						t.Fatalf("a compressed group reads as a %d-byte topic (%d)", n, k)
					}
				}
			}
			if err := it.Close(); err != nil {
				t.Fatal(err)
			}
			if marks[outboxCompressedGroupMark[0]] != 3 || marks[outboxGroupMark] != 1 {
				t.Fatalf("stored groups by first byte: %v, want 3 compressed and 1 not", marks)
			}
			if stored*4 > raw {
				t.Fatalf("compressed groups take %d bytes for %d bytes of values", stored, raw)
			}

			var got [][]byte
			if err := p.ReadOutbox(0, 1<<20, func(seq uint64, v []byte) error {
				if seq != uint64(len(got))+1 {
					t.Fatalf("value %d read with seq %d", len(got)+1, seq)
				}
				got = append(got, bytes.Clone(v))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("read %d values, want %d", len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("value %d: %q, want %q", i+1, got[i], want[i])
				}
			}
			// A delete up to the end of the second compressed group.
			var second uint64
			it, _ = s.db.NewIter(&pebble.IterOptions{LowerBound: partPrefix(ksOutbox, 0), UpperBound: prefixEnd(partPrefix(ksOutbox, 0))})
			it.First()
			it.Next()
			it.Next()
			second = binary.BigEndian.Uint64(it.Key()[5:]) - 1
			if err := it.Close(); err != nil {
				t.Fatal(err)
			}
			if err := p.DeleteOutbox(second); err != nil {
				t.Fatal(err)
			}
			if d := p.OutboxDepth(); d != int64(len(want))-int64(second) {
				t.Fatalf("outbox depth %d after deleting to %d of %d", d, second, len(want))
			}
			var first uint64
			if err := p.ReadOutbox(0, 1, func(seq uint64, _ []byte) error {
				first = cmp.Or(first, seq)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if first != second+1 {
				t.Fatalf("first value after the delete: %d, want %d", first, second+1)
			}
		})
	}
}

// TestOutboxCorruptCompressedGroup: a compressed group whose header
// disagrees with its values, or whose values do not decompress, fails the
// read with ErrCorrupt.
func TestOutboxCorruptCompressedGroup(t *testing.T) {
	good := appendOutboxEntry(nil, 40, testGroup(40, "segd.segment-changes"))
	m := len(outboxCompressedGroupMark)
	if !bytes.HasPrefix(good, []byte(outboxCompressedGroupMark)) || good[m] != 40 {
		t.Fatalf("test group not compressed: %x", good[:m+1])
	}
	miscounted := append([]byte(outboxCompressedGroupMark+"\x29"), good[m+1:]...)
	truncated := good[:len(good)-5]
	badMark := append([]byte("\xff\xff\xff\xff\x7e"), good[m:]...)
	for name, entry := range map[string][]byte{"miscounted": miscounted, "truncated": truncated, "marked wrong": badMark} {
		t.Run(name, func(t *testing.T) {
			s := openMem(t, vfs.NewMem(), Options{})
			defer s.Close()
			p, err := s.Partition(0)
			if err != nil {
				t.Fatal(err)
			}
			for range 40 {
				p.AppendOutbox([]byte("x"))
			}
			if err := p.Commit(); err != nil {
				t.Fatal(err)
			}
			if err := s.db.Set(outboxKey(nil, 0, 1), entry, pebble.Sync); err != nil {
				t.Fatal(err)
			}
			forgetHeld(p)
			err = p.ReadOutbox(0, 100, func(uint64, []byte) error { return nil })
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("read of a %s compressed group: %v, want ErrCorrupt", name, err)
			}
		})
	}
}

// TestOutboxGroupEndAllocatesNothing: a delete reads every group it
// passes only for its end, which a compressed group's header gives
// without decompressing or copying the entry.
func TestOutboxGroupEndAllocatesNothing(t *testing.T) {
	entry := appendOutboxEntry(nil, 40, testGroup(40, "segd.segment-changes"))
	if !bytes.HasPrefix(entry, []byte(outboxCompressedGroupMark)) {
		t.Fatal("test group not compressed")
	}
	var last uint64
	allocs := testing.AllocsPerRun(100, func() {
		last, _ = forEachOutboxValue(5, entry, nil, nil)
	})
	if allocs != 0 || last != 44 {
		t.Fatalf("group end %d with %.0f allocations, want 44 with none", last, allocs)
	}
}
