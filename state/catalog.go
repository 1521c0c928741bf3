package state

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// A catalog is an immutable value that records refer to by an id instead
// of repeating it in every record (segd's: the list of segments a record's
// member indices name). The id must identify the content (a hash of it),
// so that any partition's copy of a catalog serves a record of any other.
//
// A partition's catalogs are part of its state: they commit with the
// records that first refer to them, travel in its changelog, and go with
// the partition when it is wiped or dropped. They are never deleted
// otherwise: there are as many as the distinct values ever used, a few.

// SetCatalog stages catalog id with its value; it commits with the next
// Commit, atomically with the records staged beside it.
func (p *Partition) SetCatalog(id uint64, value []byte) {
	p.keyBuf = catalogKey(p.keyBuf[:0], p.id, id)
	p.staged.Set(p.keyBuf, value, nil)
}

// HasCatalog reports whether the partition holds catalog id, committed.
func (p *Partition) HasCatalog(id uint64) (bool, error) {
	return guard1(p.s.h, "read catalog", func() (bool, error) {
		if p.closed.Load() {
			return false, ErrClosed
		}
		_, closer, err := p.s.db.Get(catalogKey(nil, p.id, id))
		if errors.Is(err, pebble.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("partition %d: catalog %016x: %w", p.id, id, err)
		}
		return true, closer.Close()
	})
}

// Catalog returns the committed value of catalog id, from whichever
// partition holds it; found is false when none does.
func (s *Store) Catalog(id uint64) (value []byte, found bool, err error) {
	err = s.h.guard("read catalog", func() error {
		if s.isClosed() {
			return ErrClosed
		}
		value, found, err = s.catalog(id)
		return err
	})
	return value, found, err
}

func (s *Store) catalog(id uint64) ([]byte, bool, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{ksCatalog}, UpperBound: []byte{ksCatalog + 1}})
	if err != nil {
		return nil, false, err
	}
	var value []byte
	found := false
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) == 1+4+8 && binary.BigEndian.Uint64(k[5:]) == id {
			value, found = append([]byte(nil), it.Value()...), true
			break
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, false, fmt.Errorf("catalog %016x: %w", id, err)
	}
	return value, found, nil
}
