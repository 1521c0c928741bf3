package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/engine"
	"github.com/segd/segd/schemas"
)

const changesUsage = `usage: segd changes --brokers HOST:PORT [--topic T] [--from beginning|end] [--format avro|json] [--exit-at-end]
       segd changes --config FILE [...]     brokers, TLS/SASL, topic and format of segd run
       segd changes --file FILE             JSON lines, e.g. segd replay --output (- for stdin)
Prints segment changes as text, one line each:
  TIME KIND SEGMENT CUSTOMER  (CAUSE [EVENT]) TRAIT=VALUE...
Lines of different partitions are merged in change-time order: a line waits
up to --reorder for partitions that have nothing buffered (with --exit-at-end,
until every partition is read to its end, so the order is exact).`

// runChanges implements `segd changes`: segment changes from a topic or a
// JSON-lines file, printed as text.
func runChanges(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("segd changes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), changesUsage)
		fs.PrintDefaults()
	}
	brokers := fs.String("brokers", "", "comma-separated `HOST:PORT` list (default: kafka.brokers of --config or SEGD_KAFKA_BROKERS)")
	configPath := fs.String("config", "", "the config `FILE` of segd run: brokers, TLS/SASL, kafka.topics.changes, output.format (SEGD_* variables apply, as to segd run)")
	topic := fs.String("topic", "", "the changes topic (default kafka.topics.changes of --config, else "+engine.DefaultChangesTopic+")")
	from := fs.String("from", "beginning", "where to start: beginning or end")
	format := fs.String("format", "", "the topic's encoding, avro or json (default output.format of --config, else avro)")
	follow := fs.Bool("follow", true, "keep waiting for new changes (false: stop at the end, as --exit-at-end)")
	exitAtEnd := fs.Bool("exit-at-end", false, "stop once every partition is read up to its end at the start")
	file := fs.String("file", "", "read changes from this JSON-lines `FILE` (- for stdin) instead of Kafka")
	reorder := fs.Duration("reorder", time.Second, "how long a line waits for other partitions' earlier changes")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "segd changes: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := nonNegativeDuration("--reorder", *reorder); err != nil {
		fmt.Fprintln(stderr, "segd changes:", err)
		return 2
	}
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	if *file != "" {
		if err := printChangesFile(*file, out); err != nil {
			out.Flush()
			fmt.Fprintln(stderr, "segd changes:", err)
			return 1
		}
		return 0
	}
	src := changeSource{topic: *topic, format: *format, reorder: *reorder, stopAtEnd: *exitAtEnd || !*follow}
	switch *from {
	case "beginning":
	case "end":
		src.latest = true
	default:
		fmt.Fprintf(stderr, "segd changes: --from %q: want beginning or end\n", *from)
		return 2
	}
	target, err := loadKafkaTarget(*brokers, *configPath)
	if errors.Is(err, errNoTarget) {
		fmt.Fprintln(stderr, "segd changes: give --brokers, --config or --file (or set SEGD_KAFKA_BROKERS)")
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "segd changes:", err)
		return 1
	}
	src.brokers, src.sec = target.brokers, target.sec
	if cfg := target.cfg; cfg != nil {
		if src.topic == "" {
			src.topic = cfg.Kafka.Topics.Changes
		}
		if src.format == "" {
			src.format = cfg.Output.Format
		}
	}
	if src.topic == "" {
		src.topic = engine.DefaultChangesTopic
	}
	if src.format == "" {
		src.format = "avro"
	}
	if src.format != "avro" && src.format != "json" {
		fmt.Fprintf(stderr, "segd changes: --format %q: want avro or json\n", src.format)
		return 2
	}
	err = src.run(ctx, func(c *schemas.SegmentChange) error {
		if err := writeChangeLine(out, c); err != nil {
			return err
		}
		if src.stopAtEnd {
			return nil
		}
		return out.Flush() // following: show each line as it comes
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		out.Flush()
		fmt.Fprintln(stderr, "segd changes:", err)
		return 1
	}
	return 0
}

// printChangesFile prints the changes of a JSON-lines file in file order.
func printChangesFile(path string, w io.Writer) error {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var c schemas.SegmentChange
	for line := 1; sc.Scan(); line++ {
		b := sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		if err := schemas.DecodeSegmentChangeJSON(b, &c); err != nil {
			return fmt.Errorf("%s:%d: not a segment change: %w", path, line, err)
		}
		if err := writeChangeLine(w, &c); err != nil {
			return err
		}
	}
	return sc.Err()
}

// changeSource reads a changes topic, every partition, and hands the
// decoded changes to a callback in change-time order across partitions:
// a partition's next change goes out once every other partition has a
// change buffered, has reached its end (stopAtEnd), or has had nothing
// for reorder.
type changeSource struct {
	brokers   []string
	sec       *connectors.Security
	topic     string
	format    string
	latest    bool
	stopAtEnd bool
	reorder   time.Duration
}

// partitionRecords is what a partition's reader goroutine sends.
type partitionRecords struct {
	partition int
	msgs      []connectors.Message
	end       bool // the partition is read up to its end (stopAtEnd)
	err       error
}

func (s *changeSource) run(ctx context.Context, fn func(*schemas.SegmentChange) error) error {
	counts, err := (connectors.Cluster{Brokers: s.brokers, Security: s.sec}).PartitionCounts(ctx, []string{s.topic})
	if err != nil {
		return err
	}
	n := counts[s.topic]
	ctx, cancel := context.WithCancel(ctx)
	in := make(chan partitionRecords, n)
	var consumers []*connectors.PartitionConsumer
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		for _, c := range consumers {
			c.Close()
		}
	}()
	for p := 0; p < n; p++ {
		c, err := connectors.NewPartitionConsumer(connectors.PartitionConsumerOptions{
			Brokers: s.brokers, Security: s.sec, Topics: []string{s.topic}, Partition: p,
			Latest: s.latest, StopAtEnd: s.stopAtEnd,
		})
		if err != nil {
			return fmt.Errorf("read %s partition %d: %w", s.topic, p, err)
		}
		consumers = append(consumers, c)
		wg.Add(1)
		go func(p int, c *connectors.PartitionConsumer) {
			defer wg.Done()
			for {
				msgs, err := c.Poll(ctx, nil, time.Second)
				r := partitionRecords{partition: p, msgs: msgs, end: errors.Is(err, io.EOF)}
				if err != nil && !r.end {
					if ctx.Err() != nil {
						return
					}
					r.err = err
				}
				if len(r.msgs) > 0 || r.end || r.err != nil {
					select {
					case in <- r:
					case <-ctx.Done():
						return
					}
				}
				if err != nil {
					return
				}
			}
		}(p, c)
	}
	m := newChangeMerger(n, s.reorder, s.stopAtEnd)
	timer := time.NewTimer(s.reorder)
	defer timer.Stop()
	for {
		now := time.Now()
		for {
			c, ok := m.next(now)
			if !ok {
				break
			}
			if err := fn(c); err != nil {
				return err
			}
		}
		if m.finished() {
			return nil
		}
		timer.Reset(m.wait(now))
		select {
		case r := <-in:
			if r.err != nil {
				return fmt.Errorf("read %s partition %d: %w", s.topic, r.partition, r.err)
			}
			for _, msg := range r.msgs {
				c := new(schemas.SegmentChange)
				var err error
				if s.format == "json" {
					err = schemas.DecodeSegmentChangeJSON(msg.Value, c)
				} else {
					err = schemas.DecodeSegmentChangeAvro(msg.Value, c)
				}
				if err != nil {
					return fmt.Errorf("%s partition %d offset %d is not a %s SegmentChange (is --format right?): %w", s.topic, r.partition, msg.Offset, s.format, err)
				}
				m.add(r.partition, c)
			}
			if r.end {
				m.end(r.partition)
			}
		case <-timer.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// changeMerger orders changes of several partitions by change time. Each
// partition's changes are in its own order already; a change goes out
// when every other partition either has one buffered (so nothing earlier
// can come from it), has ended, or has been empty for window (never, with
// toEnd: every partition will end, and the order is then exact).
type changeMerger struct {
	window  time.Duration
	toEnd   bool
	queues  [][]*schemas.SegmentChange
	ended   []bool
	emptyAt []time.Time // when each queue last became empty
}

func newChangeMerger(n int, window time.Duration, toEnd bool) *changeMerger {
	m := &changeMerger{window: window, toEnd: toEnd, queues: make([][]*schemas.SegmentChange, n), ended: make([]bool, n), emptyAt: make([]time.Time, n)}
	now := time.Now()
	for i := range m.emptyAt {
		m.emptyAt[i] = now
	}
	return m
}

func (m *changeMerger) add(p int, c *schemas.SegmentChange) {
	m.queues[p] = append(m.queues[p], c)
}

func (m *changeMerger) end(p int) { m.ended[p] = true }

// next returns the next change that may go out at now.
func (m *changeMerger) next(now time.Time) (*schemas.SegmentChange, bool) {
	best := -1
	for p, q := range m.queues {
		if len(q) > 0 && (best < 0 || q[0].Time < m.queues[best][0].Time) {
			best = p
		}
	}
	if best < 0 {
		return nil, false
	}
	for p, q := range m.queues {
		if len(q) == 0 && !m.ended[p] && (m.toEnd || now.Sub(m.emptyAt[p]) < m.window) {
			return nil, false // p may still deliver something earlier
		}
	}
	c := m.queues[best][0]
	m.queues[best][0] = nil
	m.queues[best] = m.queues[best][1:]
	if len(m.queues[best]) == 0 {
		m.emptyAt[best] = now
	}
	return c, true
}

// wait is how long until next may have something without new input.
func (m *changeMerger) wait(now time.Time) time.Duration {
	d := m.window
	for p, q := range m.queues {
		if len(q) == 0 && !m.ended[p] {
			d = min(d, m.window-now.Sub(m.emptyAt[p]))
		}
	}
	return max(d, time.Millisecond)
}

// finished reports whether every partition ended and everything went out.
func (m *changeMerger) finished() bool {
	for p, q := range m.queues {
		if len(q) > 0 || !m.ended[p] {
			return false
		}
	}
	return true
}
