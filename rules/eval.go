package rules

import (
	"math"
	"strconv"

	"github.com/segd/segd/schemas"
)

// NewState returns an empty state for this rule set.
func (rs *RuleSet) NewState() *State {
	s := &State{}
	rs.InitState(s)
	return s
}

// InitState makes s, a zero State, an empty state of rs: for a State
// held in a larger struct rather than allocated on its own.
func (rs *RuleSet) InitState(s *State) {
	s.layout = &rs.traits
}

// Apply updates s with event e at clock now (the task's watermark, at or
// after e.Time). Every trait of e's event type whose filter matches takes
// the event into the bucket of e.Time; windowed traits first drop the
// buckets that left their window at now. A windowed trait ignores an event
// older than its window. first/last compare event times, so a late event
// never becomes the last one. A profile event sets or removes attributes.
//
// It returns the traits the event updated; SegmentsTouched turns them into
// the segments that need re-evaluation.
func (rs *RuleSet) Apply(s *State, e *schemas.Event, now int64) Touched {
	s.changed()
	if e.Type == schemas.EventProfile {
		for _, a := range e.Attributes {
			s.setAttr(a)
		}
		return 0
	}
	if int(e.Type) >= len(rs.byType) {
		return 0
	}
	var touched Touched
	sc := s.touch(now)
	sc.env.e = e
	for _, t := range rs.byType[e.Type] {
		r, has := s.rank(t.Index)
		if has {
			s.traits[r].prune(s, t, now)
		}
		if t.filter != nil && !t.filter(&sc.env) {
			continue
		}
		var b *bucket
		var start int64
		if t.Window > 0 {
			start = s.bucket(e.Time, t.Bucket)
			if start <= s.bucket(now, t.Bucket)-t.Window {
				continue // already outside the window
			}
		}
		touched |= traitBit(t.Index)
		var ts *traitState
		if has {
			ts = &s.traits[r]
		} else {
			ts = s.insert(t.Index, r)
		}
		if t.agg == aggDistinct {
			switch t.fld.kind {
			case kList:
				for _, v := range t.fld.list(e) {
					ts.see(v, start)
				}
			case kStr:
				if v := t.fld.str(e); v != "" {
					ts.see(v, start)
				}
			default:
				ts.see(strconv.FormatFloat(t.fld.num(e), 'g', -1, 64), start)
			}
			continue
		}
		if t.Window > 0 {
			b = ts.findBucket(start)
		} else if t.agg != aggFirst && t.agg != aggLast {
			if len(ts.buckets) == 0 {
				ts.buckets = append(ts.buckets, bucket{})
			}
			b = &ts.buckets[0]
		}
		switch t.agg {
		case aggCount:
			if t.Field == "" {
				b.n++
			} else {
				countField(t, b, e)
			}
		case aggSum, aggAvg, aggMin, aggMax:
			b.addNum(t.agg, t.fld.num(e))
		case aggMostFrequent:
			switch t.fld.kind {
			case kList:
				for _, v := range t.fld.list(e) {
					ts.countVal(b, v, 1)
				}
			case kStr:
				if v := t.fld.str(e); v != "" {
					ts.countVal(b, v, 1)
				}
			default:
				ts.countVal(b, strconv.FormatFloat(t.fld.num(e), 'g', -1, 64), 1)
			}
		case aggFirst, aggLast:
			takeFirstLast(t, ts, e)
		}
	}
	sc.env.e = nil
	s.changed()
	return touched
}

// Touched is a set of trait indexes (traits past the 64th share the last
// bit, which then stands for "any of them").
type Touched uint64

func traitBit(i int) Touched {
	if i >= 63 {
		return 1 << 63
	}
	return 1 << uint(i)
}

// SegmentsTouched appends to dst the segments of SegmentsFor(t) that read a
// trait in touched: the only ones whose result an event can have changed,
// since every time-based change up to the event's time was already applied
// by timers. It does not allocate when dst has room.
func (rs *RuleSet) SegmentsTouched(t schemas.EventType, touched Touched, dst []int) []int {
	if int(t) >= len(rs.segsFor) {
		return dst
	}
	segs := rs.segsFor[t]
	for k, m := range rs.segMasks[t] {
		if m&touched != 0 {
			dst = append(dst, segs[k])
		}
	}
	return dst
}

func countField(t *Trait, b *bucket, e *schemas.Event) {
	switch t.fld.kind {
	case kList:
		b.n += float64(len(t.fld.list(e)))
	case kStr:
		if t.fld.str(e) != "" {
			b.n++
		}
	default:
		b.n++
	}
}

func takeFirstLast(t *Trait, ts *traitState, e *schemas.Event) {
	if x := ts.rx(); x.has {
		if t.agg == aggFirst && e.Time >= x.at {
			return
		}
		if t.agg == aggLast && e.Time < x.at {
			return
		}
	}
	switch t.fld.kind {
	case kStr:
		v := t.fld.str(e)
		if v == "" {
			return
		}
		ts.ext().str = intern(v)
	default:
		ts.ext().num = t.fld.num(e)
	}
	x := ts.ext()
	x.has, x.at = true, e.Time
}

// traitNum returns a numeric (number or time) trait's value at now,
// memoized per state version and clock.
func traitNum(t *Trait, s *State, now int64) (float64, bool) {
	sc := s.touch(now)
	m := &sc.memo[t.Index]
	if m.gen == sc.gen {
		return m.num, m.ok
	}
	v, ok := computeNum(t, s, now)
	*m = traitMemo{gen: sc.gen, ok: ok, num: v}
	return v, ok
}

func computeNum(t *Trait, s *State, now int64) (float64, bool) {
	ts := s.get(t.Index)
	switch t.agg {
	case aggFirst, aggLast:
		x := ts.rx()
		return x.num, x.has
	case aggDistinct:
		seen := ts.rx().seen
		if t.Window == 0 {
			return float64(len(seen)), true
		}
		hi := s.bucket(now, t.Bucket)
		lo := hi - t.Window
		n := 0
		for _, sv := range seen {
			if sv.last > lo && sv.last <= hi {
				n++
			}
		}
		return float64(n), true
	}
	bs := ts.window(s, t, now)
	// One pass per aggregate, over bucket pointers: the bucket struct is
	// large and this loop is the hottest in segd.
	switch t.agg {
	case aggCount:
		return countOf(bs), true
	case aggSum:
		return sumOf(bs), true
	case aggAvg:
		n, sum := 0.0, 0.0
		for i := range bs {
			n += bs[i].n
			sum += bs[i].val
		}
		if math.IsInf(sum, 0) || math.IsNaN(sum) {
			sum = sumSat(bs)
		}
		return sum / n, n > 0
	case aggMin:
		if len(bs) == 0 {
			return 0, false
		}
		v := bs[0].val
		for i := 1; i < len(bs); i++ {
			if bs[i].val < v {
				v = bs[i].val
			}
		}
		return v, true
	case aggMax:
		if len(bs) == 0 {
			return 0, false
		}
		v := bs[0].val
		for i := 1; i < len(bs); i++ {
			if bs[i].val > v {
				v = bs[i].val
			}
		}
		return v, true
	}
	return 0, false
}

// traitStr returns a string trait's value at now, memoized like traitNum.
func traitStr(t *Trait, s *State, now int64) (string, bool) {
	sc := s.touch(now)
	m := &sc.memo[t.Index]
	if m.gen == sc.gen {
		return m.str, m.ok
	}
	v, ok := computeStr(t, s, now)
	*m = traitMemo{gen: sc.gen, ok: ok, str: v}
	return v, ok
}

func computeStr(t *Trait, s *State, now int64) (string, bool) {
	ts := s.get(t.Index)
	switch t.agg {
	case aggFirst, aggLast:
		x := ts.rx()
		return x.str, x.has
	case aggMostFrequent:
		return ts.mostFrequent(s, t, now)
	}
	return "", false
}

// mostFrequent returns the value with the highest count in the window at
// now; ties go to the smallest value, so the result is deterministic. It
// reads the running totals, and only when some stored bucket lies outside
// the window (a timer's evaluation before the next Apply prunes it, or a
// read at an earlier clock) subtracts those buckets from a copy of them,
// in the scratch so that this allocates nothing.
func (ts *traitState) mostFrequent(s *State, t *Trait, now int64) (string, bool) {
	i, j := ts.windowBounds(s, t, now)
	if i == 0 && j == len(ts.buckets) {
		return bestCount(ts.rx().freq)
	}
	sc := s.scratch()
	tot := append(sc.freqTot[:0], ts.rx().freq...)
	for _, out := range [2][]bucket{ts.buckets[:i], ts.buckets[j:]} {
		for k := range out {
			for _, v := range out[k].values() {
				tot = addCount(tot, v.v, -v.n)
			}
		}
	}
	best, ok := bestCount(tot)
	clear(tot)
	sc.freqTot = tot[:0]
	return best, ok
}

// bestCount returns the value with the highest count, the smallest value
// among equal counts; a count of 0 never wins.
func bestCount(tot []valCount) (string, bool) {
	best, bestN := "", uint32(0)
	for _, v := range tot {
		if v.n > bestN || (v.n == bestN && v.v < best) {
			best, bestN = v.v, v.n
		}
	}
	return best, bestN > 0
}

// Eval reports whether the customer with state s is in segment seg at
// clock now. It does not allocate.
func (rs *RuleSet) Eval(seg int, s *State, now int64) bool {
	return rs.progs[seg].run(&s.touch(now).env)
}

// EvalSegments evaluates segs at now and appends the results to dst, in
// order: Eval for many segments with the per-call setup done once, and a
// condition that several segments share evaluated once.
func (rs *RuleSet) EvalSegments(s *State, now int64, segs []int, dst []bool) []bool {
	sc := s.touch(now)
	e := &sc.env
	progs := rs.progs
	if rs.shared == nil {
		for _, i := range segs {
			dst = append(dst, progs[i].run(e))
		}
		return dst
	}
	words := (rs.nShared + 63) / 64
	if len(sc.evalBits) < 2*words {
		sc.evalBits = make([]uint64, 2*words)
	}
	done, res := sc.evalBits[:words], sc.evalBits[words:2*words]
	clear(done)
	for _, i := range segs {
		k := rs.shared[i]
		if k < 0 {
			dst = append(dst, progs[i].run(e))
			continue
		}
		w, bit := k>>6, uint64(1)<<(k&63)
		if done[w]&bit == 0 {
			done[w] |= bit
			if progs[i].run(e) {
				res[w] |= bit
			} else {
				res[w] &^= bit
			}
		}
		dst = append(dst, res[w]&bit != 0)
	}
	return dst
}

// segProgram is a segment condition in the shapes most rules have (a trait
// compared with a constant, and "and"/"or" of two of those) run inline, and
// any other condition as its compiled closure.
type segProgram struct {
	op   progOp
	a, b traitCmp
	f    func(*env) bool
}

type progOp uint8

const (
	progClosure progOp = iota
	progCmp
	progAnd
	progOr
)

func (p *segProgram) run(e *env) bool {
	switch p.op {
	case progCmp:
		return p.a.test(e)
	case progAnd:
		return p.a.test(e) && p.b.test(e)
	case progOr:
		return p.a.test(e) || p.b.test(e)
	}
	return p.f(e)
}

// NextChange returns the earliest time after now at which segment seg's
// result could change with no new event: when the oldest bucket of a
// windowed trait it reads leaves the window (bucket start + window), or
// when a since(x) comparison flips. ok is false when nothing time-based can
// change it. Evaluating at the returned instant gives the new result.
func (rs *RuleSet) NextChange(seg int, s *State, now int64) (at int64, ok bool) {
	return rs.nextChange(&rs.segments[seg].timing, s, now)
}

// nextChange is the earliest instant after now at which a windowed trait
// of td loses its oldest bucket or a since() comparison of td flips.
func (rs *RuleSet) nextChange(td *timeDeps, s *State, now int64) (int64, bool) {
	best := int64(math.MaxInt64)
	for _, ti := range td.wins {
		best = min(best, rs.leaveTime(ti, s, now))
	}
	return td.withSinces(best, s, now)
}

// withSinces is the earlier of best (math.MaxInt64: none) and the next
// flip of td's since() comparisons, as nextChange returns it.
func (td *timeDeps) withSinces(best int64, s *State, now int64) (int64, bool) {
	if len(td.sinces) > 0 {
		sc := s.touch(now)
		for i := range td.sinces {
			if c, ok := td.sinces[i].next(&sc.env, now); ok && c < best {
				best = c
			}
		}
	}
	if best == math.MaxInt64 {
		return 0, false
	}
	return best, true
}

// countOf is a count trait's value over the buckets bs.
func countOf(bs []bucket) float64 {
	n := 0.0
	for i := range bs {
		n += bs[i].n
	}
	return n
}

// sumOf is a sum trait's value over the buckets bs.
func sumOf(bs []bucket) float64 {
	sum := 0.0
	for i := range bs {
		sum += bs[i].val
	}
	if math.IsInf(sum, 0) || math.IsNaN(sum) {
		// Some partial sum overflowed: add again, saturating.
		// (Had none overflowed, both ways give the same bits.)
		sum = sumSat(bs)
	}
	return sum
}

// leaveTime returns when trait ti next changes a result by itself (after
// now): when its oldest in-window bucket leaves the window, or for a
// trait read only through comparisons with constants, when a leaving
// bucket first flips one of them (flipTime). Memoized per state version
// and clock.
func (rs *RuleSet) leaveTime(ti int, s *State, now int64) int64 {
	sc := s.touch(now)
	m := &sc.memo[ti]
	if m.leaveGen == sc.gen {
		return m.leave
	}
	t := rs.traits[ti]
	hi := s.bucket(now, t.Bucket)
	lo := hi - t.Window
	best := int64(math.MaxInt64)
	ts := s.get(ti)
	if cuts := rs.cuts[ti]; cuts != nil {
		if at, ok := flipTime(t, cuts, ts.buckets, lo, hi); ok {
			m.leave, m.leaveGen = at, sc.gen
			return at
		}
	}
	for _, sv := range ts.rx().seen {
		if sv.last > lo {
			if leave := sv.last + t.Window; leave > now && leave < best {
				best = leave
			}
		}
	}
	for i := range ts.buckets {
		// By index: a bucket is 64 bytes, and only its start is read.
		if start := ts.buckets[i].start; start > lo {
			if leave := start + t.Window; leave > now && leave < best {
				best = leave
			}
			break
		}
	}
	m.leave, m.leaveGen = best, sc.gen
	return best
}

// maxFlipSteps bounds the leaving buckets flipTime looks through: past
// it, it returns the time it reached, when a check finds nothing changed
// and looks further.
const maxFlipSteps = 16

// flipTime returns, for a count or sum trait read only through the
// comparisons cuts, the first time after the clock (whose bucket starts
// at hi; lo = hi - the window) at which a leaving bucket changes one of
// their results. Each bucket leaves at its start plus the window; a count
// of 10 read by "views >= 3" changes nothing until its 8th oldest bucket
// leaves, and each earlier leave was a timer that fired for nothing. The
// values are computed as computeNum computes them, over the same buckets,
// so that a comparison at the boundary agrees to the bit. MaxInt64: no
// leave changes a result. ok is false when buckets past the clock's
// (future events) are in the state: then the caller's plain rule holds.
func flipTime(t *Trait, cuts []traitCmp, bs []bucket, lo, hi int64) (at int64, ok bool) {
	i := 0
	for i < len(bs) && bs[i].start <= lo {
		i++
	}
	if len(bs) > 0 && bs[len(bs)-1].start > hi {
		return 0, false
	}
	results := func(v float64) uint64 {
		var r uint64
		for k := range cuts {
			if opTest(cuts[k].op, v, cuts[k].c) {
				r |= 1 << uint(k)
			}
		}
		return r
	}
	v := countOf(bs[i:])
	// A count is a sum of whole numbers: below 2^53 taking a bucket's
	// count off gives the same bits as adding the rest again. A sum is
	// added again, as computeNum adds it.
	exact := t.agg == aggCount && v < 1<<53
	if t.agg == aggSum {
		v = sumOf(bs[i:])
	}
	now := results(v)
	for k := i; k < len(bs); k++ {
		// At its leave time, bucket k and the older ones are out.
		switch {
		case exact:
			v -= bs[k].n
		case t.agg == aggCount:
			v = countOf(bs[k+1:])
		default:
			v = sumOf(bs[k+1:])
		}
		if results(v) != now || k-i+1 >= maxFlipSteps {
			return bs[k].start + t.Window, true
		}
	}
	return math.MaxInt64, true
}

// NextChangeAll returns the earliest time after now at which any
// time-dependent segment's result could change: the minimum of NextChange
// over all segments, computed from each windowed trait and each distinct
// since() time once. The engine schedules one timer per customer from it.
func (rs *RuleSet) NextChangeAll(s *State, now int64) (at int64, ok bool) {
	return rs.nextChange(&rs.timing, s, now)
}

// TouchedAll is every trait: the state changed in ways Apply did not
// report (a merge, a decode, other rules).
const TouchedAll = ^Touched(0)

// ChangeTimes remembers, beside one customer's state, when each windowed
// trait next changes by itself (NextChangeAll's terms), for
// NextChangeAfter. The zero value is empty; it is never stored.
//
// Its slices point into its own inline array when the times fit there:
// reading them after an event then touches the record that holds it, not
// a separate allocation (a cache miss per event with a million customers
// cached). So a ChangeTimes must not be copied once used.
type ChangeTimes struct {
	rs *RuleSet
	// times holds a time per rs.timing.wins (math.MaxInt64: never), then
	// the next flip per rs.timing.sinces group with deps (math.MaxInt64:
	// none; 0 for the others, computed every time). One slice for both,
	// split by rs's counts: a cached customer holds one ChangeTimes, and
	// a second slice header made it 24 bytes larger.
	times  []int64
	inline [changeTimesInline]int64
}

// changeTimesInline is how many times a ChangeTimes holds in itself: the
// standard benchmark rules need 9 (7 windowed traits, 2 since() times).
const changeTimesInline = 10

// SizeBytes is the heap the times hold beyond the ChangeTimes itself.
func (ct *ChangeTimes) SizeBytes() int {
	if n := cap(ct.times); n > len(ct.inline) {
		return 8 * n
	}
	return 0
}

// NextChangeAfter is NextChangeAll computed again only for the windowed
// traits in touched and those whose time has come (at or before now): a
// trait's next change is an absolute time that stays right while its
// state does not change and the clock has not reached it (the oldest
// bucket in the window stays the oldest until it leaves). After an event,
// that skips every trait the event did not update, whose buckets would
// otherwise be read from memory the event never touched. since() times
// are computed every time. ct must be used with one state only, touched
// must hold every trait changed since ct's last use (TouchedAll when
// unsure), and now must not go back; a ct of other rules starts over.
func (rs *RuleSet) NextChangeAfter(s *State, now int64, touched Touched, ct *ChangeTimes) (at int64, ok bool) {
	td := &rs.timing
	if ct.rs != rs {
		// Other rules (or none yet): their times, and their count, go.
		ct.rs = rs
		n := len(td.wins) + len(td.sinces)
		if n <= len(ct.inline) {
			ct.times = ct.inline[:n:n]
		} else {
			ct.times = make([]int64, n)
		}
		touched = TouchedAll
	}
	nw := len(td.wins)
	leaves, sinces := ct.times[:nw:nw], ct.times[nw:]
	best := int64(math.MaxInt64)
	for k, ti := range td.wins {
		leave := leaves[k]
		if leave <= now || touched&traitBit(ti) != 0 {
			leave = rs.leaveTime(ti, s, now)
			leaves[k] = leave
		}
		best = min(best, leave)
	}
	// A since() time whose x reads windowless traits only flips at a
	// time that stays right until one of them changes (an event touches
	// it) or the clock reaches it: x is read again only then.
	var sc *Scratch
	for k := range td.sinces {
		g := &td.sinces[k]
		if g.deps != 0 {
			if c := sinces[k]; c > now && touched&g.deps == 0 {
				best = min(best, c)
				continue
			}
		}
		if sc == nil {
			sc = s.touch(now)
		}
		c, ok := g.next(&sc.env, now)
		if !ok {
			c = math.MaxInt64
		}
		if g.deps != 0 {
			sinces[k] = c
		}
		best = min(best, c)
	}
	if best == math.MaxInt64 {
		return 0, false
	}
	return best, true
}

// timeSeg is a time-dependent segment: the windowed traits it reads and
// whether it has a since() comparison.
type timeSeg struct {
	index int
	wins  Touched
	since bool
}

// SegmentsDue appends to dst the time-dependent segments whose result
// may change at at, the time of a customer's timer: those reading a
// windowed trait whose change time in ct (as NextChangeAfter left it) is
// at or before at, and those with a since() comparison. Another
// time-dependent segment cannot change then: its windows' next changes
// that matter are later, and a timer fires at the earliest of them. ok
// is false when ct holds no times of these rules (evaluate every
// time-dependent segment).
func (rs *RuleSet) SegmentsDue(ct *ChangeTimes, at int64, dst []int) (_ []int, ok bool) {
	if ct.rs != rs {
		return dst, false
	}
	var due Touched
	for k, ti := range rs.timing.wins {
		if ct.times[k] <= at {
			due |= traitBit(ti)
		}
	}
	for _, ts := range rs.timeSegs {
		if ts.since || ts.wins&due != 0 {
			dst = append(dst, ts.index)
		}
	}
	return dst, true
}

// TraitValue returns trait i's value at now: numbers and times (Unix ms)
// as KindNumber, strings as KindString, null as the zero Value.
func (rs *RuleSet) TraitValue(i int, s *State, now int64) schemas.Value {
	t := rs.traits[i]
	if t.kind == kStr {
		if v, ok := traitStr(t, s, now); ok {
			return schemas.String(v)
		}
		return schemas.Value{}
	}
	if v, ok := traitNum(t, s, now); ok {
		return schemas.Number(v)
	}
	return schemas.Value{}
}

// IsTime reports whether the trait's value is a time (Unix ms).
func (t *Trait) IsTime() bool { return t.kind == kTime }
