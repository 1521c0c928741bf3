package engine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
)

// TestChangelogAcknowledgementReleasesBeforeFilesGo: the changelog's
// acknowledgement releases the commit's changes (sent, the outbox
// publisher's wake-up) before the local log's files of the sent entries
// are removed. A removal syncs the store's write-ahead log first, which
// took up to 25 ms on the latency benchmark's machine: released after it,
// the changes waited for the sync. While run runs, the files go on its
// remover goroutine, so the next entries do not wait for the sync either;
// a flush (a hand-over, run stopped) removes them itself.
func TestChangelogAcknowledgementReleasesBeforeFilesGo(t *testing.T) {
	_, brokers := startTestBroker(t)
	const topic = "segd.test.changelog"
	cluster := connectors.Cluster{Brokers: brokers}
	if err := cluster.EnsureTopics(context.Background(), []connectors.TopicSpec{{Name: topic, Partitions: 1}}); err != nil {
		t.Fatal(err)
	}
	for _, viaRun := range []bool{true, false} {
		t.Run(fmt.Sprintf("run=%v", viaRun), func(t *testing.T) {
			h := newHarness(t, testRules)
			if err := h.part.EnableChangelog(); err != nil {
				t.Fatal(err)
			}
			proc := jsonPurchaseProcessor(t, h)
			now := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
			tk := openTask(0, proc, nil, nil, nil, taskOptions{idleAfter: -1, now: func() time.Time { return now }}, zerolog.Nop(), nil)
			m := connectors.Message{Topic: DefaultPurchasesTopic, Value: []byte(fmt.Sprintf(
				`{"type":"purchase","event_id":"o1","customer_id":"c1","ts":%d,"amount":1}`, now.Add(-time.Minute).UnixMilli()))}
			if err := tk.handle(&m); err != nil {
				t.Fatal(err)
			}
			if err := tk.commit(); err != nil {
				t.Fatal(err)
			}
			logFiles := func() int {
				names, err := h.fs.List("db/changelog/0")
				if err != nil {
					t.Error(err)
				}
				n := 0
				for _, name := range names {
					if strings.HasSuffix(name, ".clog") {
						n++
					}
				}
				return n
			}
			if logFiles() == 0 {
				t.Fatal("the commit wrote no changelog log file: the case is not exercised")
			}
			w := cluster.ChangelogWriter(topic)
			t.Cleanup(func() { w.Close() })
			c := newChangelogPublisher(h.part, w, zerolog.Nop(), nil)
			var mu sync.Mutex
			var atSent []int // log files when the changes were released
			var released []uint64
			c.sent = func() {
				mu.Lock()
				defer mu.Unlock()
				atSent = append(atSent, logFiles())
				released = append(released, h.part.OutboxReleased())
			}
			if viaRun {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() {
					defer close(done)
					c.run(ctx)
				}()
				c.poke()
				deadline := time.Now().Add(10 * time.Second)
				for logFiles() > 0 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				cancel()
				<-done
			} else if err := c.flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(atSent) != 1 {
				t.Fatalf("the changelog publisher acknowledged %d times, want 1", len(atSent))
			}
			if atSent[0] == 0 {
				t.Error("the commit's changes were released after the log files of its sent entry were removed (and the store synced for it)")
			}
			if released[0] != h.part.OutboxCommitted() {
				t.Errorf("released up to outbox entry %d at the acknowledgement, want the committed %d", released[0], h.part.OutboxCommitted())
			}
			if n := logFiles(); n != 0 {
				t.Errorf("%d log files of sent entries left", n)
			}
		})
	}
}
