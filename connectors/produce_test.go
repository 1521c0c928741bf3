package connectors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// readPartition returns every record of one partition up to its end, in
// offset order. It reads with franz-go's client, which keeps a null value
// apart from an empty one.
func readPartition(t *testing.T, brokers []string, topic string, partition int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {int32(partition): kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	end := int64(-1)
	for end < 0 || int64(len(out)) < end {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s/%d: %d records by the deadline, end %d", topic, partition, len(out), end)
		}
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if p.Err != nil {
				t.Fatalf("read %s/%d: %v", topic, partition, p.Err)
			}
			end = p.HighWatermark
			out = append(out, p.Records...)
		})
	}
	return out
}

// TestProducerPartitionsByKey: each record lands in the partition
// murmur2 gives its key (the Java client's and kafka-go's choice), in the
// order of the write; a null value stays null (a tombstone), headers and
// timestamps arrive as written, and records without a key are spread.
func TestProducerPartitionsByKey(t *testing.T) {
	const parts = 5
	brokers := startBroker(t, parts, "keyed")
	p, err := NewProducer(brokers, ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	at := time.UnixMilli(1700000000123)
	var msgs []Message
	for i := range 300 {
		m := Message{Topic: "keyed", Key: []byte(fmt.Sprintf("customer-%d", i%37)), Value: []byte(fmt.Sprint(i)), Time: at.Add(time.Duration(i) * time.Millisecond)}
		switch i % 50 {
		case 7:
			m.Value = nil
		case 9:
			m.Headers = []Header{{Key: "h", Value: []byte(fmt.Sprint(i))}}
		}
		msgs = append(msgs, m)
	}
	for i := range 20 {
		msgs = append(msgs, Message{Topic: "keyed", Value: []byte(fmt.Sprintf("nokey-%d", i)), Time: at})
	}
	if err := p.Write(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	want := make([][]Message, parts)
	for _, m := range msgs[:300] {
		q := PartitionFor(m.Key, parts)
		want[q] = append(want[q], m)
	}
	nokey := 0
	for q := range parts {
		got := readPartition(t, brokers, "keyed", q)
		var keyed []*kgo.Record
		for _, m := range got {
			if m.Key == nil {
				nokey++
				continue
			}
			keyed = append(keyed, m)
		}
		if len(keyed) != len(want[q]) {
			t.Fatalf("partition %d holds %d keyed records, want %d", q, len(keyed), len(want[q]))
		}
		for i, m := range keyed {
			w := want[q][i]
			if !bytes.Equal(m.Key, w.Key) || !bytes.Equal(m.Value, w.Value) || (m.Value == nil) != (w.Value == nil) || !m.Timestamp.Equal(w.Time) {
				t.Fatalf("partition %d record %d: key %q value %q (nil %v) at %v, want %q %q (nil %v) at %v",
					q, i, m.Key, m.Value, m.Value == nil, m.Timestamp, w.Key, w.Value, w.Value == nil, w.Time)
			}
			if len(m.Headers) != len(w.Headers) || (len(w.Headers) == 1 && (m.Headers[0].Key != "h" || !bytes.Equal(m.Headers[0].Value, w.Headers[0].Value))) {
				t.Fatalf("partition %d record %d: headers %v, want %v", q, i, m.Headers, w.Headers)
			}
		}
	}
	if nokey != 20 {
		t.Fatalf("%d records without a key arrived, want 20", nokey)
	}
}

// TestProducerSplitsRequests: a write over a request's record count or
// bytes goes out in several requests of one partition, which keep the
// records' order; none is over the limits.
func TestProducerSplitsRequests(t *testing.T) {
	b, err := StartEmbeddedBroker(0, 1, "big")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var requests, overLimit atomic.Int32
	b.c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		b.c.KeepControl()
		requests.Add(1)
		for _, tp := range kr.(*kmsg.ProduceRequest).Topics {
			for _, pp := range tp.Partitions {
				if len(pp.Records) > maxRequestBytes+4096 {
					overLimit.Add(1)
				}
			}
		}
		return nil, nil, false
	})
	p := testProducer(t, b.Addrs())
	var msgs []Message
	for i := range 2500 {
		size := 10
		if i >= 1500 {
			size = 4000 // about 4 MB together: at least four requests
		}
		msgs = append(msgs, Message{Topic: "big", Key: []byte("k"), Value: append([]byte(fmt.Sprintf("%05d", i)), bytes.Repeat([]byte("v"), size)...)})
	}
	if err := p.Write(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n < 5 {
		t.Errorf("%d produce requests, want at least 5 (1000 small records, then a MiB at most each)", n)
	}
	if n := overLimit.Load(); n != 0 {
		t.Errorf("%d requests carried over %d bytes", n, maxRequestBytes)
	}
	got := readPartition(t, b.Addrs(), "big", 0)
	if len(got) != len(msgs) {
		t.Fatalf("%d records arrived, want %d", len(got), len(msgs))
	}
	for i := range got {
		if !bytes.Equal(got[i].Value, msgs[i].Value) {
			t.Fatalf("record %d out of order: %.5q", i, got[i].Value)
		}
	}
}

// TestProducerRetriesATransientFailure: a produce request whose
// connection drops is sent again, and the write succeeds with each record
// written once.
func TestProducerRetriesATransientFailure(t *testing.T) {
	b, err := StartEmbeddedBroker(0, 1, "flaky")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var dropped atomic.Int32
	b.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		dropped.Add(1)
		return nil, errors.New("dropped by the test"), true // closes the connection, once
	})
	p := testProducer(t, b.Addrs())
	msgs := []Message{{Topic: "flaky", Key: []byte("a"), Value: []byte("1")}, {Topic: "flaky", Key: []byte("b"), Value: []byte("2")}}
	if err := p.Write(context.Background(), msgs...); err != nil {
		t.Fatalf("write after one dropped request: %v", err)
	}
	if dropped.Load() != 1 {
		t.Fatalf("the broker dropped %d requests, want 1", dropped.Load())
	}
	if got := readPartition(t, b.Addrs(), "flaky", 0); len(got) != 2 || string(got[0].Value) != "1" || string(got[1].Value) != "2" {
		t.Fatalf("topic holds %d records, want 1 and 2 once each", len(got))
	}
}

// TestProducerStopsAPartitionAtAFailure: when a partition's request is
// refused, its records carry the broker's error and the partition's later
// records are not sent (so a retry keeps their order); RecordErrors and
// ClassifyWriteError read the result as before.
func TestProducerStopsAPartitionAtAFailure(t *testing.T) {
	b, err := StartEmbeddedBroker(0, 1, "refusing")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var requests atomic.Int32
	b.c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		b.c.KeepControl()
		requests.Add(1)
		req := kr.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, tp := range req.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = tp.Topic
			for _, pp := range tp.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = pp.Partition
				rp.ErrorCode = int16(kafka.InvalidRecord)
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
	p := testProducer(t, b.Addrs())
	msgs := make([]Message, 1500)
	for i := range msgs {
		msgs[i] = Message{Topic: "refusing", Key: []byte("k"), Value: []byte(fmt.Sprint(i))}
	}
	werr := p.Write(context.Background(), msgs...)
	if werr == nil {
		t.Fatal("a refused write succeeded")
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("%d requests, want 1 (a permanent error is not retried, later records not sent)", n)
	}
	if len(werr.Error()) > 500 {
		t.Errorf("the write's error is %d bytes long, want one line: %.300s", len(werr.Error()), werr)
	}
	errs := RecordErrors(werr, msgs)
	for i, e := range errs {
		switch {
		case i < maxRequestRecords && (!errors.Is(e, kafka.InvalidRecord) || ClassifyWriteError(e) != WritePermanent):
			t.Fatalf("record %d: %v, want the broker's INVALID_RECORD, permanent", i, e)
		case i >= maxRequestRecords && !errors.Is(e, ErrNotSent):
			t.Fatalf("record %d: %v, want ErrNotSent", i, e)
		}
	}
}

// TestProducerClose: a write after Close fails; Close twice is fine.
func TestProducerClose(t *testing.T) {
	brokers := startBroker(t, 1, "closing")
	p, err := NewProducer(brokers, ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Write(context.Background(), Message{Topic: "closing", Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := p.Write(context.Background(), Message{Topic: "closing", Value: []byte("y")}); !errors.Is(err, io.ErrClosedPipe) || !strings.HasPrefix(err.Error(), "write 1 record: ") {
		t.Fatalf("write after Close: %v, want io.ErrClosedPipe, said of 1 record", err)
	}
}

// BenchmarkProducerWrite: one small record per write to the embedded
// broker, as a caught-up partition publishes.
func BenchmarkProducerWrite(b *testing.B) {
	br, err := StartEmbeddedBroker(0, 4, "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	p := testProducer(b, br.Addrs())
	m := Message{Topic: "bench", Key: []byte("customer-1"), Value: bytes.Repeat([]byte("v"), 200)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Write(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

// TestProducerPartitionCountCache: a topic's partition count is taken
// from the producer's own cache while it is younger than
// partitionCountTTL, asked again after, and dropped by forgetCounts
// (which a failed write calls).
func TestProducerPartitionCountCache(t *testing.T) {
	brokers := startBroker(t, 3, "cached")
	p, err := NewProducer(brokers, ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	if n, err := p.partitionCount(ctx, "cached"); err != nil || n != 3 {
		t.Fatalf("partitionCount = %d, %v; want 3", n, err)
	}
	p.counts["cached"] = partitionCount{n: 1, at: time.Now()}
	if n, _ := p.partitionCount(ctx, "cached"); n != 1 {
		t.Fatalf("a fresh cached count was not used: %d", n)
	}
	p.counts["cached"] = partitionCount{n: 1, at: time.Now().Add(-2 * partitionCountTTL)}
	if n, _ := p.partitionCount(ctx, "cached"); n != 3 {
		t.Fatalf("a stale cached count was used: %d, want 3 asked again", n)
	}
	p.counts["cached"] = partitionCount{n: 1, at: time.Now()}
	p.forgetCounts([]Message{{Topic: "cached"}})
	if _, ok := p.counts["cached"]; ok {
		t.Fatal("forgetCounts kept the count")
	}
}
