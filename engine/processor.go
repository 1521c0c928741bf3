package engine

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/state"
)

// clockOffsetKey is the pseudo-topic under which a partition's watermark is
// stored with its offsets, so the clock commits atomically with them and a
// restart resumes the same event-time clock.
const clockOffsetKey = "\x00clock"

// stateRecord is what the state store holds for a customer.
type stateRecord = state.Record

// changeEncoder encodes a SegmentChange as an output record value.
type changeEncoder func(dst []byte, c *schemas.SegmentChange) ([]byte, error)

// processorOptions configures a processor.
type processorOptions struct {
	changesTopic    string
	deadLetterTopic string
	encodeChange    changeEncoder
	// consentAttr is the boolean profile attribute that, when false, keeps
	// the customer out of requires_consent segments.
	consentAttr string
	// dedupHorizon is in event-time milliseconds; 0 disables de-duplication.
	dedupHorizon int64
	// mergesTopic receives identity merges (see merge.go).
	mergesTopic string
	// deliverMerge, if set, hands a merge record for target straight to
	// the partition that owns it (replays, where nothing is published)
	// instead of the outbox.
	deliverMerge func(target string, record []byte) error
	// seen, if set, reports whether an earlier event had the same
	// customer and event id, and remembers this one: replays apply each
	// event once across all their inputs, whatever dedupHorizon says.
	seen func(customerID, eventID string) (bool, error)
	// evalAll re-evaluates every segment of the event's type instead of
	// only those reading a trait the event updated (tests compare both).
	evalAll bool
	// maxAttributes and maxAttributeBytes bound a customer's profile
	// attributes (input.max_attributes, input.max_attribute_bytes); 0:
	// unbounded.
	maxAttributes, maxAttributeBytes int
	// log receives a warning (sampled) for each change set aside as
	// unencodable; the zero Logger discards.
	log zerolog.Logger
}

// processorStats counts what a processor did. Owned by the task goroutine;
// the metrics collector reads copies.
type processorStats struct {
	events      [schemas.NumEventTypes]uint64
	duplicates  uint64
	late        uint64               // applied with a time before the clock
	tooLate     uint64               // older than the longest window: counted, not applied
	evaluations uint64               // segment conditions evaluated
	segChanges  map[string][2]uint64 // per segment: ENTERs, EXITs
	deleted     uint64
	merged      uint64 // customers folded into another (alias events)
	mergedInto  uint64 // merge records applied to their target
	enters      uint64
	exits       uint64
	timers      uint64
	deadLetter  map[string]uint64 // by reason
	// erasureNotices counts erasure notices published (not transitions).
	erasureNotices uint64
}

// processor is the deterministic heart of a task: it applies decoded events
// and the passage of event time to one partition's customers and appends
// the resulting segment changes to that partition's outbox. It does no I/O
// beyond the state partition, so live runs, replays and tests share it.
// Not safe for concurrent use.
type processor struct {
	// storedRules is the rules hash the partition's committed state was
	// evaluated with; rulesCurrent is whether the running rules' hash may
	// be recorded (the state is evaluated with them).
	storedRules  string
	rulesCurrent bool
	// storedRulesBefore is storedRules before a reconcile, for its log.
	storedRulesBefore string
	// maxTime bounds the time of a merge record (the source partition's
	// clock); 0 is no bound. The task sets it before each merge.
	maxTime int64
	opt     processorOptions
	rs      *rules.RuleSet
	part    *state.Partition

	clock int64 // the watermark: the largest event time applied, Unix ms
	// committedClock is clock as of the last commit, for API readers on
	// other goroutines.
	committedClock atomic.Int64
	// tooLate: behavioral events older than clock - tooLate are ignored
	// (the longest window plus its bucket); 0 when no trait is windowed.
	tooLate int64

	allSegs  []int // every segment, for rule reloads
	timeSegs []int // segments whose result can change with time alone
	// profileSegs are the segments a profile event can affect: those that
	// read profile attributes, plus every requires_consent segment, since
	// the consent attribute can flip them whatever they read.
	profileSegs []int

	segs    []int                 // scratch: segments to re-evaluate
	results []bool                // scratch: their results
	change  schemas.SegmentChange // scratch
	buf     []byte                // scratch for encoded changes
	env     []byte                // scratch for envelopes
	// lat, if set, learns which outbox entries the current input record
	// caused (recordAt/readAt, set by the task around apply).
	lat              *latencyTracker
	rates            *segmentRates // per-segment ENTER/EXIT counts for the API
	recordAt, readAt time.Time
	// mergeSrc is scratch for a merge record's decoded state.
	mergeSrc *rules.State
	stats    processorStats
}

func newProcessor(rs *rules.RuleSet, part *state.Partition, opt processorOptions) (*processor, error) {
	p := &processor{opt: opt, part: part}
	p.setRules(rs)
	p.stats.deadLetter = map[string]uint64{}
	offs, err := part.Offsets()
	if err != nil {
		return nil, fmt.Errorf("read offsets: %w", err)
	}
	p.clock = offs[clockOffsetKey]
	p.committedClock.Store(p.clock)
	if p.storedRules, err = part.RulesHash(); err != nil {
		return nil, err
	}
	has, err := part.HasCustomers()
	if err != nil {
		return nil, fmt.Errorf("partition %d: %w", part.ID(), err)
	}
	// An empty partition has nothing to reconcile; one evaluated with
	// other rules (or with unknown rules: a store from before the hash was
	// kept) must be reconciled before it runs (reconcileRules).
	p.rulesCurrent = p.storedRules == rs.Hash() || !has
	return p, nil
}

// reconcileRules re-evaluates the partition when its state was last
// evaluated with other rules than the running ones (rules changed while
// it was stopped, or it moved from an instance that ran other rules):
// exactly what a live reload does, so members of removed segments EXIT
// and members whose rule no longer holds EXIT (cause RULE_CHANGE). It
// returns the number of changes and whether it ran. The caller holds the
// partition (it must not run yet).
func (p *processor) reconcileRules(commitEvery int) (int, bool, error) {
	if p.rulesCurrent {
		return 0, false, nil
	}
	p.storedRulesBefore = p.storedRules
	n, err := p.reload(p.rs, commitEvery)
	return n, true, err
}

func (p *processor) setRules(rs *rules.RuleSet) {
	p.rs = rs
	p.mergeSrc = nil
	p.tooLate = 0
	for _, t := range rs.Traits() {
		if t.Window > 0 {
			p.tooLate = max(p.tooLate, t.Window+t.Bucket)
		}
	}
	p.timeSegs = p.timeSegs[:0]
	p.profileSegs = p.profileSegs[:0]
	p.allSegs = p.allSegs[:0]
	readsProfile := map[int]bool{}
	for _, i := range rs.SegmentsFor(schemas.EventProfile) {
		readsProfile[i] = true
	}
	for i, s := range rs.Segments() {
		p.allSegs = append(p.allSegs, i)
		if s.TimeDependent {
			p.timeSegs = append(p.timeSegs, i)
		}
		if readsProfile[i] || s.RequiresConsent {
			p.profileSegs = append(p.profileSegs, i)
		}
	}
}

// load returns the customer's record, creating an empty one for a new id
// whose life is named by lifeKey (the event that creates it).
func (p *processor) load(id, lifeKey string) (*customer, error) {
	rec, err := p.part.Get(id)
	if err != nil {
		return nil, fmt.Errorf("load customer %s: %w", id, err)
	}
	c, ok := rec.(*customer)
	if !ok {
		return nil, fmt.Errorf("load customer %s: record is %T, not *customer", id, rec)
	}
	if c.fresh {
		c.fresh = false
		c.born = lifeMark(p.clock, lifeKey)
	}
	return c, nil
}

// advance moves the clock to t, first firing every timer due at or before
// t, each at its own time, in time order.
func (p *processor) advance(t int64) error {
	if t <= p.clock {
		return nil
	}
	for {
		at, ok := p.part.NextTimer()
		if !ok || at > t {
			break
		}
		if at > p.clock {
			p.clock = at
		}
		if err := p.part.PopDue(at, p.fireTimer); err != nil {
			return fmt.Errorf("fire timers due at %d: %w", at, err)
		}
	}
	p.clock = t
	return nil
}

func (p *processor) fireTimer(id string, at int64) error {
	c, err := p.load(id, "")
	if err != nil {
		return err
	}
	if c.timerAt != at {
		// The index and the record disagree only if the record's timer
		// moved in the same uncommitted window; the record is the truth.
		return nil
	}
	c.timerAt = 0 // PopDue removed it from the index
	p.stats.timers++
	if err := p.evaluate(c, id, p.timeSegs, at, schemas.CauseTimer, ""); err != nil {
		return err
	}
	p.part.MarkDirty(id, c)
	return nil
}

// apply applies one validated event. Timers due at or before its time fire
// first; a late event is applied at the current clock.
func (p *processor) apply(e *schemas.Event) error {
	if err := p.advance(e.Time); err != nil {
		return err
	}
	now := p.clock
	if e.Time < now {
		p.stats.late++
		if p.tooLate > 0 && e.Type != schemas.EventProfile && e.Time < now-p.tooLate {
			// Older than every window (plus a bucket): no windowed trait
			// would take it, and lifetime ones must not see history
			// arrive out of thin air. Counted, not applied.
			p.stats.tooLate++
			return nil
		}
	}
	if p.opt.seen != nil && e.EventID != "" {
		dup, err := p.opt.seen(e.CustomerID, e.EventID)
		if err != nil {
			return err
		}
		if dup {
			p.stats.duplicates++
			return nil
		}
	}
	if e.Type == schemas.EventProfile && !e.Delete && len(e.Attributes) > 0 {
		if err := p.checkAttrs(e); err != nil {
			return err
		}
	}
	p.stats.events[e.Type]++
	id := e.CustomerID
	if e.Type == schemas.EventProfile && e.Delete {
		return p.erase(id, now)
	}
	if e.Type == schemas.EventProfile && e.AliasOf != "" {
		return p.alias(e, now)
	}
	c, err := p.load(id, e.EventID)
	if err != nil {
		return err
	}
	if p.opt.dedupHorizon > 0 && e.EventID != "" {
		h := eventIDHash(e.EventID)
		c.forgetBefore(now - p.opt.dedupHorizon)
		if c.seen(h) {
			p.stats.duplicates++
			return nil
		}
		c.remember(h, now)
	}
	touched := p.rs.Apply(c.traits, e, now)
	var segs []int
	switch {
	case e.Type == schemas.EventProfile:
		segs = p.profileSegs
	case p.opt.evalAll:
		segs = p.rs.SegmentsFor(e.Type)
	default:
		p.segs = p.rs.SegmentsTouched(e.Type, touched, p.segs[:0])
		segs = p.segs
	}
	if err := p.evaluate(c, id, segs, now, schemas.CauseEvent, e.EventID); err != nil {
		return err
	}
	p.part.MarkDirty(id, c)
	return nil
}

// rejectedError is an event apply refused without applying anything; the
// task dead-letters its record with reason.
type rejectedError struct {
	reason schemas.Reason
	err    error
}

func (e *rejectedError) Error() string { return string(e.reason) + ": " + e.err.Error() }
func (e *rejectedError) Unwrap() error { return e.err }

// checkAttrs refuses a profile event carrying more than maxAttributes
// attributes, or one that would take its customer past maxAttributes or
// maxAttributeBytes. A customer already past a bound (state from before
// it, a lowered bound) may still shrink: only growth past it is refused.
func (p *processor) checkAttrs(e *schemas.Event) error {
	maxN, maxB := p.opt.maxAttributes, p.opt.maxAttributeBytes
	if maxN <= 0 && maxB <= 0 {
		return nil
	}
	if maxN > 0 && len(e.Attributes) > maxN {
		return &rejectedError{schemas.ReasonTooManyAttributes, fmt.Errorf("the event carries %d attributes, limit %d (input.max_attributes)", len(e.Attributes), maxN)}
	}
	c, err := p.load(e.CustomerID, e.EventID)
	if err != nil {
		return err
	}
	n0, b0 := c.traits.AttrUsage()
	n, b := c.traits.AttrUsageAfter(e.Attributes)
	if maxN > 0 && n > maxN && n > n0 {
		return &rejectedError{schemas.ReasonTooManyAttributes, fmt.Errorf("customer would have %d attributes, limit %d (input.max_attributes)", n, maxN)}
	}
	if maxB > 0 && b > maxB && b > b0 {
		return &rejectedError{schemas.ReasonTooManyAttributes, fmt.Errorf("customer's attributes would take %d bytes, limit %d (input.max_attribute_bytes)", b, maxB)}
	}
	return nil
}

// erase deletes a customer: EXIT (cause deletion) from every segment they
// are in, then the record and timer go.
func (p *processor) erase(id string, now int64) error {
	c, err := p.load(id, "")
	if err != nil {
		return err
	}
	for i := range c.members {
		if c.members[i].in() {
			if err := p.emit(c, id, i, false, now, schemas.CauseDeletion, ""); err != nil {
				return err
			}
		}
	}
	p.exitOrphans(c, id, now, schemas.CauseDeletion, "")
	if c.timerAt != 0 {
		p.part.MoveTimer(id, c.timerAt, 0)
	}
	p.part.Delete(id)
	p.stats.deleted++
	p.emitErasureNotice(id, now, c.born)
	return nil
}

// emitErasureNotice tells downstream systems that customer id was erased,
// member of a segment or not, so they can erase what they hold too. It
// travels on the changes topic as a SegmentChange today's readers decode
// (no new symbol: an old reader without an enum default would fail on
// one): kind EXIT, cause DELETION, an empty segment_id and seq 0, which no
// transition has (docs/schemas.md).
func (p *processor) emitErasureNotice(id string, at, born int64) {
	ch := &p.change
	*ch = schemas.SegmentChange{
		ID: changeID(id, "", 0, at, born), CustomerID: id, Kind: schemas.Exit, Seq: 0, Time: at,
		Cause: schemas.CauseDeletion, RulesVersion: p.rs.Version(), RulesHash: p.rs.Hash(), Traits: ch.Traits[:0],
	}
	var err error
	p.buf, err = p.opt.encodeChange(p.buf[:0], ch)
	if err != nil {
		p.opt.log.Warn().Err(err).Msg("erasure notice cannot be encoded; dead-lettered")
		p.deadLetter(p.opt.changesTopic, -1, -1, []byte(id), nil, reasonUnencodableChange, err)
		return
	}
	p.env = appendEnvelope(p.env[:0], p.opt.changesTopic, id, nil, p.buf)
	p.part.AppendOutbox(p.env)
	p.stats.erasureNotices++
}

// exitOrphans EXITs c from the segments it is still recorded in that the
// running rules no longer define, so that neither their membership index
// nor their counts keep a customer who is going away.
func (p *processor) exitOrphans(c *customer, id string, at int64, cause schemas.CauseKind, causeEvent string) {
	for i := range c.orphans {
		if o := &c.orphans[i]; o.m.in() {
			p.emitOrphanExit(c, id, o, at, cause, causeEvent)
		}
	}
}

// evaluate re-evaluates segs at now, emits a change for each flipped
// result, and reschedules the customer's timer.
func (p *processor) evaluate(c *customer, id string, segs []int, now int64, cause schemas.CauseKind, causeEvent string) error {
	consent := p.consent(c)
	rsSegs := p.rs.Segments()
	p.stats.evaluations += uint64(len(segs))
	p.results = p.rs.EvalSegments(c.traits, now, segs, p.results[:0])
	for k, i := range segs {
		in := p.results[k]
		if in && !consent && rsSegs[i].RequiresConsent {
			in = false
		}
		if in != c.members[i].in() {
			if err := p.emit(c, id, i, in, now, cause, causeEvent); err != nil {
				return err
			}
		}
	}
	p.reschedule(c, id, now)
	return nil
}

// consent reports whether the customer has not withdrawn consent: only an
// explicit false on the consent attribute withholds it.
func (p *processor) consent(c *customer) bool {
	v, ok := c.traits.Attr(p.opt.consentAttr)
	return !ok || v.Kind != schemas.KindBool || v.Bool
}

func (p *processor) reschedule(c *customer, id string, now int64) {
	var next int64
	if at, ok := p.rs.NextChangeAll(c.traits, now); ok {
		next = at
	}
	if next != c.timerAt {
		p.part.MoveTimer(id, c.timerAt, next)
		c.timerAt = next
	}
}

// emit records a transition of customer id in segment seg and appends the
// SegmentChange to the outbox.
func (p *processor) emit(c *customer, id string, seg int, in bool, at int64, cause schemas.CauseKind, causeEvent string) error {
	m := &c.members[seg]
	m.seq++
	m.since = at
	s := p.rs.Segments()[seg]
	ch := &p.change
	ch.ID = changeID(id, s.ID, m.seq, at, c.born)
	ch.CustomerID = id
	ch.SegmentID = s.ID
	ch.Kind = schemas.Exit
	if in {
		ch.Kind = schemas.Enter
		p.stats.enters++
	} else {
		p.stats.exits++
	}
	ch.Seq = m.seq
	ch.Time = at
	ch.Cause = cause
	ch.CauseEventID = causeEvent
	ch.RulesVersion = p.rs.Version()
	ch.RulesHash = p.rs.Hash()
	ch.Traits = ch.Traits[:0]
	if cause != schemas.CauseDeletion {
		traits := p.rs.Traits()
		for _, ti := range s.Reads {
			ch.Traits = append(ch.Traits, schemas.TraitValue{Name: traits[ti].Name, Value: p.rs.TraitValue(ti, c.traits, at)})
		}
	}
	topic := p.opt.changesTopic
	if s.Topic != "" {
		topic = s.Topic
	}
	var err error
	p.buf, err = p.opt.encodeChange(p.buf[:0], ch)
	seq := uint64(0)
	if err != nil {
		// A change the output encoding cannot carry (a trait value that
		// is NaN or infinite, from state written before segd checked
		// its numbers) must not stop the partition: failing here would
		// fail the same records on every restart. The transition stands
		// and the change is set aside as a dead letter instead.
		p.opt.log.Warn().Err(err).Str("segment", s.ID).Str("topic", topic).Msg("segment change cannot be encoded; dead-lettered")
		p.deadLetter(topic, -1, -1, []byte(id), nil, reasonUnencodableChange, err)
	} else {
		p.env = appendEnvelope(p.env[:0], topic, id, nil, p.buf)
		seq = p.part.AppendOutbox(p.env)
	}
	if p.rates != nil {
		p.rates.add(s.ID, in, time.Now())
	}
	if p.stats.segChanges == nil {
		p.stats.segChanges = map[string][2]uint64{}
	}
	sc := p.stats.segChanges[s.ID]
	if in {
		sc[0]++
	} else {
		sc[1]++
	}
	p.stats.segChanges[s.ID] = sc
	if cause == schemas.CauseEvent && err == nil {
		p.lat.add(seq, p.recordAt, p.readAt)
	}
	p.part.SetMember(s.ID, id, in)
	return nil
}

// changeID is deterministic: the same transition always gets the same id.
// The transition time and the time the customer's life began (born) are
// part of it, so that a customer erased (or merged away) and later seen
// again never reuses an id of an earlier life, even for a transition at
// the same millisecond with the same sequence number.
// lifeMark names a customer's life by the event that began it (its id,
// unique by definition; the clock when there is none), never 0.
func lifeMark(clock int64, lifeKey string) int64 {
	if lifeKey == "" {
		return max(clock, 1)
	}
	return int64(eventIDHash(lifeKey)>>1) | 1
}

func changeID(customer, segment string, seq uint64, at, born int64) string {
	b := make([]byte, 0, len(customer)+len(segment)+48)
	b = append(b, customer...)
	b = append(b, ':')
	b = append(b, segment...)
	b = append(b, ':')
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, at, 10)
	if born != 0 {
		b = append(b, ':')
		b = strconv.AppendInt(b, born, 10)
	}
	return string(b)
}

// processorLog is the logger a processor warns on: base, sampled so that
// a customer whose every change fails cannot flood it.
func processorLog(base zerolog.Logger) zerolog.Logger {
	return base.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Minute})
}

// reasonUnencodableChange is the dead-letter reason of a segment change
// the output encoding refused (see emit).
const reasonUnencodableChange = "unencodable_change"

// deadLetter appends a record segd cannot use to the outbox, bound for the
// dead-letter topic, with the reason in headers.
func (p *processor) deadLetter(topic string, partition int32, offset int64, key, value []byte, reason string, cause error) {
	p.stats.deadLetter[reason]++
	hs := []header{
		{key: "segd-reason", value: []byte(reason)},
		{key: "segd-topic", value: []byte(topic)},
		{key: "segd-partition", value: strconv.AppendInt(nil, int64(partition), 10)},
		{key: "segd-offset", value: strconv.AppendInt(nil, offset, 10)},
	}
	if cause != nil {
		hs = append(hs, header{key: "segd-error", value: []byte(cause.Error())})
	}
	value, hs = boundDeadLetter(value, hs)
	p.env = appendEnvelope(p.env[:0], p.opt.deadLetterTopic, string(key), hs, value)
	p.part.AppendOutbox(p.env)
}

// commit writes the clock and everything staged in one atomic batch.
func (p *processor) commit() error {
	// Only a moved clock is written: a commit that changes nothing must
	// write nothing, or an instance that merely held a partition for a
	// while (a neighbour restarting) would move its changelog and make
	// the owner coming back restore it in full.
	if p.clock != p.committedClock.Load() {
		p.part.SetOffset(clockOffsetKey, p.clock)
	}
	stampRules := p.rulesCurrent && p.storedRules != p.rs.Hash()
	if stampRules {
		p.part.SetRulesHash(p.rs.Hash())
	}
	if err := p.part.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if stampRules {
		p.storedRules = p.rs.Hash()
	}
	p.committedClock.Store(p.clock)
	return nil
}
