package rules

import (
	"math"
	"math/bits"
	"slices"
	"unsafe"

	"github.com/segd/segd/schemas"
)

// State is one customer's behavioral state under a rule set: an
// accumulator per trait and the profile attributes. Create it with
// RuleSet.NewState. Not safe for concurrent use.
type State struct {
	// layout is the rule set's traits, for encoding: a pointer to the
	// rule set's slice, not a copy of its header, which made every
	// cached customer 16 bytes larger.
	layout *[]*Trait
	// traits holds the accumulators of the traits that have one, in
	// trait order; has has bit i set for the trait with Index i among
	// them (more for Index 64 and on: nil for rule sets of up to 64
	// traits). A customer feeds a few of a rule set's traits (a browser
	// one or two of the standard ten), and a slot for every trait was a
	// quarter of a cached customer and five cache lines its encoder
	// read. get reads a trait, slot makes room for one.
	has    uint64
	more   *[]uint64 // behind a pointer: rule sets of over 64 traits are rare
	traits []traitState
	attrs  []schemas.Attribute
	// attrIdx maps an attribute name to its index in attrs, so that an
	// update is O(1) however many attributes a customer has. nil (then
	// lookups scan) until attrs outgrows attrIndexMin; once built it is
	// kept complete until Reset.
	attrIdx   map[string]int32
	attrBytes int // sum of AttrSize over attrs
	// sc is the evaluation scratch: shared by the states one goroutine
	// evaluates (UseScratch), or the state's own, allocated on first use.
	// It is not part of the state: a cache of a million states holds no
	// memo of its own.
	sc *Scratch
}

// Scratch is what evaluating a state needs besides the state: memoized
// trait values, the closures' environment and buffers. The states one
// goroutine evaluates share one (State.UseScratch), so that each state
// carries none: it would be most of a small state's memory. The zero
// value is ready to use. Not safe for concurrent use.
type Scratch struct {
	// owner is the state the memo belongs to: evaluating another state
	// invalidates it.
	owner *State
	// memo caches trait values for one (state version, clock): segments
	// of a rule set read the same traits, and a trait's value is
	// computed once per event instead of once per segment.
	memo []traitMemo
	gen  uint32 // bumped by a change of owner, of the state, or of the clock
	now  int64
	env  env
	// freqTot holds most_frequent totals of a window that excludes stored
	// buckets.
	freqTot []valCount
	// bcache remembers recent bucketStart results: an event computes the
	// same (time, granularity) pairs for many traits, and the division is
	// a large part of the per-event cost.
	bcache [4]bucketMemo
	bnext  uint8
	// evalBits is EvalSegments' scratch for rule sets whose segments
	// share conditions: a bit per shared condition for "evaluated in this
	// call", then a bit per shared condition for its result.
	evalBits []uint64
}

// UseScratch makes s evaluate with sc, which other states may share (one
// at a time: not concurrently).
func (s *State) UseScratch(sc *Scratch) { s.sc = sc }

// scratch returns s's scratch, allocating one for a state that was given
// none.
func (s *State) scratch() *Scratch {
	if s.sc == nil {
		s.sc = &Scratch{}
	}
	return s.sc
}

type bucketMemo struct{ t, g, b int64 }

// bucket is bucketStart(t, g) through the scratch's cache.
func (s *State) bucket(t, g int64) int64 {
	sc := s.scratch()
	for i := range sc.bcache {
		if c := &sc.bcache[i]; c.t == t && c.g == g {
			return c.b
		}
	}
	b := bucketStart(t, g)
	sc.bcache[sc.bnext&3] = bucketMemo{t: t, g: g, b: b}
	sc.bnext++
	return b
}

type traitMemo struct {
	gen      uint32
	ok       bool
	num      float64
	str      string
	leaveGen uint32 // leave is valid when leaveGen == Scratch.gen
	leave    int64  // when the oldest in-window bucket leaves; MaxInt64: never
}

// touch makes the scratch's memo s's at clock now: values memoized for
// another state or another clock are invalidated. Every evaluation
// starts with it.
func (s *State) touch(now int64) *Scratch {
	sc := s.scratch()
	switch {
	case sc.owner != s || len(sc.memo) < s.traitCount():
		if n := s.traitCount(); len(sc.memo) < n {
			sc.memo = make([]traitMemo, n)
		}
		sc.owner, sc.now = s, now
		sc.gen++
		if sc.gen == 0 {
			clear(sc.memo)
			sc.gen = 1
		}
	case now != sc.now:
		sc.now = now
		sc.gen++
		if sc.gen == 0 {
			clear(sc.memo)
			sc.gen = 1
		}
	}
	sc.env.s, sc.env.sc, sc.env.now = s, sc, now
	return sc
}

// changed invalidates what the scratch memoized of s: s itself changed.
func (s *State) changed() {
	if sc := s.sc; sc != nil && sc.owner == s {
		sc.owner = nil
	}
}

// env is what compiled closures read.
type env struct {
	s   *State
	sc  *Scratch       // s's, with its memo aligned to now
	e   *schemas.Event // set only while a trait filter runs
	now int64
}

// bucket accumulates the values that fell into one time bucket (or, for a
// lifetime trait, into the one bucket with start 0).
type bucket struct {
	start int64
	n     float64 // number of values
	// val is the bucket's aggregate of its values: the sum for sum and
	// avg, the least for min, the greatest for max. One field for the
	// three: a trait has one aggregation, and a cached customer holds
	// tens of buckets (the struct was 64 bytes with a field each).
	val float64
	// vals holds a most_frequent bucket's values; nil in every other
	// trait's buckets, most of a cached customer's, which a slice header
	// here made 48 bytes each instead of 32.
	vals *[]valCount
}

// values returns b's most_frequent values (none for other traits).
func (b *bucket) values() []valCount {
	if b.vals == nil {
		return nil
	}
	return *b.vals
}

type valCount struct {
	v string
	n uint32
}

// seenVal is a distinct_count value and the start of the last bucket it
// occurred in: the value is in a window exactly when that bucket is.
type seenVal struct {
	v    string
	last int64
}

// traitState is the accumulator of one trait.
type traitState struct {
	buckets []bucket
	// x holds what only distinct_count, most_frequent, first and last
	// keep: nil until such a trait takes a value, so that the other
	// traits of a cached customer cost a slice and a pointer.
	x *traitExtra
}

// traitExtra is the part of a trait's state most traits never use.
type traitExtra struct {
	seen []seenVal // distinct_count
	// freq holds, for most_frequent, each value's count summed over all
	// of buckets, so that reading the trait does not merge every bucket
	// on every event. It is derived from buckets (never encoded) and kept
	// in step with them: every count added to a bucket is added here and
	// every pruned bucket is subtracted. Values whose count returns to 0
	// are removed, so its length is that of the union of bucket values.
	freq []valCount
	// first and last keep one value and its event time.
	has bool
	str string
	num float64
	at  int64
}

// noTrait is what get returns for a trait without an accumulator: read
// only, like noExtra.
var noTrait traitState

// rank returns the position trait i's accumulator has, or would have, in
// s.traits, and whether it has one.
func (s *State) rank(i int) (int, bool) {
	if i < 64 {
		bit := uint64(1) << uint(i)
		return bits.OnesCount64(s.has & (bit - 1)), s.has&bit != 0
	}
	return s.rankMore(i)
}

// moreWords returns the bits of traits 64 and on (nil for none).
func (s *State) moreWords() []uint64 {
	if s.more == nil {
		return nil
	}
	return *s.more
}

// traitCount is the number of traits of s's rule set.
func (s *State) traitCount() int {
	if s.layout == nil {
		return 0
	}
	return len(*s.layout)
}

func (s *State) rankMore(i int) (int, bool) {
	r := bits.OnesCount64(s.has)
	w, bit := (i-64)>>6, uint64(1)<<uint((i-64)&63)
	more := s.moreWords()
	for k := 0; k < w && k < len(more); k++ {
		r += bits.OnesCount64(more[k])
	}
	if w >= len(more) {
		return r, false
	}
	return r + bits.OnesCount64(more[w]&(bit-1)), more[w]&bit != 0
}

// get returns trait i's accumulator for reading: &noTrait when it has
// none, which must not be written.
func (s *State) get(i int) *traitState {
	if r, ok := s.rank(i); ok {
		return &s.traits[r]
	}
	return &noTrait
}

// slot returns trait i's accumulator, making an empty one if it has none.
// It moves the accumulators after it: pointers that get or slot returned
// for other traits are stale after it.
func (s *State) slot(i int) *traitState {
	r, ok := s.rank(i)
	if ok {
		return &s.traits[r]
	}
	return s.insert(i, r)
}

// insert makes an accumulator for trait i, which has none, at position r
// (rank's). After a Reset the slots past the length hold emptied
// accumulators whose memory a decode reuses.
func (s *State) insert(i, r int) *traitState {
	if i < 64 {
		s.has |= 1 << uint(i)
	} else {
		w := (i - 64) >> 6
		if s.more == nil {
			s.more = new([]uint64)
		}
		for len(*s.more) <= w {
			*s.more = append(*s.more, 0)
		}
		(*s.more)[w] |= 1 << uint((i-64)&63)
	}
	n := len(s.traits)
	if n == cap(s.traits) {
		s.traits = slices.Grow(s.traits, 1)
	}
	s.traits = s.traits[:n+1]
	spare := s.traits[n]
	copy(s.traits[r+1:], s.traits[r:n])
	s.traits[r] = spare
	return &s.traits[r]
}

// traitIter yields the Index of each accumulator of s.traits, in order:
// next, once per accumulator.
type traitIter struct {
	s     *State
	words uint64
	base  int
	w     int
}

func (s *State) iter() traitIter { return traitIter{s: s, words: s.has} }

func (it *traitIter) next() int {
	for it.words == 0 {
		it.words, it.base = (*it.s.more)[it.w], 64+64*it.w
		it.w++
	}
	i := it.base + bits.TrailingZeros64(it.words)
	it.words &= it.words - 1
	return i
}

// Reset empties the state for reuse, keeping allocated capacity.
func (s *State) Reset() {
	for i := range s.traits {
		t := &s.traits[i]
		t.buckets = t.buckets[:0]
		if x := t.x; x != nil {
			clear(x.seen)
			x.seen = x.seen[:0]
			clear(x.freq)
			x.freq = x.freq[:0]
			x.has, x.str, x.num, x.at = false, "", 0, 0
		}
	}
	s.traits = s.traits[:0]
	s.has = 0
	clear(s.moreWords())
	clear(s.attrs)
	s.attrs = s.attrs[:0]
	s.attrIdx = nil
	s.attrBytes = 0
	s.changed()
}

// attrIndexMin is the number of attributes above which lookups go
// through a map: below it a scan is as fast and allocates nothing.
const attrIndexMin = 16

// attrIndex returns the index of attribute name in s.attrs, or -1.
func (s *State) attrIndex(name string) int {
	if s.attrIdx == nil && len(s.attrs) > attrIndexMin {
		s.attrIdx = make(map[string]int32, len(s.attrs))
		for i := range s.attrs {
			s.attrIdx[s.attrs[i].Name] = int32(i)
		}
	}
	if s.attrIdx != nil {
		if i, ok := s.attrIdx[name]; ok {
			return int(i)
		}
		return -1
	}
	for i := range s.attrs {
		if s.attrs[i].Name == name {
			return i
		}
	}
	return -1
}

// Attr returns a profile attribute.
func (s *State) Attr(name string) (schemas.Value, bool) {
	if i := s.attrIndex(name); i >= 0 {
		return s.attrs[i].Value, true
	}
	return schemas.Value{}, false
}

// AttrSize is what attribute a counts towards a customer's attribute
// bytes: its name, plus 8 for a number, 1 for a boolean, or the string's
// length. A null (removal) counts 0.
func AttrSize(a schemas.Attribute) int {
	switch a.Value.Kind {
	case schemas.KindString:
		return len(a.Name) + len(a.Value.Str)
	case schemas.KindNumber:
		return len(a.Name) + 8
	case schemas.KindBool:
		return len(a.Name) + 1
	}
	return 0
}

// AttrUsage returns the number of profile attributes s holds and the sum
// of their AttrSize.
func (s *State) AttrUsage() (n, bytes int) { return len(s.attrs), s.attrBytes }

// AttrUsageAfter returns what AttrUsage would return after updates were
// applied, without applying them. Updates naming an attribute twice count
// as applied in order. It allocates only for such updates.
func (s *State) AttrUsageAfter(updates []schemas.Attribute) (n, bytes int) {
	n, bytes = len(s.attrs), s.attrBytes
	var pending map[string]schemas.Attribute // earlier updates of this call
	for i, u := range updates {
		if pending == nil && i > 0 && u.Name <= updates[i-1].Name {
			// Not strictly sorted (decoders sort): names may repeat.
			pending = make(map[string]schemas.Attribute, len(updates))
			for _, v := range updates[:i] {
				pending[v.Name] = v
			}
		}
		cur, ok := schemas.Attribute{}, false
		if p, seen := pending[u.Name]; seen {
			cur, ok = p, p.Value.Kind != schemas.KindNull
		} else if v, has := s.Attr(u.Name); has {
			cur, ok = schemas.Attribute{Name: u.Name, Value: v}, true
		}
		if ok {
			n--
			bytes -= AttrSize(cur)
		}
		if u.Value.Kind != schemas.KindNull {
			n++
			bytes += AttrSize(u)
		}
		if pending != nil {
			pending[u.Name] = u
		}
	}
	return n, bytes
}

// setAttr sets or (with a null value) removes an attribute in O(1).
// Removal moves the last attribute into the freed slot.
func (s *State) setAttr(a schemas.Attribute) {
	i := s.attrIndex(a.Name)
	switch {
	case i >= 0 && a.Value.Kind == schemas.KindNull:
		s.attrBytes -= AttrSize(s.attrs[i])
		last := len(s.attrs) - 1
		if s.attrIdx != nil {
			delete(s.attrIdx, a.Name)
			if i != last {
				s.attrIdx[s.attrs[last].Name] = int32(i)
			}
		}
		s.attrs[i] = s.attrs[last]
		s.attrs[last] = schemas.Attribute{}
		s.attrs = s.attrs[:last]
	case i >= 0:
		if a.Value.Kind == schemas.KindString {
			a.Value.Str = intern(a.Value.Str)
		}
		s.attrBytes += AttrSize(a) - AttrSize(s.attrs[i])
		s.attrs[i].Value = a.Value
	case a.Value.Kind != schemas.KindNull:
		a.Name = intern(a.Name)
		if a.Value.Kind == schemas.KindString {
			a.Value.Str = intern(a.Value.Str)
		}
		s.attrBytes += AttrSize(a)
		if s.attrIdx != nil {
			s.attrIdx[a.Name] = int32(len(s.attrs))
		}
		s.attrs = append(s.attrs, a)
	}
}

// Sizes of the state's parts, for SizeBytes.
const (
	sizeofState      = unsafe.Sizeof(State{})
	sizeofTraitState = unsafe.Sizeof(traitState{})
	sizeofTraitExtra = unsafe.Sizeof(traitExtra{})
	sizeofBucket     = unsafe.Sizeof(bucket{})
	sizeofValCount   = unsafe.Sizeof(valCount{})
	sizeofSlice      = unsafe.Sizeof([]valCount{})
	sizeofSeenVal    = unsafe.Sizeof(seenVal{})
	sizeofAttribute  = unsafe.Sizeof(schemas.Attribute{})
	// sizeofAttrIndexEntry is a rough cost of one attrIdx entry: a map
	// slot holding a string header and an int32.
	sizeofAttrIndexEntry = 32
)

// HeapBytes is SizeBytes without the State struct itself: what a State
// held inside another struct (InitState) adds to that struct's size.
func (s *State) HeapBytes() int { return s.SizeBytes() - int(sizeofState) }

// SizeBytes is the heap the state holds: its structs, slices (by
// capacity) and string bytes, short of the allocator's rounding. The
// record cache's byte budget counts it, so it must not undercount.
func (s *State) SizeBytes() int {
	n := int(sizeofState) + cap(s.traits)*int(sizeofTraitState) + cap(s.moreWords())*8 + cap(s.attrs)*int(sizeofAttribute)
	if s.more != nil {
		n += int(sizeofSlice)
	}
	// Past the length too: the accumulators a Reset emptied keep memory.
	all := s.traits[:cap(s.traits)]
	for i := range all {
		t := &all[i]
		n += cap(t.buckets) * int(sizeofBucket)
		for j := range t.buckets {
			b := &t.buckets[j]
			if b.vals == nil {
				continue
			}
			vals := *b.vals
			n += int(sizeofSlice) + cap(vals)*int(sizeofValCount)
			for _, v := range vals {
				n += ownBytes(v.v)
			}
		}
		if x := t.x; x != nil {
			// freq's strings are those of the buckets' values.
			n += int(sizeofTraitExtra) + ownBytes(x.str) + cap(x.seen)*int(sizeofSeenVal) + cap(x.freq)*int(sizeofValCount)
			for _, v := range x.seen {
				n += ownBytes(v.v)
			}
		}
	}
	for _, a := range s.attrs {
		n += ownBytes(a.Name) + ownBytes(a.Value.Str)
	}
	if s.attrIdx != nil {
		n += len(s.attrIdx) * sizeofAttrIndexEntry
	}
	return n
}

// bucketStart is floor(t/g)*g, also for negative t.
func bucketStart(t, g int64) int64 {
	b := t / g * g
	if b > t {
		b -= g
	}
	return b
}

// findBucket returns the bucket starting at start, inserting it in order.
func (ts *traitState) findBucket(start int64) *bucket {
	bs := ts.buckets
	i := len(bs)
	for i > 0 && bs[i-1].start > start {
		i--
	}
	if i > 0 && bs[i-1].start == start {
		return &ts.buckets[i-1]
	}
	ts.buckets = append(ts.buckets, bucket{})
	copy(ts.buckets[i+1:], ts.buckets[i:])
	b := &ts.buckets[i]
	// Not keeping b.vals: after the shift, slot i still points at the
	// value list of slot i+1, and appending to it would change that
	// bucket's values (a late event landing in an earlier bucket did
	// exactly that when the list was a slice sharing its array).
	*b = bucket{start: start}
	return b
}

// prune drops buckets that left the window at now: start <= bucket(now)-W.
func (ts *traitState) prune(s *State, t *Trait, now int64) {
	if t.Window == 0 {
		return
	}
	lo := s.bucket(now, t.Bucket) - t.Window
	k := 0
	for k < len(ts.buckets) && ts.buckets[k].start <= lo {
		k++
	}
	if k > 0 {
		for i := range ts.buckets[:k] {
			ts.forget(&ts.buckets[i])
		}
		n := copy(ts.buckets, ts.buckets[k:])
		for i := n; i < len(ts.buckets); i++ {
			ts.buckets[i] = bucket{}
		}
		ts.buckets = ts.buckets[:n]
	}
	if x := ts.x; x != nil && len(x.seen) > 0 {
		kept := x.seen[:0]
		for _, sv := range x.seen {
			if sv.last > lo {
				kept = append(kept, sv)
			}
		}
		clear(x.seen[len(kept):])
		x.seen = kept
	}
}

// see records an occurrence of v in the bucket starting at start.
func (ts *traitState) see(v string, start int64) {
	x := ts.ext()
	for i := range x.seen {
		if x.seen[i].v == v {
			x.seen[i].last = max(x.seen[i].last, start)
			return
		}
	}
	if len(x.seen) < maxDistinct {
		x.seen = append(x.seen, seenVal{v: intern(v), last: start})
	}
}

// ext returns ts.x, allocating it on first use: for writing.
func (ts *traitState) ext() *traitExtra {
	if ts.x == nil {
		ts.x = &traitExtra{}
	}
	return ts.x
}

// noExtra stands in for a nil traitExtra: read it, never write it.
var noExtra traitExtra

// rx returns ts.x, or an empty one: for reading.
func (ts *traitState) rx() *traitExtra {
	if ts.x == nil {
		return &noExtra
	}
	return ts.x
}

// maxDistinct bounds the values a distinct_count trait remembers per
// customer (documented in docs/rules.md).
const maxDistinct = 1024

// window returns the buckets inside the trait's window at now.
func (ts *traitState) window(s *State, t *Trait, now int64) []bucket {
	i, j := ts.windowBounds(s, t, now)
	return ts.buckets[i:j]
}

// windowBounds returns the indexes [i, j) of the buckets inside the
// trait's window at now.
func (ts *traitState) windowBounds(s *State, t *Trait, now int64) (i, j int) {
	bs := ts.buckets
	if t.Window == 0 {
		return 0, len(bs)
	}
	hi := s.bucket(now, t.Bucket)
	lo := hi - t.Window
	for i < len(bs) && bs[i].start <= lo {
		i++
	}
	j = len(bs)
	for j > i && bs[j-1].start > hi {
		j--
	}
	return i, j
}

// addNum adds v to b's aggregate for agg (sum, avg, min or max).
func (b *bucket) addNum(agg aggKind, v float64) {
	b.addAgg(agg, 1, v)
}

// addAgg adds n values whose aggregate for agg is v (a bucket's, when
// merging one into b).
func (b *bucket) addAgg(agg aggKind, n, v float64) {
	switch {
	case agg == aggMin && b.n > 0:
		b.val = min(b.val, v)
	case agg == aggMax && b.n > 0:
		b.val = max(b.val, v)
	case agg == aggMin || agg == aggMax:
		b.val = v
	default:
		b.val = addSat(b.val, v)
	}
	b.n += n
}

// addSat is a+b saturated at ±math.MaxFloat64, so that sums of finite
// numbers stay finite: a trait value is never an infinity (or, from
// Inf-Inf, NaN), which no output encoding can carry. Saturating is
// documented in docs/rules.md (Overflow). NaN in stays NaN.
func addSat(a, b float64) float64 {
	s := a + b
	if s > math.MaxFloat64 {
		return math.MaxFloat64
	}
	if s < -math.MaxFloat64 {
		return -math.MaxFloat64
	}
	return s
}

// sumSat adds the bucket sums of bs as addSat does, one at a time.
func sumSat(bs []bucket) float64 {
	sum := 0.0
	for i := range bs {
		sum = addSat(sum, bs[i].val)
	}
	return sum
}

// addValN adds n occurrences of v to b, and reports whether b counted
// them: a bucket holding maxDistinctPerBucket values ignores a new one.
func (b *bucket) addValN(v string, n uint32) bool {
	vals := b.values()
	for i := range vals {
		if vals[i].v == v {
			vals[i].n += n
			return true
		}
	}
	if len(vals) >= maxDistinctPerBucket {
		return false // bounded; documented in docs/rules.md
	}
	if b.vals == nil {
		b.vals = new([]valCount)
	}
	*b.vals = append(vals, valCount{v: v, n: n})
	b.n++
	return true
}

// countVal adds n occurrences of v to bucket b of a most_frequent trait
// and to the trait's totals.
func (ts *traitState) countVal(b *bucket, v string, n uint32) {
	v = intern(v) // the bucket and the totals share the table's copy
	if b.addValN(v, n) {
		x := ts.ext()
		x.freq = addCount(x.freq, v, n)
	}
}

// forget subtracts bucket b, about to be dropped, from the totals.
func (ts *traitState) forget(b *bucket) {
	if len(b.values()) == 0 {
		return
	}
	x := ts.ext()
	for _, v := range b.values() {
		x.freq = addCount(x.freq, v.v, -v.n)
	}
}

// rebuildFreq derives the totals from the buckets (after a decode).
func (ts *traitState) rebuildFreq() {
	if ts.x != nil {
		clear(ts.x.freq)
		ts.x.freq = ts.x.freq[:0]
	}
	for i := range ts.buckets {
		for _, v := range ts.buckets[i].values() {
			x := ts.ext()
			x.freq = addCount(x.freq, v.v, v.n)
		}
	}
}

// addCount adds n to v's count in tot (modulo 2^32, as the per-bucket
// counts are, so that adding and subtracting buckets gives the same
// totals as summing them afresh), inserting v if absent and removing it
// when its count becomes 0. The order of tot is unspecified: bestCount
// does not depend on it.
func addCount(tot []valCount, v string, n uint32) []valCount {
	for i := range tot {
		if tot[i].v != v {
			continue
		}
		tot[i].n += n
		if tot[i].n == 0 {
			last := len(tot) - 1
			tot[i] = tot[last]
			tot[last] = valCount{}
			tot = tot[:last]
		}
		return tot
	}
	if n == 0 {
		return tot
	}
	return append(tot, valCount{v: v, n: n})
}

// maxDistinctPerBucket bounds the values a distinct_count or most_frequent
// bucket remembers, so that one customer cannot grow without bound.
const maxDistinctPerBucket = 256

// HasHistory reports whether trait i (its Index in the rule set) holds any
// state: false for a trait no event has fed yet, such as one a rule change
// added, whose stored state a decode found nothing for.
func (s *State) HasHistory(i int) bool { return !s.get(i).empty() }

// Attrs returns the profile attributes. The slice must not be modified and
// is valid until the state changes.
func (s *State) Attrs() []schemas.Attribute { return s.attrs }

// FitAttrsInto drops from s the attributes that Merge(dst, s) would copy
// into dst beyond maxN attributes or maxBytes (AttrSize) in all, taking
// them in s's order, and returns how many it dropped: merges then respect
// the same per-customer bounds as updates.
// A bound <= 0 is no bound.
func (s *State) FitAttrsInto(dst *State, maxN, maxBytes int) int {
	if maxN <= 0 {
		maxN = math.MaxInt
	}
	if maxBytes <= 0 {
		maxBytes = math.MaxInt
	}
	n, b := dst.AttrUsage()
	kept := s.attrs[:0]
	for _, a := range s.attrs {
		if _, ok := dst.Attr(a.Name); ok {
			kept = append(kept, a) // dst's value wins; costs nothing
			continue
		}
		if sz := AttrSize(a); n+1 <= maxN && b+sz <= maxBytes {
			n, b = n+1, b+sz
			kept = append(kept, a)
		}
	}
	dropped := len(s.attrs) - len(kept)
	if dropped > 0 {
		s.changed()
		clear(s.attrs[len(kept):])
		s.attrs = kept
		s.attrIdx = nil
		s.attrBytes = 0
		for _, a := range kept {
			s.attrBytes += AttrSize(a)
		}
	}
	return dropped
}
