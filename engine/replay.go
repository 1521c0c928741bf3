package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/internal/retail"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/state"
)

// ReplayOptions configure Replay.
type ReplayOptions struct {
	// RulesFile is the rules to replay with. Required.
	RulesFile string
	// StateDir receives the rebuilt state; it must be missing or empty. A
	// failed replay removes what it wrote there, so it can be retried as is.
	StateDir string
	// Inputs are JSON-lines files of events (docs/replay.md), read in order.
	Inputs []string
	// Partitions splits customers like Kafka would (murmur2). Default 1.
	Partitions int
	// Output receives one JSON SegmentChange per line; nil: none.
	Output io.Writer
	// CommitEvents commits every this many events. Default 10000. It does
	// not change the result.
	CommitEvents int
	// CacheBytes bounds the record cache. Default 256 MiB. It does not
	// change the result.
	CacheBytes int64
	// Retail, if set, is the UCI Online Retail CSV (.csv or .csv.gz), read
	// after Inputs as purchase and profile events.
	Retail string
	// MaxLineBytes: longer input lines are skipped (too_large), and the
	// file is read on after them. Default DefaultReplayMaxLineBytes (1 MiB).
	MaxLineBytes int
	// MaxFutureSkew: lines stamped later than the wall clock at the start
	// of the replay plus this are skipped (future_timestamp): history is
	// not in the future. Default 1h, like input.max_future_skew.
	MaxFutureSkew time.Duration
	// MaxJump: a line more than this ahead of its neighbours is skipped
	// (out_of_order_future; see wildFilter). Default 7 days.
	MaxJump time.Duration
	// Strict makes the first skipped line an error naming file:line.
	Strict bool
	// Now is the wall clock. Default time.Now.
	Now func() time.Time
	// Log receives progress lines.
	Log zerolog.Logger

	evalAll bool // tests: re-evaluate every segment of the event's type
	noSeen  bool // benchmarks: no replay-wide de-duplication, to measure its cost
}

// ReplaySummary is what a replay did.
type ReplaySummary struct {
	// Invalid counts the lines skipped and records dead-lettered, all
	// reasons; Skipped has them by reason.
	Events, Invalid int64
	Skipped         map[string]int64
	// FirstSkipped are the first few skipped lines of a file replay.
	FirstSkipped []SkippedLine
	// Duplicates counts events not applied because an earlier event of
	// the replay had the same customer_id and event_id.
	Duplicates int64
	// TooLate counts events older than the clock minus the longest window:
	// counted, not applied (as in live mode).
	TooLate        int64
	Enters, Exits  map[string]int64 // by segment
	Sizes          map[string]int64 // final members by segment
	LastEventTime  int64
	ChangesWritten int64
	// RecordsLost counts input records Kafka deleted (retention) while
	// the replay read the topics: the rebuilt state misses them.
	RecordsLost int64
	// Evaluations counts segment evaluations (one segment for one
	// customer at one instant): the work incremental evaluation saves.
	Evaluations int64
	Elapsed     time.Duration
}

func newReplaySummary() *ReplaySummary {
	return &ReplaySummary{Skipped: map[string]int64{}, Enters: map[string]int64{}, Exits: map[string]int64{}, Sizes: map[string]int64{}}
}

// Replay rebuilds state from event files in event time only: the same
// inputs and rules give byte-identical output whatever the commit size,
// and the same change sequence per customer whatever the partition count.
// At the end every partition's clock advances to the input's last event
// time, so timers due by then fire everywhere.
//
// Bad lines are skipped and counted by reason (docs/replay.md); each
// (customer_id, event_id) is applied once across all inputs. On error,
// what the replay wrote to StateDir is removed.
func Replay(ctx context.Context, opt ReplayOptions) (*ReplaySummary, error) {
	if opt.Partitions == 0 {
		opt.Partitions = 1
	}
	if opt.CommitEvents == 0 {
		opt.CommitEvents = 10000
	}
	if opt.MaxLineBytes == 0 {
		opt.MaxLineBytes = DefaultReplayMaxLineBytes
	}
	if opt.MaxFutureSkew == 0 {
		opt.MaxFutureSkew = time.Hour
	}
	if opt.MaxJump == 0 {
		opt.MaxJump = DefaultReplayMaxJump * time.Millisecond
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	switch {
	case opt.Partitions < 1 || opt.Partitions > 10000:
		return nil, fmt.Errorf("replay: partitions (%d) must be between 1 and 10000", opt.Partitions)
	case opt.MaxLineBytes < 64:
		return nil, fmt.Errorf("replay: max line bytes (%d) must be >= 64", opt.MaxLineBytes)
	case opt.MaxFutureSkew < 0 || opt.MaxJump < 0:
		return nil, fmt.Errorf("replay: max future skew (%s) and max jump (%s) must be >= 0", opt.MaxFutureSkew, opt.MaxJump)
	case len(opt.Inputs) == 0 && opt.Retail == "":
		return nil, errors.New("replay: no input files")
	}
	undo, err := freshStateDir(opt.StateDir)
	if err != nil {
		return nil, err
	}
	sum, err := replayFiles(ctx, opt)
	if err != nil {
		return nil, undoReplay(err, opt.StateDir, undo)
	}
	return sum, nil
}

// undoReplay removes what a failed replay wrote to its state dir and says
// so in the error.
func undoReplay(err error, dir string, undo func() error) error {
	if uerr := undo(); uerr != nil {
		return fmt.Errorf("%w (removing the partial state in %s failed: %v; remove it before a retry)", err, dir, uerr)
	}
	return fmt.Errorf("%w (the partial state in %s was removed: the same replay can be retried)", err, dir)
}

func replayFiles(ctx context.Context, opt ReplayOptions) (*ReplaySummary, error) {
	rs, err := rules.CompileFile(opt.RulesFile)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	st, err := state.Open(opt.StateDir, state.Options{CacheBytes: opt.CacheBytes, Decode: func(_ string, data []byte) (state.Record, error) {
		return decodeCustomer(rs, data)
	}})
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", opt.StateDir, err)
	}
	defer st.Close()
	seen, err := openReplaySeen(opt.StateDir)
	if err != nil {
		return nil, err
	}
	defer seen.close()
	seenFn := seen.seen
	if opt.noSeen {
		seenFn = nil
	}
	procs := make([]*processor, opt.Partitions)
	for p := range procs {
		part, err := st.Partition(int32(p))
		if err != nil {
			return nil, err
		}
		procs[p], err = newProcessor(rs, part, processorOptions{
			changesTopic: DefaultChangesTopic, deadLetterTopic: DefaultDeadLetterTopic,
			encodeChange: schemas.AppendSegmentChangeJSON,
			consentAttr:  "consent_marketing", dedupHorizon: time.Hour.Milliseconds(),
			deliverMerge: func(target string, rec []byte) error {
				return procs[connectors.PartitionFor([]byte(target), opt.Partitions)].merge(target, rec)
			},
			seen:    seenFn,
			evalAll: opt.evalAll,
			log:     processorLog(opt.Log),
			// The live defaults: a file replay has no config.
			maxAttributes: DefaultMaxAttributes, maxAttributeBytes: DefaultMaxAttributeBytes,
		})
		if err != nil {
			return nil, err
		}
	}
	sum := newReplaySummary()
	start := time.Now()
	lastLog := start
	applyOne := func(e *schemas.Event) error {
		p := procs[connectors.PartitionFor([]byte(e.CustomerID), opt.Partitions)]
		if err := p.apply(e); err != nil {
			return err
		}
		sum.Events++
		sum.LastEventTime = max(sum.LastEventTime, e.Time)
		if sum.Events%int64(opt.CommitEvents) == 0 {
			for _, p := range procs {
				if err := p.commit(); err != nil {
					return err
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		if time.Since(lastLog) > 2*time.Second {
			lastLog = time.Now()
			opt.Log.Info().Int64("events", sum.Events).Float64("events_per_second", float64(sum.Events)/time.Since(start).Seconds()).Msg("replaying")
		}
		return nil
	}
	skip := func(file string, line int, reason string, err error) error {
		if opt.Strict {
			return fmt.Errorf("replay %s:%d: %s (--strict): %w", file, line, reason, err)
		}
		sum.Invalid++
		sum.Skipped[reason]++
		if len(sum.FirstSkipped) < maxReportedLines {
			sum.FirstSkipped = append(sum.FirstSkipped, SkippedLine{File: file, Line: line, Reason: reason, Err: err.Error()})
		}
		opt.Log.Warn().Str("file", file).Int("line", line).Str("reason", reason).Err(err).Msg("skipping invalid event")
		return nil
	}
	wild := newWildFilter(replayNeighbours, opt.MaxJump.Milliseconds())
	decide := func() error {
		pe, isWild, ref := wild.pop()
		if isWild {
			return skip(pe.file, pe.line, reasonOutOfOrderFuture, fmt.Errorf("ts %s is more than %s ahead of its neighbours in the input (%s)",
				schemas.FormatTime(pe.e.Time), opt.MaxJump, schemas.FormatTime(ref)))
		}
		if err := applyOne(&pe.e); err != nil {
			var rej *rejectedError
			if errors.As(err, &rej) {
				// Refused by a bound (input.max_attributes): skipped like
				// any bad line, as live dead-letters it.
				return skip(pe.file, pe.line, string(rej.reason), rej.err)
			}
			return fmt.Errorf("replay %s:%d: %w", pe.file, pe.line, err)
		}
		return nil
	}
	wall, skew := opt.Now().UnixMilli(), opt.MaxFutureSkew.Milliseconds()
	readFile := func(path string) error {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		defer f.Close()
		lr := newLineReader(f, opt.MaxLineBytes)
		for {
			line, size, oversize, err := lr.next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("replay: read %s:%d: %w", path, lr.n+1, err)
			}
			if oversize {
				if err := skip(path, lr.n, string(schemas.ReasonTooLarge), fmt.Errorf("line is %d bytes, limit %d", size, opt.MaxLineBytes)); err != nil {
					return err
				}
				continue
			}
			if len(line) == 0 {
				continue
			}
			pe := wild.slot()
			err = schemas.DecodeJSON(line, &pe.e)
			if err == nil {
				err = pe.e.Validate(wall, skew)
			}
			if err == nil && pe.e.EventID == "" {
				err = &schemas.DecodeError{Reason: schemas.ReasonMissingEventID, Err: errors.New("event_id is empty: a replay applies each event id once")}
			}
			if err != nil {
				if err := skip(path, lr.n, reasonOf(err), err); err != nil {
					return err
				}
				continue
			}
			pe.file, pe.line = path, lr.n
			wild.push()
			if wild.full() {
				if err := decide(); err != nil {
					return err
				}
			}
		}
	}
	for _, path := range opt.Inputs {
		if err := readFile(path); err != nil {
			return nil, err
		}
	}
	for wild.n > 0 {
		if err := decide(); err != nil {
			return nil, err
		}
	}
	if opt.Retail != "" {
		r, err := retail.Open(opt.Retail)
		if err != nil {
			return nil, err
		}
		var e schemas.Event
		for {
			ok, err := r.Next(&e)
			if err != nil {
				r.Close()
				return nil, err
			}
			if !ok {
				break
			}
			if err := applyOne(&e); err != nil {
				r.Close()
				return nil, fmt.Errorf("replay %s: %w", opt.Retail, err)
			}
		}
		r.Close()
	}
	// The input's end is the clock everywhere, so partitions that saw
	// their last event early still fire what is due by then.
	for _, p := range procs {
		if err := p.advance(sum.LastEventTime); err != nil {
			return nil, err
		}
		if err := p.commit(); err != nil {
			return nil, err
		}
		sum.Duplicates += int64(p.stats.duplicates)
		sum.TooLate += int64(p.stats.tooLate)
		sum.Evaluations += int64(p.stats.evaluations)
	}
	if err := collectReplay(st, rs, procs, opt.Output, sum, true); err != nil {
		return nil, err
	}
	if err := seen.close(); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	sum.Elapsed = time.Since(start)
	return sum, nil
}

// WriteSummary prints what was skipped and per-segment counts.
func (s *ReplaySummary) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "%d events (%d invalid skipped) in %s, last event time %s\n", s.Events, s.Invalid, s.Elapsed.Round(time.Millisecond), schemas.FormatTime(s.LastEventTime))
	if len(s.Skipped) > 0 {
		reasons := make([]string, 0, len(s.Skipped))
		for r := range s.Skipped {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		fmt.Fprint(w, "skipped:")
		for _, r := range reasons {
			fmt.Fprintf(w, " %s=%d", r, s.Skipped[r])
		}
		fmt.Fprintln(w)
		for _, l := range s.FirstSkipped {
			fmt.Fprintf(w, "  %s:%d: %s: %s\n", l.File, l.Line, l.Reason, l.Err)
		}
		if n := s.Invalid - int64(len(s.FirstSkipped)); len(s.FirstSkipped) > 0 && n > 0 {
			fmt.Fprintf(w, "  ... and %d more (each is in the log)\n", n)
		}
	}
	if s.Duplicates > 0 {
		fmt.Fprintf(w, "%d duplicate events not applied (same customer_id and event_id as an earlier event)\n", s.Duplicates)
	}
	if s.TooLate > 0 {
		fmt.Fprintf(w, "%d events too late (older than the clock minus the longest window): not applied\n", s.TooLate)
	}
	if s.RecordsLost > 0 {
		fmt.Fprintf(w, "WARNING: %d input records were deleted by Kafka (retention) before the replay read them; the state misses them\n", s.RecordsLost)
	}
	ids := make([]string, 0, len(s.Sizes))
	for id := range s.Sizes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	fmt.Fprintf(w, "%-24s %8s %8s %8s\n", "segment", "ENTER", "EXIT", "size")
	for _, id := range ids {
		fmt.Fprintf(w, "%-24s %8d %8d %8d\n", id, s.Enters[id], s.Exits[id], s.Sizes[id])
	}
}

// collectReplay writes the changes in the partitions' outboxes to out (nil:
// none), counts them and dead letters, and fills the final segment sizes.
// With clear, the outboxes are emptied: the changes of a replay are history,
// and a later `segd run` on the same state must not publish them.
func collectReplay(st *state.Store, rs *rules.RuleSet, procs []*processor, out io.Writer, sum *ReplaySummary, clear bool) error {
	var c schemas.SegmentChange
	for _, p := range procs {
		var last uint64
		err := p.part.ReadOutbox(0, 1<<62, func(seq uint64, v []byte) error {
			last = seq
			env, err := decodeEnvelope(v)
			if err != nil {
				return err
			}
			if env.topic == DefaultDeadLetterTopic || env.topic == p.opt.deadLetterTopic {
				sum.Invalid++
				reason := "invalid"
				for _, h := range env.headers {
					if h.key == "segd-reason" {
						reason = string(h.value)
					}
				}
				sum.Skipped[reason]++
				return nil
			}
			if err := schemas.DecodeSegmentChangeJSON(env.value, &c); err != nil {
				return err
			}
			if c.Kind == schemas.Enter {
				sum.Enters[c.SegmentID]++
			} else {
				sum.Exits[c.SegmentID]++
			}
			if out != nil {
				if _, err := out.Write(append(env.value, '\n')); err != nil {
					return err
				}
				sum.ChangesWritten++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("replay output: %w", err)
		}
		if clear && last > 0 {
			if err := p.part.DeleteOutbox(last); err != nil {
				return err
			}
		}
	}
	for _, s := range rs.Segments() {
		n, err := st.CountMembers(s.ID)
		if err != nil {
			return err
		}
		sum.Sizes[s.ID] = n
	}
	return nil
}

// ReplayTopics rebuilds the state of cfg (whose state.dir must be empty)
// from the input topics, from their earliest offsets to their ends at start,
// partition by partition, in event time only. The state keeps the offsets it
// stopped at, so `segd run` with the same config continues from there: the
// backfill becomes the live state without a gap or a double. The replay's
// own changes go to out (nil: none) and are not left for `segd run` to
// publish.
//
// Each (customer_id, event_id) is applied once, and records stamped later
// than the wall clock plus input.max_future_skew are dead letters
// (future_timestamp), as in live mode. On error, what the replay wrote to
// state.dir is removed.
func ReplayTopics(ctx context.Context, cfg *Config, out io.Writer, log zerolog.Logger) (*ReplaySummary, error) {
	undo, err := freshStateDir(cfg.State.Dir)
	if err != nil {
		return nil, err
	}
	sum, err := replayTopics(ctx, cfg, out, log)
	if err != nil {
		return nil, undoReplay(err, cfg.State.Dir, undo)
	}
	return sum, nil
}

func replayTopics(ctx context.Context, cfg *Config, out io.Writer, log zerolog.Logger) (*ReplaySummary, error) {
	e, err := New(cfg, Options{Logger: log})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	seen, err := openReplaySeen(cfg.State.Dir)
	if err != nil {
		return nil, err
	}
	defer seen.close()
	topics := e.inputTopics()
	sec, err := cfg.Security()
	if err != nil {
		return nil, err
	}
	cluster := connectors.Cluster{Brokers: cfg.Kafka.Brokers, Security: sec}
	n, err := cluster.CheckCoPartitioned(ctx, topics)
	if err != nil {
		return nil, fmt.Errorf("input topics: %w", err)
	}
	inputs, err := e.inputs()
	if err != nil {
		return nil, err
	}
	rs := e.rs.Load()
	sum := newReplaySummary()
	start := time.Now()
	// Every partition's processor exists before any runs: an alias in one
	// partition folds the customer straight into the target's partition
	// (nothing is published during a replay).
	procs := make([]*processor, n)
	for p := range procs {
		part, err := e.st.Partition(int32(p))
		if err != nil {
			return nil, err
		}
		procs[p], err = newProcessor(rs, part, processorOptions{
			changesTopic: cfg.Kafka.Topics.Changes, deadLetterTopic: cfg.Kafka.Topics.DeadLetter,
			encodeChange: schemas.AppendSegmentChangeJSON,
			consentAttr:  cfg.Consent.Attribute, dedupHorizon: cfg.Input.DedupHorizon.Milliseconds(),
			deliverMerge: func(target string, rec []byte) error {
				return procs[connectors.PartitionFor([]byte(target), n)].merge(target, rec)
			},
			seen:          seen.seen,
			log:           processorLog(log),
			maxAttributes: cfg.Input.MaxAttributes, maxAttributeBytes: cfg.Input.MaxAttributeBytes,
		})
		if err != nil {
			return nil, err
		}
	}
	// Merges already in the merges topic came from the history being
	// replayed: the live run that follows must not apply them again.
	if err := cluster.EnsureTopics(ctx, []connectors.TopicSpec{{Name: cfg.Kafka.Topics.Merges, Partitions: n}}); err != nil {
		return nil, fmt.Errorf("merges topic: %w", err)
	}
	for p := range procs {
		_, end, err := cluster.EndOffsets(ctx, []string{cfg.Kafka.Topics.Merges}, p)
		if err != nil {
			return nil, fmt.Errorf("merges topic: %w", err)
		}
		procs[p].part.SetOffset(cfg.Kafka.Topics.Merges, end[cfg.Kafka.Topics.Merges])
	}
	var lost atomic.Int64
	for p := int32(0); p < int32(n); p++ {
		part, proc := procs[p].part, procs[p]
		src, err := connectors.NewPartitionConsumer(connectors.PartitionConsumerOptions{
			Brokers: cfg.Kafka.Brokers, Topics: topics, Partition: int(p), StopAtEnd: true, MaxIdle: 30 * time.Second, Security: sec,
			MaxBufferedRecords: cfg.Kafka.MaxBufferedRecords, MaxBufferedBytes: cfg.Kafka.MaxBufferedBytes,
			OnRecordsLost: func(topic string, from, to int64) {
				lost.Add(to - from)
				logRecordsLost(log, topic, p, from, to)
			},
		})
		if err != nil {
			return nil, err
		}
		tk := openTask(p, part, proc, src, nil, taskOptions{
			inputs: inputs, commitInterval: time.Minute, commitEvents: cfg.Commit.MaxEvents,
			maxRecordBytes: cfg.Input.MaxRecordBytes, idleAfter: -1, maxWait: time.Second, now: time.Now,
			maxFutureSkew: cfg.Input.MaxFutureSkew, wallAtStart: start.UnixMilli(),
		}, log.With().Int32("partition", p).Logger(), nil)
		err = tk.run(ctx)
		src.Close()
		if err != nil {
			return nil, fmt.Errorf("replay partition %d: %w", p, err)
		}
		for _, c := range proc.stats.events {
			sum.Events += int64(c)
		}
		sum.LastEventTime = max(sum.LastEventTime, proc.clock)
		log.Info().Int32("partition", p).Int64("events", sum.Events).Msg("partition replayed")
	}
	sum.RecordsLost = lost.Load()
	for _, p := range procs {
		if err := p.advance(sum.LastEventTime); err != nil {
			return nil, err
		}
		if err := p.commit(); err != nil {
			return nil, err
		}
		sum.Duplicates += int64(p.stats.duplicates)
		sum.TooLate += int64(p.stats.tooLate)
		sum.Evaluations += int64(p.stats.evaluations)
	}
	if err := collectReplay(e.st, rs, procs, out, sum, true); err != nil {
		return nil, err
	}
	for _, p := range procs {
		p.part.Close()
	}
	if err := seen.close(); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	sum.Elapsed = time.Since(start)
	return sum, nil
}
