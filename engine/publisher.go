package engine

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/segd/segd/segment"

	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/state"
)

// sink publishes records and returns once Kafka acknowledged all of them
// (acks=all). connectors.Producer is one.
type sink interface {
	Write(ctx context.Context, msgs ...connectors.Message) error
}

// publisher drains one partition's outbox to Kafka. It runs beside the
// partition's task: it reads only committed entries and deletes them only
// after the sink confirmed them, so a crash re-sends, never loses.
type publisher struct {
	part   *state.Partition
	sink   sink
	log    zerolog.Logger
	notify chan struct{} // the task signals after each commit
	batch  int
	after  uint64 // the highest sequence confirmed and deleted
	msgs   []connectors.Message
	// pending are the current batch's records not yet acknowledged;
	// batchLast and batchEntries describe the outbox entries they came from.
	pending      []pendingRecord
	batchLast    uint64
	batchEntries int
	setAside     setAsidePolicy
	m            *partitionMetrics
	lat          *latencyTracker
	// failing is set while publishing fails (nil once a write succeeds),
	// for /readyz and the page: a partition that cannot publish must be
	// visible, not only logged.
	failing atomic.Pointer[PublishFailure]
}

// PublishFailure describes a partition whose outbox cannot be published.
type PublishFailure struct {
	Partition int32     `json:"partition"`
	Since     time.Time `json:"since"`
	Error     string    `json:"error"`
}

// noteResult records the outcome of a publish attempt.
func (pb *publisher) noteResult(err error) {
	if err == nil {
		if pb.failing.Load() != nil {
			pb.failing.Store(nil)
			pb.log.Info().Msg("publishing again")
		}
		if pb.m != nil {
			pb.m.publishFailing.Set(0)
		}
		return
	}
	f := &PublishFailure{Partition: pb.part.ID(), Since: time.Now(), Error: err.Error()}
	if old := pb.failing.Load(); old != nil {
		f.Since = old.Since
	}
	pb.failing.Store(f)
	if pb.m != nil {
		pb.m.publishFailing.Set(1)
		pb.m.publishErrors.Inc()
	}
}

func newPublisher(part *state.Partition, s sink, log zerolog.Logger, m *partitionMetrics, sa setAsidePolicy) *publisher {
	return &publisher{part: part, sink: s, log: log, notify: make(chan struct{}, 1), batch: 512, m: m, setAside: sa}
}

// poke wakes the publisher without blocking.
func (pb *publisher) poke() {
	select {
	case pb.notify <- struct{}{}:
	default:
	}
}

// run publishes until ctx is done. Failed writes are retried with backoff;
// nothing is skipped.
func (pb *publisher) run(ctx context.Context) {
	drainLoop(ctx, pb.drain, pb.noteResult, pb.notify, pb.log, "publish failed; retrying")
}

// flush publishes everything committed so far, for shutdown.
func (pb *publisher) flush(ctx context.Context) error { return flushAll(ctx, pb.drain) }

// drainLoop calls drain until ctx is done: again at once while it makes
// progress, after a poke or a second when there is nothing to do, and
// with backoff (logged) when it fails. The outbox and changelog
// publishers share it.
func drainLoop(ctx context.Context, drain func(context.Context) (int, error), note func(error), notify <-chan struct{}, log zerolog.Logger, failMsg string) {
	backoff := 50 * time.Millisecond
	every := time.Second
	if n := idleTickNanos.Load(); n > 0 {
		every = time.Duration(n)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		n, err := drain(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if note != nil {
				note(err)
			}
			log.Warn().Err(err).Dur("backoff", backoff).Msg(failMsg)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if note != nil {
			note(nil)
		}
		if n > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-notify:
		case <-tick.C:
		}
	}
}

// idleTickNanos, when set (tests), replaces the second after which an
// idle drain loop looks again for work no one woke it for: lengthened,
// only the wake-ups publish in time.
var idleTickNanos atomic.Int64

// flushAll calls drain until it has nothing left or fails.
func flushAll(ctx context.Context, drain func(context.Context) (int, error)) error {
	for {
		n, err := drain(ctx)
		if err != nil || n == 0 {
			return err
		}
	}
}

// drain publishes one batch of the outbox and returns how many entries it
// confirmed. Records Kafka will never take (too large, not authorized, a
// topic that stays unknown past setAside.unknownTopicFor) are set aside
// as dead letters of their own, so the rest of the partition's output
// drains; transient failures are retried, re-sending only the records not
// yet acknowledged.
func (pb *publisher) drain(ctx context.Context) (int, error) {
	start := time.Now()
	if len(pb.pending) == 0 {
		hi := pb.part.OutboxReleased()
		n, err := pb.readBatch(hi)
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, pb.skipHole(hi)
		}
	}
	sent := 0
	for len(pb.pending) > 0 {
		errs, err := pb.write(ctx)
		if err == nil {
			sent += len(pb.pending)
			pb.pending = pb.pending[:0]
			break
		}
		if ctx.Err() != nil {
			return 0, err
		}
		var retry error
		kept := pb.pending[:0]
		for i, rerr := range errs {
			pm := pb.pending[i]
			if rerr == nil {
				sent++
				continue
			}
			switch connectors.ClassifyWriteError(rerr) {
			case connectors.WriteUnknownTopic:
				if pm.unknownSince.IsZero() {
					pm.unknownSince = time.Now()
				}
				if time.Since(pm.unknownSince) < pb.setAside.unknownTopicFor {
					retry = rerr
					break
				}
				fallthrough
			case connectors.WritePermanent:
				next, ok := pb.setAsideRecord(pm, rerr)
				if !ok {
					continue // dropped, logged and counted
				}
				pm = next
			default:
				retry = rerr
			}
			kept = append(kept, pm)
		}
		pb.pending = kept
		if retry != nil {
			return 0, err // the transient failure: drainLoop backs off
		}
		// Only set-aside records are left: write them at once.
	}
	if err := pb.part.DeleteOutbox(pb.batchLast); err != nil {
		return 0, err
	}
	pb.after = pb.batchLast
	pb.lat.ack(pb.batchLast, time.Now(), pb.m)
	if pb.m != nil {
		pb.m.outboxDepth.Set(float64(pb.part.OutboxDepth()))
		pb.m.published.Add(float64(sent))
		pb.m.all.totals.published.Add(uint64(sent))
		pb.m.publishSeconds.Observe(time.Since(start).Seconds())
	}
	return pb.batchEntries, nil
}

// write sends pb.pending and returns each record's error (nil when
// acknowledged) and the first one. kafka-go fails a whole write with one
// error when one topic is unknown or refused: then each topic's records
// are written on their own, so that a bad topic does not take the good
// ones down with it.
func (pb *publisher) write(ctx context.Context) ([]error, error) {
	pb.msgs = pb.msgs[:0]
	topics := map[string]bool{}
	for i := range pb.pending {
		pb.msgs = append(pb.msgs, pb.pending[i].msg)
		topics[pb.pending[i].msg.Topic] = true
	}
	err := pb.sink.Write(ctx, pb.msgs...)
	if err == nil {
		return nil, nil
	}
	errs := connectors.RecordErrors(err, pb.msgs)
	whole := len(errs) > 1 && errs[0] == err && errs[len(errs)-1] == err
	if !whole || len(topics) < 2 || connectors.ClassifyWriteError(err) == connectors.WriteRetriable || ctx.Err() != nil {
		return errs, err
	}
	var first error
	for topic := range topics {
		var idx []int
		var group []connectors.Message
		for i := range pb.msgs {
			if pb.msgs[i].Topic == topic {
				idx = append(idx, i)
				group = append(group, pb.msgs[i])
			}
		}
		gerr := pb.sink.Write(ctx, group...)
		for j, e := range connectors.RecordErrors(gerr, group) {
			errs[idx[j]] = e
			if e != nil && first == nil {
				first = e
			}
		}
	}
	return errs, first
}

// skipHole moves past released sequence numbers that hold no entry: a
// partition restored from a changelog that still carried entries a
// previous owner had published, but not the later ones it published and
// logged the deletes of, has such a hole; without this its depth never
// reached zero and the entries after it would wait for ever.
func (pb *publisher) skipHole(hi uint64) error {
	if hi <= pb.after {
		return nil
	}
	if err := pb.part.DeleteOutbox(hi); err != nil {
		return err
	}
	pb.after = hi
	if pb.m != nil {
		pb.m.outboxDepth.Set(float64(pb.part.OutboxDepth()))
	}
	return nil
}

// readBatch reads the next outbox entries up to hi into pb.pending.
func (pb *publisher) readBatch(hi uint64) (int, error) {
	pb.pending = pb.pending[:0]
	pb.batchLast, pb.batchEntries = 0, 0
	err := pb.part.ReadOutboxTo(pb.after, hi, pb.batch, func(seq uint64, v []byte) error {
		pb.batchLast = seq
		pb.batchEntries++
		env, err := segment.DecodeEnvelope(v)
		if err != nil {
			// Only a bug or disk corruption gets here; stalling the
			// partition forever would help nobody.
			pb.log.Error().Err(err).Uint64("outbox_seq", seq).Msg("skipping corrupt outbox entry")
			if pb.m != nil {
				pb.m.corruptOutbox.Inc()
			}
			return nil
		}
		// ReadOutbox's bytes are valid only during the callback.
		msg := connectors.Message{Topic: env.Topic, Key: clone(env.Key), Value: clone(env.Value)}
		for _, h := range env.Headers {
			msg.Headers = append(msg.Headers, connectors.Header{Key: h.Key, Value: clone(h.Value)})
		}
		pb.pending = append(pb.pending, pendingRecord{msg: msg, seq: seq})
		return nil
	})
	return pb.batchEntries, err
}

// pendingRecord is an outbox record not yet acknowledged.
type pendingRecord struct {
	msg          connectors.Message
	seq          uint64
	unknownSince time.Time // when its topic was first unknown
	setAside     bool      // msg is already the set-aside dead letter
}

// setAsidePolicy says where records Kafka refuses for good go.
type setAsidePolicy struct {
	deadLetterTopic string
	unknownTopicFor time.Duration
}

// setAsideRecord turns a record Kafka refused for good into a dead letter
// carrying (a bounded part of) it and why; a dead letter refused for good
// is dropped. Both are logged and counted.
func (pb *publisher) setAsideRecord(pm pendingRecord, cause error) (pendingRecord, bool) {
	class := connectors.ClassifyWriteError(cause).String()
	if pm.setAside || pm.msg.Topic == pb.setAside.deadLetterTopic {
		pb.log.Error().Err(cause).Str("topic", pm.msg.Topic).Uint64("outbox_seq", pm.seq).Int("bytes", len(pm.msg.Value)).
			Msg("dropping an outbox record Kafka refuses for good: it was already bound for the dead-letter topic")
		if pb.m != nil {
			pb.m.setAside.WithLabelValues("dropped").Inc()
		}
		return pm, false
	}
	pb.log.Error().Err(cause).Str("topic", pm.msg.Topic).Uint64("outbox_seq", pm.seq).Int("bytes", len(pm.msg.Value)).Str("class", class).
		Str("dead_letter_topic", pb.setAside.deadLetterTopic).Msg("setting aside an outbox record Kafka refuses for good; the rest of the partition's output goes on")
	if pb.m != nil {
		pb.m.setAside.WithLabelValues(class).Inc()
	}
	value, hs := segment.BoundDeadLetter(pm.msg.Value, []segment.Header{
		{Key: "segd-reason", Value: []byte("unpublishable")},
		{Key: "segd-error", Value: []byte(cause.Error())},
		{Key: "segd-original-topic", Value: []byte(pm.msg.Topic)},
	})
	out := pendingRecord{seq: pm.seq, setAside: true, msg: connectors.Message{Topic: pb.setAside.deadLetterTopic, Key: pm.msg.Key, Value: value}}
	for _, h := range hs {
		out.msg.Headers = append(out.msg.Headers, connectors.Header{Key: h.Key, Value: h.Value})
	}
	return out, true
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
