package connectors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/segmentio/kafka-go"
)

// ChangelogRecord is one record of a state changelog: a state key and its
// new value (possibly empty), or its deletion.
type ChangelogRecord struct {
	Key, Value []byte
	Deleted    bool
}

// changelogValueV1 starts every changelog value that is not a tombstone.
// Many state values are empty (index entries), and an empty value must not
// read back as a deletion; the byte also versions the format.
const changelogValueV1 = 1

// ChangelogWriter appends to a compacted changelog topic. Each Write is one
// produce request holding one record batch, which Kafka appends whole or
// not at all: a reader never sees half of a commit. Safe for concurrent
// use.
type ChangelogWriter struct {
	client *kafka.Client
	tr     *kafka.Transport
	topic  string
	recs   []kafka.Record
	// values holds a write's framed values and readers its keys' and
	// values' readers, reused: kafka.NewBytes and a framed copy per
	// record were a third of the publisher's allocations.
	values  []byte
	readers []sliceBytes
}

// sliceBytes is a kafka.Bytes reading a slice.
type sliceBytes struct {
	b   []byte
	off int
}

func (s *sliceBytes) Len() int { return len(s.b) - s.off }

func (s *sliceBytes) Read(p []byte) (int, error) {
	if s.off >= len(s.b) {
		return 0, io.EOF
	}
	n := copy(p, s.b[s.off:])
	s.off += n
	return n, nil
}

func (s *sliceBytes) Close() error { return nil }

// valuesRetainBytes bounds the framed-values buffer a writer keeps.
const valuesRetainBytes = 8 << 20

// NewChangelogWriter returns a writer to topic. Close it.
func (c Cluster) ChangelogWriter(topic string) *ChangelogWriter {
	brokers, sec := c.Brokers, c.Security
	tr := sec.transport()
	return &ChangelogWriter{
		client: &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second, Transport: tr},
		tr:     tr,
		topic:  topic,
	}
}

// Close releases the writer's connections. Safe to call twice.
func (w *ChangelogWriter) Close() error {
	w.tr.CloseIdleConnections()
	return nil
}

// Write appends recs to partition with acks=all and returns the
// partition's end offset after them. After an error the request may still
// be being sent: the caller must not change the bytes recs point to. Not
// for concurrent calls on the same writer (it reuses buffers); use one
// writer per partition.
func (w *ChangelogWriter) Write(ctx context.Context, partition int, recs []ChangelogRecord) (end int64, err error) {
	if len(recs) == 0 {
		return 0, errors.New("connectors: changelog write of no records")
	}
	w.recs = w.recs[:0]
	now := time.Now()
	// Values are framed into one buffer first, and sliced once it no
	// longer grows.
	if cap(w.values) > valuesRetainBytes {
		w.values = nil
	}
	w.values = w.values[:0]
	for i := range recs {
		if !recs[i].Deleted {
			w.values = append(append(w.values, changelogValueV1), recs[i].Value...)
		}
	}
	if cap(w.readers) < 2*len(recs) {
		w.readers = make([]sliceBytes, 2*len(recs))
	}
	readers := w.readers[:2*len(recs)]
	off := 0
	for i := range recs {
		r := kafka.Record{Time: now}
		if recs[i].Key != nil {
			readers[2*i] = sliceBytes{b: recs[i].Key}
			r.Key = &readers[2*i]
		}
		if !recs[i].Deleted {
			n := 1 + len(recs[i].Value)
			readers[2*i+1] = sliceBytes{b: w.values[off : off+n : off+n]}
			r.Value = &readers[2*i+1]
			off += n
		}
		w.recs = append(w.recs, r)
	}
	resp, err := w.client.Produce(ctx, &kafka.ProduceRequest{
		Topic:        w.topic,
		Partition:    partition,
		RequiredAcks: kafka.RequireAll,
		Records:      kafka.NewRecordReader(w.recs...),
	})
	if err != nil {
		// kafka-go may return (a canceled or timed-out context) while
		// its connection still encodes the request: the buffers it reads
		// are left to it, and the next write makes new ones.
		w.values, w.readers, w.recs = nil, nil, nil
		return 0, fmt.Errorf("changelog %s/%d: produce %d records: %w", w.topic, partition, len(recs), err)
	}
	if resp.Error != nil {
		return 0, fmt.Errorf("changelog %s/%d: produce %d records: %w", w.topic, partition, len(recs), resp.Error)
	}
	return resp.BaseOffset + int64(len(recs)), nil
}

// ChangelogEnd returns the end offset (high-water mark) of one partition
// of a changelog topic.
func (c Cluster) ChangelogEnd(ctx context.Context, topic string, partition int) (int64, error) {
	_, end, err := c.EndOffsets(ctx, []string{topic}, partition)
	if err != nil {
		return 0, err
	}
	return end[topic], nil
}

// ReadChangelog reads one partition of a changelog topic from its first
// record up to end (exclusive; see ChangelogEnd) and calls fn for each
// record in order; deleted is true for a tombstone. The slices are valid
// only during fn. A value in an unknown format is an error.
func (c Cluster) ReadChangelog(ctx context.Context, topic string, partition int, end int64, fn func(key, value []byte, deleted bool) error) error {
	return c.ReadChangelogFrom(ctx, topic, partition, -1, end, fn)
}

// ErrChangelogGone is returned by ReadChangelogFrom when the log no longer
// holds the offset to start from.
var ErrChangelogGone = errors.New("connectors: the changelog no longer starts at that offset")

// ReadChangelogFrom is ReadChangelog from offset from (-1: the first
// record). Records between from and end that compaction removed were
// superseded by later ones, so applying what is left on top of the state
// as of from gives the state as of end.
func (c Cluster) ReadChangelogFrom(ctx context.Context, topic string, partition int, from, end int64, fn func(key, value []byte, deleted bool) error) error {
	brokers, sec := c.Brokers, c.Security
	first, _, err := c.EndOffsets(ctx, []string{topic}, partition)
	if err != nil {
		return err
	}
	if from >= 0 {
		if first[topic] > from {
			return fmt.Errorf("changelog %s/%d starts at %d, after %d: %w", topic, partition, first[topic], from, ErrChangelogGone)
		}
		first[topic] = from
	}
	if first[topic] >= end {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:         brokers,
		Topic:           topic,
		Partition:       partition,
		MinBytes:        1,
		MaxBytes:        16 << 20,
		MaxWait:         250 * time.Millisecond,
		ReadLagInterval: -1,
		Dialer:          sec.dialer(),
	})
	defer r.Close()
	if err := r.SetOffset(first[topic]); err != nil {
		return fmt.Errorf("changelog %s/%d: seek to %d: %w", topic, partition, first[topic], err)
	}
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return fmt.Errorf("changelog %s/%d: read: %w", topic, partition, err)
		}
		if m.Offset >= end {
			return nil
		}
		var v []byte
		deleted := len(m.Value) == 0
		if !deleted {
			if m.Value[0] != changelogValueV1 {
				return fmt.Errorf("changelog %s/%d offset %d: value format %d is not one this segd reads", topic, partition, m.Offset, m.Value[0])
			}
			v = m.Value[1:]
		}
		if err := fn(m.Key, v, deleted); err != nil {
			return fmt.Errorf("changelog %s/%d offset %d: %w", topic, partition, m.Offset, err)
		}
		if m.Offset == end-1 {
			return nil
		}
	}
}
