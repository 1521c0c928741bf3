package rules

import (
	"math"
	"slices"
)

// timeDeps is what can change a set of segments' results with no event:
// windowed traits (each changes when its oldest bucket leaves the window)
// and since() comparisons, grouped by the time they read. It is built
// once per segment and once for the union of all segments, so that the
// work of NextChangeAll grows with the distinct dependencies, not with the
// number of segments (1000 segments repeating 20 conditions have 3
// distinct since() times).
type timeDeps struct {
	wins   []int // trait indexes, ascending and distinct
	sinces []sinceGroup
}

// sinceGroup is every comparison since(x) OP d of one time expression x.
// Each flips at x + an offset (d or d+1, both for == and !=), so the
// group's next flip after now is the first x + offset after now: one read
// of x and a binary search instead of one read per comparison.
type sinceGroup struct {
	x    func(*env) (float64, bool)
	offs []int64 // ascending, distinct
	// deps are the traits x depends on, all of them windowless; 0 when x
	// may change with no event reporting it (a windowed trait, a profile
	// attribute). With deps, a next flip computed once stays right until
	// one of them is touched or the clock reaches it (NextChangeAfter).
	deps Touched
}

// newTimeDeps groups sinces by the canonical text of their x: equal text
// reads the same value, whichever segment compiled it.
func newTimeDeps(wins []int, sinces []sinceDep) timeDeps {
	td := timeDeps{wins: wins}
	byKey := map[string]int{}
	for _, d := range sinces {
		g, ok := byKey[d.key]
		if !ok {
			g = len(td.sinces)
			byKey[d.key] = g
			td.sinces = append(td.sinces, sinceGroup{x: d.x, deps: d.deps})
		}
		td.sinces[g].offs = append(td.sinces[g].offs, d.offsets()...)
	}
	for i := range td.sinces {
		offs := td.sinces[i].offs
		slices.Sort(offs)
		td.sinces[i].offs = slices.Compact(offs)
	}
	return td
}

// offsets returns when, relative to x, the comparison's result flips:
// since(x) = now - x, so since(x) > d flips at x + d + 1, since(x) >= d at
// x + d, and == and != at both.
func (d sinceDep) offsets() []int64 {
	switch d.op {
	case ">", "<=":
		return []int64{d.d + 1}
	case ">=", "<":
		return []int64{d.d}
	}
	return []int64{d.d, d.d + 1}
}

// next returns the first instant after now at which a comparison of the
// group flips.
func (g *sinceGroup) next(e *env, now int64) (int64, bool) {
	x, ok := g.x(e)
	if !ok {
		return 0, false
	}
	return firstAfter(int64(x), g.offs, now)
}

// firstAfter returns the smallest base+o after now over offs (ascending),
// with int64 additions wrapping as they always have here. Without a wrap
// base+o ascends with o and a binary search finds it; if an addition at
// either end wraps, every offset is tried.
func firstAfter(base int64, offs []int64, now int64) (int64, bool) {
	if wraps(base, offs[0]) || wraps(base, offs[len(offs)-1]) {
		best, ok := int64(math.MaxInt64), false
		for _, o := range offs {
			if c := base + o; c > now && c <= best {
				best, ok = c, true
			}
		}
		return best, ok
	}
	lo, hi := 0, len(offs)
	for lo < hi {
		if m := int(uint(lo+hi) >> 1); base+offs[m] > now {
			hi = m
		} else {
			lo = m + 1
		}
	}
	if lo == len(offs) {
		return 0, false
	}
	return base + offs[lo], true
}

// wraps reports whether a+b overflows int64.
func wraps(a, b int64) bool {
	return (b > 0 && a > math.MaxInt64-b) || (b < 0 && a < math.MinInt64-b)
}
