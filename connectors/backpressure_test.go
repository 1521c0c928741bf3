package connectors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"testing"
	"time"
)

// backlogTopic describes one topic of a generated backlog: n records whose
// k-th is stamped base + k*step + skew.
type backlogTopic struct {
	name       string
	n          int
	step, skew time.Duration
}

var backlogBase = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// produceBacklog writes the topics' records to partition 0, topic after
// topic, and returns them in the order the merge must deliver them: by
// time, ties in the order of topics, then by offset.
func produceBacklog(t *testing.T, brokers []string, topics []backlogTopic) []Message {
	t.Helper()
	prod, err := NewProducer(brokers, ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var want []Message
	for _, bt := range topics {
		batch := make([]Message, 0, 1000)
		for k := 0; k < bt.n; k++ {
			// Values of 50 to 349 bytes, so that the byte bound can bind.
			v := make([]byte, 50+(k*7)%300)
			copy(v, fmt.Sprintf("%s-%d-", bt.name, k))
			m := Message{Topic: bt.name, Key: []byte("k"), Value: v, Time: backlogBase.Add(time.Duration(k)*bt.step + bt.skew)}
			batch = append(batch, m)
			want = append(want, Message{Topic: bt.name, Offset: int64(k), Value: v, Time: m.Time})
			if len(batch) == cap(batch) || k == bt.n-1 {
				if err := prod.Write(context.Background(), batch...); err != nil {
					t.Fatal(err)
				}
				batch = batch[:0]
			}
		}
	}
	order := map[string]int{}
	for i, bt := range topics {
		order[bt.name] = i
	}
	sort.SliceStable(want, func(i, j int) bool {
		a, b := &want[i], &want[j]
		if !a.Time.Equal(b.Time) {
			return a.Time.Before(b.Time)
		}
		if a.Topic != b.Topic {
			return order[a.Topic] < order[b.Topic]
		}
		return a.Offset < b.Offset
	})
	return want
}

// drain polls c to io.EOF (StopAtEnd), calling each after every Poll, and
// fails the test if that takes longer than timeout.
func drain(t *testing.T, c *PartitionConsumer, batch int, timeout time.Duration, each func()) []Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var got []Message
	buf := make([]Message, 0, batch)
	for {
		msgs, err := c.Poll(ctx, buf[:0], time.Second)
		got = append(got, msgs...)
		if each != nil {
			each()
		}
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatalf("after %d records: %v (buffered %+v)", len(got), err, c.Buffered())
		}
	}
}

// sameOrder reports the first difference between the merged records and
// the expected order, by topic and offset.
func sameOrder(got, want []Message) error {
	for i := range min(len(got), len(want)) {
		if got[i].Topic != want[i].Topic || got[i].Offset != want[i].Offset {
			return fmt.Errorf("record %d: got %s@%d, want %s@%d", i, got[i].Topic, got[i].Offset, want[i].Topic, want[i].Offset)
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("got %d records, want %d", len(got), len(want))
	}
	return nil
}

// A 100k-record backlog over three topics of one partition, read by a slow
// reader: the consumer's queues never hold more than the bounds (records
// and bytes, exactly: no record here is larger than a topic's share), the
// topics that are ahead pause, and every record arrives once, in merge
// order. Without back-pressure the queues took in most of the backlog
// (81k records of 100k).
func TestPartitionConsumerBoundsBacklog(t *testing.T) {
	brokers := startBroker(t, 1, "a", "b", "c")
	// a runs out first, c is ahead of the others most of the time.
	want := produceBacklog(t, brokers, []backlogTopic{
		{name: "a", n: 40000, step: time.Millisecond},
		{name: "b", n: 35000, step: 2 * time.Millisecond},
		{name: "c", n: 25000, step: 4 * time.Millisecond},
	})
	var backlogBytes int64
	for i := range want {
		backlogBytes += int64(len(want[i].Key) + len(want[i].Value))
	}
	for _, tc := range []struct {
		name    string
		records int
		bytes   int64
	}{
		{"defaults", 0, 0},
		{"records bind", 3000, 64 << 20},
		{"bytes bind", 100000, 256 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewPartitionConsumer(PartitionConsumerOptions{Brokers: brokers, Topics: []string{"a", "b", "c"}, StopAtEnd: true,
				MaxIdle: 30 * time.Second, MaxBufferedRecords: tc.records, MaxBufferedBytes: tc.bytes})
			if err != nil {
				t.Fatal(err)
			}
			if tc.records == 0 {
				tc.records, tc.bytes = DefaultMaxBufferedRecords, DefaultMaxBufferedBytes
			}
			defer c.Close()
			// Sample what a metric scrape would see, from another goroutine.
			var (
				mu      sync.Mutex
				sampled BufferStats
				paused  int
			)
			stop := make(chan struct{})
			sampler := make(chan struct{})
			go func() {
				defer close(sampler)
				tick := time.NewTicker(time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					s := c.Buffered()
					mu.Lock()
					sampled.Records = max(sampled.Records, s.Records)
					sampled.Bytes = max(sampled.Bytes, s.Bytes)
					paused = max(paused, s.PausedTopics)
					mu.Unlock()
				}
			}()
			polls := 0
			got := drain(t, c, 64, 2*time.Minute, func() {
				// The slow reader: the fetchers outrun it.
				if polls++; polls%4 == 0 {
					time.Sleep(time.Millisecond)
				}
			})
			close(stop)
			<-sampler
			if err := sameOrder(got, want); err != nil {
				t.Fatal(err)
			}
			s := c.Buffered()
			t.Logf("backlog %d records, %d bytes; bounds %d records, %d bytes; peak buffered %d records, %d bytes; most sampled %d records, %d bytes; most topics paused %d",
				len(want), backlogBytes, tc.records, tc.bytes, s.PeakRecords, s.PeakBytes, sampled.Records, sampled.Bytes, paused)
			if s.PeakRecords > int64(tc.records) || s.PeakBytes > tc.bytes {
				t.Errorf("peak buffered %d records, %d bytes; bounds %d records, %d bytes", s.PeakRecords, s.PeakBytes, tc.records, tc.bytes)
			}
			if sampled.Records > int64(tc.records) || sampled.Bytes > tc.bytes {
				t.Errorf("sampled %d records, %d bytes; bounds %d records, %d bytes", sampled.Records, sampled.Bytes, tc.records, tc.bytes)
			}
			if paused == 0 {
				t.Errorf("no topic was ever seen paused: the bound never bit")
			}
			if s.Records != 0 || s.Bytes != 0 {
				t.Errorf("after the end: %d records, %d bytes still buffered", s.Records, s.Bytes)
			}
		})
	}
}

// The bounds decide when records arrive, never their order: the same
// backlog merges identically with one record per topic (smaller than any
// record in bytes), with small bounds and with huge ones, and the merge
// never stalls although a topic that is far ahead keeps its queue full
// while the merge needs the others.
func TestPartitionConsumerMergeOrderIndependentOfBounds(t *testing.T) {
	brokers := startBroker(t, 1, "early", "mixed", "late", "sparse")
	want := produceBacklog(t, brokers, []backlogTopic{
		{name: "early", n: 2000, step: time.Millisecond},
		{name: "mixed", n: 3000, step: 3 * time.Millisecond},
		{name: "late", n: 2000, step: time.Millisecond, skew: time.Hour},
		{name: "sparse", n: 20, step: 500 * time.Millisecond},
	})
	topics := []string{"early", "mixed", "late", "sparse"}
	for _, tc := range []struct {
		name    string
		records int
		bytes   int64
	}{
		{"one record and one byte", 1, 1},
		{"small", 40, 4 << 10},
		{"huge", 1 << 30, 1 << 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewPartitionConsumer(PartitionConsumerOptions{Brokers: brokers, Topics: topics, StopAtEnd: true,
				MaxIdle: time.Minute, MaxBufferedRecords: tc.records, MaxBufferedBytes: tc.bytes})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got := drain(t, c, 16, time.Minute, nil)
			if err := sameOrder(got, want); err != nil {
				t.Fatal(err)
			}
			s := c.Buffered()
			// Each topic holds its share, or a single record if that is
			// larger than its share of the bytes.
			if maxRecs := int64(max(len(topics), tc.records)); s.PeakRecords > maxRecs {
				t.Errorf("peak %d records buffered, bound %d", s.PeakRecords, maxRecs)
			}
			t.Logf("peak buffered %d records, %d bytes", s.PeakRecords, s.PeakBytes)
		})
	}
}
