package engine

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/segd/segd/connectors"
)

// A record whose decoder fails transiently (connectors.ErrTransient: the
// schema registry is down, slow or answering 5xx) is not the record's
// fault, so it is never dead-lettered: the task stops at it, commits what
// it applied before it, and tries it again with capped exponential backoff
// until it decodes (or fails for good, which dead-letters it as usual) or
// the task's ctx ends. Nothing after it is applied meanwhile; the partition
// shows up in GET /readyz as decode_waiting and in segd_decode_waiting.

// Backoff between attempts at a record whose decoding failed transiently.
const (
	decodeBackoffMin = 50 * time.Millisecond
	decodeBackoffMax = 5 * time.Second
)

// errDecodeStopped: the task's ctx ended while it waited on a record; it
// commits what it applied before that record and stops.
var errDecodeStopped = errors.New("engine: stopped while waiting to decode a record")

// DecodeWait describes a partition stopped at a record it cannot decode
// yet because the schema registry does not answer.
type DecodeWait struct {
	Partition int32     `json:"partition"`
	Topic     string    `json:"topic"`
	Offset    int64     `json:"offset"`
	Since     time.Time `json:"since"`
	Attempts  int       `json:"attempts"`
	Error     string    `json:"error"`
}

// handleOrWait is handle, except that a record whose decoding fails
// transiently is tried again, with backoff, until it does not. It returns
// errDecodeStopped when ctx ends first. Rule reloads (t.control) are
// served while it waits.
func (t *task) handleOrWait(ctx context.Context, m *connectors.Message) error {
	err := t.handle(m)
	if !errors.Is(err, connectors.ErrTransient) {
		return err
	}
	// What came before this record is applied: commit it, so that its
	// changes are published while this partition waits.
	if cerr := t.commit(); cerr != nil {
		return cerr
	}
	w := &DecodeWait{Partition: t.partition, Topic: m.Topic, Offset: m.Offset, Since: t.opt.now()}
	t.log.Warn().Err(err).Str("topic", m.Topic).Int64("offset", m.Offset).Msg("cannot decode: schema registry unavailable; waiting, then retrying this record")
	defer t.decodeWaiting.Store(nil)
	backoff := decodeBackoffMin
	for {
		w.Attempts++
		w.Error = err.Error()
		cp := *w
		t.decodeWaiting.Store(&cp)
		if t.m != nil {
			t.m.registryErrors.Inc()
			t.m.decodeWaiting.Set(1)
		}
		if serr := t.sleepServing(ctx, backoff); serr != nil {
			if t.m != nil {
				t.m.decodeWaiting.Set(0)
			}
			return serr
		}
		backoff = min(2*backoff, decodeBackoffMax)
		t.polledAt = t.opt.now() // it waited: the poll's time is old
		err = t.handle(m)
		if !errors.Is(err, connectors.ErrTransient) {
			if t.m != nil {
				t.m.decodeWaiting.Set(0)
			}
			t.log.Info().Str("topic", m.Topic).Int64("offset", m.Offset).Int("attempts", w.Attempts+1).
				Dur("waited", t.opt.now().Sub(w.Since)).Msg("decoding again after the schema registry came back")
			return err
		}
	}
}

// sleepServing waits for d, serving rule reloads meanwhile. It returns
// errDecodeStopped if ctx ends first.
func (t *task) sleepServing(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return errDecodeStopped
		case req := <-t.control:
			if err := t.pause(req); err != nil {
				return err
			}
		case <-timer.C:
			return nil
		}
	}
}

// DecodeWaits lists the partitions of this process stopped at a record
// they cannot decode yet (the schema registry does not answer), by
// partition.
func (e *Engine) DecodeWaits() []DecodeWait {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []DecodeWait
	for _, rp := range e.parts {
		if w := rp.task.decodeWaiting.Load(); w != nil {
			out = append(out, *w)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out
}
