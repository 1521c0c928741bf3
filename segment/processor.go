package segment

import (
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/rs/zerolog"

	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/state"
)

// ClockOffsetKey is the pseudo-topic under which a partition's watermark is
// stored with its offsets, so the clock commits atomically with them and a
// restart resumes the same event-time clock.
const ClockOffsetKey = "\x00clock"

// ChangeEncoder appends a SegmentChange's encoding as an output record
// value to dst, leaving dst's bytes as they are: the processor encodes
// straight after an outbox envelope's head.
type ChangeEncoder func(dst []byte, c *schemas.SegmentChange) ([]byte, error)

// Options configures a Processor. Live partitions, Local, backfills and
// file replays differ only here: the de-duplication horizon and Seen, the
// wall clock Handle is given, and where merges go (DeliverMerge).
type Options struct {
	// Inputs says how to decode each input topic (Handle, Decode).
	Inputs map[string]Input
	// ChangesTopic receives segment changes whose segment names no topic
	// of its own, and erasure notices. Required.
	ChangesTopic string
	// DeadLetterTopic receives the records segd cannot use. Required.
	DeadLetterTopic string
	// MergesTopic carries identity merges between partitions (merge.go);
	// records read from it are merge records, not events.
	MergesTopic string
	// EncodeChange encodes the changes. Required.
	EncodeChange ChangeEncoder
	// ConsentAttribute is the boolean profile attribute that, when false,
	// keeps the customer out of requires_consent segments.
	ConsentAttribute string
	// DedupHorizon is how long (event time) a customer's recent event ids
	// are remembered for de-duplication; 0 disables it.
	DedupHorizon time.Duration
	// MaxRecordBytes bounds an input record's value; 0: unbounded.
	MaxRecordBytes int
	// MaxFutureSkew is how far past the wall clock a record's time may be.
	MaxFutureSkew time.Duration
	// MaxAttributes and MaxAttributeBytes bound a customer's profile
	// attributes (input.max_attributes, input.max_attribute_bytes); 0:
	// unbounded.
	MaxAttributes, MaxAttributeBytes int
	// RequireEventID refuses events without an event id (a replay applies
	// each id once, so it needs one).
	RequireEventID bool
	// Transient reports a decode error that says nothing about the record
	// (a schema registry outage): Handle returns it instead of
	// dead-lettering, and the caller tries the record again. Nil: none is.
	Transient func(error) bool
	// DeliverMerge, if set, hands a merge record for target straight to
	// the partition that owns it (replays, where nothing is published)
	// instead of the outbox.
	DeliverMerge func(target string, record []byte) error
	// Seen, if set, reports whether an earlier event had the same
	// customer and event id, and remembers this one: replays apply each
	// event once across all their inputs, whatever DedupHorizon says.
	Seen func(customerID, eventID string) (bool, error)
	// EvalAll re-evaluates every segment of the event's type instead of
	// only those reading a trait the event updated (tests compare both).
	EvalAll bool
	// OnChange, if set, learns of every transition as it is emitted
	// (rates and latency tracking); it must not call the Processor.
	OnChange func(Change)
	// Log receives warnings (sampled, see SampledLog); the zero Logger
	// discards.
	Log zerolog.Logger
}

func (o *Options) validate() error {
	switch {
	case o.ChangesTopic == "":
		return errors.New("segment: Options.ChangesTopic is empty")
	case o.DeadLetterTopic == "":
		return errors.New("segment: Options.DeadLetterTopic is empty")
	case o.EncodeChange == nil:
		return errors.New("segment: Options.EncodeChange is nil")
	case o.DedupHorizon < 0, o.MaxRecordBytes < 0, o.MaxFutureSkew < 0, o.MaxAttributes < 0, o.MaxAttributeBytes < 0:
		return errors.New("segment: negative bound in Options")
	}
	return nil
}

// Change is what Options.OnChange learns of a transition.
type Change struct {
	Segment string
	Enter   bool
	Cause   schemas.CauseKind
	// OutboxSeq is the outbox entry holding the change; 0 when the change
	// could not be encoded and was dead-lettered instead.
	OutboxSeq uint64
}

// Stats counts what a processor did. Owned by the goroutine that runs the
// processor; others read copies.
type Stats struct {
	Events         [schemas.NumEventTypes]uint64
	Duplicates     uint64
	Late           uint64               // applied with a time before the clock
	TooLate        uint64               // older than the longest window: counted, not applied
	Evaluations    uint64               // segment conditions evaluated
	SegmentChanges map[string][2]uint64 // per segment: ENTERs, EXITs
	Deleted        uint64
	Merged         uint64 // customers folded into another (alias events)
	MergedInto     uint64 // merge records applied to their target
	Enters         uint64
	Exits          uint64
	Timers         uint64
	DeadLetters    map[string]uint64 // by reason
	// ErasureNotices counts erasure notices published (not transitions).
	ErasureNotices uint64
}

// Processor is the deterministic heart of a partition: it applies input
// records and the passage of event time to one partition's customers and
// appends the resulting segment changes to that partition's outbox. It does
// no I/O beyond the state partition, so live runs, backfills, file replays
// and tests share it. Not safe for concurrent use.
type Processor struct {
	consentSegs bool   // some segment of rs requires consent
	idBuf       []byte // changeID's
	// idTail caches the end of a change id (":at[:born]") for idAt and
	// idBorn: the changes of one event or timer share both, and
	// formatting the two numbers was most of an id's cost.
	idTail       []byte
	idAt, idBorn int64
	// scratch is the rules' evaluation scratch every customer this
	// processor loads evaluates with, so that cached records carry none.
	scratch rules.Scratch
	// storedRules is the rules hash the partition's committed state was
	// evaluated with; rulesCurrent is whether the running rules' hash may
	// be recorded (the state is evaluated with them).
	storedRules  string
	rulesCurrent bool
	// storedRulesBefore is storedRules before a reconcile, for its log.
	storedRulesBefore string
	// maxTime bounds the time of a merge record (the source partition's
	// clock); 0 is no bound. Handle sets it before each merge.
	maxTime int64
	opt     Options
	// dedupHorizon is opt.DedupHorizon in milliseconds.
	dedupHorizon int64
	rs           *rules.RuleSet
	part         *state.Partition
	// listStored is the id of the last segment list known to be in the
	// partition's catalogs (0: none known): a record commits only beside
	// or after the list it names (segmentlist.go).
	listStored uint64

	clock int64 // the watermark: the largest event time applied, Unix ms
	// committedClock is clock as of the last commit, for API readers on
	// other goroutines.
	committedClock atomic.Int64
	// stagedClock is the clock the last commit staged; flightClock the
	// one of the commit in flight (CommitAsync).
	stagedClock, flightClock int64
	inFlight                 bool
	// tooLate: behavioral events older than clock - tooLate are ignored
	// (the longest window plus its bucket); 0 when no trait is windowed.
	tooLate int64

	allSegs  []int // every segment, for rule reloads
	timeSegs []int // segments whose result can change with time alone
	dueSegs  []int // fireTimer's scratch (SegmentsDue)
	// profileSegs are the segments a profile event can affect: those that
	// read profile attributes, plus every requires_consent segment, since
	// the consent attribute can flip them whatever they read.
	profileSegs []int
	// retiredTopics names the own topics of segments a reload removed, so
	// the EXITs of their members still go where their ENTERs went.
	retiredTopics map[string]string

	event   schemas.Event // scratch: the record being handled
	segs    []int         // scratch: segments to re-evaluate
	results []bool        // scratch: their results
	entered []segMember   // scratch: first memberships of an evaluation
	// counters are the partition's member counts of the running rules'
	// segments, by index, fetched on first use.
	counters []*state.MemberCounter
	change   schemas.SegmentChange // scratch
	env      []byte                // scratch for envelopes (with their encoded change)
	// mergeSrc is scratch for a merge record's decoded state.
	mergeSrc *rules.State
	stats    Stats
	// segChanges counts the transitions of the running rules' segments
	// by index (ENTERs, EXITs) until Stats folds them into
	// stats.SegmentChanges: a map update per change was a twentieth of
	// the task's time with 1000 segments.
	segChanges [][2]uint64
}

// New opens a processor over part, evaluating with rs.
func New(rs *rules.RuleSet, part *state.Partition, opt Options) (*Processor, error) {
	if err := opt.validate(); err != nil {
		return nil, err
	}
	p := &Processor{opt: opt, part: part, dedupHorizon: opt.DedupHorizon.Milliseconds()}
	p.setRules(rs)
	p.stats.DeadLetters = map[string]uint64{}
	p.stats.SegmentChanges = map[string][2]uint64{}
	offs, err := part.Offsets()
	if err != nil {
		return nil, fmt.Errorf("read offsets: %w", err)
	}
	p.clock = offs[ClockOffsetKey]
	p.committedClock.Store(p.clock)
	p.stagedClock = p.clock
	if p.storedRules, err = part.RulesHash(); err != nil {
		return nil, err
	}
	has, err := part.HasCustomers()
	if err != nil {
		return nil, fmt.Errorf("partition %d: %w", part.ID(), err)
	}
	// An empty partition has nothing to reconcile; one evaluated with
	// other rules (or with unknown rules: a store from before the hash was
	// kept) must be reconciled before it runs (ReconcileRules).
	p.rulesCurrent = p.storedRules == rs.Hash() || !has
	return p, nil
}

// Partition is the state partition the processor runs.
func (p *Processor) Partition() *state.Partition { return p.part }

// Rules is the running rule set.
func (p *Processor) Rules() *rules.RuleSet { return p.rs }

// Clock is the partition's watermark (Unix ms). Only the owner may call it.
func (p *Processor) Clock() int64 { return p.clock }

// CommittedClock is the watermark as of the last commit; safe for any
// goroutine.
func (p *Processor) CommittedClock() int64 { return p.committedClock.Load() }

// Stats are the processor's counters. Only the owner may read them, and
// only through Stats: the transitions per segment are folded in here.
func (p *Processor) Stats() *Stats {
	p.foldSegmentChanges()
	return &p.stats
}

// foldSegmentChanges adds the counts of segChanges to
// stats.SegmentChanges and zeroes them.
func (p *Processor) foldSegmentChanges() {
	segs := p.rs.Segments()
	for i, n := range p.segChanges {
		if n == [2]uint64{} {
			continue
		}
		sc := p.stats.SegmentChanges[segs[i].ID]
		sc[0] += n[0]
		sc[1] += n[1]
		p.stats.SegmentChanges[segs[i].ID] = sc
		p.segChanges[i] = [2]uint64{}
	}
}

// StoredRulesBefore is the rules hash the state was evaluated with before
// the last ReconcileRules, for its log line.
func (p *Processor) StoredRulesBefore() string { return p.storedRulesBefore }

// MergesTopic is the topic Handle treats as merge records.
func (p *Processor) MergesTopic() string { return p.opt.MergesTopic }

// ReconcileRules re-evaluates the partition when its state was last
// evaluated with other rules than the running ones (rules changed while
// it was stopped, or it moved from an instance that ran other rules):
// exactly what a live reload does, so members of removed segments EXIT
// and members whose rule no longer holds EXIT (cause RULE_CHANGE). It
// returns the number of changes and whether it ran. The caller holds the
// partition (it must not run yet).
func (p *Processor) ReconcileRules(commitEvery int) (int, bool, error) {
	if p.rulesCurrent {
		return 0, false, nil
	}
	p.storedRulesBefore = p.storedRules
	n, err := p.Reload(p.rs, commitEvery)
	return n, true, err
}

func (p *Processor) setRules(rs *rules.RuleSet) {
	if p.rs != nil && p.rs != rs {
		p.retireTopics(p.rs, rs)
		p.foldSegmentChanges() // indexed by the rules that counted them
	}
	p.rs = rs
	p.segChanges = make([][2]uint64, len(rs.Segments()))
	p.counters = make([]*state.MemberCounter, len(rs.Segments()))
	p.mergeSrc = nil
	p.tooLate = 0
	for _, t := range rs.Traits() {
		if t.Window > 0 {
			p.tooLate = max(p.tooLate, t.Window+t.Bucket)
		}
	}
	p.timeSegs = p.timeSegs[:0]
	p.consentSegs = false
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
		p.consentSegs = p.consentSegs || s.RequiresConsent
	}
}

// retireTopics remembers the own topics of the segments next drops.
func (p *Processor) retireTopics(prev, next *rules.RuleSet) {
	for _, s := range prev.Segments() {
		if _, kept := next.SegmentIndex(s.ID); kept || s.Topic == "" {
			continue
		}
		if p.retiredTopics == nil {
			p.retiredTopics = map[string]string{}
		}
		p.retiredTopics[s.ID] = s.Topic
	}
	for _, s := range next.Segments() {
		delete(p.retiredTopics, s.ID)
	}
}

// load returns the customer's record, creating an empty one for a new id
// whose life is named by lifeKey (the event that creates it).
func (p *Processor) load(id, lifeKey string) (*Customer, error) {
	rec, err := p.part.Get(id)
	if err != nil {
		return nil, fmt.Errorf("load customer %s: %w", id, err)
	}
	c, ok := rec.(*Customer)
	if !ok {
		return nil, fmt.Errorf("load customer %s: record is %T, not *Customer", id, rec)
	}
	if c.fresh {
		c.fresh = false
		c.born = lifeMark(p.clock, lifeKey)
	}
	c.traits.UseScratch(&p.scratch)
	return c, nil
}

// advance moves the clock to t, first firing every timer due at or before
// t, each at its own time, in time order.
func (p *Processor) Advance(t int64) error {
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

func (p *Processor) fireTimer(id string, at int64) error {
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
	p.stats.Timers++
	// Only the segments whose time came (a quarter of the evaluations at
	// 1M customers were timers evaluating every time-dependent segment).
	segs := p.timeSegs
	if due, ok := p.rs.SegmentsDue(&c.changes, at, p.dueSegs[:0]); ok {
		p.dueSegs, segs = due, due
	}
	p.evaluate(c, id, segs, 0, at, schemas.CauseTimer, "")
	p.part.MarkDirty(id, c)
	return nil
}

// apply applies one validated event. Timers due at or before its time fire
// first; a late event is applied at the current clock.
func (p *Processor) Apply(e *schemas.Event) error {
	if err := p.Advance(e.Time); err != nil {
		return err
	}
	now := p.clock
	if e.Time < now {
		p.stats.Late++
		if p.tooLate > 0 && e.Type != schemas.EventProfile && e.Time < now-p.tooLate {
			// Older than every window (plus a bucket): no windowed trait
			// would take it, and lifetime ones must not see history
			// arrive out of thin air. Counted, not applied.
			p.stats.TooLate++
			return nil
		}
	}
	if p.opt.Seen != nil && e.EventID != "" {
		dup, err := p.opt.Seen(e.CustomerID, e.EventID)
		if err != nil {
			return err
		}
		if dup {
			p.stats.Duplicates++
			return nil
		}
	}
	// checkAttrs loads the customer to measure them: kept for the
	// event's own load below (a second map lookup was most of its cost).
	var c *Customer
	if e.Type == schemas.EventProfile && !e.Delete && len(e.Attributes) > 0 {
		var err error
		if c, err = p.checkAttrs(e); err != nil {
			return err
		}
	}
	p.stats.Events[e.Type]++
	id := e.CustomerID
	if e.Type == schemas.EventProfile && e.Delete {
		return p.erase(id, now)
	}
	if e.Type == schemas.EventProfile && e.AliasOf != "" {
		return p.alias(e, now)
	}
	if c == nil {
		var err error
		if c, err = p.load(id, e.EventID); err != nil {
			return err
		}
	}
	if p.dedupHorizon > 0 && e.EventID != "" {
		h := eventIDHash(e.EventID)
		c.forgetBefore(now - p.dedupHorizon)
		if c.seen(h) {
			p.stats.Duplicates++
			return nil
		}
		c.remember(h, now)
	}
	touched := p.rs.Apply(&c.traits, e, now)
	var segs []int
	switch {
	case e.Type == schemas.EventProfile:
		segs = p.profileSegs
	case p.opt.EvalAll:
		segs = p.rs.SegmentsFor(e.Type)
	default:
		p.segs = p.rs.SegmentsTouched(e.Type, touched, p.segs[:0])
		segs = p.segs
	}
	p.evaluate(c, id, segs, touched, now, schemas.CauseEvent, e.EventID)
	p.part.MarkDirty(id, c)
	return nil
}

// checkAttrs refuses a profile event carrying more than maxAttributes
// attributes, or one that would take its customer past maxAttributes or
// maxAttributeBytes. A customer already past a bound (state from before
// it, a lowered bound) may still shrink: only growth past it is refused.
// It returns the customer when it loaded them (nil when no bound is set).
func (p *Processor) checkAttrs(e *schemas.Event) (*Customer, error) {
	maxN, maxB := p.opt.MaxAttributes, p.opt.MaxAttributeBytes
	if maxN <= 0 && maxB <= 0 {
		return nil, nil
	}
	if maxN > 0 && len(e.Attributes) > maxN {
		return nil, &Rejected{string(schemas.ReasonTooManyAttributes), fmt.Errorf("the event carries %d attributes, limit %d (input.max_attributes)", len(e.Attributes), maxN)}
	}
	c, err := p.load(e.CustomerID, e.EventID)
	if err != nil {
		return nil, err
	}
	n0, b0 := c.traits.AttrUsage()
	n, b := c.traits.AttrUsageAfter(e.Attributes)
	if maxN > 0 && n > maxN && n > n0 {
		return nil, &Rejected{string(schemas.ReasonTooManyAttributes), fmt.Errorf("customer would have %d attributes, limit %d (input.max_attributes)", n, maxN)}
	}
	if maxB > 0 && b > maxB && b > b0 {
		return nil, &Rejected{string(schemas.ReasonTooManyAttributes), fmt.Errorf("customer's attributes would take %d bytes, limit %d (input.max_attribute_bytes)", b, maxB)}
	}
	return c, nil
}

// erase deletes a customer: EXIT (cause deletion) from every segment they
// are in, then the record and timer go.
func (p *Processor) erase(id string, now int64) error {
	c, err := p.load(id, "")
	if err != nil {
		return err
	}
	for j := 0; j < len(c.members); j++ {
		if sm := c.members[j]; sm.m.in() {
			p.emit(c, id, int(sm.seg), &c.members[j].m, false, now, schemas.CauseDeletion, "")
		}
	}
	p.exitOrphans(c, id, now, schemas.CauseDeletion, "")
	if c.timerAt != 0 {
		p.part.MoveTimer(id, c.timerAt, 0)
	}
	p.part.Delete(id)
	p.stats.Deleted++
	p.emitErasureNotice(id, now, c.born)
	return nil
}

// emitErasureNotice tells downstream systems that customer id was erased,
// member of a segment or not, so they can erase what they hold too. It
// travels on the changes topic as a SegmentChange today's readers decode
// (no new symbol: an old reader without an enum default would fail on
// one): kind EXIT, cause DELETION, an empty segment_id and seq 0, which no
// transition has (docs/schemas.md).
func (p *Processor) emitErasureNotice(id string, at, born int64) {
	ch := &p.change
	*ch = schemas.SegmentChange{
		ID: p.changeID(id, "", 0, at, born), CustomerID: id, Kind: schemas.Exit, Seq: 0, Time: at,
		Cause: schemas.CauseDeletion, RulesVersion: p.rs.Version(), RulesHash: p.rs.Hash(), Traits: ch.Traits[:0],
	}
	if _, err := p.stageChange(p.opt.ChangesTopic, id); err != nil {
		p.opt.Log.Warn().Err(err).Msg("erasure notice cannot be encoded; dead-lettered")
		p.deadLetter(p.opt.ChangesTopic, -1, -1, []byte(id), nil, ReasonUnencodableChange, err)
		return
	}
	p.stats.ErasureNotices++
}

// stageChange appends p.change to the outbox as a record for topic keyed
// by the customer id, and returns its outbox sequence. The change is
// encoded straight after the envelope's head: no copy of the value.
func (p *Processor) stageChange(topic, id string) (uint64, error) {
	env, err := p.opt.EncodeChange(AppendEnvelopeHead(p.env[:0], topic, id, nil), &p.change)
	if err != nil {
		return 0, err
	}
	p.env = env
	return p.part.AppendOutbox(env), nil
}

// exitOrphans EXITs c from the segments it is still recorded in that the
// running rules no longer define, so that neither their membership index
// nor their counts keep a customer who is going away.
func (p *Processor) exitOrphans(c *Customer, id string, at int64, cause schemas.CauseKind, causeEvent string) {
	for i := range c.orphans {
		if o := &c.orphans[i]; o.m.in() {
			p.emitOrphanExit(c, id, o, at, cause, causeEvent)
		}
	}
}

// evaluate re-evaluates segs at now, emits a change for each flipped
// result, and reschedules the customer's timer.
//
// touched holds the traits changed since the customer's last evaluation
// (rules.TouchedAll when not from one event), for the timer.
func (p *Processor) evaluate(c *Customer, id string, segs []int, touched rules.Touched, now int64, cause schemas.CauseKind, causeEvent string) {
	// Only segments that require consent read it: rules without any skip
	// the attribute lookup.
	consent := !p.consentSegs || p.consent(c)
	rsSegs := p.rs.Segments()
	p.stats.Evaluations += uint64(len(segs))
	p.results = p.rs.EvalSegments(&c.traits, now, segs, p.results[:0])
	// Most segments evaluated do not change: the customer's bitmap of
	// standings answers that without a search of c.members. A change looks
	// its entry up from where the last one was found (segs name each
	// segment once and ascend, as c.members do); a first membership goes
	// to p.entered, merged into c.members once at the end (inserting each
	// shifted the slice, and with 1000 segments a customer enters dozens at
	// a time).
	standing := c.standings(len(rsSegs))
	entered := p.entered[:0]
	pos := 0
	for k, i := range segs {
		in := p.results[k]
		if in && !consent && rsSegs[i].RequiresConsent {
			in = false
		}
		if in == (standing[i>>6]&(1<<(i&63)) != 0) {
			continue
		}
		seg := int32(i)
		j, found := c.findMember(seg, pos)
		pos = j
		if found {
			p.emit(c, id, i, &c.members[j].m, in, now, cause, causeEvent)
			continue
		}
		entered = append(entered, segMember{seg: seg})
		p.emit(c, id, i, &entered[len(entered)-1].m, in, now, cause, causeEvent)
	}
	if len(entered) > 0 {
		c.addMembers(entered)
	}
	p.entered = entered[:0]
	p.reschedule(c, id, touched, now)
}

// consent reports whether the customer has not withdrawn consent: only an
// explicit false on the consent attribute withholds it.
func (p *Processor) consent(c *Customer) bool {
	return consentGiven(&c.traits, p.opt.ConsentAttribute)
}

func consentGiven(traits *rules.State, attr string) bool {
	v, ok := traits.Attr(attr)
	return !ok || v.Kind != schemas.KindBool || v.Bool
}

func (p *Processor) reschedule(c *Customer, id string, touched rules.Touched, now int64) {
	var next int64
	if at, ok := p.rs.NextChangeAfter(&c.traits, now, touched, &c.changes); ok {
		next = at
	}
	if next != c.timerAt {
		p.part.MoveTimer(id, c.timerAt, next)
		c.timerAt = next
	}
}

// emit records a transition of customer id in segment seg of the running
// rules, whose standing m is (an entry of c.members).
func (p *Processor) emit(c *Customer, id string, seg int, m *member, in bool, at int64, cause schemas.CauseKind, causeEvent string) {
	s := p.rs.Segments()[seg]
	reads := s.Reads
	if cause == schemas.CauseDeletion {
		reads = nil // an erased customer's traits are not published
	}
	p.transition(c, id, m, seg, s.ID, s.Topic, reads, in, at, cause, causeEvent)
}

// emitOrphanExit EXITs a customer from a segment the rules no longer have
// (a reload, or an erasure or merge of a customer still recorded in one),
// on the segment's own topic when a reload in this process retired it.
func (p *Processor) emitOrphanExit(c *Customer, id string, o *orphanMember, at int64, cause schemas.CauseKind, causeEvent string) {
	p.transition(c, id, &o.m, -1, o.segment, p.retiredTopics[o.segment], nil, false, at, cause, causeEvent)
}

// transition moves m, appends the SegmentChange (carrying the traits in
// reads) to the outbox bound for topic (the changes topic when empty) and
// counts it. A change the output encoding cannot carry (a trait value
// that is NaN or infinite, from state written before segd checked its
// numbers) must not stop the partition: failing here would fail the same
// records on every restart. The transition stands and the change is set
// aside as a dead letter.
//
// seg is segment's index in the running rules, -1 for one they do not
// define.
func (p *Processor) transition(c *Customer, id string, m *member, seg int, segment, topic string, reads []int, in bool, at int64, cause schemas.CauseKind, causeEvent string) {
	m.seq++
	m.since = at
	if seg >= 0 {
		c.flipStanding(seg)
	}
	ch := &p.change
	*ch = schemas.SegmentChange{
		ID: p.changeID(id, segment, m.seq, at, c.born), CustomerID: id, SegmentID: segment, Kind: schemas.Exit,
		Seq: m.seq, Time: at, Cause: cause, CauseEventID: causeEvent, RulesVersion: p.rs.Version(), RulesHash: p.rs.Hash(),
		Traits: ch.Traits[:0],
	}
	if in {
		ch.Kind = schemas.Enter
		p.stats.Enters++
	} else {
		p.stats.Exits++
	}
	traits := p.rs.Traits()
	for _, ti := range reads {
		ch.Traits = append(ch.Traits, schemas.TraitValue{Name: traits[ti].Name, Value: p.rs.TraitValue(ti, &c.traits, at)})
	}
	if topic == "" {
		topic = p.opt.ChangesTopic
	}
	seq, err := p.stageChange(topic, id)
	if err != nil {
		p.opt.Log.Warn().Err(err).Str("segment", segment).Str("topic", topic).Msg("segment change cannot be encoded; dead-lettered")
		p.deadLetter(topic, -1, -1, []byte(id), nil, ReasonUnencodableChange, err)
	}
	kind := 1
	if in {
		kind = 0
	}
	if seg >= 0 {
		p.segChanges[seg][kind]++
	} else {
		sc := p.stats.SegmentChanges[segment]
		sc[kind]++
		p.stats.SegmentChanges[segment] = sc
	}
	if p.opt.OnChange != nil {
		p.opt.OnChange(Change{Segment: segment, Enter: in, Cause: cause, OutboxSeq: seq})
	}
	if seg < 0 {
		p.part.CountMember(segment, in)
		return
	}
	if p.counters[seg] == nil {
		p.counters[seg] = p.part.MemberCounter(segment)
	}
	p.counters[seg].Count(in)
}

// lifeMark names a customer's life by the event that began it (its id,
// unique by definition; the clock when there is none), never 0.
func lifeMark(clock int64, lifeKey string) int64 {
	if lifeKey == "" {
		return max(clock, 1)
	}
	return int64(eventIDHash(lifeKey)>>1) | 1
}

// changeID is appendChangeID in the processor's buffer, as a string that
// aliases it: valid until the next call. The change it goes into is
// encoded at once and never kept (the one string allocation per change
// was a twentieth of a change's cost with 1000 segments).
func (p *Processor) changeID(customer, segment string, seq uint64, at, born int64) string {
	if len(p.idTail) == 0 || at != p.idAt || born != p.idBorn {
		p.idTail = appendChangeIDTail(p.idTail[:0], at, born)
		p.idAt, p.idBorn = at, born
	}
	b := appendChangeIDHead(p.idBuf[:0], customer, segment, seq)
	p.idBuf = append(b, p.idTail...)
	return unsafe.String(unsafe.SliceData(p.idBuf), len(p.idBuf))
}

// appendChangeID appends a change's id, deterministic: the same
// transition always gets the same id. The transition time and the time
// the customer's life began (born) are part of it, so that a customer
// erased (or merged away) and later seen again never reuses an id of an
// earlier life, even for a transition at the same millisecond with the
// same sequence number.
func appendChangeID(b []byte, customer, segment string, seq uint64, at, born int64) []byte {
	return appendChangeIDTail(appendChangeIDHead(b, customer, segment, seq), at, born)
}

func appendChangeIDHead(b []byte, customer, segment string, seq uint64) []byte {
	b = append(b, customer...)
	b = append(b, ':')
	b = append(b, segment...)
	b = append(b, ':')
	return strconv.AppendUint(b, seq, 10)
}

func appendChangeIDTail(b []byte, at, born int64) []byte {
	b = append(b, ':')
	b = strconv.AppendInt(b, at, 10)
	if born != 0 {
		b = append(b, ':')
		b = strconv.AppendInt(b, born, 10)
	}
	return b
}

// SampledLog is the logger a processor should warn on (Options.Log):
// base, sampled so that a customer whose every change fails cannot flood
// it.
func SampledLog(base zerolog.Logger) zerolog.Logger {
	return base.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Minute})
}

// ReasonUnencodableChange is the dead-letter reason of a segment change
// the output encoding refused (see transition).
const ReasonUnencodableChange = "unencodable_change"

// deadLetter appends a record segd cannot use to the outbox, bound for the
// dead-letter topic, with the reason in headers.
func (p *Processor) deadLetter(topic string, partition int32, offset int64, key, value []byte, reason string, cause error) {
	p.stats.DeadLetters[reason]++
	hs := []Header{
		{Key: "segd-reason", Value: []byte(reason)},
		{Key: "segd-topic", Value: []byte(topic)},
		{Key: "segd-partition", Value: strconv.AppendInt(nil, int64(partition), 10)},
		{Key: "segd-offset", Value: strconv.AppendInt(nil, offset, 10)},
	}
	if cause != nil {
		hs = append(hs, Header{Key: "segd-error", Value: []byte(cause.Error())})
	}
	value, hs = BoundDeadLetter(value, hs)
	p.env = AppendEnvelope(p.env[:0], p.opt.DeadLetterTopic, string(key), hs, value)
	p.part.AppendOutbox(p.env)
}

// commit writes the clock and everything staged in one atomic batch.
func (p *Processor) Commit() error {
	if err := p.stageCommit(); err != nil {
		return err
	}
	if err := p.part.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	// A commit in flight landed before this one.
	p.inFlight = false
	p.committedClock.Store(p.clock)
	return nil
}

// CommitAsync commits like Commit with the state's write pipelined
// (state.Partition.CommitAsync): it reports whether the commit is in
// flight, to be settled with Settle before anything of it is reported
// durable. Otherwise it committed synchronously.
func (p *Processor) CommitAsync() (bool, error) {
	if err := p.stageCommit(); err != nil {
		return false, err
	}
	async, err := p.part.CommitAsync()
	if err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	p.inFlight = async
	if async {
		p.flightClock = p.clock
	} else {
		p.committedClock.Store(p.clock)
	}
	return async, nil
}

// Settle settles the commit in flight (state.Partition.Settle) and reports
// whether one landed.
func (p *Processor) Settle(wait bool) (bool, error) {
	done, err := p.part.Settle(wait)
	if err != nil {
		return done, fmt.Errorf("commit: %w", err)
	}
	if done && p.inFlight {
		p.inFlight = false
		p.committedClock.Store(p.flightClock)
	}
	return done, nil
}

// stageCommit stages what a commit writes besides the partition's own:
// the clock, the rules hash and the segment list.
func (p *Processor) stageCommit() error {
	// Only a moved clock is written: a commit that changes nothing must
	// write nothing, or an instance that merely held a partition for a
	// while (a neighbour restarting) would move its changelog and make
	// the owner coming back restore it in full.
	if p.clock != p.stagedClock {
		p.part.SetOffset(ClockOffsetKey, p.clock)
		p.stagedClock = p.clock
	}
	if p.rulesCurrent && p.storedRules != p.rs.Hash() {
		p.part.SetRulesHash(p.rs.Hash())
		p.storedRules = p.rs.Hash()
	}
	// Only with records to write: a commit that changes nothing writes
	// nothing (above).
	list := p.rs.SegmentListID()
	if p.listStored != list && p.part.DirtyRecords() > 0 {
		has, err := p.part.HasCatalog(list)
		if err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		if !has {
			p.part.SetCatalog(list, appendSegmentList(nil, p.rs))
		}
		p.listStored = list
	}
	return nil
}
