package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/state"
)

// The changelog topic is created with max.message.bytes of
// changelogMaxMessage. A topic that exists keeps its own limit, which
// segd reads at start (changelogAssumedMessage, the broker default, when
// it cannot) and cuts its commits to: see limitsFor.
const (
	changelogMaxMessage     = 8 << 20
	changelogAssumedMessage = 1048588
	// changelogMinMessage is the smallest limit segd runs with, just
	// under a broker's default: a commit cut at half of it still holds
	// hundreds of customers.
	changelogMinMessage = 1 << 20
	// changelogMaxCommit caps a commit's changelog entry: larger
	// entries would not make commits rarer (commit.max_events cuts them
	// first) and a restore holds one in memory.
	changelogMaxCommit = 4 << 20
	// changelogMaxRequest caps a produce request of several small
	// entries.
	changelogMaxRequest = 1 << 20
)

// changelogLimits are the sizes the changelog topic's record batch limit
// (its max.message.bytes) sets.
type changelogLimits struct {
	// maxMessage is the topic's limit.
	maxMessage int64
	// commitBytes cuts a commit (state.Partition.SetChangelogCommitBytes):
	// half the limit, so an entry, its last event's changes and the
	// batch's framing fit.
	commitBytes int64
	// request bounds a request of several entries.
	request int64
}

// limitsFor returns the limits for a topic taking record batches of up
// to maxMessage bytes, or an error naming the fix when that is too small
// for segd's commits or for one customer's record: a customer may hold
// attrBytes of profile attributes (input.max_attribute_bytes), and a
// record over a quarter of the limit could end up in a batch over it.
func limitsFor(maxMessage int64, attrBytes int) (changelogLimits, error) {
	fix := fmt.Sprintf("kafka-configs.sh --alter --entity-type topics --entity-name TOPIC --add-config max.message.bytes=%d", changelogMaxMessage)
	if maxMessage < changelogMinMessage {
		return changelogLimits{}, fmt.Errorf("it takes record batches of at most %d bytes (max.message.bytes), segd needs at least %d and creates its changelog with %d: raise it (%s)",
			maxMessage, changelogMinMessage, changelogMaxMessage, fix)
	}
	if int64(attrBytes) > maxMessage/4 {
		return changelogLimits{}, fmt.Errorf("it takes record batches of at most %d bytes (max.message.bytes), and input.max_attribute_bytes %d lets one customer's record outgrow a quarter of that: lower input.max_attribute_bytes to at most %d or raise the topic's limit (%s)",
			maxMessage, attrBytes, maxMessage/4, fix)
	}
	commit := min(maxMessage/2, changelogMaxCommit)
	return changelogLimits{maxMessage: maxMessage, commitBytes: commit, request: min(commit, changelogMaxRequest)}, nil
}

// defaultChangelogLimits are those of the topic segd creates.
var defaultChangelogLimits, _ = limitsFor(changelogMaxMessage, 0)

// changelogPublisher sends one partition's pending changelog entries to
// its changelog partition, in order, each request one Kafka record batch,
// and deletes them once acknowledged. It runs beside the partition's task
// like the outbox publisher.
type changelogPublisher struct {
	part   *state.Partition
	w      *connectors.ChangelogWriter
	id     int
	log    zerolog.Logger
	notify chan struct{}
	after  uint64
	recs   []connectors.ChangelogRecord
	// entries are copies of the entries a drain sends (recs point into
	// them), their buffers reused.
	entries [][]byte
	limits  changelogLimits
	m       *partitionMetrics
	// sent, if set, is called after entries were acknowledged (the
	// outbox publisher's poke).
	sent func()
	// removeReq, while run runs, wakes its remover goroutine to remove
	// the log files of entries up to removeUpTo: a removal syncs the
	// store first (up to 25 ms measured), which must hold neither the
	// released changes nor the next entries. Nil: drain removes them
	// itself (flush).
	removeReq  chan struct{}
	removeUpTo atomic.Uint64
}

func newChangelogPublisher(part *state.Partition, w *connectors.ChangelogWriter, log zerolog.Logger, m *partitionMetrics) *changelogPublisher {
	return &changelogPublisher{part: part, w: w, id: int(part.ID()), log: log, notify: make(chan struct{}, 1), m: m, limits: defaultChangelogLimits}
}

func (c *changelogPublisher) poke() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// run sends until ctx is done, retrying failures with backoff, and
// removes the log files of sent entries on a goroutine of its own.
func (c *changelogPublisher) run(ctx context.Context) {
	c.removeReq = make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.removeLoop(ctx, c.removeReq)
	}()
	drainLoop(ctx, c.drain, nil, c.notify, c.log, "changelog write failed; retrying")
	wg.Wait()
	c.removeReq = nil
}

// removeLoop removes sent entries' log files when asked, until ctx is
// done. A failed removal is logged: the files go with a later one, or at
// the next open.
func (c *changelogPublisher) removeLoop(ctx context.Context, req <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-req:
		}
		if err := c.part.RemoveSentChangelog(c.removeUpTo.Load()); err != nil {
			if errors.Is(err, state.ErrClosed) {
				return
			}
			c.log.Warn().Err(err).Msg("cannot remove the changelog log's files of sent entries; trying again with the next")
		}
	}
}

// removeSent has the log files of entries up to upTo removed: by the
// remover while run runs, else at once.
func (c *changelogPublisher) removeSent(upTo uint64) error {
	if c.removeReq == nil {
		return c.part.RemoveSentChangelog(upTo)
	}
	c.removeUpTo.Store(upTo)
	select {
	case c.removeReq <- struct{}{}:
	default: // the remover will read the newer upTo
	}
	return nil
}

// flush sends everything committed so far (a partition being handed over).
func (c *changelogPublisher) flush(ctx context.Context) error { return flushAll(ctx, c.drain) }

// drain sends the next pending entries, as many as fit in one request
// (at least one), and returns how many it confirmed.
func (c *changelogPublisher) drain(ctx context.Context) (int, error) {
	c.recs = c.recs[:0]
	defer c.trimEntries()
	var last uint64
	n, size := 0, 0
	errFull := errors.New("full")
	err := c.part.ReadChangelog(c.after, 64, func(seq uint64, entry []byte) error {
		if n > 0 && int64(size+len(entry)) > c.limits.request {
			return errFull
		}
		// The entry's bytes are valid only during the callback: it is
		// copied whole (into a buffer of its own, reused by later
		// drains), and the records point into the copy.
		if n == len(c.entries) {
			c.entries = append(c.entries, nil)
		}
		c.entries[n] = append(c.entries[n][:0], entry...)
		err := state.ForEachChangelogOp(c.entries[n], func(op state.ChangelogOp) error {
			c.recs = append(c.recs, connectors.ChangelogRecord{Key: op.Key, Value: op.Value, Deleted: op.Deleted})
			return nil
		})
		if err != nil {
			return fmt.Errorf("changelog entry %d: %w", seq, err)
		}
		last, size = seq, size+len(entry)
		n++
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	start := time.Now()
	end, err := c.writeAll(ctx)
	if err != nil {
		// The request may still be being sent from these copies.
		c.entries = nil
		return 0, err
	}
	filesDue, err := c.part.RecordChangelogSent(last, end)
	if err != nil {
		return 0, err
	}
	c.after = last
	if c.sent != nil {
		c.sent()
	}
	if filesDue {
		if err := c.removeSent(last); err != nil {
			return 0, err
		}
	}
	if c.m != nil {
		c.m.changelogRecords.Add(float64(len(c.recs)))
		c.m.changelogSeconds.Observe(time.Since(start).Seconds())
		c.m.changelogDepth.Set(float64(c.part.ChangelogDepth()))
	}
	return n, nil
}

// entriesRetainBytes bounds the entry copies a publisher keeps between
// drains.
const entriesRetainBytes = 8 << 20

// trimEntries drops entry buffers past entriesRetainBytes.
func (c *changelogPublisher) trimEntries() {
	kept := 0
	for i, b := range c.entries {
		if kept += cap(b); kept > entriesRetainBytes {
			clear(c.entries[i:])
			c.entries = c.entries[:i]
			return
		}
	}
}

// writeAll writes c.recs in one request, or, for a single commit larger
// than a record batch may be, in several (logged: a reader could then see
// part of that commit).
func (c *changelogPublisher) writeAll(ctx context.Context) (int64, error) {
	size := 0
	for i := range c.recs {
		size += len(c.recs[i].Key) + len(c.recs[i].Value) + 32
	}
	if int64(size) <= c.limits.maxMessage*3/4 {
		return c.w.Write(ctx, c.id, c.recs)
	}
	c.log.Warn().Int("bytes", size).Msg("one commit outgrew a changelog record batch; writing it in parts")
	var end int64
	for from := 0; from < len(c.recs); {
		to, sz := from, 0
		for to < len(c.recs) && (to == from || int64(sz) < c.limits.maxMessage/2) {
			sz += len(c.recs[to].Key) + len(c.recs[to].Value) + 32
			to++
		}
		e, err := c.w.Write(ctx, c.id, c.recs[from:to])
		if err != nil {
			return 0, err
		}
		end, from = e, to
	}
	return end, nil
}

// restoreDecision says what to do with a partition's local state.
type restoreDecision int

const (
	keepLocal restoreDecision = iota + 1
	restoreFromChangelog
)

// decideRestore compares what the local store last synced with the
// changelog's end: equal means nobody wrote to the changelog since this
// store did, so the local state (plus its unsent entries) is the latest.
func decideRestore(synced int64, haveSynced bool, end int64) (restoreDecision, string) {
	switch {
	case haveSynced && synced == end:
		return keepLocal, "local state is the changelog's latest"
	case !haveSynced && end == 0:
		return keepLocal, "changelog is empty"
	case haveSynced && synced > end:
		return keepLocal, fmt.Sprintf("changelog ends at %d, before the %d this store wrote: was it deleted or truncated? keeping the local state", end, synced)
	case !haveSynced:
		return restoreFromChangelog, "no local state for this partition"
	default:
		return restoreFromChangelog, fmt.Sprintf("local state is behind the changelog (synced to %d, changelog ends at %d)", synced, end)
	}
}

// prepareState makes partition p's local state the latest known before its
// task starts: kept, or restored from the changelog.
func (e *Engine) prepareState(ctx context.Context, p int32) error {
	topic := e.cfg.Kafka.Topics.Changelog
	end, err := e.cluster().ChangelogEnd(ctx, topic, int(p))
	if err != nil {
		return fmt.Errorf("partition %d: changelog end: %w", p, err)
	}
	log := e.log.With().Int32("partition", p).Str("changelog", topic).Int64("changelog_end", end).Logger()
	// An OS crash can lose the tail of the local log of changelog
	// entries while the store kept their commits: the topic then misses
	// them. The store forgets where it synced to, so the state is
	// restored from the changelog (or, with an empty one, re-seeded).
	lost, err := e.st.RepairChangelog(p)
	if err != nil {
		return err
	}
	if lost != "" {
		log.Error().Str("reason", lost).Msg("the local changelog log lost committed entries (an OS crash?): the partition's changelog topic misses them; restoring the partition from it, or re-seeding it when it is empty")
	}
	synced, ok, err := e.st.SyncedEnd(p)
	if err != nil {
		return fmt.Errorf("partition %d: %w", p, err)
	}
	decision, why := decideRestore(synced, ok, end)
	if decision == keepLocal {
		if (ok && synced > end) || (lost != "" && end == 0) {
			// The changelog lost what this store wrote (deleted and
			// created again): write the whole state to it again, or the
			// next hand-over would restore part of it.
			n, err := e.st.Reseed(p, e.clLimits.commitBytes)
			if err != nil {
				return fmt.Errorf("partition %d: re-seed the changelog: %w", p, err)
			}
			log.Error().Int("entries", n).Msg(why + "; writing the partition's whole state to the changelog again")
		} else {
			log.Info().Msg(why)
		}
		return nil
	}
	e.m.restoring.Inc()
	e.restoringNow.Store(int64(p) + 1)
	if e.restoreHook != nil {
		e.restoreHook(p)
	}
	defer func() {
		e.m.restoring.Dec()
		e.restoringNow.Store(0)
	}()
	if ok && synced < end {
		done, why, err := e.catchUp(ctx, p, synced, end, log)
		if done {
			return nil
		}
		if err != nil {
			log.Info().Err(err).Msg("cannot catch up on the changelog; restoring in full")
		} else {
			log.Info().Str("reason", why).Msg("not catching up on the changelog; restoring in full")
		}
	}
	log.Info().Str("reason", why).Msg("restoring partition from the changelog")
	start := time.Now()
	r, err := e.st.Restore(p)
	if err != nil {
		return err
	}
	lastLog := start
	err = e.cluster().ReadChangelog(ctx, topic, int(p), end, func(key, value []byte, deleted bool) error {
		if err := r.Apply(key, value, deleted); err != nil {
			return err
		}
		e.m.restoreRecords.Inc()
		if now := time.Now(); now.Sub(lastLog) >= 5*time.Second {
			lastLog = now
			log.Info().Int64("records", r.Applied()).Dur("elapsed", now.Sub(start)).Msg("restoring")
		}
		return nil
	})
	if err != nil {
		r.Abort()
		return fmt.Errorf("partition %d: restore from %s: %w", p, topic, err)
	}
	if err := r.Finish(end); err != nil {
		return err
	}
	took := time.Since(start)
	customers, err := e.st.CountCustomers(p)
	if err != nil {
		return fmt.Errorf("partition %d: %w", p, err)
	}
	e.m.restoreSeconds.Observe(took.Seconds())
	rate := float64(customers) / max(took.Seconds(), 1e-9)
	log.Info().Int64("records", r.Applied()).Int64("customers", customers).Dur("took", took).
		Float64("customers_per_second", rate).Msg("partition restored")
	return nil
}

// catchUpWindow bounds how old a store's last changelog sync may be for it
// to catch up on what others appended since, instead of restoring in
// full. Compaction drops a tombstone delete.retention.ms (24 h by default)
// after reaching it; a deletion whose tombstone is gone would be missed.
const catchUpWindow = time.Hour

// catchUp applies the changelog records from synced to end on top of
// partition p's local state, which reflects the changelog up to synced and
// has nothing unsent: the instance that ran the partition meanwhile wrote
// only those. It reports whether it did, or why not.
func (e *Engine) catchUp(ctx context.Context, p int32, synced, end int64, log zerolog.Logger) (bool, string, error) {
	at, ok, err := e.st.SyncedAt(p)
	if err != nil {
		return false, "", err
	}
	if !ok {
		return false, "the store does not know when it last synced", nil
	}
	if age := e.opt.Now().Sub(at); age > catchUpWindow {
		return false, fmt.Sprintf("the store last synced %s ago, over %s", age.Round(time.Second), catchUpWindow), nil
	}
	r, err := e.st.CatchUp(p)
	if err != nil {
		return false, "", err
	}
	start := time.Now()
	err = e.cluster().ReadChangelogFrom(ctx, e.cfg.Kafka.Topics.Changelog, int(p), synced, end, func(key, value []byte, deleted bool) error {
		if err := r.Apply(key, value, deleted); err != nil {
			return err
		}
		e.m.restoreRecords.Inc()
		return nil
	})
	if err != nil {
		// Part of it may be applied; the full restore that follows
		// wipes the partition first.
		r.Abort()
		return false, "", err
	}
	if err := r.Finish(end); err != nil {
		return false, "", err
	}
	e.m.restoreSeconds.Observe(time.Since(start).Seconds())
	log.Info().Int64("from", synced).Int64("records", r.Applied()).Dur("took", time.Since(start)).Msg("partition caught up from the changelog")
	return true, "", nil
}
