package connectors

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/segd/segd/schemas"
)

func startBroker(t *testing.T, partitions int32, topics ...string) []string {
	t.Helper()
	b, err := StartEmbeddedBroker(0, partitions, topics...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b.Addrs()
}

// testProducer is a producer to brokers with the default options, closed
// when the test ends.
func testProducer(tb testing.TB, brokers []string) *Producer {
	tb.Helper()
	p, err := NewProducer(brokers, ProducerOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// The consumer merges a partition's topics by record timestamp, whatever
// order they were produced in, and stops at the end with StopAtEnd.
func TestPartitionConsumerMergesByTimestamp(t *testing.T) {
	brokers := startBroker(t, 1, "a", "b", "c")
	prod, err := NewProducer(brokers, ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	// Topic a gets even seconds, b odd, c every third; written topic by topic.
	want := map[string][]int{"a": {0, 2, 4, 6, 8}, "b": {1, 3, 5, 7, 9}, "c": {0, 3, 6, 9}}
	for _, topic := range []string{"c", "b", "a"} {
		var msgs []Message
		for _, s := range want[topic] {
			msgs = append(msgs, Message{Topic: topic, Key: []byte("k"), Value: []byte(fmt.Sprintf("%s%d", topic, s)), Time: base.Add(time.Duration(s) * time.Second)})
		}
		if err := prod.Write(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
	}
	c, err := NewPartitionConsumer(PartitionConsumerOptions{Brokers: brokers, Topics: []string{"a", "b", "c"}, Partition: 0, StopAtEnd: true, MaxIdle: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []string
	for {
		msgs, err := c.Poll(context.Background(), make([]Message, 0, 4), time.Second)
		for _, m := range msgs {
			got = append(got, string(m.Value))
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// Ties (same second) go in topic order: a before c, b before c.
	wantOrder := "a0 c0 b1 a2 b3 c3 a4 b5 a6 c6 b7 a8 b9 c9"
	if strings.Join(got, " ") != wantOrder {
		t.Fatalf("merge order:\n got %s\nwant %s", strings.Join(got, " "), wantOrder)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestCoPartitionCheck(t *testing.T) {
	brokers := startBroker(t, 3, "x", "y")
	b2, err := StartEmbeddedBroker(0, 4, "z")
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	n, err := (Cluster{Brokers: brokers, Security: nil}).CheckCoPartitioned(context.Background(), []string{"x", "y"})
	if err != nil || n != 3 {
		t.Fatalf("got %d %v", n, err)
	}
	if err := (Cluster{Brokers: brokers, Security: nil}).EnsureTopics(context.Background(), []TopicSpec{{Name: "w", Partitions: 5}}); err != nil {
		t.Fatal(err)
	}
	_, err = (Cluster{Brokers: brokers, Security: nil}).CheckCoPartitioned(context.Background(), []string{"x", "w"})
	if err == nil || !strings.Contains(err.Error(), "x=3, w=5") || !strings.Contains(err.Error(), "not co-partitioned") {
		t.Fatalf("got %v", err)
	}
	_, err = (Cluster{Brokers: brokers, Security: nil}).CheckCoPartitioned(context.Background(), []string{"x", "missing"})
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("got %v", err)
	}
}

// A fake registry over real HTTP: the Confluent decoder fetches a schema
// once, caches it, and classifies unknown ids.
func TestConfluentDecoderWithRegistry(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/schemas/ids/7" {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error_code":40403,"message":"Schema not found"}`))
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"schema": schemas.SchemaText(schemas.EventBrowse)})
	}))
	defer srv.Close()
	reg := NewRegistry(srv.URL, RegistryOptions{})
	dec, err := NewDecoder(DecoderOptions{Type: schemas.EventBrowse, Format: FormatConfluent, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	codec, _ := schemas.NewAvroCodec(schemas.EventBrowse, schemas.SchemaText(schemas.EventBrowse))
	ev := schemas.Event{Type: schemas.EventBrowse, EventID: "e", CustomerID: "c", Time: 1700000000000, Category: "shoes"}
	payload, _ := codec.AppendEncode(schemas.AppendConfluentHeader(nil, 7), &ev)
	for i := 0; i < 3; i++ {
		var e schemas.Event
		if err := dec.Decode(payload, &e); err != nil || e.Category != "shoes" {
			t.Fatalf("%+v %v", e, err)
		}
	}
	if hits.Load() != 1 {
		t.Fatalf("registry hit %d times, want 1 (cached)", hits.Load())
	}
	unknown, _ := codec.AppendEncode(schemas.AppendConfluentHeader(nil, 8), &ev)
	cases := []struct {
		value  []byte
		reason schemas.Reason
	}{
		{unknown, schemas.ReasonUnknownSchemaID},
		{[]byte{1, 2, 3, 4, 5, 6}, schemas.ReasonBadMagic},
	}
	for _, c := range cases {
		var de *schemas.DecodeError
		if err := dec.Decode(c.value, &schemas.Event{}); !errors.As(err, &de) || de.Reason != c.reason {
			t.Errorf("got %v, want %s", err, c.reason)
		}
	}
}

// TestCoPartitionBalancer: whatever order the metadata lists partitions
// in, every member gets the same partition numbers of every topic, and
// every partition goes to exactly one member.
func TestCoPartitionBalancer(t *testing.T) {
	topics := []string{"a", "b", "c"}
	for _, tc := range []struct{ members, partitions int }{{1, 4}, {2, 4}, {3, 4}, {3, 7}, {5, 3}} {
		var parts []kafka.Partition
		for _, topic := range topics {
			for i := tc.partitions - 1; i >= 0; i-- { // unsorted on purpose
				parts = append(parts, kafka.Partition{Topic: topic, ID: i})
			}
		}
		var members []kafka.GroupMember
		for i := tc.members; i > 0; i-- {
			members = append(members, kafka.GroupMember{ID: fmt.Sprintf("m%d", i), Topics: topics})
		}
		got := coPartitionBalancer{}.AssignGroups(members, parts)
		owner := map[string]string{}
		for m, byTopic := range got {
			ref := fmt.Sprint(byTopic["a"])
			for _, topic := range topics {
				if fmt.Sprint(byTopic[topic]) != ref {
					t.Fatalf("%+v: member %s got %s of a but %v of %s", tc, m, ref, byTopic[topic], topic)
				}
				for _, n := range byTopic[topic] {
					k := fmt.Sprintf("%s/%d", topic, n)
					if prev, dup := owner[k]; dup {
						t.Fatalf("%+v: %s assigned to %s and %s", tc, k, prev, m)
					}
					owner[k] = m
				}
			}
		}
		if len(owner) != len(topics)*tc.partitions {
			t.Fatalf("%+v: %d of %d partitions assigned", tc, len(owner), len(topics)*tc.partitions)
		}
	}
}

// lostRanges collects OnRecordsLost reports.
type lostRanges struct {
	mu  sync.Mutex
	got []string
}

func (l *lostRanges) add(topic string, from, to int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, fmt.Sprintf("%s[%d,%d)", topic, from, to))
}

func (l *lostRanges) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.got, " ")
}

// produceN writes values first..first+n-1 to topic.
func produceN(t *testing.T, brokers []string, topic string, first, n int) {
	t.Helper()
	prod, err := NewProducer(brokers, ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var msgs []Message
	for i := first; i < first+n; i++ {
		msgs = append(msgs, Message{Topic: topic, Key: []byte("k"), Value: []byte(strconv.Itoa(i))})
	}
	if err := prod.Write(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// pollOffsets polls until the consumer delivered the record at offset last
// and returns the offsets delivered.
func pollOffsets(t *testing.T, c *PartitionConsumer, last int64) []int64 {
	t.Helper()
	var got []int64
	deadline := time.Now().Add(30 * time.Second)
	for len(got) == 0 || got[len(got)-1] < last {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: delivered %v, want up to offset %d", got, last)
		}
		msgs, err := c.Poll(context.Background(), nil, 200*time.Millisecond)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		for _, m := range msgs {
			got = append(got, m.Offset)
		}
	}
	return got
}

// Records Kafka deleted before the consumer read them are reported, both
// below a stored offset and while reading (kafka-go's reader skips them
// without a word).
func TestPartitionConsumerReportsDeletedRecords(t *testing.T) {
	b, err := StartEmbeddedBroker(0, 1, "stored", "live")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	brokers := b.Addrs()

	t.Run("below the stored offset", func(t *testing.T) {
		produceN(t, brokers, "stored", 0, 100)
		if err := b.DeleteRecords("stored", 0, 40); err != nil {
			t.Fatal(err)
		}
		var lost lostRanges
		c, err := NewPartitionConsumer(PartitionConsumerOptions{Brokers: brokers, Topics: []string{"stored"}, Offsets: map[string]int64{"stored": 10}, OnRecordsLost: lost.add})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if lag := c.StartLag()["stored"]; lag != 60 {
			t.Fatalf("start lag %d, want 60 (log 40..99, nothing read)", lag)
		}
		got := pollOffsets(t, c, 99)
		if got[0] != 40 || len(got) != 60 {
			t.Fatalf("delivered %d records from offset %d, want 60 from 40", len(got), got[0])
		}
		if lost.String() != "stored[10,40)" {
			t.Fatalf("reported lost %q, want stored[10,40)", lost.String())
		}
	})

	t.Run("while reading", func(t *testing.T) {
		produceN(t, brokers, "live", 0, 20)
		var lost lostRanges
		c, err := NewPartitionConsumer(PartitionConsumerOptions{Brokers: brokers, Topics: []string{"live"}, Offsets: map[string]int64{"live": 0}, OnRecordsLost: lost.add})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := pollOffsets(t, c, 19); len(got) != 20 {
			t.Fatalf("delivered %d records, want 20", len(got))
		}
		// Hold the reader off (its fetches fail) while records 20..99
		// arrive and 20..59 are deleted, the way retention overtakes a
		// consumer that fell behind.
		var blocked atomic.Bool
		blocked.Store(true)
		b.c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
			b.c.KeepControl()
			if blocked.Load() {
				return nil, errors.New("fetch held off by the test"), true
			}
			return nil, nil, false
		})
		produceN(t, brokers, "live", 20, 80)
		if err := b.DeleteRecords("live", 0, 60); err != nil {
			t.Fatal(err)
		}
		blocked.Store(false)
		got := pollOffsets(t, c, 99)
		if got[0] != 60 || len(got) != 40 {
			t.Fatalf("after the deletion delivered %d records from offset %d, want 40 from 60", len(got), got[0])
		}
		if lost.String() != "live[20,60)" {
			t.Fatalf("reported lost %q, want live[20,60)", lost.String())
		}
	})
}

// Clients segd makes and drops (a changelog writer per partition and
// generation, producers, group offset committers) leave no connections or
// goroutines behind once closed: kafka-go's transports run a metadata
// goroutine per broker until told to stop.
func TestClosedClientsLeaveNothingRunning(t *testing.T) {
	brokers := startBroker(t, 1, "leak")
	use := func() {
		prod, err := NewProducer(brokers, ProducerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := prod.Write(context.Background(), Message{Topic: "leak", Key: []byte("k"), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
		prod.Close()
		w := (Cluster{Brokers: brokers, Security: nil}).ChangelogWriter("leak")
		if _, err := w.Write(context.Background(), 0, []ChangelogRecord{{Key: []byte("k"), Value: []byte("v")}}); err != nil {
			t.Fatal(err)
		}
		w.Close()
		w.Close()
		gc := (Cluster{Brokers: brokers, Security: nil}).GroupOffsetCommitter("leak-group")
		if err := gc.Commit(context.Background(), 0, map[string]int64{"leak": 1}); err != nil {
			t.Fatal(err)
		}
		gc.Close()
		gc.Close()
	}
	use() // warm up whatever lives once per process
	settle := func() int {
		// Closed connections' goroutines wind down asynchronously.
		n, last := runtime.NumGoroutine(), -1
		for deadline := time.Now().Add(5 * time.Second); n != last && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			last, n = n, runtime.NumGoroutine()
		}
		return n
	}
	before := settle()
	for i := 0; i < 10; i++ {
		use()
	}
	var after int
	deadline := time.Now().Add(10 * time.Second)
	for after = settle(); after > before+2 && time.Now().Before(deadline); after = settle() {
	}
	if after > before+2 {
		t.Fatalf("%d goroutines before 10 rounds of closed clients, %d after", before, after)
	}
}

// PartitionFor must agree with kafka-go's Murmur2Balancer (which producers
// use), or replays would split customers differently from the topics.
func TestPartitionForMatchesKafkaGo(t *testing.T) {
	for n := 1; n <= 64; n *= 2 {
		parts := make([]int, n+1)
		for i := range parts {
			parts[i] = i
		}
		for i := 0; i < 2000; i++ {
			key := []byte(fmt.Sprintf("customer-%d-%s", i, strings.Repeat("x", i%7)))
			want := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: key}, parts...)
			if got := PartitionFor(key, n+1); got != want {
				t.Fatalf("PartitionFor(%q, %d) = %d, kafka-go %d", key, n+1, got, want)
			}
		}
	}
}

// TestProducerSendsACallAsOneBatch: a Write of many records for one
// partition goes out as one produce request.
func TestProducerSendsACallAsOneBatch(t *testing.T) {
	b, err := StartEmbeddedBroker(0, 1, "one")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var produces atomic.Int32
	b.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.c.KeepControl()
		produces.Add(1)
		return nil, nil, false
	})
	p := testProducer(t, b.Addrs())
	msgs := make([]Message, 500)
	for i := range msgs {
		msgs[i] = Message{Topic: "one", Key: []byte("k"), Value: bytes.Repeat([]byte("v"), 100)}
	}
	for round := 1; round <= 3; round++ {
		if err := p.Write(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
		if n := produces.Load(); n != int32(round) {
			t.Fatalf("after %d writes of 500 records: %d produce requests, want %d", round, n, round)
		}
	}
}

// A fetch whose response starts arriving later than FetchMaxWait allows
// is retried by kafka-go's reader on its own, and was retried forever in
// silence: it now reaches OnFetchError, and the records arrive once the
// broker answers in time again.
func TestSlowFetchResponsesAreReported(t *testing.T) {
	b, err := StartEmbeddedBroker(0, 1, "slow")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	brokers := b.Addrs()
	produceN(t, brokers, "slow", 0, 5)
	var slow atomic.Bool
	slow.Store(true)
	b.c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.c.KeepControl()
		if slow.Load() {
			time.Sleep(150 * time.Millisecond) // the broker, answering late
		}
		return nil, nil, false
	})
	var mu sync.Mutex
	var heard []string
	c, err := NewPartitionConsumer(PartitionConsumerOptions{
		Brokers: brokers, Topics: []string{"slow"}, Offsets: map[string]int64{"slow": 0},
		FetchMaxWait: 20 * time.Millisecond,
		OnFetchError: func(topic string, err error) {
			mu.Lock()
			defer mu.Unlock()
			heard = append(heard, topic+": "+err.Error())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(heard)
		first := ""
		if n > 0 {
			first = heard[0]
		}
		mu.Unlock()
		if n > 0 {
			if !strings.HasPrefix(first, "slow: ") || !strings.Contains(first, "timeout") {
				t.Fatalf("heard %q, want a timeout on topic slow", first)
			}
			t.Logf("heard %q", first)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no fetch error heard while every fetch response came after FetchMaxWait")
		}
		time.Sleep(10 * time.Millisecond)
	}
	slow.Store(false)
	if got := pollOffsets(t, c, 4); len(got) != 5 {
		t.Fatalf("delivered %d records once the broker answered in time, want 5", len(got))
	}
}
