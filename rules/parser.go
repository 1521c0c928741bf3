package rules

import (
	"fmt"
	"strconv"
	"strings"
)

// AST of expressions. Every node records its byte offset in the expression
// for error positions. String returns a canonical form (used for trait
// keys, the rule set hash and explain output).
type node interface {
	offset() int
	String() string
	// write appends String's text to b.
	write(b *strings.Builder)
}

type (
	numLit struct {
		off int
		v   float64
	}
	durLit struct {
		off int
		ms  int64
	}
	strLit struct {
		off int
		v   string
	}
	boolLit struct {
		off int
		v   bool
	}
	nullLit struct{ off int }
	// ident is a trait name (segments) or an event field (filters).
	ident struct {
		off  int
		name string
	}
	// selector is x.sel: profile.country, purchase.amount.
	selector struct {
		off    int
		x, sel string
	}
	call struct {
		off  int
		fn   string
		args []node
	}
	unary struct {
		off int
		op  string // "not" or "-"
		x   node
	}
	binExpr struct {
		off  int
		op   string // or and == != < <= > >= + - * / contains starts_with
		x, y node
	}
	inList struct {
		off  int
		x    node
		list []node // literals, or a single field for "<lit> in categories"
		neg  bool
	}
	isNull struct {
		off int
		x   node
		neg bool
	}
)

func (n *numLit) offset() int   { return n.off }
func (n *durLit) offset() int   { return n.off }
func (n *strLit) offset() int   { return n.off }
func (n *boolLit) offset() int  { return n.off }
func (n *nullLit) offset() int  { return n.off }
func (n *ident) offset() int    { return n.off }
func (n *selector) offset() int { return n.off }
func (n *call) offset() int     { return n.off }
func (n *unary) offset() int    { return n.off }
func (n *binExpr) offset() int  { return n.off }
func (n *inList) offset() int   { return n.off }
func (n *isNull) offset() int   { return n.off }

func (n *numLit) String() string   { return canon(n) }
func (n *durLit) String() string   { return canon(n) }
func (n *strLit) String() string   { return canon(n) }
func (n *boolLit) String() string  { return canon(n) }
func (n *nullLit) String() string  { return canon(n) }
func (n *ident) String() string    { return canon(n) }
func (n *selector) String() string { return canon(n) }
func (n *call) String() string     { return canon(n) }
func (n *unary) String() string    { return canon(n) }
func (n *binExpr) String() string  { return canon(n) }
func (n *inList) String() string   { return canon(n) }
func (n *isNull) String() string   { return canon(n) }

// canon returns the canonical form of n. Nodes write it into one builder:
// building each node's text from its children's strings would copy a
// subtree's text once per level above it, quadratic in a long chain.
func canon(n node) string {
	var b strings.Builder
	n.write(&b)
	return b.String()
}

func (n *numLit) write(b *strings.Builder) {
	b.WriteString(strconv.FormatFloat(n.v, 'g', -1, 64))
}
func (n *durLit) write(b *strings.Builder)  { b.WriteString(formatDuration(n.ms)) }
func (n *strLit) write(b *strings.Builder)  { b.WriteString(strconv.Quote(n.v)) }
func (n *boolLit) write(b *strings.Builder) { b.WriteString(strconv.FormatBool(n.v)) }
func (n *nullLit) write(b *strings.Builder) { b.WriteString("null") }
func (n *ident) write(b *strings.Builder)   { b.WriteString(n.name) }
func (n *selector) write(b *strings.Builder) {
	b.WriteString(n.x)
	b.WriteByte('.')
	b.WriteString(n.sel)
}
func (n *call) write(b *strings.Builder) {
	b.WriteString(n.fn)
	b.WriteByte('(')
	for i, a := range n.args {
		if i > 0 {
			b.WriteString(", ")
		}
		a.write(b)
	}
	b.WriteByte(')')
}
func (n *unary) write(b *strings.Builder) {
	if n.op == "not" {
		b.WriteString("(not ")
	} else {
		b.WriteString("(-")
	}
	n.x.write(b)
	b.WriteByte(')')
}

// write walks the left spine of a chain (a and b and c ...) in a loop, so
// that its recursion is as deep as the expression's nesting, not as long
// as the chain (as compileChain).
func (n *binExpr) write(b *strings.Builder) {
	var spine []*binExpr
	var leaf node = n
	for x, ok := leaf.(*binExpr); ok; x, ok = leaf.(*binExpr) {
		spine = append(spine, x)
		leaf = x.x
		b.WriteByte('(')
	}
	leaf.write(b)
	for i := len(spine) - 1; i >= 0; i-- {
		x := spine[i]
		b.WriteByte(' ')
		b.WriteString(x.op)
		b.WriteByte(' ')
		x.y.write(b)
		b.WriteByte(')')
	}
}
func (n *inList) write(b *strings.Builder) {
	b.WriteByte('(')
	n.x.write(b)
	if n.neg {
		b.WriteString(" not in [")
	} else {
		b.WriteString(" in [")
	}
	for i, a := range n.list {
		if i > 0 {
			b.WriteString(", ")
		}
		a.write(b)
	}
	b.WriteString("])")
}
func (n *isNull) write(b *strings.Builder) {
	b.WriteByte('(')
	n.x.write(b)
	if n.neg {
		b.WriteString(" is not null)")
	} else {
		b.WriteString(" is null)")
	}
}

// formatDuration prints ms with the largest exact unit.
func formatDuration(ms int64) string {
	for _, u := range []struct {
		name string
		ms   int64
	}{{"d", durationUnits["d"]}, {"h", durationUnits["h"]}, {"m", durationUnits["m"]}, {"s", durationUnits["s"]}} {
		if ms != 0 && ms%u.ms == 0 {
			return strconv.FormatInt(ms/u.ms, 10) + u.name
		}
	}
	return strconv.FormatInt(ms, 10) + "ms"
}

// parseError is a problem at a byte offset of an expression.
type parseError struct {
	off int
	msg string
	err error // ErrLimit for an exceeded limit
}

// parser is a recursive descent parser. It stops (halts: every token
// after is the end of the expression, and no more errors are recorded) at
// MaxErrors errors or when the expression nests deeper than MaxExprDepth,
// so that its recursion and its work stay bounded.
type parser struct {
	toks   []token
	i      int
	errs   []parseError
	depth  int
	halted bool
}

func newParser(src string) *parser {
	return &parser{toks: lex(src)}
}

func (p *parser) peek() token {
	if p.halted {
		return p.toks[len(p.toks)-1]
	}
	return p.toks[p.i]
}

func (p *parser) next() token {
	t := p.peek()
	if t.kind != tEOF {
		p.i++
	}
	return t
}

// enter opens a nesting level at token t; it reports false, having halted
// the parser, past MaxExprDepth. Every enter is paired with a leave.
func (p *parser) enter(t token) bool {
	p.depth++
	if p.depth <= MaxExprDepth || p.halted {
		return !p.halted
	}
	p.errs = append(p.errs, parseError{off: t.off, err: ErrLimit,
		msg: fmt.Sprintf("expression nested deeper than %d levels (MaxExprDepth) at %s: remove redundant parentheses and double negations (a chain such as a or b or c needs none)", MaxExprDepth, t)})
	p.halted = true
	return false
}

func (p *parser) leave() { p.depth-- }

func (p *parser) isWord(w string) bool {
	t := p.peek()
	return t.kind == tIdent && t.text == w
}

func (p *parser) isOp(op string) bool {
	t := p.peek()
	return t.kind == tOp && t.text == op
}

func (p *parser) fail(t token, format string, args ...any) {
	if p.halted {
		return
	}
	// Past MaxErrors, Compile reports that it stopped at the next error.
	p.halted = len(p.errs) >= MaxErrors
	msg := fmt.Sprintf(format, args...)
	if t.kind == tIllegal {
		msg = fmt.Sprintf("invalid token %q: %s", t.text, msg)
		if t.text == "=" {
			msg = `invalid token "=": use == to compare`
		}
	}
	p.errs = append(p.errs, parseError{off: t.off, msg: msg})
}

func (p *parser) expectOp(op string, what string) bool {
	if p.isOp(op) {
		p.next()
		return true
	}
	t := p.peek()
	p.fail(t, "expected %q %s, found %s", op, what, t)
	return false
}

// parseExpr parses a whole boolean/value expression.
func (p *parser) parseExpr() node {
	n := p.parseOr()
	if t := p.peek(); t.kind != tEOF && len(p.errs) == 0 {
		p.fail(t, "expected an operator or the end of the expression, found %s", t)
	}
	return n
}

func (p *parser) parseOr() node {
	x := p.parseAnd()
	for p.isWord("or") || p.isOp("||") {
		t := p.next()
		y := p.parseAnd()
		x = &binExpr{off: t.off, op: "or", x: x, y: y}
	}
	return x
}

func (p *parser) parseAnd() node {
	x := p.parseNot()
	for p.isWord("and") || p.isOp("&&") {
		t := p.next()
		y := p.parseNot()
		x = &binExpr{off: t.off, op: "and", x: x, y: y}
	}
	return x
}

func (p *parser) parseNot() node {
	if p.isWord("not") || p.isOp("!") {
		t := p.next()
		defer p.leave()
		if !p.enter(t) {
			return &nullLit{off: t.off}
		}
		return &unary{off: t.off, op: "not", x: p.parseNot()}
	}
	return p.parseCmp()
}

var cmpOps = map[string]bool{"==": true, "!=": true, "<": true, "<=": true, ">": true, ">=": true}

func (p *parser) parseCmp() node {
	x := p.parseAdd()
	t := p.peek()
	switch {
	case t.kind == tOp && cmpOps[t.text]:
		p.next()
		return &binExpr{off: t.off, op: t.text, x: x, y: p.parseAdd()}
	case t.kind == tIdent && (t.text == "contains" || t.text == "starts_with" || t.text == "ends_with"):
		p.next()
		return &binExpr{off: t.off, op: t.text, x: x, y: p.parseAdd()}
	case t.kind == tIdent && t.text == "in":
		p.next()
		return p.parseIn(t, x, false)
	case t.kind == tIdent && t.text == "not" && p.toks[p.i+1].kind == tIdent && p.toks[p.i+1].text == "in":
		p.next()
		p.next()
		return p.parseIn(t, x, true)
	case t.kind == tIdent && t.text == "is":
		p.next()
		neg := false
		if p.isWord("not") {
			p.next()
			neg = true
		}
		if !p.isWord("null") {
			nt := p.peek()
			p.fail(nt, "expected null after %q, found %s", "is", nt)
			return x
		}
		p.next()
		return &isNull{off: t.off, x: x, neg: neg}
	}
	return x
}

func (p *parser) parseIn(t token, x node, neg bool) node {
	n := &inList{off: t.off, x: x, neg: neg}
	if !p.isOp("[") {
		// "value in field": membership in a list-valued event field.
		n.list = []node{p.parsePrimary()}
		return n
	}
	p.next()
	for !p.isOp("]") {
		lt := p.peek()
		item := p.parseUnary()
		switch item.(type) {
		case *numLit, *strLit, *boolLit, *durLit:
		default:
			p.fail(lt, "list items must be literals (numbers, strings, booleans, durations), found %s", lt)
		}
		n.list = append(n.list, item)
		if p.isOp(",") {
			p.next()
			continue
		}
		if !p.isOp("]") {
			et := p.peek()
			p.fail(et, "expected \",\" or \"]\" in list, found %s", et)
			return n
		}
	}
	p.next()
	return n
}

func (p *parser) parseAdd() node {
	x := p.parseMul()
	for p.isOp("+") || p.isOp("-") {
		t := p.next()
		x = &binExpr{off: t.off, op: t.text, x: x, y: p.parseMul()}
	}
	return x
}

func (p *parser) parseMul() node {
	x := p.parseUnary()
	for p.isOp("*") || p.isOp("/") {
		t := p.next()
		x = &binExpr{off: t.off, op: t.text, x: x, y: p.parseUnary()}
	}
	return x
}

func (p *parser) parseUnary() node {
	if p.isOp("-") {
		t := p.next()
		defer p.leave()
		if !p.enter(t) {
			return &nullLit{off: t.off}
		}
		x := p.parseUnary()
		switch l := x.(type) {
		case *numLit:
			l.v, l.off = -l.v, t.off
			return l
		case *durLit:
			l.ms, l.off = -l.ms, t.off
			return l
		}
		return &unary{off: t.off, op: "-", x: x}
	}
	return p.parsePrimary()
}

var reserved = map[string]bool{"and": true, "or": true, "not": true, "in": true, "is": true, "contains": true, "starts_with": true, "ends_with": true, "where": true, "over": true, "bucket": true}

func (p *parser) parsePrimary() node {
	t := p.next()
	switch t.kind {
	case tNumber:
		return &numLit{off: t.off, v: t.num}
	case tDuration:
		return &durLit{off: t.off, ms: int64(t.num)}
	case tString:
		return &strLit{off: t.off, v: t.text}
	case tIdent:
		switch t.text {
		case "true", "false":
			return &boolLit{off: t.off, v: t.text == "true"}
		case "null":
			return &nullLit{off: t.off}
		}
		if reserved[t.text] {
			p.fail(t, "expected a value, found keyword %q", t.text)
			return &nullLit{off: t.off}
		}
		if p.isOp("(") {
			p.next()
			c := &call{off: t.off, fn: t.text}
			defer p.leave()
			if !p.enter(t) {
				return c
			}
			for !p.isOp(")") {
				c.args = append(c.args, p.parseOr())
				if p.isOp(",") {
					p.next()
					continue
				}
				if !p.expectOp(")", "to close the call of "+t.text) {
					return c
				}
				return c
			}
			p.next()
			return c
		}
		if p.isOp(".") {
			p.next()
			st := p.next()
			if st.kind != tIdent {
				p.fail(st, "expected a name after %q, found %s", t.text+".", st)
				return &ident{off: t.off, name: t.text}
			}
			return &selector{off: t.off, x: t.text, sel: st.text}
		}
		return &ident{off: t.off, name: t.text}
	case tOp:
		if t.text == "(" {
			defer p.leave()
			if !p.enter(t) {
				return &nullLit{off: t.off}
			}
			x := p.parseOr()
			p.expectOp(")", "to close the parenthesis")
			return x
		}
	case tEOF:
		p.fail(t, "expected a value, found the end of the expression")
		return &nullLit{off: t.off}
	}
	p.fail(t, "expected a value, found %s", t)
	return &nullLit{off: t.off}
}

// traitDef is a parsed trait definition:
//
//	AGG '(' EVENT ['.' FIELD] ['where' EXPR] ')' ['over' DURATION ['bucket' DURATION]]
type traitDef struct {
	agg       string
	aggOff    int
	event     string
	eventOff  int
	field     string
	fieldOff  int
	filter    node
	window    int64 // ms; 0 = lifetime
	windowOff int
	bucket    int64 // ms; 0 = default
	bucketOff int
}

func (p *parser) parseTrait() *traitDef {
	d := &traitDef{}
	t := p.next()
	if t.kind != tIdent {
		p.fail(t, "expected an aggregate (count, sum, min, max, avg, distinct_count, first, last, most_frequent), found %s", t)
		return nil
	}
	d.agg, d.aggOff = t.text, t.off
	if !p.expectOp("(", "after "+t.text) {
		return nil
	}
	et := p.next()
	if et.kind != tIdent {
		p.fail(et, "expected an event type (purchase, browse, engagement), found %s", et)
		return nil
	}
	d.event, d.eventOff = et.text, et.off
	if p.isOp(".") {
		p.next()
		ft := p.next()
		if ft.kind != tIdent {
			p.fail(ft, "expected a field name after %q, found %s", et.text+".", ft)
			return nil
		}
		d.field, d.fieldOff = ft.text, ft.off
	}
	if p.isWord("where") {
		p.next()
		d.filter = p.parseOr()
	}
	if !p.expectOp(")", "to close "+d.agg+"(") {
		return nil
	}
	if p.isWord("over") {
		p.next()
		wt := p.next()
		if wt.kind != tDuration {
			p.fail(wt, "expected a window duration after over (e.g. 30d, 12h), found %s", wt)
			return nil
		}
		d.window, d.windowOff = int64(wt.num), wt.off
		if p.isWord("bucket") {
			p.next()
			bt := p.next()
			if bt.kind != tDuration {
				p.fail(bt, "expected a bucket duration after bucket (e.g. 1h, 1d), found %s", bt)
				return nil
			}
			d.bucket, d.bucketOff = int64(bt.num), bt.off
		}
	}
	if t := p.peek(); t.kind != tEOF {
		p.fail(t, "expected over, bucket or the end of the trait, found %s", t)
	}
	return d
}
