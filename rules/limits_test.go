package rules

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rulesOf is a file with the trait a and one segment x with condition when.
func rulesOf(when string) string {
	return "version: 1\ntraits:\n  a: count(purchase) over 30d\nsegments:\n  x: { when: \"" + when + "\" }\n"
}

// padTo pads a rules file with a trailing comment to exactly n bytes.
func padTo(src string, n int) string {
	return src + "#" + strings.Repeat("-", n-len(src)-2) + "\n"
}

// many is a file with n traits (or n segments) named t0, t1, ...
func many(traits, segments int) string {
	var b strings.Builder
	b.WriteString("version: 1\ntraits:\n  a: count(purchase) over 30d\n")
	for i := 1; i < traits; i++ {
		fmt.Fprintf(&b, "  t%d: count(purchase) over %dd\n", i, i%90+1)
	}
	b.WriteString("segments:\n")
	for i := 0; i < segments; i++ {
		fmt.Fprintf(&b, "  s%d: { when: \"a > %d\" }\n", i, i)
	}
	return b.String()
}

// TestLimits checks that each limit gives an error that names it, its value,
// where it was exceeded and what to do, and that input at the limit still
// compiles.
func TestLimits(t *testing.T) {
	deep := func(open, close string, n int, inner string) string {
		return strings.Repeat(open, n) + inner + strings.Repeat(close, n)
	}
	for _, c := range []struct {
		name string
		src  string
		want []string // substrings of the error; none: compiles
	}{
		{"size at limit", padTo(genRules(MaxRulesBytes-100), MaxRulesBytes), nil},
		{"size over limit", padTo(genRules(MaxRulesBytes-100), MaxRulesBytes+1),
			[]string{"rules.yaml:1:1: rules file is 1048577 bytes, over the limit of 1048576 (MaxRulesBytes): remove unused traits and segments"}},
		{"parentheses at limit", rulesOf(deep("(", ")", MaxExprDepth, "a > 1")), nil},
		{"parentheses over limit", rulesOf(deep("(", ")", MaxExprDepth+1, "a > 1")),
			// The 65th parenthesis: column 15 + 64.
			[]string{"rules.yaml:5:79: segment x: expression nested deeper than 64 levels (MaxExprDepth)", "remove redundant parentheses"}},
		{"not over limit", rulesOf(strings.Repeat("not ", MaxExprDepth+1) + "a > 1"),
			[]string{"rules.yaml:5:271: segment x: expression nested deeper than 64 levels (MaxExprDepth)"}},
		{"unary minus over limit", rulesOf("a > " + strings.Repeat("-", MaxExprDepth+1) + "1"),
			[]string{"rules.yaml:5:83: segment x: expression nested deeper than 64 levels"}},
		{"calls over limit", rulesOf(deep("since(", ")", MaxExprDepth+1, "a") + " > 1d"),
			[]string{"rules.yaml:5:399: segment x: expression nested deeper than 64 levels"}},
		{"in list items over limit", rulesOf("a in [" + deep("(", ")", MaxExprDepth+1, "1") + "]"),
			[]string{"rules.yaml:5:85: segment x: expression nested deeper than 64 levels"}},
		{"trait filter over limit", "version: 1\ntraits:\n  a: count(purchase where " + deep("(", ")", MaxExprDepth+1, "amount > 1") + ")\nsegments:\n  x: { when: \"a > 1\" }\n",
			[]string{"rules.yaml:3:91: trait a: expression nested deeper than 64 levels (MaxExprDepth)"}},
		{"traits at limit", many(MaxTraits, 1), nil},
		{"traits over limit", many(MaxTraits+1, 1),
			// At the 10001st trait.
			[]string{"rules.yaml:10003:3: 10001 traits, over the limit of 10000 (MaxTraits): remove unused traits"}},
		{"segments at limit", many(1, MaxSegments), nil},
		{"segments over limit", many(1, MaxSegments+1),
			[]string{"rules.yaml:10005:3: 10001 segments, over the limit of 10000 (MaxSegments): remove unused segments"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Compile("rules.yaml", []byte(c.src))
			if c.want == nil {
				if err != nil {
					t.Fatalf("got %.500v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want %q", c.want)
			}
			if !errors.Is(err, ErrLimit) {
				t.Errorf("errors.Is(err, ErrLimit) is false for %.300v", err)
			}
			if es, ok := err.(Errors); !ok || len(es) != 1 {
				t.Errorf("got %T with %.500v, want Errors with one error", err, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %.500v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

// TestCompileFileLimit checks that CompileFile refuses a file over
// MaxRulesBytes, as Compile does.
func TestCompileFileLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, []byte(padTo(genRules(MaxRulesBytes-100), MaxRulesBytes+10)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := CompileFile(path)
	want := path + ":1:1: rules file is 1048586 bytes, over the limit of 1048576 (MaxRulesBytes)"
	if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrLimit) {
		t.Fatalf("got %.300v, want an ErrLimit containing %q", err, want)
	}
}

// TestTooManyErrors checks that Compile stops after MaxErrors errors and
// says so.
func TestTooManyErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\ntraits:\n  a: count(purchase) over 30d\nsegments:\n")
	for i := 0; i < 3*MaxErrors; i++ {
		fmt.Fprintf(&b, "  s%d: { when: \"b%d > 1\" }\n", i, i)
	}
	_, err := Compile("rules.yaml", []byte(b.String()))
	es, ok := err.(Errors)
	if !ok || len(es) != MaxErrors+1 {
		t.Fatalf("got %d errors (%T), want %d", len(es), err, MaxErrors+1)
	}
	last := es[len(es)-1].Error()
	// At the first error not reported: segment s100's condition.
	want := fmt.Sprintf("rules.yaml:%d:18: too many errors, stopped after %d (MaxErrors): fix these and compile again", 5+MaxErrors, MaxErrors)
	if last != want {
		t.Errorf("last error:\ngot  %s\nwant %s", last, want)
	}
	// A broken file is not too big: a caller mapping ErrLimit to "413
	// Payload Too Large" must not see this as one.
	if errors.Is(err, ErrLimit) {
		t.Errorf("errors.Is(err, ErrLimit) is true for a file with many errors")
	}
	// One expression full of errors stops too.
	_, err = Compile("rules.yaml", []byte(rulesOf("a in [b"+strings.Repeat(", b", 3*MaxErrors)+"]")))
	if es, _ := err.(Errors); len(es) != MaxErrors+1 {
		t.Errorf("one expression with %d errors: got %d errors, want %d", 3*MaxErrors+1, len(es), MaxErrors+1)
	}
}
