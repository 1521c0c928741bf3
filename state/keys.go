package state

import (
	"encoding/binary"
)

// Key layout. Every key starts with a keyspace byte; per-partition
// keyspaces follow it with the partition number (4 bytes, big-endian) so a
// partition's keys are contiguous and ordered.
//
//	'c' p id                 customer record: envelope byte + record
//	'o' p topic              next offset to read (8 bytes BE)
//	't' p at(8 BE) id        timer index (empty value)
//	'x' p seq(8 BE)          outbox entry
//	's' p                    next outbox sequence (8 bytes BE)
//	'n' p segment            committed member count of a segment (8 bytes BE)
//	'm' len(seg) seg id      membership index, format 3 and older only: deleted
//	                         when such a store is opened (records hold the
//	                         memberships; Store.MembersOf)
//	'l' p seq(8 BE)          pending changelog entry, in format 1 only: format 2
//	                         keeps them in files (entrylog.go)
//	'k' p                    next changelog entry sequence (8 bytes BE)
//	'L' p                    last changelog entry Kafka confirmed (8 bytes BE)
//	'K' p                    changelog end offset the partition reflects (8 bytes BE)
//	'g' p                    outbox deletions logged to the changelog up to (8 bytes BE)
//	'h' p                    hash of the rules the partition's state was last evaluated
//	                         with (Partition.SetRulesHash)
//	'N' p id(8 BE)           catalog: an immutable value records refer to by id
//	                         (Partition.SetCatalog)
//	'j' p seq(8 BE)          outbox bounds of pending changelog entry seq: the
//	                         committed outbox sequence before and after its commit
//	                         (2 x 8 bytes BE); never sent to the changelog
//	'\x00' "format"          store format version
const (
	ksCustomer  = 'c'
	ksOffset    = 'o'
	ksTimer     = 't'
	ksOutbox    = 'x'
	ksOutboxSeq = 's'
	ksCount     = 'n'
	// ksMember keyed an older store's membership index (FormatVersion).
	ksMember = 'm'

	ksChangelog    = 'l'
	ksChangelogSeq = 'k'
	ksChangelogEnd = 'K'
	// ksChangelogSent keys the last changelog entry Kafka confirmed:
	// the pending ones are those after it, up to 'k' less one.
	ksChangelogSent = 'L'
	// ksChangelogMark keys the outbox bounds of each pending changelog
	// entry, so that outbox entries are published only once the commit
	// that wrote them is in the changelog (see Partition.ReadOutbox).
	ksChangelogMark = 'j'
	// ksRules keys the hash of the rules a partition was last evaluated
	// with, so rules changed while it was stopped are reconciled.
	ksRules = 'h'
	// ksCatalog keys the catalogs records refer to by id (segd's: the
	// segment lists its records' member indices name).
	ksCatalog = 'N'
	// ksOutboxLogged keys the highest outbox sequence whose deletion the
	// changelog carries (local bookkeeping, never sent), so deletes made
	// after a partition's last commit are logged after it reopens.
	ksOutboxLogged = 'g'
)

var formatKey = []byte("\x00format")

func partPrefix(ks byte, p int32) []byte {
	b := make([]byte, 5, 32)
	b[0] = ks
	binary.BigEndian.PutUint32(b[1:], uint32(p))
	return b
}

func appendPartKey(dst []byte, ks byte, p int32) []byte {
	dst = append(dst, ks)
	return binary.BigEndian.AppendUint32(dst, uint32(p))
}

func customerKey(dst []byte, p int32, id string) []byte {
	return append(appendPartKey(dst, ksCustomer, p), id...)
}

func timerKey(dst []byte, p int32, at int64, id string) []byte {
	dst = appendPartKey(dst, ksTimer, p)
	dst = binary.BigEndian.AppendUint64(dst, uint64(at))
	return append(dst, id...)
}

func catalogKey(dst []byte, p int32, id uint64) []byte {
	return binary.BigEndian.AppendUint64(appendPartKey(dst, ksCatalog, p), id)
}

func outboxKey(dst []byte, p int32, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendPartKey(dst, ksOutbox, p), seq)
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
