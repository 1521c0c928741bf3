package connectors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/segd/segd/internal/kpart"
)

// ProducerOptions configure a Producer.
type ProducerOptions struct {
	// WriteTimeout bounds one produce request. Default 30s.
	WriteTimeout time.Duration
	// Security: TLS and SASL; nil is plaintext.
	Security *Security
}

// Limits of one produce request, those of the kafka-go Writer segd used
// before: a record over maxRequestBytes is refused before anything is sent
// (kafka.MessageTooLargeError, as the Writer did), and a partition's
// records go in requests of at most maxRequestRecords and maxRequestBytes
// (Kafka's default message.max.bytes is about 1 MiB per record batch).
const (
	maxRequestRecords = 1000
	maxRequestBytes   = 1 << 20
)

// Retries of one produce request that failed transiently (a leader
// moving, a connection reset), before its records' error is returned: the
// Writer's, so callers see the same patience.
const (
	produceAttempts   = 5
	produceBackoffMin = 100 * time.Millisecond
	produceBackoffMax = time.Second
)

// Producer writes records synchronously with acks=all, partitioning by key
// with murmur2 (the Java client's default), so other producers and segd
// agree on which partition holds a customer. Safe for concurrent use.
//
// A Write sends one produce request per partition its records go to (more
// for more than maxRequestRecords or maxRequestBytes), all at once, and
// returns when all are acknowledged. It does not batch across calls:
// kafka-go's Writer did, through a batch per partition that a timer
// released to a goroutine per partition, and those hops were most of a
// write's time on a busy machine (docs/decisions.md, "Latency").
type Producer struct {
	client  *kafka.Client
	tr      *kafka.Transport
	timeout time.Duration
	rr      atomic.Uint32 // spreads records without a key

	mu     sync.RWMutex // Write holds it shared, Close exclusively
	closed bool

	countsMu sync.Mutex
	counts   map[string]partitionCount
}

// partitionCount is a topic's partition count as of a time.
type partitionCount struct {
	n  int
	at time.Time
}

// partitionCountTTL is how long a write trusts a topic's partition count
// before asking the transport's metadata cache again (which kafka-go
// refreshes every 6 s): the ask built the cluster's whole metadata
// response, 3 KB and tens of allocations per write.
const partitionCountTTL = time.Second

// NewProducer returns a Producer for brokers.
func NewProducer(brokers []string, opts ProducerOptions) (*Producer, error) {
	if len(brokers) == 0 {
		return nil, errors.New("connectors: producer needs at least one broker")
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	tr := opts.Security.transport()
	return &Producer{
		client:  &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr},
		tr:      tr,
		timeout: opts.WriteTimeout,
	}, nil
}

// Write writes msgs and returns once every one is acknowledged by all
// in-sync replicas. A failed write's error holds a kafka.WriteErrors, one
// error per record (nil for those acknowledged; RecordErrors splits it),
// unless nothing was sent: a record over the request size
// (kafka.MessageTooLargeError) or a topic whose partitions are unknown.
// A partition's records are sent in order; after a request fails, that
// partition's later records are not sent (ErrNotSent).
//
// kafka-go may return from a request (its context canceled or timed out)
// while its connection's goroutine still encodes it: Write sends from a
// copy of msgs, so the caller may reuse the slice at once, but not change
// the bytes its records' keys, values and headers point to.
func (p *Producer) Write(ctx context.Context, msgs ...Message) error {
	if len(msgs) == 0 {
		return nil
	}
	// The publisher refills its slice for the next write: a request still
	// being encoded read the new records in place of its own (a data race
	// the race detector caught in a hand-over's flush).
	msgs = slices.Clone(msgs)
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return fmt.Errorf("write %s: %w", records(len(msgs)), io.ErrClosedPipe)
	}
	for i := range msgs {
		if recordSize(&msgs[i]) > maxRequestBytes {
			return fmt.Errorf("write %s: %w", records(len(msgs)), tooLarge(msgs, i))
		}
	}
	parts, err := p.assign(ctx, msgs)
	if err != nil {
		return fmt.Errorf("write %s: %w", records(len(msgs)), err)
	}
	// The first partition's requests on this goroutine, the others' on
	// their own: a write's partitions are acknowledged in one round trip.
	var wg sync.WaitGroup
	for i := 1; i < len(parts); i++ {
		wg.Add(1)
		go func(tp *topicPartition) {
			defer wg.Done()
			tp.send(ctx, p, msgs)
		}(&parts[i])
	}
	parts[0].send(ctx, p, msgs)
	wg.Wait()
	var errs kafka.WriteErrors
	for i := range parts {
		if parts[i].errs == nil {
			continue
		}
		if errs == nil {
			errs = make(kafka.WriteErrors, len(msgs))
		}
		for j, e := range parts[i].errs {
			errs[parts[i].idx[j]] = e
		}
	}
	if errs == nil {
		return nil
	}
	// A failure may come of partitions added or a topic recreated: ask
	// again next time.
	p.forgetCounts(msgs)
	return &writeFailure{errs: errs}
}

// writeFailure is a write some of whose records failed. Its message names
// the first failure and counts the others: kafka.WriteErrors's lists every
// record's, hundreds of lines in one log entry for a failed publish.
type writeFailure struct {
	errs kafka.WriteErrors
}

func (e *writeFailure) Error() string {
	var first error
	failed := 0
	for _, err := range e.errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	return fmt.Sprintf("write %s: %d not written, the first: %v", records(len(e.errs)), failed, first)
}

// records says how many records, for messages: "1 record", "2 records".
func records(n int) string {
	if n == 1 {
		return "1 record"
	}
	return fmt.Sprintf("%d records", n)
}

// Unwrap gives errors.As the kafka.WriteErrors (RecordErrors reads it).
func (e *writeFailure) Unwrap() error { return e.errs }

// topicPartition is the records of a write that go to one partition, by
// their index in the write, in order.
type topicPartition struct {
	topic     string
	partition int
	idx       []int
	errs      []error // by idx's position, once one of them failed (send)
}

// assign groups msgs by partition: murmur2 of the key among the topic's
// partitions (kafka-go's Murmur2Balancer), records without a key spread in
// turn.
func (p *Producer) assign(ctx context.Context, msgs []Message) ([]topicPartition, error) {
	var parts []topicPartition
	topic, n := "", 0 // the last record's topic and its partition count
	for i := range msgs {
		m := &msgs[i]
		if i == 0 || m.Topic != topic {
			var err error
			if n, err = p.partitionCount(ctx, m.Topic); err != nil {
				return nil, err
			}
			topic = m.Topic
		}
		var part int
		if m.Key == nil {
			part = int(p.rr.Add(1) % uint32(n))
		} else {
			part = kpart.For(m.Key, n)
		}
		j := 0
		for j < len(parts) && (parts[j].partition != part || parts[j].topic != m.Topic) {
			j++
		}
		if j == len(parts) {
			parts = append(parts, topicPartition{topic: m.Topic, partition: part})
		}
		parts[j].idx = append(parts[j].idx, i)
	}
	return parts, nil
}

// partitionCount returns how many partitions topic has: as known for
// less than partitionCountTTL, else from the transport's metadata cache
// (kafka.Transport refreshes it).
func (p *Producer) partitionCount(ctx context.Context, topic string) (int, error) {
	now := time.Now()
	p.countsMu.Lock()
	c, ok := p.counts[topic]
	p.countsMu.Unlock()
	if ok && now.Sub(c.at) < partitionCountTTL {
		return c.n, nil
	}
	n, err := p.askPartitionCount(ctx, topic)
	if err != nil {
		return 0, err
	}
	p.countsMu.Lock()
	if p.counts == nil {
		p.counts = map[string]partitionCount{}
	}
	p.counts[topic] = partitionCount{n: n, at: now}
	p.countsMu.Unlock()
	return n, nil
}

// forgetCounts drops the partition counts of msgs' topics.
func (p *Producer) forgetCounts(msgs []Message) {
	p.countsMu.Lock()
	for i := range msgs {
		delete(p.counts, msgs[i].Topic)
	}
	p.countsMu.Unlock()
}

func (p *Producer) askPartitionCount(ctx context.Context, topic string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	res, err := p.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	for _, t := range res.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return 0, t.Error
		}
		if len(t.Partitions) == 0 {
			break
		}
		return len(t.Partitions), nil
	}
	return 0, kafka.UnknownTopicOrPartition
}

// send produces the partition's records in requests of at most
// maxRequestRecords and maxRequestBytes, in order; after a failed request
// tp.errs holds each record's error.
func (tp *topicPartition) send(ctx context.Context, p *Producer, msgs []Message) {
	rest := tp.idx
	for len(rest) > 0 {
		n, size := 0, 0
		for n < len(rest) && n < maxRequestRecords {
			s := recordSize(&msgs[rest[n]])
			if n > 0 && size+s > maxRequestBytes {
				break
			}
			size += s
			n++
		}
		sent := len(tp.idx) - len(rest)
		batch := rest[:n]
		rest = rest[n:]
		res, err := p.produce(ctx, tp.topic, tp.partition, msgs, batch)
		if err == nil {
			continue
		}
		tp.errs = make([]error, len(tp.idx))
		for j := range batch {
			tp.errs[sent+j] = err
			if res != nil {
				if rerr, ok := res.RecordErrors[j]; ok && rerr != nil {
					tp.errs[sent+j] = rerr
				}
			}
		}
		for j := sent + n; j < len(tp.idx); j++ {
			tp.errs[j] = ErrNotSent
		}
		return
	}
}

// produce sends one request, again after a transient failure (up to
// produceAttempts in all).
func (p *Producer) produce(ctx context.Context, topic string, partition int, msgs []Message, batch []int) (*kafka.ProduceResponse, error) {
	for attempt := 1; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, p.timeout)
		res, err := p.client.Produce(rctx, &kafka.ProduceRequest{
			Topic:        topic,
			Partition:    partition,
			RequiredAcks: kafka.RequireAll,
			Records:      &recordReader{msgs: msgs, batch: batch},
		})
		cancel()
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err == nil {
			return res, nil
		}
		if attempt >= produceAttempts || !transientWriteError(err) || ctx.Err() != nil {
			return res, err
		}
		t := time.NewTimer(min(time.Duration(attempt*attempt)*produceBackoffMin, produceBackoffMax))
		select {
		case <-ctx.Done():
			t.Stop()
			return res, err
		case <-t.C:
		}
	}
}

// transientWriteError says whether a produce request that failed with err
// may succeed if sent again: what kafka-go's Writer retried.
func transientWriteError(err error) bool {
	var temp interface{ Temporary() bool }
	if errors.As(err, &temp) && temp.Temporary() {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// recordReader hands a request's records to kafka-go, a null key or value
// staying null (a tombstone is a null value).
type recordReader struct {
	msgs   []Message
	batch  []int
	next   int
	rec    kafka.Record
	key    bytesReader
	value  bytesReader
	header []kafka.Header
}

type bytesReader struct{ bytes.Reader }

func (*bytesReader) Close() error { return nil }

func (r *recordReader) ReadRecord() (*kafka.Record, error) {
	if r.next >= len(r.batch) {
		return nil, io.EOF
	}
	m := &r.msgs[r.batch[r.next]]
	r.next++
	r.header = r.header[:0]
	for _, h := range m.Headers {
		r.header = append(r.header, kafka.Header{Key: h.Key, Value: h.Value})
	}
	r.rec = kafka.Record{Time: m.Time, Headers: r.header}
	if m.Key != nil {
		r.key.Reset(m.Key)
		r.rec.Key = &r.key
	}
	if m.Value != nil {
		r.value.Reset(m.Value)
		r.rec.Value = &r.value
	}
	return &r.rec, nil
}

// recordSize is a record's size as kafka-go's Writer counted it against
// its batch limit (Message.totalSize): the record's fields in the legacy
// message format plus its headers.
func recordSize(m *Message) int {
	n := 4 + 1 + 1 + 4 + len(m.Key) + 4 + len(m.Value) + 8 + varintSize(len(m.Headers))
	for _, h := range m.Headers {
		n += varintSize(len(h.Key)) + len(h.Key) + varintSize(len(h.Value)) + len(h.Value)
	}
	return n
}

// varintSize is the length of n as a zig-zag varint.
func varintSize(n int) int {
	u := uint64(n<<1) ^ uint64(n>>63)
	size := 1
	for u >= 0x80 {
		u >>= 7
		size++
	}
	return size
}

// tooLarge is the error kafka-go's Writer returned for msgs[i] over its
// batch size, which RecordErrors and ClassifyWriteError read.
func tooLarge(msgs []Message, i int) kafka.MessageTooLargeError {
	rest := make([]kafka.Message, 0, len(msgs)-1)
	for j := range msgs {
		if j != i {
			rest = append(rest, toKafka(&msgs[j]))
		}
	}
	return kafka.MessageTooLargeError{Message: toKafka(&msgs[i]), Remaining: rest}
}

// Close closes the producer once writes in progress returned; later
// writes fail. Safe to call twice.
func (p *Producer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	// The transport's connections and metadata goroutines would outlive
	// the producer.
	p.tr.CloseIdleConnections()
	return nil
}
