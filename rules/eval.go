package rules

import (
	"math"
	"strconv"

	"github.com/segd/segd/schemas"
)

// NewState returns an empty state for this rule set.
func (rs *RuleSet) NewState() *State {
	s := &State{layout: rs.traits, traits: make([]traitState, len(rs.traits))}
	return s
}

// Apply updates s with event e at clock now (the task's watermark, at or
// after e.Time). Every trait of e's event type whose filter matches takes
// the event into the bucket of e.Time; windowed traits first drop the
// buckets that left their window at now. A windowed trait ignores an event
// older than its window. first/last compare event times, so a late event
// never becomes the last one. A profile event sets or removes attributes.
func (rs *RuleSet) Apply(s *State, e *schemas.Event, now int64) {
	if e.Type == schemas.EventProfile {
		for _, a := range e.Attributes {
			s.setAttr(a)
		}
		return
	}
	if int(e.Type) >= len(rs.byType) {
		return
	}
	s.env.s, s.env.e, s.env.now = s, e, now
	for _, t := range rs.byType[e.Type] {
		ts := &s.traits[t.Index]
		ts.prune(t, now)
		if t.filter != nil && !t.filter(&s.env) {
			continue
		}
		var b *bucket
		if t.Window > 0 {
			start := bucketStart(e.Time, t.Bucket)
			if start <= bucketStart(now, t.Bucket)-t.Window {
				continue // already outside the window
			}
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
			b.addNum(t.fld.num(e))
		case aggDistinct, aggMostFrequent:
			switch t.fld.kind {
			case kList:
				for _, v := range t.fld.list(e) {
					b.addVal(v)
				}
			case kStr:
				if v := t.fld.str(e); v != "" {
					b.addVal(v)
				}
			default:
				b.addVal(strconv.FormatFloat(t.fld.num(e), 'g', -1, 64))
			}
		case aggFirst, aggLast:
			takeFirstLast(t, ts, e)
		}
	}
	s.env.e = nil
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
	if ts.has {
		if t.agg == aggFirst && e.Time >= ts.at {
			return
		}
		if t.agg == aggLast && e.Time < ts.at {
			return
		}
	}
	switch t.fld.kind {
	case kStr:
		v := t.fld.str(e)
		if v == "" {
			return
		}
		ts.str = v
	default:
		ts.num = t.fld.num(e)
	}
	ts.has, ts.at = true, e.Time
}

// traitNum returns a numeric (number or time) trait's value at now.
func traitNum(t *Trait, s *State, now int64) (float64, bool) {
	ts := &s.traits[t.Index]
	switch t.agg {
	case aggFirst, aggLast:
		return ts.num, ts.has
	case aggDistinct:
		return float64(distinctCount(ts.window(t, now))), true
	}
	var n, sum float64
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, b := range ts.window(t, now) {
		if b.n == 0 {
			continue
		}
		n += b.n
		sum += b.sum
		lo = min(lo, b.min)
		hi = max(hi, b.max)
	}
	switch t.agg {
	case aggCount:
		return n, true
	case aggSum:
		return sum, true
	case aggAvg:
		return sum / n, n > 0
	case aggMin:
		return lo, n > 0
	case aggMax:
		return hi, n > 0
	}
	return 0, false
}

// traitStr returns a string trait's value at now.
func traitStr(t *Trait, s *State, now int64) (string, bool) {
	ts := &s.traits[t.Index]
	switch t.agg {
	case aggFirst, aggLast:
		return ts.str, ts.has
	case aggMostFrequent:
		return mostFrequent(ts.window(t, now))
	}
	return "", false
}

// distinctCount counts values across buckets without allocating: a value
// counts in the last bucket it appears in.
func distinctCount(bs []bucket) int {
	n := 0
	for i := range bs {
	vals:
		for _, v := range bs[i].vals {
			for j := i + 1; j < len(bs); j++ {
				for _, w := range bs[j].vals {
					if w.v == v.v {
						continue vals
					}
				}
			}
			n++
		}
	}
	return n
}

// mostFrequent returns the value with the highest total count across
// buckets; ties go to the smallest value, so the result is deterministic.
func mostFrequent(bs []bucket) (string, bool) {
	best, bestN := "", uint32(0)
	for i := range bs {
		for _, v := range bs[i].vals {
			total := uint32(0)
			seenBefore := false
			for j := range bs {
				for _, w := range bs[j].vals {
					if w.v == v.v {
						if j < i {
							seenBefore = true
						}
						total += w.n
					}
				}
			}
			if seenBefore {
				continue
			}
			if total > bestN || (total == bestN && v.v < best) {
				best, bestN = v.v, total
			}
		}
	}
	return best, bestN > 0
}

// Eval reports whether the customer with state s is in segment seg at
// clock now. It does not allocate.
func (rs *RuleSet) Eval(seg int, s *State, now int64) bool {
	s.env.s, s.env.now = s, now
	return rs.segments[seg].eval(&s.env)
}

// NextChange returns the earliest time after now at which segment seg's
// result could change with no new event: when the oldest bucket of a
// windowed trait it reads leaves the window (bucket start + window), or
// when a since(x) comparison flips. ok is false when nothing time-based can
// change it. Evaluating at the returned instant gives the new result.
func (rs *RuleSet) NextChange(seg int, s *State, now int64) (at int64, ok bool) {
	sg := rs.segments[seg]
	best := int64(math.MaxInt64)
	hiNow := int64(0)
	for _, ti := range sg.wins {
		t := rs.traits[ti]
		hiNow = bucketStart(now, t.Bucket)
		lo := hiNow - t.Window
		for _, b := range s.traits[ti].buckets {
			if b.start > lo {
				if leave := b.start + t.Window; leave > now && leave < best {
					best = leave
				}
				break
			}
		}
	}
	if len(sg.sinces) > 0 {
		s.env.s, s.env.now = s, now
		for _, d := range sg.sinces {
			x, ok := d.x(&s.env)
			if !ok {
				continue
			}
			base := int64(x) + d.d
			// since(x) = now - x; the comparison with d flips where now
			// crosses x + d.
			var cands [2]int64
			switch d.op {
			case ">", "<=":
				cands = [2]int64{base + 1, base + 1}
			case ">=", "<":
				cands = [2]int64{base, base}
			default: // == and != flip twice
				cands = [2]int64{base, base + 1}
			}
			for _, c := range cands {
				if c > now && c < best {
					best = c
				}
			}
		}
	}
	if best == math.MaxInt64 {
		return 0, false
	}
	return best, true
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
