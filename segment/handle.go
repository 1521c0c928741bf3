package segment

import (
	"errors"
	"fmt"
	"time"

	"github.com/segd/segd/schemas"
)

// Record is one input record as a transport hands it in.
type Record struct {
	Topic     string
	Partition int32 // -1 when the source has none
	Offset    int64 // a file replay's line number
	Key       []byte
	Value     []byte
	// Time is the record's timestamp; a tombstone without one is applied
	// at the partition's clock.
	Time time.Time
}

// Input says how to read one input topic.
type Input struct {
	// Type is the event type the topic carries; EventUnknown accepts any
	// type the value names (a file replay's mixed lines).
	Type    schemas.EventType
	Decoder Decoder
}

// Decoder decodes one input topic's values into an event.
type Decoder interface {
	Decode(value []byte, e *schemas.Event) error
}

// Rejected is a record segd refuses without applying anything: Handle
// dead-letters it with Reason, a file replay skips it.
type Rejected struct {
	Reason string
	Err    error
}

func (r *Rejected) Error() string { return r.Reason + ": " + r.Err.Error() }
func (r *Rejected) Unwrap() error { return r.Err }

func reject(reason schemas.Reason, err error) *Rejected {
	return &Rejected{Reason: string(reason), Err: err}
}

// Handle is the one way an input record enters a partition: decode,
// validate, then dead-letter it or apply it. wall is the wall clock (Unix
// ms) record times are held to: now when live, the start of a backfill,
// so that it stays deterministic. A bad record is dead-lettered and
// Handle returns nil; a transient decode error (Options.Transient) is
// returned with nothing applied or dead-lettered; any other error is a
// state failure.
func (p *Processor) Handle(r *Record, wall int64) error {
	if r.Topic != "" && r.Topic == p.opt.MergesTopic {
		return p.handleMerge(r, wall)
	}
	e := &p.event
	err := Decode(&p.opt, r, wall, p.clock, e)
	if err == nil {
		err = p.Apply(e)
	}
	return p.deadLetterRejected(r, err)
}

// DecodeRecord decodes r into e as Handle would, for a record that is
// neither a tombstone (a nil value) nor a merge: those read the
// processor's clock, and Handle decodes them itself. Unlike Handle it may
// run on another goroutine than the processor's, beside it (it reads
// only the processor's options, which never change).
func (p *Processor) DecodeRecord(r *Record, wall int64, e *schemas.Event) error {
	return Decode(&p.opt, r, wall, 0, e)
}

// HandleDecoded is Handle for a record DecodeRecord decoded into e with
// error decodeErr: it applies the event, or dead-letters the record.
func (p *Processor) HandleDecoded(r *Record, e *schemas.Event, decodeErr error) error {
	err := decodeErr
	if err == nil {
		err = p.Apply(e)
	}
	return p.deadLetterRejected(r, err)
}

// handleMerge folds a merge record (merge.go) read from the merges topic.
func (p *Processor) handleMerge(r *Record, wall int64) error {
	// A merge carries the source partition's clock: held to the same
	// bound as any record's time, or one far-future record would move
	// this watermark for good and fire every timer at once.
	p.maxTime = wall + p.opt.MaxFutureSkew.Milliseconds()
	err := p.Merge(string(r.Key), r.Value)
	if errors.Is(err, ErrBadMerge) {
		err = &Rejected{Reason: "bad_merge", Err: err}
	}
	return p.deadLetterRejected(r, err)
}

// deadLetterRejected dead-letters r when err rejects it and returns the
// errors that are not the record's fault.
func (p *Processor) deadLetterRejected(r *Record, err error) error {
	if err == nil {
		// Before errors.As: its target escapes, an allocation per record.
		return nil
	}
	var rej *Rejected
	if errors.As(err, &rej) {
		p.deadLetter(r.Topic, r.Partition, r.Offset, r.Key, r.Value, rej.Reason, rej.Err)
		return nil
	}
	return err
}

// Decode turns r into the event e under opt, validated: the record's
// size, its decoding, the event type its topic carries, the customer id
// (the key when the value has none) and every field's range, with times
// held to wall + opt.MaxFutureSkew. A null value on the profile topic is
// a tombstone: the customer's erasure, at the record's time, else at
// clock. It returns a *Rejected for a bad record, or a transient decode
// error as is.
func Decode(opt *Options, r *Record, wall, clock int64, e *schemas.Event) error {
	in, ok := opt.Inputs[r.Topic]
	if !ok {
		return &Rejected{Reason: "unknown_topic", Err: fmt.Errorf("topic %q is not an input topic", r.Topic)}
	}
	e.Reset()
	maxSkew := opt.MaxFutureSkew.Milliseconds()
	if r.Value == nil && in.Type == schemas.EventProfile {
		return decodeTombstone(r, wall, clock, maxSkew, e)
	}
	if opt.MaxRecordBytes > 0 && len(r.Value) > opt.MaxRecordBytes {
		return reject(schemas.ReasonTooLarge, fmt.Errorf("value is %d bytes, limit %d", len(r.Value), opt.MaxRecordBytes))
	}
	if err := in.Decoder.Decode(r.Value, e); err != nil {
		if opt.Transient != nil && opt.Transient(err) {
			return err
		}
		return &Rejected{Reason: reasonOf(err), Err: err}
	}
	if e.Type == schemas.EventUnknown {
		e.Type = in.Type
	}
	if e.Type == schemas.EventUnknown {
		return reject(schemas.ReasonUnknownEventType, errors.New("the event names no type"))
	}
	if in.Type != schemas.EventUnknown && e.Type != in.Type {
		return reject(schemas.ReasonUnknownEventType, fmt.Errorf("a %s event on the %s topic", e.Type, in.Type))
	}
	if e.CustomerID == "" {
		e.CustomerID = string(r.Key)
	}
	if err := e.Validate(wall, maxSkew); err != nil {
		return &Rejected{Reason: reasonOf(err), Err: err}
	}
	if opt.RequireEventID && e.EventID == "" {
		return reject(schemas.ReasonMissingEventID, errors.New("event_id is empty: a replay applies each event id once"))
	}
	return nil
}

// decodeTombstone turns a null profile record into an erasure.
func decodeTombstone(r *Record, wall, clock, maxSkew int64, e *schemas.Event) error {
	e.Type = schemas.EventProfile
	e.CustomerID = string(r.Key)
	e.Delete = true
	e.Time = r.Time.UnixMilli()
	if r.Time.IsZero() || e.Time <= 0 {
		// No timestamp (an old producer): erase at the partition's clock.
		e.Time = max(clock, wall)
	}
	if e.CustomerID == "" {
		return reject(schemas.ReasonMissingCustomerID, errors.New("tombstone without a key"))
	}
	if err := e.Validate(wall, maxSkew); err != nil {
		return &Rejected{Reason: reasonOf(err), Err: fmt.Errorf("tombstone: %w", err)}
	}
	return nil
}

// reasonOf extracts the machine-readable reason of a decode or validation
// error.
func reasonOf(err error) string {
	var de *schemas.DecodeError
	if errors.As(err, &de) {
		return string(de.Reason)
	}
	return "invalid"
}
