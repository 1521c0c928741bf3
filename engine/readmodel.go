package engine

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/segment"
)

// The read model: what the HTTP API (package api) and other front ends
// read of a running engine, as plain values. Every method is safe for
// concurrent use and reads committed state, as fresh as the last commit.

// Status is the engine's readiness, for GET /readyz.
type Status struct {
	// Ready: partitions are assigned and running.
	Ready bool
	// Restoring is the partition being restored from the changelog, -1
	// when none.
	Restoring int32
	// Lags are the running partitions' consumer lags (the largest of
	// their topics), by partition.
	Lags []PartitionLag
	// PublishFailing are the partitions whose outbox cannot be
	// published now.
	PublishFailing []PublishFailure
	// DecodeWaiting are the partitions waiting at a record for the
	// schema registry.
	DecodeWaiting []DecodeWait
	// DiskFullSince is when the state disk filled up; zero while it is
	// not full.
	DiskFullSince time.Time
}

// PartitionLag is a running partition's consumer lag in records.
type PartitionLag struct {
	Partition int32
	Lag       int64
}

// Status reports the engine's readiness.
func (e *Engine) Status() Status {
	s := Status{Ready: e.ready.Load(), Restoring: int32(e.restoringNow.Load() - 1)}
	e.mu.Lock()
	for id, rp := range e.parts {
		s.Lags = append(s.Lags, PartitionLag{Partition: id, Lag: rp.task.maxLag.Load()})
	}
	e.mu.Unlock()
	sort.Slice(s.Lags, func(i, j int) bool { return s.Lags[i].Partition < s.Lags[j].Partition })
	s.PublishFailing = e.PublishFailures()
	s.DecodeWaiting = e.DecodeWaits()
	s.DiskFullSince = e.st.DiskFullSince()
	return s
}

// PublishFailures lists the partitions of this process whose outbox
// cannot be published now, by partition.
func (e *Engine) PublishFailures() []PublishFailure {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []PublishFailure
	for _, rp := range e.parts {
		if f := rp.pub.failing.Load(); f != nil {
			out = append(out, *f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out
}

// Rules is the running rule set.
func (e *Engine) Rules() *rules.RuleSet { return e.rs.Load() }

// LastReloadError is why the last reload of the rules file failed, nil
// if it did not.
func (e *Engine) LastReloadError() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastReloadErr
}

// ErrCorruptRecord: a customer's stored record cannot be decoded.
var ErrCorruptRecord = errors.New("stored record cannot be decoded")

// CustomerView is a customer's committed state, evaluated at their
// partition's committed clock.
type CustomerView struct {
	ID        string
	Partition int32
	// Clock is the partition's clock at its last commit (Unix ms).
	Clock    int64
	Segments []Membership
	// Traits are the values of every trait of the running rules, in
	// their order.
	Traits []TraitValue
	// Profile are the customer's profile attributes.
	Profile []schemas.Attribute
}

// Membership is a customer's standing in a segment they are in.
type Membership struct {
	Segment   string
	EnteredAt int64 // Unix ms
	Seq       uint64
}

// TraitValue is a trait's value; Time: the value is a time (Unix ms).
type TraitValue struct {
	Name  string
	Value schemas.Value
	Time  bool
}

// Customer returns the committed state of a customer of the partitions
// this process runs; false if none holds them. An error wrapping
// ErrCorruptRecord means the record is there but cannot be decoded;
// another, that the state is unavailable.
func (e *Engine) Customer(id string) (CustomerView, bool, error) {
	rs := e.rs.Load()
	for _, p := range e.ownedPartitions() {
		data, ok, err := e.st.Lookup(p, id)
		if err != nil {
			return CustomerView{}, false, err
		}
		if !ok {
			continue
		}
		c, err := segment.DecodeCustomer(rs, segment.NewSegmentLists(e.st), data)
		if err != nil {
			return CustomerView{}, false, fmt.Errorf("%w: %v", ErrCorruptRecord, err)
		}
		clock, err := e.committedClock(p)
		if err != nil {
			return CustomerView{}, false, err
		}
		v := CustomerView{ID: id, Partition: p, Clock: clock, Segments: []Membership{}}
		for i, s := range rs.Segments() {
			if in, since, seq := c.Member(i); in {
				v.Segments = append(v.Segments, Membership{Segment: s.ID, EnteredAt: since, Seq: seq})
			}
		}
		for i, t := range rs.Traits() {
			val := rs.TraitValue(i, c.Traits(), clock)
			v.Traits = append(v.Traits, TraitValue{Name: t.Name, Value: val, Time: t.IsTime() && val.Kind == schemas.KindNumber})
		}
		v.Profile = append(v.Profile, c.Traits().Attrs()...)
		return v, true, nil
	}
	return CustomerView{}, false, nil
}

// committedClock is partition p's clock as of its last commit: from its
// processor when this process runs it, else from the store.
func (e *Engine) committedClock(p int32) (int64, error) {
	e.mu.Lock()
	proc := e.procs[p]
	e.mu.Unlock()
	if proc != nil {
		return proc.CommittedClock(), nil
	}
	offs, err := e.st.CommittedOffsets(p)
	if err != nil {
		return 0, err
	}
	return offs[segment.ClockOffsetKey], nil
}

func (e *Engine) ownedPartitions() []int32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	ps := make([]int32, 0, len(e.parts)+len(e.localParts))
	for p := range e.parts {
		ps = append(ps, p)
	}
	ps = append(ps, e.localParts...)
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}

// SegmentSize is a segment of the running rules with its committed size
// in the partitions this process runs and its recent changes.
type SegmentSize struct {
	Segment *rules.Segment
	Size    int64
	// Enters1h and the rest count the changes of the last hour and day.
	Enters1h, Exits1h, Enters24h, Exits24h int64
}

// SegmentSizes returns every segment of the running rules with its size
// and rates, in the rules' order.
func (e *Engine) SegmentSizes() ([]SegmentSize, error) {
	rs := e.rs.Load()
	out := make([]SegmentSize, 0, len(rs.Segments()))
	now := e.opt.Now()
	for _, s := range rs.Segments() {
		n, err := e.countMembers(s.ID)
		if err != nil {
			return nil, err
		}
		e1, x1, e24, x24 := e.rates.counts(s.ID, now)
		out = append(out, SegmentSize{Segment: s, Size: n, Enters1h: e1, Exits1h: x1, Enters24h: e24, Exits24h: x24})
	}
	return out, nil
}

// Members is a page of a segment's committed members in the partitions
// this process runs, in id order after cursor; next is "" after the last
// page.
func (e *Engine) Members(segment, cursor string, limit int) (ids []string, next string, err error) {
	return e.listMembers(segment, cursor, limit)
}

// Preview is what a candidate rule set would do to the committed state.
type Preview struct {
	Segments []segment.PreviewSegment
	// Warnings are the candidate's compile warnings and a note on traits
	// that would start without history.
	Warnings []string
}

// PreviewRules evaluates candidate against every customer's committed
// state in the partitions this process runs, with up to sample ids of
// who would enter and exit each segment. It changes nothing.
func (e *Engine) PreviewRules(candidate *rules.RuleSet, sample int) (*Preview, error) {
	running := e.rs.Load()
	segs, err := segment.Preview(e.st, candidate, running, e.cfg.Consent.Attribute, sample, e.ownedFilter())
	if err != nil {
		return nil, err
	}
	p := &Preview{Segments: segs}
	for _, w := range candidate.Warnings() {
		p.Warnings = append(p.Warnings, w.Error())
	}
	if note := segment.NoHistoryNote(segs, "NEW.yaml", running.File()); note != "" {
		p.Warnings = append(p.Warnings, note)
	}
	return p, nil
}

// ErrNotRunning: the engine does not run (no producer to write with).
var ErrNotRunning = errors.New("not running")

// EraseCustomer requests a customer's erasure: it writes a tombstone for
// them to the profile topic, so the deletion goes through the customer's
// partition like any event (EXIT with cause DELETION, state removed), in
// order with their other events. It returns once the request is written;
// ErrNotRunning while Run does not run.
func (e *Engine) EraseCustomer(ctx context.Context, id string) error {
	e.mu.Lock()
	prod := e.prod
	e.mu.Unlock()
	if prod == nil {
		return ErrNotRunning
	}
	return prod.Write(ctx, DeletionRequest(e.cfg.Kafka.Topics.Profiles.Name, id, e.opt.Now()))
}

// DeletionRequest is the record that erases a customer: a tombstone keyed
// by the customer id on the profile topic (it also lets compaction drop the
// customer's profile records from Kafka).
func DeletionRequest(profilesTopic, customerID string, now time.Time) connectors.Message {
	return connectors.Message{Topic: profilesTopic, Key: []byte(customerID), Value: nil, Time: now}
}

// RegisterMetrics adds collectors to the engine's registry, which
// Registry gathers (the API's own metrics, served with the engine's).
func (e *Engine) RegisterMetrics(cs ...prometheus.Collector) { e.m.reg.MustRegister(cs...) }
