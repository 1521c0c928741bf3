package rules

import (
	"os"
	"strings"
	"testing"
)

// FuzzParseExpr feeds the expression parser (segment conditions and trait
// definitions) arbitrary text: it must not panic, must place every error
// inside the text, must recurse no deeper than the nesting limit allows,
// and must give a canonical form linear in the input.
func FuzzParseExpr(f *testing.F) {
	for _, s := range []string{
		"spend_90d >= 1000 and orders_30d >= 2",
		"last_order_at is not null and since(last_order_at) > 60d",
		`profile.country in ["UK", "FR"] or not (a + b * 2 - -c / 3 < 1.5e3)`,
		`count(engagement where channel == "email" and action == "click") over 14d bucket 1h`,
		`"shoes" in categories && !(x != 'a\'b')`,
		strings.Repeat("(", MaxExprDepth+1) + "a" + strings.Repeat(")", MaxExprDepth+1),
		strings.Repeat("not (a or ", 7*MaxExprDepth) + "b" + strings.Repeat(")", 7*MaxExprDepth),
		"a" + strings.Repeat(" and a", 10000),
		"a in [1, 2,, ] = 3 ##",
	} {
		f.Add(s)
	}
	// The conditions and definitions of the golden files.
	for _, path := range []string{"testdata/errors.txt", "testdata/semantics.txt"} {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if _, when, ok := strings.Cut(line, "when: "); ok {
				f.Add(strings.Trim(when, `"{} `))
			} else if _, def, ok := strings.Cut(line, ": "); ok && strings.HasPrefix(line, "  ") {
				f.Add(def)
			}
		}
	}
	f.Fuzz(func(t *testing.T, src string) {
		for _, parse := range []func(p *parser) node{
			func(p *parser) node { return p.parseExpr() },
			func(p *parser) node {
				if d := p.parseTrait(); d != nil && d.filter != nil {
					return d.filter
				}
				return nil
			},
		} {
			p := newParser(src)
			n := parse(p)
			if len(p.errs) > MaxErrors+1 {
				t.Fatalf("%d errors, want at most MaxErrors+1", len(p.errs))
			}
			for _, e := range p.errs {
				if e.off < 0 || e.off > len(src) {
					t.Fatalf("error at offset %d of a %d-byte expression: %s", e.off, len(src), e.msg)
				}
			}
			if len(p.errs) > 0 || n == nil {
				continue
			}
			// Every level of recursion through the tree, except along a
			// chain's left spine (walked in a loop), comes from a nesting
			// the parser counted, or from one of the few precedence levels
			// between two nestings.
			if d := recursionDepth(n); d > 6*(MaxExprDepth+1) {
				t.Fatalf("tree needs a recursion %d deep, over 6*(MaxExprDepth+1)", d)
			}
			if s := n.String(); len(s) > 8*len(src)+16 {
				t.Fatalf("canonical form of %d bytes for a %d-byte expression", len(s), len(src))
			}
		}
	})
}

// recursionDepth is how deep compileChain and binExpr.write recurse on n.
func recursionDepth(n node) int {
	switch n := n.(type) {
	case *binExpr:
		d := 0
		var x node = n
		for b, ok := x.(*binExpr); ok; b, ok = x.(*binExpr) {
			d = max(d, recursionDepth(b.y))
			x = b.x
		}
		return 1 + max(d, recursionDepth(x))
	case *unary:
		return 1 + recursionDepth(n.x)
	case *isNull:
		return 1 + recursionDepth(n.x)
	case *inList:
		d := recursionDepth(n.x)
		for _, a := range n.list {
			d = max(d, recursionDepth(a))
		}
		return 1 + d
	case *call:
		d := 0
		for _, a := range n.args {
			d = max(d, recursionDepth(a))
		}
		return 1 + d
	}
	return 1
}
