package engine

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
)

// restoreFixture writes a compacted-looking changelog of one partition to
// a broker (one record per customer, values of valueBytes, plus the
// partition's offsets) and returns an engine whose fresh store restores
// it.
func restoreFixture(tb testing.TB, brokers []string, customers, valueBytes int) (*Engine, string) {
	tb.Helper()
	topic := fmt.Sprintf("restore%d-changelog", time.Now().UnixNano())
	ctx := context.Background()
	if err := (connectors.Cluster{Brokers: brokers, Security: nil}).EnsureTopics(ctx, []connectors.TopicSpec{{Name: topic, Partitions: 1, Compacted: true,
		Configs: map[string]string{"max.message.bytes": fmt.Sprint(changelogMaxMessage)}}}); err != nil {
		tb.Fatal(err)
	}
	w := (connectors.Cluster{Brokers: brokers, Security: nil}).ChangelogWriter(topic)
	defer w.Close()
	// Keys follow the store's layout (docs/state.md): keyspace byte,
	// partition number (4 bytes big-endian), customer id.
	key := func(ks byte, rest string) []byte {
		k := binary.BigEndian.AppendUint32([]byte{ks}, 0)
		return append(k, rest...)
	}
	value := make([]byte, valueBytes)
	for i := range value {
		value[i] = byte(i * 7)
	}
	var recs []connectors.ChangelogRecord
	for i := 0; i < customers; i++ {
		recs = append(recs, connectors.ChangelogRecord{Key: key('c', fmt.Sprintf("c%08d", i)), Value: value})
		if len(recs) == 4000 || i == customers-1 {
			if _, err := w.Write(ctx, 0, recs); err != nil {
				tb.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	off := binary.BigEndian.AppendUint64(nil, 12345)
	if _, err := w.Write(ctx, 0, []connectors.ChangelogRecord{{Key: key('o', "customer.purchases"), Value: off}}); err != nil {
		tb.Fatal(err)
	}
	cfg := &Config{}
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.Topics.Changelog = topic
	cfg.Rules.File = "../examples/rules.yaml"
	cfg.State.Dir = filepath.Join(tb.TempDir(), "state")
	cfg.API.Addr = "off"
	cfg.EnsureDefaults()
	e, err := New(cfg, Options{Logger: zerolog.Nop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	return e, topic
}

func restoreBrokers(tb testing.TB) []string {
	if b := os.Getenv("SEGD_KAFKA_BROKERS"); b != "" {
		return strings.Split(b, ",")
	}
	eb, err := connectors.StartEmbeddedBroker(0, 1)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { eb.Close() })
	return eb.Addrs()
}

// TestRestoreRebuildsEveryCustomer: a partition restored from its
// changelog holds every customer and the offsets, and then counts as
// synced to the changelog's end (so a restart keeps it).
func TestRestoreRebuildsEveryCustomer(t *testing.T) {
	e, topic := restoreFixture(t, restoreBrokers(t), 5000, 180)
	if err := e.prepareState(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if n, err := e.st.CountCustomers(0); err != nil || n != 5000 {
		t.Fatalf("restored %d customers (%v), want 5000", n, err)
	}
	offs, err := e.st.CommittedOffsets(0)
	if err != nil || offs["customer.purchases"] != 12345 {
		t.Fatalf("restored offsets %v (%v)", offs, err)
	}
	end, err := (connectors.Cluster{Brokers: e.cfg.Kafka.Brokers, Security: nil}).ChangelogEnd(context.Background(), topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	synced, ok, err := e.st.SyncedEnd(0)
	if err != nil || !ok || synced != end {
		t.Fatalf("synced end %d %v %v, changelog end %d", synced, ok, err, end)
	}
	if d, _ := decideRestore(synced, ok, end); d != keepLocal {
		t.Fatal("a just-restored partition would be restored again")
	}
}

// BenchmarkRestore measures how fast a partition is rebuilt from a
// compacted changelog: 100,000 customers of 180 B (the mean encoded
// record measured by BenchmarkDiskBytesPerCustomer), from the embedded
// broker, or from real Kafka with SEGD_KAFKA_BROKERS. Reports
// customers/s. Run with -benchtime 1x.
func BenchmarkRestore(b *testing.B) {
	const customers = 100_000
	brokers := restoreBrokers(b)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e, _ := restoreFixture(b, brokers, customers, 180)
		b.StartTimer()
		start := time.Now()
		if err := e.prepareState(context.Background(), 0); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.ReportMetric(float64(customers)/took.Seconds(), "customers/s")
		b.ReportMetric(float64(customers*(180+14))/took.Seconds()/1e6, "MB/s")
	}
}

// TestDecideRestore covers every case of the keep-or-restore decision.
func TestDecideRestore(t *testing.T) {
	for _, tc := range []struct {
		synced int64
		have   bool
		end    int64
		want   restoreDecision
	}{
		{0, false, 0, keepLocal},             // new group, new store
		{0, false, 10, restoreFromChangelog}, // new store (lost disk, new instance)
		{10, true, 10, keepLocal},            // nobody wrote since this store did
		{10, true, 25, restoreFromChangelog}, // another instance ran the partition meanwhile
		{30, true, 25, keepLocal},            // changelog truncated: keep, loudly
	} {
		if got, why := decideRestore(tc.synced, tc.have, tc.end); got != tc.want {
			t.Errorf("decideRestore(%d, %v, %d) = %v (%s), want %v", tc.synced, tc.have, tc.end, got, why, tc.want)
		}
	}
}
