// Command goka-baseline is the benchmark's baseline: the standard traits
// and segments as an engineer would run them with github.com/lovoo/goka, a
// popular Go stream-processing library. One goka processor consumes the
// four input topics (co-partitioned), keeps each customer's state in goka's
// group table (persistent LevelDB storage plus a compacted changelog topic,
// goka's defaults), and emits ENTER/EXIT records to a topic.
//
// To compare speed and nothing else, the baseline reuses segd's event
// decoder, rule compiler and SegmentChange encoder, so both systems compute
// the same thing with the same code per event; what differs is the
// streaming runtime: goka reads and writes its storage and its changelog
// on every event, segd caches state in memory and commits in batches.
// goka has no timers, so time-based exits happen only on the customer's
// next event; the final memberships are compared at one clock.
//
// It lives in its own module so goka and sarama stay out of segd's go.mod.
// The benchmark driver (bench/cmd/segd-bench) runs it; by hand:
//
//	go run . --brokers 127.0.0.1:9092 --rules ../standard.yaml --events N --end T
//
// It prints one JSON object: events, seconds, changes, and the memberships
// at clock --end (per-segment sizes and a digest of the sorted
// customer/segment pairs).
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/lovoo/goka"
	"github.com/lovoo/goka/codec"
	"github.com/lovoo/goka/storage"

	"github.com/segd/segd/bench/membership"
	"github.com/segd/segd/connectors"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
)

type result struct {
	Events  int64            `json:"events"`
	Seconds float64          `json:"seconds"`
	Changes int64            `json:"changes"`
	Sizes   map[string]int64 `json:"sizes"`
	Digest  string           `json:"digest"`
}

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "Kafka bootstrap address")
	rulesFile := flag.String("rules", "../standard.yaml", "rules file")
	group := flag.String("group", "goka-baseline", "goka group (also names its table topic)")
	events := flag.Int64("events", 0, "stop after this many input records")
	end := flag.Int64("end", 0, "clock (Unix ms) at which to report memberships")
	dir := flag.String("storage", "", "storage directory (default: a temporary one)")
	topics := flag.String("topics", "customer.purchases,customer.browses,customer.engagements,customer.profiles", "the purchase, browse, engagement and profile topics")
	changes := flag.String("changes", "goka.changes", "output topic")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	if *events <= 0 {
		log.Fatal("--events is required")
	}
	names := strings.Split(*topics, ",")
	if len(names) != 4 {
		log.Fatalf("--topics: want 4 comma-separated names, got %q", *topics)
	}
	res, err := run(*brokers, *rulesFile, *group, names, *changes, *dir, *events, *end, *timeout)
	if err != nil {
		log.Fatal(err)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

// customerState is the value goka stores per customer: the clock it was
// last evaluated at, the memberships (bit i = segment i) with per-segment
// transition counts, and segd's trait state encoding.
type customerState struct {
	clock   int64 // the latest event time seen: the customer's clock
	members uint64
	seqs    []uint64
	traits  *rules.State
}

func (c *customerState) appendBinary(dst []byte) []byte {
	dst = binary.AppendVarint(dst, c.clock)
	dst = binary.AppendUvarint(dst, c.members)
	dst = binary.AppendUvarint(dst, uint64(len(c.seqs)))
	for _, s := range c.seqs {
		dst = binary.AppendUvarint(dst, s)
	}
	return c.traits.AppendBinary(dst)
}

func decodeState(rs *rules.RuleSet, data []byte, c *customerState) error {
	n := len(rs.Segments())
	c.members, c.clock = 0, 0
	if cap(c.seqs) < n {
		c.seqs = make([]uint64, n)
	}
	c.seqs = c.seqs[:n]
	clear(c.seqs)
	if len(data) == 0 {
		c.traits.Reset()
		return nil
	}
	clock, k := binary.Varint(data)
	if k <= 0 {
		return errors.New("bad clock")
	}
	c.clock, data = clock, data[k:]
	v, k := binary.Uvarint(data)
	if k <= 0 {
		return errors.New("bad members")
	}
	c.members, data = v, data[k:]
	cnt, k := binary.Uvarint(data)
	if k <= 0 || cnt > uint64(n) {
		return errors.New("bad seq count")
	}
	data = data[k:]
	for i := 0; i < int(cnt); i++ {
		s, k := binary.Uvarint(data)
		if k <= 0 {
			return errors.New("bad seq")
		}
		c.seqs[i], data = s, data[k:]
	}
	return rs.DecodeState(data, c.traits)
}

type scratch struct {
	c      customerState
	e      schemas.Event
	res    []bool
	change schemas.SegmentChange
}

func run(brokers, rulesFile, group string, topics []string, changesTopic, dir string, events, end int64, timeout time.Duration) (*result, error) {
	rs, err := rules.CompileFile(rulesFile)
	if err != nil {
		return nil, err
	}
	if len(rs.Segments()) > 64 {
		return nil, fmt.Errorf("%d segments: the baseline keeps memberships in 64 bits", len(rs.Segments()))
	}
	if dir == "" {
		dir, err = os.MkdirTemp("", "goka-baseline-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	cfg := goka.DefaultConfig()
	cfg.Version = sarama.V2_8_0_0
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	// The same durability segd uses for its output (acks=all).
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	goka.ReplaceGlobalConfig(cfg)
	tmc := goka.NewTopicManagerConfig()
	tmc.Table.Replication = 1
	tmc.Stream.Replication = 1

	inputs := []struct {
		topic string
		typ   schemas.EventType
	}{{topics[0], schemas.EventPurchase}, {topics[1], schemas.EventBrowse}, {topics[2], schemas.EventEngagement}, {topics[3], schemas.EventProfile}}
	var decoders [schemas.NumEventTypes]*connectors.Decoder
	for _, in := range inputs {
		d, err := connectors.NewDecoder(connectors.DecoderOptions{Type: in.typ, Format: connectors.FormatAvro})
		if err != nil {
			return nil, err
		}
		decoders[in.typ] = d
	}
	pool := sync.Pool{New: func() any {
		return &scratch{c: customerState{traits: rs.NewState()}}
	}}
	var processed, emitted atomic.Int64
	done := make(chan struct{})
	var doneOnce sync.Once
	segs := rs.Segments()
	all := make([]int, len(segs))
	for i := range all {
		all[i] = i
	}
	callback := func(typ schemas.EventType) goka.ProcessCallback {
		return func(ctx goka.Context, msg any) {
			sc := pool.Get().(*scratch)
			defer pool.Put(sc)
			defer func() {
				if processed.Add(1) == events {
					doneOnce.Do(func() { close(done) })
				}
			}()
			e := &sc.e
			e.Reset()
			if err := decoders[typ].Decode(msg.([]byte), e); err != nil {
				return // segd dead-letters these; the workload has none
			}
			if e.CustomerID == "" {
				e.CustomerID = ctx.Key()
			}
			var old []byte
			if v := ctx.Value(); v != nil {
				old = v.([]byte)
			}
			if err := decodeState(rs, old, &sc.c); err != nil {
				ctx.Fail(err)
			}
			// goka reads the four topics independently, so a customer's
			// events can arrive out of time order: the clock only moves
			// forward.
			sc.c.clock = max(sc.c.clock, e.Time)
			now := sc.c.clock
			rs.Apply(sc.c.traits, e, now)
			sc.res = rs.EvalSegments(sc.c.traits, now, all, sc.res[:0])
			for i, in := range sc.res {
				was := sc.c.members&(1<<uint(i)) != 0
				if in == was {
					continue
				}
				sc.c.members ^= 1 << uint(i)
				sc.c.seqs[i]++
				ch := &sc.change
				*ch = schemas.SegmentChange{
					CustomerID: e.CustomerID, SegmentID: segs[i].ID, Seq: sc.c.seqs[i], Time: now,
					Cause: schemas.CauseEvent, CauseEventID: e.EventID, RulesVersion: rs.Version(), RulesHash: rs.Hash(),
				}
				if in {
					ch.Kind = schemas.Enter
				} else {
					ch.Kind = schemas.Exit
				}
				ch.ID = e.CustomerID + ":" + segs[i].ID + ":" + strconv.FormatUint(ch.Seq, 10) + ":" + strconv.FormatInt(now, 10)
				for _, ti := range segs[i].Reads {
					ch.Traits = append(ch.Traits, schemas.TraitValue{Name: rs.Traits()[ti].Name, Value: rs.TraitValue(ti, sc.c.traits, now)})
				}
				out, err := schemas.AppendSegmentChangeAvro(nil, ch)
				if err != nil {
					ctx.Fail(err)
				}
				ctx.Emit(goka.Stream(changesTopic), e.CustomerID, out)
				emitted.Add(1)
			}
			ctx.SetValue(sc.c.appendBinary(nil))
		}
	}
	edges := []goka.Edge{}
	for _, in := range inputs {
		edges = append(edges, goka.Input(goka.Stream(in.topic), new(codec.Bytes), callback(in.typ)))
	}
	edges = append(edges, goka.Output(goka.Stream(changesTopic), new(codec.Bytes)), goka.Persist(new(codec.Bytes)))
	gg := goka.DefineGroup(goka.Group(group), edges...)
	proc, err := goka.NewProcessor([]string{brokers}, gg,
		goka.WithTopicManagerBuilder(goka.TopicManagerBuilderWithTopicManagerConfig(tmc)),
		goka.WithStorageBuilder(storage.DefaultBuilder(filepath.Join(dir, "storage"))),
		goka.WithLogger(log.New(io.Discard, "", 0)),
	)
	if err != nil {
		return nil, fmt.Errorf("goka processor: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	start := time.Now()
	go func() { runErr <- proc.Run(ctx) }()
	select {
	case <-done:
	case err := <-runErr:
		return nil, fmt.Errorf("goka run ended early after %d events: %v", processed.Load(), err)
	case <-time.After(timeout):
		return nil, fmt.Errorf("timeout after %d of %d events", processed.Load(), events)
	}
	elapsed := time.Since(start)
	res := &result{Events: processed.Load(), Seconds: elapsed.Seconds(), Changes: emitted.Load(), Sizes: map[string]int64{}}
	// Memberships at the end clock, from goka's own storage.
	cancel()
	if rerr := <-runErr; rerr != nil && !errors.Is(rerr, context.Canceled) {
		return nil, fmt.Errorf("goka run: %w", rerr)
	}
	var pairs []string
	sc := &scratch{c: customerState{traits: rs.NewState()}}
	for i := range segs {
		res.Sizes[segs[i].ID] = 0
	}
	table := string(goka.GroupTable(goka.Group(group)))
	err = forEachStored(filepath.Join(dir, "storage"), table, func(key string, value []byte) error {
		if err := decodeState(rs, value, &sc.c); err != nil {
			return fmt.Errorf("customer %s: %w", key, err)
		}
		sc.res = rs.EvalSegments(sc.c.traits, end, all, sc.res[:0])
		for i, in := range sc.res {
			if in {
				res.Sizes[segs[i].ID]++
				pairs = append(pairs, membership.Pair(key, segs[i].ID))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Digest = membership.Digest(pairs)
	return res, nil
}

// forEachStored visits every customer in the processor's table, reading
// goka's LevelDB storage of each partition after the processor stopped.
func forEachStored(dir, table string, fn func(key string, value []byte) error) error {
	parts, err := filepath.Glob(filepath.Join(dir, table+".*"))
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return fmt.Errorf("no storage for table %s under %s", table, dir)
	}
	for _, path := range parts {
		n, err := strconv.Atoi(filepath.Ext(path)[1:])
		if err != nil {
			continue
		}
		st, err := storage.DefaultBuilder(dir)(table, int32(n))
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		if err := st.Open(); err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		it, err := st.Iterator()
		if err != nil {
			st.Close()
			return err
		}
		for it.Next() {
			key := string(it.Key())
			if strings.HasPrefix(key, "__") {
				continue // goka's own offset bookkeeping
			}
			v, err := it.Value()
			if err == nil {
				err = fn(key, v)
			}
			if err != nil {
				it.Release()
				st.Close()
				return err
			}
		}
		err = it.Err()
		it.Release()
		st.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
