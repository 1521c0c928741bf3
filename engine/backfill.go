package engine

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/internal/kpart"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/segment"
)

// Backfill rebuilds the state of cfg (whose state.dir must be empty) from
// the input topics, from their earliest offsets to their ends at start,
// partition by partition, in event time only. The state keeps the offsets
// it stopped at, so `segd run` with the same config continues from there:
// the backfill becomes the live state without a gap or a double. The
// backfill's own changes go to out (nil: none) and are not left for `segd
// run` to publish.
//
// Each (customer_id, event_id) is applied once, and records stamped later
// than the start plus input.max_future_skew are dead letters
// (future_timestamp), as in live mode. On error, what the backfill wrote
// to state.dir is removed.
func Backfill(ctx context.Context, cfg *Config, out io.Writer, log zerolog.Logger) (*segment.ReplaySummary, error) {
	undo, err := segment.FreshStateDir(cfg.State.Dir)
	if err != nil {
		return nil, err
	}
	sum, err := backfill(ctx, cfg, out, log)
	if err != nil {
		return nil, segment.UndoReplay(err, cfg.State.Dir, undo)
	}
	return sum, nil
}

func backfill(ctx context.Context, cfg *Config, out io.Writer, log zerolog.Logger) (*segment.ReplaySummary, error) {
	e, err := New(cfg, Options{Logger: log})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	return e.Backfill(ctx, out)
}

// Backfill runs the partition runtime of a live run over the input topics
// up to their ends at start, with the options that make it a replay: the
// wall clock fixed at the start, event time only, each event id applied
// once (a scratch set beside the state), merges folded in straight away,
// nothing published. The engine must be fresh and must not also Run.
func (e *Engine) Backfill(ctx context.Context, out io.Writer) (*segment.ReplaySummary, error) {
	cfg := e.cfg
	seen, err := segment.OpenReplaySeen(cfg.State.Dir, 0)
	if err != nil {
		return nil, err
	}
	defer seen.Close()
	cluster := e.cluster()
	n, err := cluster.CheckCoPartitioned(ctx, e.inputTopics())
	if err != nil {
		return nil, fmt.Errorf("input topics: %w", err)
	}
	inputs, err := e.inputs()
	if err != nil {
		return nil, err
	}
	sum := segment.NewReplaySummary()
	start := e.opt.Now()
	// Every partition's processor exists before any runs: an alias in one
	// partition folds the customer straight into the target's partition.
	procs := make([]*segment.Processor, n)
	opt := e.processorOptions(inputs, schemas.AppendSegmentChangeJSON, nil)
	opt.Seen = seen.Seen
	opt.DeliverMerge = func(target string, rec []byte) error {
		return procs[kpart.For([]byte(target), n)].Merge(target, rec)
	}
	for p := range procs {
		part, err := e.st.Partition(int32(p))
		if err != nil {
			return nil, err
		}
		if procs[p], err = segment.New(e.rs.Load(), part, opt); err != nil {
			return nil, err
		}
	}
	if err := e.skipRecordedMerges(ctx, procs); err != nil {
		return nil, err
	}
	var lost atomic.Int64
	for p := range procs {
		if err := e.backfillPartition(ctx, int32(p), procs[p], start, &lost); err != nil {
			return nil, err
		}
		for _, c := range procs[p].Stats().Events {
			sum.Events += int64(c)
		}
		sum.LastEventTime = max(sum.LastEventTime, procs[p].Clock())
		e.log.Info().Int("partition", p).Int64("events", sum.Events).Msg("partition replayed")
	}
	sum.RecordsLost = lost.Load()
	if err := segment.FinishReplay(procs, sum); err != nil {
		return nil, err
	}
	if err := segment.CollectReplay(e.st, e.rs.Load(), procs, out, sum, !e.keepBackfillOutbox); err != nil {
		return nil, err
	}
	for _, p := range procs {
		p.Partition().Close()
	}
	if err := seen.Close(); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	sum.Elapsed = time.Since(start)
	return sum, nil
}

// skipRecordedMerges stores the merges topic's ends as read: the merges
// already in it came from the history being backfilled, and the live run
// that follows must not apply them again.
func (e *Engine) skipRecordedMerges(ctx context.Context, procs []*segment.Processor) error {
	cluster, merges := e.cluster(), e.cfg.Kafka.Topics.Merges
	if err := cluster.EnsureTopics(ctx, []connectors.TopicSpec{{Name: merges, Partitions: len(procs)}}); err != nil {
		return fmt.Errorf("merges topic: %w", err)
	}
	for p, proc := range procs {
		_, end, err := cluster.EndOffsets(ctx, []string{merges}, p)
		if err != nil {
			return fmt.Errorf("merges topic: %w", err)
		}
		proc.Partition().SetOffset(merges, end[merges])
	}
	return nil
}

// backfillPartition runs partition p's task over its input up to the ends
// at start.
func (e *Engine) backfillPartition(ctx context.Context, p int32, proc *segment.Processor, start time.Time, lost *atomic.Int64) error {
	cfg := e.cfg
	src, err := connectors.NewPartitionConsumer(connectors.PartitionConsumerOptions{
		Brokers: cfg.Kafka.Brokers, Topics: e.inputTopics(), Partition: int(p), StopAtEnd: true, MaxIdle: 30 * time.Second, Security: e.sec,
		MaxBufferedRecords: cfg.Kafka.MaxBufferedRecords, MaxBufferedBytes: cfg.Kafka.MaxBufferedBytes,
		OnRecordsLost: func(topic string, from, to int64) {
			lost.Add(to - from)
			logRecordsLost(e.log, topic, p, from, to)
		},
	})
	if err != nil {
		return err
	}
	defer src.Close()
	tk := openTask(p, proc, src, nil, nil, taskOptions{
		commitInterval: time.Minute, commitEvents: cfg.Commit.MaxEvents,
		idleAfter: -1, maxWait: time.Second, now: time.Now, wallAtStart: start.UnixMilli(),
	}, e.log.With().Int32("partition", p).Logger(), nil)
	if err := tk.run(ctx); err != nil {
		return fmt.Errorf("replay partition %d: %w", p, err)
	}
	return nil
}
