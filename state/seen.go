package state

import (
	"errors"
	"fmt"
	"os"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// SeenSet is a set of keys kept in its own Pebble database, for replays
// that must apply every event id once however long their input: memory
// stays bounded by the memtable and the block cache, whatever the number
// of keys. It is scratch space, removed by Close. Not safe for concurrent
// use.
type SeenSet struct {
	dir string
	db  *pebble.DB
	b   *pebble.Batch // indexed: Add reads its own uncommitted keys
	n   int           // keys in b
	h   *health
}

// seenBatchKeys commits the set's batch every this many new keys.
const seenBatchKeys = 4096

// OpenSeenSet creates an empty set in dir, which must not exist.
func OpenSeenSet(dir string) (*SeenSet, error) {
	if _, err := os.Stat(dir); err == nil {
		return nil, fmt.Errorf("seen set %s: already exists", dir)
	}
	cache := pebble.NewCache(8 << 20)
	defer cache.Unref()
	h := &health{dir: dir}
	po := &pebble.Options{Cache: cache, MemTableSize: 16 << 20, DisableWAL: true, Logger: pebbleLogger{h}, EventListener: h.eventListener()}
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	po.EnsureDefaults()
	var db *pebble.DB
	err := h.guard("open seen set", func() error {
		var err error
		db, err = pebble.Open(dir, po)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open seen set %s: %w", dir, err)
	}
	return &SeenSet{dir: dir, db: db, b: db.NewIndexedBatch(), h: h}, nil
}

// Add adds key and reports whether it was new.
func (s *SeenSet) Add(key []byte) (added bool, err error) {
	err = s.h.guard("seen set", func() error {
		added, err = s.add(key)
		return err
	})
	return added, err
}

func (s *SeenSet) add(key []byte) (added bool, err error) {
	_, closer, err := s.b.Get(key)
	if err == nil {
		closer.Close()
		return false, nil
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return false, fmt.Errorf("seen set: %w", err)
	}
	if err := s.b.Set(key, nil, nil); err != nil {
		return false, fmt.Errorf("seen set: %w", err)
	}
	s.n++
	if s.n >= seenBatchKeys {
		if err := s.b.Commit(pebble.NoSync); err != nil {
			return false, fmt.Errorf("seen set: %w", err)
		}
		s.b = s.db.NewIndexedBatch()
		s.n = 0
	}
	return true, nil
}

// Close closes the set and removes its directory.
func (s *SeenSet) Close() error {
	if s.db == nil {
		return nil
	}
	s.b.Close()
	err := s.db.Close()
	s.db = nil
	if rerr := os.RemoveAll(s.dir); err == nil {
		err = rerr
	}
	return err
}
