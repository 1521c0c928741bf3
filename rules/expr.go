package rules

import (
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/segd/segd/schemas"
)

// scope says where an expression is: a trait filter (event fields are
// visible) or a segment condition (traits are visible).
type scope struct {
	event   schemas.EventType // filter scope when != 0
	trait   string
	segment string
}

func (sc scope) what() string {
	if sc.event != 0 {
		return "trait " + sc.trait
	}
	return "segment " + sc.segment
}

// cexpr is a type-checked, compiled expression.
type cexpr struct {
	kind     valueKind
	num      func(*env) (float64, bool) // kNum, kTime, kDur
	str      func(*env) (string, bool)  // kStr
	b        func(*env) bool            // kBool
	any      func(*env) schemas.Value   // kAny
	list     func(*env) []string        // kList
	constant bool
	cnum     float64 // constant value for kNum/kDur
	cstr     string
	since    func(*env) (float64, bool) // set when this node is since(x): x
	sinceKey string                     // and the canonical text of x
	// sinceDeps are the traits x reads, when they are all a since() time
	// depends on: windowless traits only, no profile attribute (0: it
	// may change without an event reporting it; see timeDeps).
	sinceDeps Touched
	trait     *Trait    // set when this node is a bare trait read
	tcmp      *traitCmp // set when this node is trait OP constant
	pair      *cmpPair  // set when this node is tcmp and/or tcmp
}

// cmpPair is "a and b" or "a or b" of two trait comparisons.
type cmpPair struct {
	a, b traitCmp
	and  bool
}

// traitCmp is a comparison of a trait with a constant, kept so that
// and/or of two of them can be fused into one closure and segProgram can
// run it inline. A string trait (str) compares with cs, any other with c.
type traitCmp struct {
	t   *Trait
	idx int // t.Index, here to save a pointer load on the hot path
	op  opCode
	c   float64
	str bool
	cs  string
}

// traitConstCmp returns x OP y as a traitCmp when one side is a bare trait
// read and the other a constant (of the trait's kind: the caller checked
// the kinds), else nil.
func traitConstCmp(x, y *cexpr, op string) *traitCmp {
	switch {
	case y.constant && x.trait != nil:
		return newTraitCmp(x.trait, opCodes[op], y)
	case x.constant && y.trait != nil:
		return newTraitCmp(y.trait, opCodes[mirror(op)], x)
	}
	return nil
}

func newTraitCmp(t *Trait, op opCode, c *cexpr) *traitCmp {
	return &traitCmp{t: t, idx: t.Index, op: op, c: c.cnum, str: t.kind == kStr, cs: c.cstr}
}

type opCode uint8

const (
	opEq opCode = iota
	opNe
	opLt
	opLe
	opGt
	opGe
)

var opCodes = map[string]opCode{"==": opEq, "!=": opNe, "<": opLt, "<=": opLe, ">": opGt, ">=": opGe}

func opTest[T float64 | string](o opCode, v, c T) bool {
	switch o {
	case opEq:
		return v == c
	case opNe:
		return v != c
	case opLt:
		return v < c
	case opLe:
		return v <= c
	case opGt:
		return v > c
	}
	return v >= c
}

// test evaluates the comparison, reading the memoized trait inline.
func (tc *traitCmp) test(e *env) bool {
	if tc.str {
		return tc.testStr(e)
	}
	var v float64
	var ok bool
	if m := &e.sc.memo[tc.idx]; m.gen == e.sc.gen {
		v, ok = m.num, m.ok
	} else {
		v, ok = traitNum(tc.t, e.s, e.now)
	}
	return ok && opTest(tc.op, v, tc.c)
}

func (tc *traitCmp) testStr(e *env) bool {
	var v string
	var ok bool
	if m := &e.sc.memo[tc.idx]; m.gen == e.sc.gen {
		v, ok = m.str, m.ok
	} else {
		v, ok = traitStr(tc.t, e.s, e.now)
	}
	return ok && opTest(tc.op, v, tc.cs)
}

// exprReads is what a whole expression reads, in the order its parts
// appear. It is collected once per expression rather than per node: a node
// that copied its children's lists would copy a chain's reads once per
// level, quadratic in the chain's length.
type exprReads struct {
	traits []int
	attrs  []string
	sinces []sinceDep
	// cmps are the trait reads compiled into a comparison with a
	// constant (each is also in traits): a trait read only this way
	// changes a result only when a comparison's result flips (flipTime).
	cmps []traitCmp
}

// compileTop compiles a whole expression; c.reads then holds what it
// reads.
func (c *compiler) compileTop(y *yaml.Node, n node, sc scope) *cexpr {
	c.reads = &exprReads{}
	return c.compileExpr(y, n, sc)
}

// asBool returns the expression as a condition. A profile attribute used
// as a condition is true only when it is the boolean true.
func (ce *cexpr) asBool() func(*env) bool {
	if ce.kind == kAny {
		f := ce.any
		return func(e *env) bool { v := f(e); return v.Kind == schemas.KindBool && v.Bool }
	}
	return ce.b
}

// isNullFn reports whether the value is null.
func (ce *cexpr) isNullFn() func(*env) bool {
	switch ce.kind {
	case kNum, kTime, kDur:
		f := ce.num
		return func(e *env) bool { _, ok := f(e); return !ok }
	case kStr:
		f := ce.str
		return func(e *env) bool { _, ok := f(e); return !ok }
	case kAny:
		f := ce.any
		return func(e *env) bool { return f(e).Kind == schemas.KindNull }
	case kNull:
		return func(*env) bool { return true }
	case kList:
		f := ce.list
		return func(e *env) bool { return len(f(e)) == 0 }
	}
	return func(*env) bool { return false }
}

// numOf reads a numeric-like expression, treating an attribute as a number
// when it holds one.
func (ce *cexpr) numOf() func(*env) (float64, bool) {
	if ce.kind == kAny {
		f := ce.any
		return func(e *env) (float64, bool) {
			v := f(e)
			return v.Num, v.Kind == schemas.KindNumber
		}
	}
	return ce.num
}

func (ce *cexpr) strOf() func(*env) (string, bool) {
	if ce.kind == kAny {
		f := ce.any
		return func(e *env) (string, bool) {
			v := f(e)
			return v.Str, v.Kind == schemas.KindString
		}
	}
	return ce.str
}

func isNumeric(k valueKind) bool { return k == kNum || k == kTime || k == kDur }

// compileExpr type-checks and compiles n. It reports errors at positions in
// the YAML scalar y and returns nil on error.
func (c *compiler) compileExpr(y *yaml.Node, n node, sc scope) *cexpr {
	var errf errFunc = func(off int, format string, args ...any) *cexpr {
		c.errAt(c.exprPos(y, off), sc.what()+": "+format, args...)
		return nil
	}
	switch n := n.(type) {
	case *numLit:
		v := n.v
		return &cexpr{kind: kNum, constant: true, cnum: v, num: func(*env) (float64, bool) { return v, true }}
	case *durLit:
		v := float64(n.ms)
		return &cexpr{kind: kDur, constant: true, cnum: v, num: func(*env) (float64, bool) { return v, true }}
	case *strLit:
		v := n.v
		return &cexpr{kind: kStr, constant: true, cstr: v, str: func(*env) (string, bool) { return v, true }}
	case *boolLit:
		v := n.v
		return &cexpr{kind: kBool, constant: true, b: func(*env) bool { return v }}
	case *nullLit:
		return &cexpr{kind: kNull, constant: true}
	case *ident:
		return c.compileIdent(n, sc, errf)
	case *selector:
		return c.compileSelector(n, sc, errf)
	case *call:
		return c.compileCall(y, n, sc, errf)
	case *unary:
		return c.compileUnary(y, n, sc, errf)
	case *isNull:
		return c.compileIsNull(y, n, sc, errf)
	case *inList:
		return c.compileIn(y, n, sc, errf)
	case *binExpr:
		return c.compileChain(y, n, sc, errf)
	}
	return errf(n.offset(), "unsupported expression")
}

// compileIdent compiles a name: an event field inside a trait's where, a
// trait in a segment.
func (c *compiler) compileIdent(n *ident, sc scope, errf errFunc) *cexpr {
	if sc.event != 0 {
		f, ok := lookupField(sc.event, n.name)
		if !ok {
			return errf(n.off, "%s has no field %q%s", sc.event, n.name, didYouMean(n.name, fieldNames(sc.event)))
		}
		return fieldExpr(f)
	}
	if t, ok := c.traitByName[n.name]; ok {
		c.reads.traits = append(c.reads.traits, t.Index)
		return traitExpr(t)
	}
	if c.failed[n.name] {
		// Its definition already has an error, so compilation fails;
		// a placeholder avoids a second, misleading error here.
		return &cexpr{kind: kAny, any: func(*env) schemas.Value { return schemas.Value{} }}
	}
	hint := c.traitHint(n.name)
	if _, isField := lookupField(schemas.EventPurchase, n.name); isField && hint == "" {
		hint = " (event fields are only visible inside a trait's where; define a trait)"
	}
	return errf(n.off, "unknown trait %q%s", n.name, hint)
}

// compileSelector compiles x.y: profile.<attribute>, or an event's field
// inside a trait's where.
func (c *compiler) compileSelector(n *selector, sc scope, errf errFunc) *cexpr {
	if n.x == "profile" {
		name := n.sel
		c.reads.attrs = append(c.reads.attrs, name)
		return &cexpr{kind: kAny, any: func(e *env) schemas.Value {
			v, _ := e.s.Attr(name)
			return v
		}}
	}
	if sc.event != 0 {
		if n.x != sc.event.String() {
			return errf(n.off, "%q is not this trait's event type (%s)", n.x, sc.event)
		}
		f, ok := lookupField(sc.event, n.sel)
		if !ok {
			return errf(n.off, "%s has no field %q%s", sc.event, n.sel, didYouMean(n.sel, fieldNames(sc.event)))
		}
		return fieldExpr(f)
	}
	return errf(n.off, "unknown name %q: a segment reads traits and profile.<attribute>; to use %s fields, define a trait", n.x+"."+n.sel, n.x)
}

// compileCall compiles a function call; since(t) is the only function.
func (c *compiler) compileCall(y *yaml.Node, n *call, sc scope, errf errFunc) *cexpr {
	switch n.fn {
	case "since":
		if len(n.args) != 1 {
			return errf(n.off, "since takes one time argument, e.g. since(last_order_at), found %d arguments", len(n.args))
		}
		nTraits, nAttrs := len(c.reads.traits), len(c.reads.attrs)
		x := c.compileExpr(y, n.args[0], sc)
		if x == nil {
			return nil
		}
		var deps Touched
		if len(c.reads.attrs) == nAttrs {
			for _, ti := range c.reads.traits[nTraits:] {
				if c.rs.traits[ti].Window > 0 {
					deps = 0
					break
				}
				deps |= traitBit(ti)
			}
		}
		if x.kind != kTime && x.kind != kAny {
			return errf(n.args[0].offset(), "since needs a time (e.g. a last(purchase.ts) trait), found a %s", x.kind)
		}
		if sc.event != 0 {
			return errf(n.off, "since is not available in a trait filter")
		}
		xf := x.numOf()
		out := &cexpr{kind: kDur, since: xf, sinceKey: n.args[0].String(), sinceDeps: deps, num: func(e *env) (float64, bool) {
			v, ok := xf(e)
			return float64(e.now) - v, ok
		}}
		return out
	}
	return errf(n.off, "unknown function %q%s", n.fn, didYouMean(n.fn, []string{"since"}))
}

// compileUnary compiles not x and -x.
func (c *compiler) compileUnary(y *yaml.Node, n *unary, sc scope, errf errFunc) *cexpr {
	x := c.compileExpr(y, n.x, sc)
	if x == nil {
		return nil
	}
	if !noSince(x) {
		return errf(n.off, "since(...) must be compared with a duration, e.g. since(last_order_at) > 60d")
	}
	if n.op == "not" {
		if x.kind != kBool && x.kind != kAny {
			return errf(n.off, "not needs a condition, found a %s", x.kind)
		}
		f := x.asBool()
		out := &cexpr{kind: kBool, b: func(e *env) bool { return !f(e) }}
		return out
	}
	if !isNumeric(x.kind) && x.kind != kAny {
		return errf(n.off, "unary - needs a number or duration, found a %s", x.kind)
	}
	f := x.numOf()
	k := x.kind
	if k == kAny {
		k = kNum
	}
	out := &cexpr{kind: k, num: func(e *env) (float64, bool) { v, ok := f(e); return -v, ok }}
	return out
}

// compileIsNull compiles x is null and x is not null.
func (c *compiler) compileIsNull(y *yaml.Node, n *isNull, sc scope, errf errFunc) *cexpr {
	x := c.compileExpr(y, n.x, sc)
	if x == nil {
		return nil
	}
	if !noSince(x) {
		return errf(n.off, "since(...) must be compared with a duration, e.g. since(last_order_at) > 60d")
	}
	f := x.isNullFn()
	out := &cexpr{kind: kBool, b: f}
	if n.neg {
		out.b = func(e *env) bool { return !f(e) }
	}
	return out
}

// compileChain compiles a binary expression. It walks the left spine
// (the x of a binExpr whose x is a binExpr, ...: a long chain such as
// a and b and c ...) in a loop, so that its recursion is as deep as the
// expression's nesting (MaxExprDepth), not as long as the chain. Like a
// recursive walk, it compiles every operand left to right, reporting the
// errors of each, and combines two operands once both compiled.
func (c *compiler) compileChain(y *yaml.Node, n *binExpr, sc scope, errf errFunc) *cexpr {
	var spine []*binExpr
	var leaf node = n
	for b, ok := leaf.(*binExpr); ok; b, ok = leaf.(*binExpr) {
		spine = append(spine, b)
		leaf = b.x
	}
	x := c.compileExpr(y, leaf, sc)
	for i := len(spine) - 1; i >= 0; i-- {
		b := spine[i]
		yy := c.compileExpr(y, b.y, sc)
		if x == nil || yy == nil {
			x = nil
			continue
		}
		x = c.compileBin(y, b, x, yy, errf)
	}
	return x
}

// compileBin type-checks and compiles n from its compiled operands.
func (c *compiler) compileBin(y *yaml.Node, n *binExpr, x, yy *cexpr, errf errFunc) *cexpr {
	switch n.op {
	case "and", "or":
		if !noSince(x, yy) {
			return errf(n.off, "since(...) must be compared with a duration, e.g. since(last_order_at) > 60d")
		}
		for _, side := range []struct {
			ce  *cexpr
			off int
		}{{x, n.x.offset()}, {yy, n.y.offset()}} {
			if side.ce.kind != kBool && side.ce.kind != kAny {
				return errf(side.off, "%s needs conditions on both sides, found a %s", n.op, side.ce.kind)
			}
		}
		fx, fy := x.asBool(), yy.asBool()
		out := &cexpr{kind: kBool}
		if a, b := x.tcmp, yy.tcmp; a != nil && b != nil {
			// The most common condition shape, fused: no closure
			// call per side.
			if n.op == "and" {
				out.b = func(e *env) bool { return a.test(e) && b.test(e) }
				out.pair = &cmpPair{a: *a, b: *b, and: true}
			} else {
				out.b = func(e *env) bool { return a.test(e) || b.test(e) }
				out.pair = &cmpPair{a: *a, b: *b}
			}
			return out
		}
		if n.op == "and" {
			out.b = func(e *env) bool { return fx(e) && fy(e) }
		} else {
			out.b = func(e *env) bool { return fx(e) || fy(e) }
		}
		return out
	case "==", "!=", "<", "<=", ">", ">=":
		return c.compileCompare(y, n, x, yy, errf)
	case "contains", "starts_with", "ends_with":
		if !noSince(x, yy) {
			return errf(n.off, "since(...) must be compared with a duration")
		}
		return compileStringOp(n, x, yy, errf)
	case "+", "-", "*", "/":
		if !noSince(x, yy) {
			return errf(n.off, "since(...) must be compared with a duration, e.g. since(last_order_at) > 60d")
		}
		return compileArith(n, x, yy, errf)
	}
	return errf(n.off, "unknown operator %q", n.op)
}

// noSince reports whether none of ces is since(...), which must be
// compared with a duration.
func noSince(ces ...*cexpr) bool {
	for _, ce := range ces {
		if ce != nil && ce.since != nil {
			return false
		}
	}
	return true
}

func fieldExpr(f field) *cexpr {
	switch f.kind {
	case kNum, kTime:
		g := f.num
		return &cexpr{kind: f.kind, num: func(e *env) (float64, bool) { return g(e.e), true }}
	case kStr:
		g := f.str
		return &cexpr{kind: kStr, str: func(e *env) (string, bool) {
			v := g(e.e)
			return v, v != ""
		}}
	case kList:
		g := f.list
		return &cexpr{kind: kList, list: func(e *env) []string { return g(e.e) }}
	}
	return nil
}

// traitExpr reads a trait. Eval has already aligned the memo with the
// clock (State.touch), so a memoized value is one load away.
func traitExpr(t *Trait) *cexpr {
	ce := &cexpr{kind: t.kind, trait: t}
	idx := t.Index
	if t.kind == kStr {
		ce.str = func(e *env) (string, bool) {
			if m := &e.sc.memo[idx]; m.gen == e.sc.gen {
				return m.str, m.ok
			}
			return traitStr(t, e.s, e.now)
		}
	} else {
		ce.num = func(e *env) (float64, bool) {
			if m := &e.sc.memo[idx]; m.gen == e.sc.gen {
				return m.num, m.ok
			}
			return traitNum(t, e.s, e.now)
		}
	}
	return ce
}

type errFunc func(off int, format string, args ...any) *cexpr

func (c *compiler) compileCompare(y *yaml.Node, n *binExpr, x, yy *cexpr, errf errFunc) *cexpr {
	op := n.op
	if x.kind == kNull || yy.kind == kNull {
		return errf(n.off, "comparing with null is always false: use `is null` or `is not null`")
	}
	// since(x) OP duration: a time-based condition whose flip time is known.
	if x.since != nil || yy.since != nil {
		s, d := x, yy
		if yy.since != nil {
			s, d = yy, x
			op = mirror(op)
		}
		if d.since != nil || !d.constant || d.kind != kDur {
			return errf(n.off, "since(...) must be compared with a duration literal, e.g. since(last_order_at) > 60d")
		}
		xf, dv := s.since, d.cnum
		c.reads.sinces = append(c.reads.sinces, sinceDep{x: xf, key: s.sinceKey, deps: s.sinceDeps, op: op, d: int64(dv)})
		return &cexpr{kind: kBool, b: numCompareConst(s.num, op, dv)}
	}
	out := &cexpr{kind: kBool}
	kx, ky := x.kind, yy.kind
	switch {
	case kx == kAny || ky == kAny:
		a, b := x, yy
		if kx != kAny {
			a, b = yy, x
			op = mirror(op)
		}
		switch b.kind {
		case kNum, kTime, kDur, kAny:
			fa, fb := a.numOf(), b.numOf()
			if b.kind == kAny {
				// attribute vs attribute: compare as numbers, or as
				// strings / booleans when both hold those.
				ga, gb := a.any, b.any
				out.b = func(e *env) bool { return compareValues(ga(e), gb(e), op) }
				return out
			}
			out.b = numCompare(fa, op, fb)
		case kStr:
			out.b = strCompare(a.strOf(), op, b.str)
		case kBool:
			if op != "==" && op != "!=" {
				return errf(n.off, "booleans compare only with == and !=")
			}
			fa, fb := a.any, b.b
			eq := op == "=="
			out.b = func(e *env) bool {
				v := fa(e)
				return v.Kind == schemas.KindBool && (v.Bool == fb(e)) == eq
			}
		default:
			return errf(n.off, "cannot compare an attribute with a %s", b.kind)
		}
		return out
	case isNumeric(kx) && kx == ky:
		switch tc := traitConstCmp(x, yy, op); {
		case tc != nil:
			out.tcmp, out.b = tc, tc.test
			c.reads.cmps = append(c.reads.cmps, *tc)
		case yy.constant:
			out.b = numCompareConst(x.num, op, yy.cnum)
		default:
			out.b = numCompare(x.num, op, yy.num)
		}
		return out
	case isNumeric(kx) && isNumeric(ky):
		hint := ""
		if kx == kDur || ky == kDur {
			hint = ": write durations with a unit, e.g. 30d, 12h, 15m"
		}
		return errf(n.off, "cannot compare a %s with a %s%s", kx, ky, hint)
	case kx == kStr && ky == kStr:
		if tc := traitConstCmp(x, yy, op); tc != nil {
			out.tcmp, out.b = tc, tc.test
			c.reads.cmps = append(c.reads.cmps, *tc)
		} else {
			out.b = strCompare(x.str, op, yy.str)
		}
		return out
	case kx == kBool && ky == kBool:
		if op != "==" && op != "!=" {
			return errf(n.off, "booleans compare only with == and !=")
		}
		fx, fy := x.b, yy.b
		if op == "==" {
			out.b = func(e *env) bool { return fx(e) == fy(e) }
		} else {
			out.b = func(e *env) bool { return fx(e) != fy(e) }
		}
		return out
	case kx == kList || ky == kList:
		return errf(n.off, "a list field cannot be compared; use `\"value\" in %s` or `%s contains \"value\"`", "field", "field")
	}
	return errf(n.off, "cannot compare a %s with a %s", kx, ky)
}

func mirror(op string) string {
	switch op {
	case "<":
		return ">"
	case "<=":
		return ">="
	case ">":
		return "<"
	case ">=":
		return "<="
	}
	return op
}

func numCompareConst(f func(*env) (float64, bool), op string, c float64) func(*env) bool {
	switch op {
	case "==":
		return func(e *env) bool { v, ok := f(e); return ok && v == c }
	case "!=":
		return func(e *env) bool { v, ok := f(e); return ok && v != c }
	case "<":
		return func(e *env) bool { v, ok := f(e); return ok && v < c }
	case "<=":
		return func(e *env) bool { v, ok := f(e); return ok && v <= c }
	case ">":
		return func(e *env) bool { v, ok := f(e); return ok && v > c }
	default:
		return func(e *env) bool { v, ok := f(e); return ok && v >= c }
	}
}

func numCompare(f func(*env) (float64, bool), op string, g func(*env) (float64, bool)) func(*env) bool {
	cmp := func(a, b float64) bool { return cmpOrdered(a, b, op) }
	return func(e *env) bool {
		a, ok := f(e)
		if !ok {
			return false
		}
		b, ok := g(e)
		return ok && cmp(a, b)
	}
}

func strCompare(f func(*env) (string, bool), op string, g func(*env) (string, bool)) func(*env) bool {
	return func(e *env) bool {
		a, ok := f(e)
		if !ok {
			return false
		}
		b, ok := g(e)
		return ok && cmpOrdered(a, b, op)
	}
}

func cmpOrdered[T float64 | string](a, b T, op string) bool {
	switch op {
	case "==":
		return a == b
	case "!=":
		return a != b
	case "<":
		return a < b
	case "<=":
		return a <= b
	case ">":
		return a > b
	}
	return a >= b
}

func compareValues(a, b schemas.Value, op string) bool {
	if a.Kind != b.Kind || a.Kind == schemas.KindNull {
		return false
	}
	switch a.Kind {
	case schemas.KindNumber:
		return cmpOrdered(a.Num, b.Num, op)
	case schemas.KindString:
		return cmpOrdered(a.Str, b.Str, op)
	case schemas.KindBool:
		switch op {
		case "==":
			return a.Bool == b.Bool
		case "!=":
			return a.Bool != b.Bool
		}
	}
	return false
}

func compileStringOp(n *binExpr, x, y *cexpr, errf errFunc) *cexpr {
	out := &cexpr{kind: kBool}
	if x.kind == kList {
		if y.kind != kStr {
			return errf(n.off, "%s on a list needs a string, found a %s", n.op, y.kind)
		}
		if n.op != "contains" {
			return errf(n.off, "%s needs a string on the left, found a list", n.op)
		}
		out.b = listHas(y.str, x.list)
		return out
	}
	if (x.kind != kStr && x.kind != kAny) || (y.kind != kStr && y.kind != kAny) {
		return errf(n.off, "%s needs strings on both sides, found a %s and a %s", n.op, x.kind, y.kind)
	}
	fx, fy := x.strOf(), y.strOf()
	var test func(a, b string) bool
	switch n.op {
	case "contains":
		test = strings.Contains
	case "starts_with":
		test = strings.HasPrefix
	default:
		test = strings.HasSuffix
	}
	out.b = func(e *env) bool {
		a, ok := fx(e)
		if !ok {
			return false
		}
		b, ok := fy(e)
		return ok && test(a, b)
	}
	return out
}

func compileArith(n *binExpr, x, y *cexpr, errf errFunc) *cexpr {
	kx, ky := x.kind, y.kind
	if kx == kAny {
		kx = kNum
	}
	if ky == kAny {
		ky = kNum
	}
	if !isNumeric(kx) || !isNumeric(ky) {
		return errf(n.off, "%s needs numbers, durations or times, found a %s and a %s", n.op, x.kind, y.kind)
	}
	var k valueKind
	switch {
	case kx == kNum && ky == kNum:
		k = kNum
	case n.op == "+" && ((kx == kTime && ky == kDur) || (kx == kDur && ky == kTime)):
		k = kTime
	case n.op == "-" && kx == kTime && ky == kDur:
		k = kTime
	case n.op == "-" && kx == kTime && ky == kTime:
		k = kDur
	case (n.op == "+" || n.op == "-") && kx == kDur && ky == kDur:
		k = kDur
	case n.op == "*" && ((kx == kDur && ky == kNum) || (kx == kNum && ky == kDur)):
		k = kDur
	case n.op == "/" && kx == kDur && ky == kNum:
		k = kDur
	case n.op == "/" && kx == kDur && ky == kDur:
		k = kNum
	default:
		return errf(n.off, "cannot compute a %s %s a %s", kx, n.op, ky)
	}
	fx, fy := x.numOf(), y.numOf()
	out := &cexpr{kind: k}
	switch n.op {
	case "+":
		out.num = func(e *env) (float64, bool) { a, ok := fx(e); b, ok2 := fy(e); return a + b, ok && ok2 }
	case "-":
		out.num = func(e *env) (float64, bool) { a, ok := fx(e); b, ok2 := fy(e); return a - b, ok && ok2 }
	case "*":
		out.num = func(e *env) (float64, bool) { a, ok := fx(e); b, ok2 := fy(e); return a * b, ok && ok2 }
	case "/":
		// Division by zero is null, not infinity.
		out.num = func(e *env) (float64, bool) { a, ok := fx(e); b, ok2 := fy(e); return a / b, ok && ok2 && b != 0 }
	}
	return out
}

func (c *compiler) compileIn(y *yaml.Node, n *inList, sc scope, errf errFunc) *cexpr {
	x := c.compileExpr(y, n.x, sc)
	if x == nil {
		return nil
	}
	if x.since != nil {
		return errf(n.off, "since(...) must be compared with a duration")
	}
	out := &cexpr{kind: kBool}
	neg := n.neg
	wrap := func(f func(*env) bool) func(*env) bool {
		if neg {
			return func(e *env) bool { return !f(e) }
		}
		return f
	}
	// "value in list_field"
	if len(n.list) == 1 {
		if _, lit := n.list[0].(*numLit); !lit {
			if _, lit := n.list[0].(*strLit); !lit {
				if _, lit := n.list[0].(*boolLit); !lit {
					if _, lit := n.list[0].(*durLit); !lit {
						lf := c.compileExpr(y, n.list[0], sc)
						if lf == nil {
							return nil
						}
						if lf.kind != kList {
							return errf(n.list[0].offset(), "in needs a [list] or a list field, found a %s", lf.kind)
						}
						if x.kind != kStr && x.kind != kAny {
							return errf(n.off, "in a list field needs a string, found a %s", x.kind)
						}
						out.b = wrap(listHas(x.strOf(), lf.list))
						return out
					}
				}
			}
		}
	}
	var nums []float64
	var strs []string
	for _, item := range n.list {
		switch l := item.(type) {
		case *numLit:
			nums = append(nums, l.v)
		case *durLit:
			nums = append(nums, float64(l.ms))
		case *strLit:
			strs = append(strs, l.v)
		case *boolLit:
			return errf(l.off, "booleans cannot be in a list; compare with == instead")
		}
	}
	switch {
	case len(strs) > 0 && len(nums) > 0:
		return errf(n.off, "a list must hold only strings or only numbers")
	case len(strs) > 0:
		if x.kind != kStr && x.kind != kAny {
			return errf(n.off, "a %s cannot be in a list of strings", x.kind)
		}
		out.b = wrap(memberOf(x.strOf(), strs))
	default:
		if !isNumeric(x.kind) && x.kind != kAny {
			return errf(n.off, "a %s cannot be in a list of numbers", x.kind)
		}
		out.b = wrap(memberOf(x.numOf(), nums))
	}
	return out
}

// memberOf tests a value against a literal list; null is in no list.
func memberOf[T float64 | string](f func(*env) (T, bool), list []T) func(*env) bool {
	return func(e *env) bool {
		v, ok := f(e)
		if !ok {
			return false
		}
		for _, w := range list {
			if w == v {
				return true
			}
		}
		return false
	}
}

// listHas tests whether a list-valued event field holds a string; null is
// in no list.
func listHas(f func(*env) (string, bool), list func(*env) []string) func(*env) bool {
	return func(e *env) bool {
		v, ok := f(e)
		if !ok {
			return false
		}
		for _, w := range list(e) {
			if w == v {
				return true
			}
		}
		return false
	}
}
