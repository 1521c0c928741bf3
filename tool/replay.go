package tool

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/segd/segd/internal/kpart"

	"github.com/rs/zerolog"

	"github.com/segd/segd/internal/retail"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/segment"
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
	// Partitions splits customers like Kafka would (murmur2): a logical
	// count, fixed whatever the machine, so the output bytes never depend
	// on it. Default DefaultReplayPartitions.
	Partitions int
	// Workers is how many goroutines apply events, each owning whole
	// partitions; it never changes the result. Default GOMAXPROCS.
	Workers int
	// Output receives one JSON SegmentChange per line; nil: none.
	Output io.Writer
	// CommitEvents: each worker commits its partitions every this many
	// events it applied. Default DefaultReplayCommitEvents. It does not
	// change the result.
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
	// ConsentAttribute is consent.attribute: the profile attribute that,
	// when false, keeps a customer out of requires_consent segments.
	// Default segment.DefaultConsentAttribute.
	ConsentAttribute string
	// Strict makes the first skipped line an error naming file:line.
	Strict bool
	// Now is the wall clock. Default time.Now.
	Now func() time.Time
	// Log receives progress lines.
	Log zerolog.Logger

	evalAll bool // tests: re-evaluate every segment of the event's type
	noSeen  bool // benchmarks: no replay-wide de-duplication, to measure its cost
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
func Replay(ctx context.Context, opt ReplayOptions) (*segment.ReplaySummary, error) {
	if opt.Partitions == 0 {
		opt.Partitions = DefaultReplayPartitions
	}
	if opt.Workers == 0 {
		opt.Workers = runtime.GOMAXPROCS(0)
	}
	if opt.CommitEvents == 0 {
		opt.CommitEvents = DefaultReplayCommitEvents
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
	if opt.ConsentAttribute == "" {
		opt.ConsentAttribute = segment.DefaultConsentAttribute
	}
	switch {
	case opt.Partitions < 1 || opt.Partitions > 10000:
		return nil, fmt.Errorf("replay: partitions (%d) must be between 1 and 10000", opt.Partitions)
	case opt.Workers < 1:
		return nil, fmt.Errorf("replay: workers (%d) must be at least 1", opt.Workers)
	case opt.MaxLineBytes < 64:
		return nil, fmt.Errorf("replay: max line bytes (%d) must be >= 64", opt.MaxLineBytes)
	case opt.MaxFutureSkew < 0 || opt.MaxJump < 0:
		return nil, fmt.Errorf("replay: max future skew (%s) and max jump (%s) must be >= 0", opt.MaxFutureSkew, opt.MaxJump)
	case len(opt.Inputs) == 0 && opt.Retail == "":
		return nil, errors.New("replay: no input files")
	}
	undo, err := segment.FreshStateDir(opt.StateDir)
	if err != nil {
		return nil, err
	}
	sum, err := replayFiles(ctx, opt)
	if err != nil {
		return nil, segment.UndoReplay(err, opt.StateDir, undo)
	}
	return sum, nil
}

// fileInput is the pseudo input topic of a file replay's lines: JSON,
// each naming its event type.
const fileInput = "file"

// jsonLines decodes a file replay's lines.
type jsonLines struct{}

func (jsonLines) Decode(value []byte, e *schemas.Event) error { return schemas.DecodeJSON(value, e) }

// processorOptions are a file replay's processor settings: the live
// defaults (a file replay has no config), each event id applied once
// (RequireEventID, Seen), merges folded in straight away.
func (opt *ReplayOptions) processorOptions(procs []*segment.Processor, seen func(string, string) (bool, error)) segment.Options {
	return segment.Options{
		Inputs:           map[string]segment.Input{fileInput: {Type: schemas.EventUnknown, Decoder: jsonLines{}}},
		ChangesTopic:     segment.DefaultChangesTopic,
		DeadLetterTopic:  segment.DefaultDeadLetterTopic,
		EncodeChange:     schemas.AppendSegmentChangeJSON,
		ConsentAttribute: opt.ConsentAttribute,
		DedupHorizon:     time.Hour,
		MaxRecordBytes:   opt.MaxLineBytes,
		MaxFutureSkew:    opt.MaxFutureSkew,
		RequireEventID:   true,
		DeliverMerge: func(target string, rec []byte) error {
			return procs[kpart.For([]byte(target), len(procs))].Merge(target, rec)
		},
		Seen:              seen,
		EvalAll:           opt.evalAll,
		Log:               segment.SampledLog(opt.Log),
		MaxAttributes:     segment.DefaultMaxAttributes,
		MaxAttributeBytes: segment.DefaultMaxAttributeBytes,
	}
}

func replayFiles(ctx context.Context, opt ReplayOptions) (*segment.ReplaySummary, error) {
	rs, err := rules.CompileFile(opt.RulesFile)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	st, err := segment.OpenStore(opt.StateDir, func() *rules.RuleSet { return rs }, state.Options{CacheBytes: opt.CacheBytes})
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", opt.StateDir, err)
	}
	defer st.Close()
	r := &fileReplay{opt: opt, sum: segment.NewReplaySummary(), start: time.Now(), wall: opt.Now().UnixMilli()}
	r.pool = &sync.Pool{New: func() any { return new(pendingEvent) }}
	r.wild = newWildFilter(replayNeighbours, opt.MaxJump.Milliseconds(), r.pool)
	r.lastLog = r.start
	workers := max(1, min(opt.Workers, opt.Partitions))
	// Each worker has a seen set of its own: its customers are its own.
	seens := make([]*segment.ReplaySeen, workers)
	defer func() {
		for _, s := range seens {
			if s != nil {
				s.Close()
			}
		}
	}()
	procs := make([]*segment.Processor, opt.Partitions)
	for w := range seens {
		if seens[w], err = segment.OpenReplaySeen(opt.StateDir, w); err != nil {
			return nil, err
		}
	}
	r.popt = opt.processorOptions(procs, nil)
	for p := range procs {
		part, err := st.Partition(int32(p))
		if err != nil {
			return nil, err
		}
		popt := r.popt
		if !opt.noSeen {
			popt.Seen = seens[p%workers].Seen
		}
		if procs[p], err = segment.New(rs, part, popt); err != nil {
			return nil, err
		}
	}
	r.apply = newAppliers(procs, workers, opt.CommitEvents, r.pool)
	defer r.apply.close()
	if err := r.readAll(ctx); err != nil && !errors.Is(err, errStrict) {
		return nil, err
	}
	if err := r.finish(); err != nil {
		return nil, err
	}
	if err := segment.FinishReplay(procs, r.sum); err != nil {
		return nil, err
	}
	if err := segment.CollectReplay(st, rs, procs, opt.Output, r.sum, true); err != nil {
		return nil, err
	}
	for _, s := range seens {
		if err := s.Close(); err != nil {
			return nil, fmt.Errorf("replay: %w", err)
		}
	}
	r.sum.Elapsed = time.Since(r.start)
	return r.sum, nil
}

// fileReplay is one file replay's reading side: lines are decoded and
// validated, held by the wild-timestamp rule, and handed to the appliers.
type fileReplay struct {
	opt     ReplayOptions
	popt    segment.Options
	sum     *segment.ReplaySummary
	pool    *sync.Pool
	wild    *wildFilter
	apply   *appliers
	wall    int64
	seq     int64 // lines and events read so far, in input order
	skips   []skippedEvent
	queued  int64
	start   time.Time
	lastLog time.Time
}

// readAll reads every input file, then the retail CSV.
func (r *fileReplay) readAll(ctx context.Context) error {
	for _, path := range r.opt.Inputs {
		if err := r.readFile(ctx, path); err != nil {
			return err
		}
	}
	for r.wild.n > 0 {
		if err := r.decide(); err != nil {
			return err
		}
	}
	if r.opt.Retail != "" {
		return r.readRetail(ctx)
	}
	return nil
}

func (r *fileReplay) readFile(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer f.Close()
	lr := newLineReader(f, r.opt.MaxLineBytes)
	for {
		line, size, oversize, err := lr.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("replay: read %s:%d: %w", path, lr.n+1, err)
		}
		r.seq++
		if oversize {
			if err := r.skip(path, lr.n, string(schemas.ReasonTooLarge), fmt.Errorf("line is %d bytes, limit %d", size, r.opt.MaxLineBytes)); err != nil {
				return err
			}
			continue
		}
		if len(line) == 0 {
			continue
		}
		pe := r.wild.slot()
		rec := segment.Record{Topic: fileInput, Partition: -1, Offset: int64(lr.n), Value: line}
		if err := segment.Decode(&r.popt, &rec, r.wall, 0, &pe.e); err != nil {
			var rej *segment.Rejected
			if !errors.As(err, &rej) {
				return fmt.Errorf("replay %s:%d: %w", path, lr.n, err)
			}
			if err := r.skip(path, lr.n, rej.Reason, rej.Err); err != nil {
				return err
			}
			continue
		}
		pe.file, pe.line, pe.seq = path, lr.n, r.seq
		r.wild.push()
		if r.wild.full() {
			if err := r.decide(); err != nil {
				return err
			}
		}
		if r.seq%applyBatch == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// decide skips the oldest pending line if its time is wild, else applies
// it.
func (r *fileReplay) decide() error {
	pe, isWild, ref := r.wild.pop()
	if isWild {
		r.pool.Put(pe)
		return r.skip(pe.file, pe.line, reasonOutOfOrderFuture, fmt.Errorf("ts %s is more than %s ahead of its neighbours in the input (%s)",
			schemas.FormatTime(pe.e.Time), r.opt.MaxJump, schemas.FormatTime(ref)))
	}
	return r.queue(pe)
}

// queue hands an event to the appliers and logs progress.
func (r *fileReplay) queue(pe *pendingEvent) error {
	if err := r.apply.add(pe); err != nil {
		return err
	}
	r.queued++
	if r.queued%applyBatch == 0 && time.Since(r.lastLog) > 2*time.Second {
		r.lastLog = time.Now()
		r.opt.Log.Info().Int64("events", r.queued).Float64("events_per_second", float64(r.queued)/time.Since(r.start).Seconds()).Msg("replaying")
	}
	return nil
}

// readRetail applies the UCI Online Retail CSV's events.
func (r *fileReplay) readRetail(ctx context.Context) error {
	rd, err := retail.Open(r.opt.Retail)
	if err != nil {
		return err
	}
	defer rd.Close()
	for {
		pe := r.pool.Get().(*pendingEvent)
		ok, err := rd.Next(&pe.e)
		if err != nil || !ok {
			r.pool.Put(pe)
			if err != nil {
				return fmt.Errorf("replay %s: %w", r.opt.Retail, err)
			}
			return nil
		}
		r.seq++
		pe.file, pe.line, pe.seq = r.opt.Retail, 0, r.seq
		// The CSV's rows become events here, not through Decode: they
		// are held to the same checks a decoded record is.
		if err := pe.e.Validate(r.wall, r.opt.MaxFutureSkew.Milliseconds()); err != nil {
			r.pool.Put(pe)
			var de *schemas.DecodeError
			reason := "invalid"
			if errors.As(err, &de) {
				reason = string(de.Reason)
			}
			if err := r.skip(r.opt.Retail, int(r.seq), reason, err); err != nil {
				return err
			}
			continue
		}
		if err := r.queue(pe); err != nil {
			return err
		}
		if r.seq%applyBatch == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// skip records a line the replay skips; with --strict the first is an
// error (reported once every worker is done, so that it is the first in
// the input).
func (r *fileReplay) skip(file string, line int, reason string, err error) error {
	r.skips = append(r.skips, skippedEvent{seq: r.seq, file: file, line: line, reason: reason, err: err})
	r.opt.Log.Warn().Str("file", file).Int("line", line).Str("reason", reason).Err(err).Msg("skipping invalid event")
	if r.opt.Strict {
		return errStrict
	}
	return nil
}

// errStrict stops reading at a skipped line under --strict; finish names
// the first one.
var errStrict = errors.New("strict")

// finish waits for the workers, and fills the summary: events, the last
// event time and the skipped lines in input order.
func (r *fileReplay) finish() error {
	if err := r.apply.close(); err != nil {
		return err
	}
	events, last, rejected := r.apply.totals()
	r.sum.Events, r.sum.LastEventTime = events, last
	skips := append(r.skips, rejected...)
	slices.SortStableFunc(skips, func(a, b skippedEvent) int { return cmp.Compare(a.seq, b.seq) })
	if r.opt.Strict && len(skips) > 0 {
		s := skips[0]
		return fmt.Errorf("replay %s:%d: %s (--strict): %w", s.file, s.line, s.reason, s.err)
	}
	for _, s := range skips {
		r.sum.Invalid++
		r.sum.Skipped[s.reason]++
		if len(r.sum.FirstSkipped) < segment.MaxReportedLines {
			r.sum.FirstSkipped = append(r.sum.FirstSkipped, segment.SkippedLine{File: s.file, Line: s.line, Reason: s.reason, Err: s.err.Error()})
		}
	}
	return nil
}

// Reasons a replay skips a line that live mode has no dead letter for.
const (
	// reasonOutOfOrderFuture: the line's time is far ahead of its
	// neighbours in the input (see wildFilter).
	reasonOutOfOrderFuture = "out_of_order_future"
)

// DefaultReplayMaxLineBytes is the default ReplayOptions.MaxLineBytes:
// input.max_record_bytes's default.
const DefaultReplayMaxLineBytes = 1 << 20

// DefaultReplayCommitEvents is the default ReplayOptions.CommitEvents:
// larger than a live commit, since nothing waits for a replay's output and
// a customer touched several times between two commits is encoded and
// written once (200,000 events over 20,000 customers: 1.95 s with 10,000,
// 1.59 s with 50,000, 1.57 s with 200,000, one worker, 16 partitions).
const DefaultReplayCommitEvents = 50000

// DefaultReplayPartitions is the default ReplayOptions.Partitions: enough
// for the cores of a large machine, and a count that does not depend on it.
const DefaultReplayPartitions = 16

// DefaultReplayMaxJump is the default ReplayOptions.MaxJump.
const DefaultReplayMaxJump = 7 * 24 * 60 * 60 * 1000 // ms

// replayNeighbours is K, the number of neighbours on each side that the
// wild-timestamp rule compares a line with.
const replayNeighbours = 15

// lineReader reads the lines of a file, each without its end of line
// ("\n" or "\r\n"). A line longer than max bytes is read to its end but
// not kept: next reports its size with oversize set, and the line after it
// is read normally.
type lineReader struct {
	r   *bufio.Reader
	max int
	buf []byte
	n   int // lines read
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line (valid until the next call) and its number;
// io.EOF after the last.
func (l *lineReader) next() (line []byte, size int, oversize bool, err error) {
	l.buf = l.buf[:0]
	for {
		chunk, rerr := l.r.ReadSlice('\n')
		full, eof := errors.Is(rerr, bufio.ErrBufferFull), errors.Is(rerr, io.EOF)
		if rerr != nil && !full && !eof {
			return nil, 0, false, rerr
		}
		if eof && size == 0 && len(chunk) == 0 {
			return nil, 0, false, io.EOF
		}
		if rerr == nil {
			chunk = chunk[:len(chunk)-1] // the '\n'
		}
		size += len(chunk)
		if !oversize {
			if len(l.buf)+len(chunk) <= l.max+1 { // room for a final '\r'
				l.buf = append(l.buf, chunk...)
			} else {
				oversize = true
				l.buf = l.buf[:0]
			}
		}
		if !full {
			break
		}
	}
	l.n++
	if !oversize && len(l.buf) > 0 && l.buf[len(l.buf)-1] == '\r' {
		l.buf = l.buf[:len(l.buf)-1]
		size--
	}
	if len(l.buf) > l.max {
		oversize = true
	}
	return l.buf, size, oversize, nil
}

// pendingEvent is a decoded, valid input line waiting for the
// wild-timestamp decision.
type pendingEvent struct {
	e    schemas.Event
	file string
	line int
	seq  int64 // its place in the input, across files
}

// wildFilter decides which valid lines carry a wild timestamp: one far
// ahead of the input's own progress, such as a 2026 line in a 2011
// export, which would otherwise move the clock years ahead and make every
// later event too late. A line is wild if its time is more than jump
// ahead of both the median time of the K valid lines before it and the
// median time of the K valid lines after it, in read order over all
// inputs (where fewer than K exist, of those there are; a side with none
// is left out). The decision depends only on the input's order, not on
// partitioning or commit size. Lines in time order are never wild, and a
// line after a legitimate gap is not either: the lines after it are as
// late as it is. Not safe for concurrent use.
type wildFilter struct {
	k    int
	jump int64
	// ring holds k+1 events: the line being decided and the k after it.
	// pop hands the oldest out and puts a fresh one from pool in its slot.
	ring []*pendingEvent
	pool *sync.Pool
	head int
	n    int
	prev []int64 // times of the last k decided lines, a ring
	pn   int     // decided lines so far
	tmp  []int64
}

func newWildFilter(k int, jump int64, pool *sync.Pool) *wildFilter {
	w := &wildFilter{k: k, jump: jump, ring: make([]*pendingEvent, k+1), pool: pool, prev: make([]int64, k)}
	for i := range w.ring {
		w.ring[i] = pool.Get().(*pendingEvent)
	}
	return w
}

// slot returns the free slot the next line decodes into. Only valid
// while not full.
func (w *wildFilter) slot() *pendingEvent {
	return w.ring[(w.head+w.n)%len(w.ring)]
}

// push keeps the line decoded into slot.
func (w *wildFilter) push() { w.n++ }

// full reports whether the oldest line has its K successors: pop it.
func (w *wildFilter) full() bool { return w.n == len(w.ring) }

func (w *wildFilter) median(ts []int64) int64 {
	slices.Sort(ts)
	return ts[(len(ts)-1)/2]
}

// pop decides the oldest pending line and removes it: the caller owns the
// event (and puts it back in the pool when done). ref is the time it was
// compared with.
func (w *wildFilter) pop() (pe *pendingEvent, wild bool, ref int64) {
	pe = w.ring[w.head]
	w.ring[w.head] = w.pool.Get().(*pendingEvent)
	t := pe.e.Time
	have := false
	if w.n > 1 {
		w.tmp = w.tmp[:0]
		for i := 1; i < w.n; i++ {
			w.tmp = append(w.tmp, w.ring[(w.head+i)%len(w.ring)].e.Time)
		}
		ref, have = w.median(w.tmp), true
	}
	if w.pn > 0 {
		w.tmp = append(w.tmp[:0], w.prev[:min(w.pn, w.k)]...)
		if m := w.median(w.tmp); !have || m > ref {
			ref, have = m, true
		}
	}
	wild = have && t > ref+w.jump
	w.prev[w.pn%w.k] = t
	w.pn++
	w.head = (w.head + 1) % len(w.ring)
	w.n--
	return pe, wild, ref
}
