package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
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
	f.Fuzz(func(t *testing.T, key uint64, entry []byte) {
		if key == 0 || key > 1<<62 {
			return
		}
		var vals [][]byte
		last, err := forEachOutboxValue(key, entry, func(seq uint64, v []byte) error {
			if seq != key+uint64(len(vals)) {
				t.Fatalf("value %d has seq %d under key %d", len(vals), seq, key)
			}
			vals = append(vals, v)
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
		if len(entry) == 0 || entry[0] != outboxGroupMark {
			return
		}
		// A group re-encodes to itself.
		enc := []byte{outboxGroupMark}
		for _, v := range vals {
			enc = binary.AppendUvarint(enc, uint64(len(v)))
			enc = append(enc, v...)
		}
		if !bytes.Equal(enc, entry) {
			// Non-minimal varints decode too; they must decode the same.
			again, _ := forEachOutboxValue(key, enc, nil)
			if again != last {
				t.Fatalf("re-encoded group ends at %d, not %d", again, last)
			}
		}
	})
}
