package engine

import (
	"context"
	"sync/atomic"
	"time"

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
	m      *partitionMetrics
	lat    *latencyTracker
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

func newPublisher(part *state.Partition, s sink, log zerolog.Logger, m *partitionMetrics) *publisher {
	return &publisher{part: part, sink: s, log: log, notify: make(chan struct{}, 1), batch: 512, m: m}
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
	tick := time.NewTicker(time.Second)
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
// confirmed.
func (pb *publisher) drain(ctx context.Context) (int, error) {
	pb.msgs = pb.msgs[:0]
	var last uint64
	n := 0
	start := time.Now()
	err := pb.part.ReadOutbox(pb.after, pb.batch, func(seq uint64, v []byte) error {
		last = seq
		n++
		env, err := decodeEnvelope(v)
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
		msg := connectors.Message{Topic: env.topic, Key: clone(env.key), Value: clone(env.value)}
		for _, h := range env.headers {
			msg.Headers = append(msg.Headers, connectors.Header{Key: h.key, Value: clone(h.value)})
		}
		pb.msgs = append(pb.msgs, msg)
		return nil
	})
	if err != nil {
		return 0, err
	}
	if last == 0 {
		return 0, nil
	}
	if len(pb.msgs) > 0 {
		if err := pb.sink.Write(ctx, pb.msgs...); err != nil {
			return 0, err
		}
	}
	if err := pb.part.DeleteOutbox(last); err != nil {
		return 0, err
	}
	pb.after = last
	pb.lat.ack(last, time.Now(), pb.m)
	if pb.m != nil {
		pb.m.outboxDepth.Set(float64(pb.part.OutboxDepth()))
		pb.m.published.Add(float64(len(pb.msgs)))
		pb.m.publishSeconds.Observe(time.Since(start).Seconds())
	}
	return n, nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
