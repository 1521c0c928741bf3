package rules

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// genRules returns a valid rules file of about n bytes (never more) that
// grows every dimension the compiler walks with n: the number of traits and
// segments, one long and/or chain, one long `in [...]` list, one long string
// literal, and parentheses nested 30 deep (45 levels with the nots).
func genRules(n int) string {
	var b strings.Builder
	b.Grow(n)
	b.WriteString("version: 1\ntraits:\n")
	// About a third of the budget for traits, a third for ordinary
	// segments, the rest split between the three long expressions.
	traitEnd := n / 3
	aggs := []string{
		"count(purchase where amount > %d and currency in [\"EUR\", \"USD\"]) over 30d",
		"sum(purchase.amount where quantity >= %d) over 90d",
		"max(purchase.amount) over %dd",
		"count(browse where page == \"p%d\" or category starts_with \"sh\") over 7d",
		"distinct_count(purchase.categories) over %dh",
	}
	var traits []string
	for b.Len() < traitEnd {
		i := len(traits)
		name := fmt.Sprintf("t%05d", i)
		def := fmt.Sprintf(aggs[i%len(aggs)], i%20+1)
		fmt.Fprintf(&b, "  %s: %s\n", name, def)
		traits = append(traits, name)
	}
	// Traits referenced from everywhere, late ones included, so that name
	// lookups cannot all stop at the first trait.
	ref := func(k int) string { return traits[(k*7919)%len(traits)] }
	b.WriteString("segments:\n")
	segEnd := 2 * n / 3
	for i := 0; b.Len() < segEnd; i++ {
		switch i % 4 {
		case 0:
			fmt.Fprintf(&b, "  s%05d: { when: \"%s >= 1 and (%s < 5 or not (%s == 3))\" }\n", i, ref(i), ref(i+1), ref(i+2))
		case 1:
			fmt.Fprintf(&b, "  s%05d:\n    description: segment %d\n    when: %s + %s * 2 > 10 or profile.country in [\"UK\", \"FR\"]\n", i, i, ref(i), ref(i+3))
		case 2:
			fmt.Fprintf(&b, "  s%05d: { when: \"%s\" }\n", i, nested(ref(i)+" > 0", 8))
		default:
			fmt.Fprintf(&b, "  s%05d:\n    when: |\n      %s >= 2 and\n      profile.tier == \"gold\"\n", i, ref(i))
		}
	}
	rest := n - b.Len() - 200
	// A long and/or chain.
	b.WriteString("  long_chain: { when: \"")
	for k, end := 0, b.Len()+rest/3; b.Len() < end; k++ {
		if k > 0 {
			b.WriteString([]string{" and ", " or "}[k%2])
		}
		fmt.Fprintf(&b, "%s >= %d", ref(k), k%100)
	}
	b.WriteString("\" }\n")
	// A long in list.
	b.WriteString("  long_list: { when: \"profile.zip in [")
	for k, end := 0, b.Len()+rest/3; b.Len() < end; k++ {
		if k > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d", 10000+k)
	}
	b.WriteString("]\" }\n")
	// A long string literal, and the deepest parentheses allowed.
	b.WriteString("  long_string: { when: \"profile.note == '")
	b.WriteString(strings.Repeat("x", max(0, rest/3-100)))
	b.WriteString("' and " + nested(traits[len(traits)-1]+" > 0", 30) + "\" }\n")
	return b.String()
}

// nested wraps cond in depth pairs of parentheses, alternating not.
func nested(cond string, depth int) string {
	var b strings.Builder
	for d := 0; d < depth; d++ {
		if d%2 == 1 {
			b.WriteString("not ")
		}
		b.WriteByte('(')
	}
	b.WriteString(cond)
	b.WriteString(strings.Repeat(")", depth))
	return b.String()
}

// scalingShapes are rules files of about n bytes, each stretching one
// dimension of the input. Some are invalid on purpose: a file full of
// errors must not be slower to reject than a valid one is to compile.
var scalingShapes = []struct {
	name string
	gen  func(n int) string
}{
	{"mixed", genRules},
	{"many_traits", func(n int) string {
		return fill(n, "version: 1\ntraits:\n", func(b *strings.Builder, i int) {
			fmt.Fprintf(b, "  t%d: count(purchase where amount > %d) over 30d\n", i, i)
		}, "segments:\n  x: { when: \"t0 > 1\" }\n")
	}},
	{"many_segments", func(n int) string {
		return fill(n, "version: 1\ntraits:\n  a: count(purchase) over 30d\n  b: sum(purchase.amount) over 7d\nsegments:\n", func(b *strings.Builder, i int) {
			fmt.Fprintf(b, "  s%d: { when: \"a > %d and b < 3 or profile.tier == 'gold'\" }\n", i, i)
		}, "")
	}},
	{"and_chain", func(n int) string {
		return longWhen(n, "a > 0", " and a > 1")
	}},
	{"or_chain_block", func(n int) string {
		return fill(n, "version: 1\ntraits:\n  a: count(purchase) over 30d\nsegments:\n  x:\n    when: |\n      a > 0", func(b *strings.Builder, i int) {
			b.WriteString(" or\n      a > 1")
		}, "\n")
	}},
	{"arithmetic", func(n int) string {
		return longWhen(n, "a", " + a * 2 - a / 3") + ""
	}},
	{"filter_chain", func(n int) string {
		return fill(n, "version: 1\ntraits:\n  f: count(purchase where amount > 0", func(b *strings.Builder, i int) {
			b.WriteString(" and amount > 1")
		}, ") over 30d\nsegments:\n  x: { when: \"f > 1\" }\n")
	}},
	{"in_list", func(n int) string {
		return longWhen(n, "a in [1", ", 1") // closed by longWhen's suffix
	}},
	{"long_string", func(n int) string {
		return "version: 1\ntraits:\n  a: count(purchase) over 30d\nsegments:\n  x: { when: \"profile.note == '" + strings.Repeat("y", n-100) + "'\" }\n"
	}},
	{"late_traits", func(n int) string {
		// Every segment reads the last trait.
		var b strings.Builder
		b.WriteString("version: 1\ntraits:\n")
		k := 0
		for ; b.Len() < n/2; k++ {
			fmt.Fprintf(&b, "  trait_%d: count(purchase) over 30d\n", k)
		}
		b.WriteString("segments:\n")
		for i := 0; b.Len() < n-60; i++ {
			fmt.Fprintf(&b, "  s%d: { when: \"trait_%d > %d\" }\n", i, k-1, i)
		}
		return b.String()
	}},
	{"unknown_traits", func(n int) string {
		// Invalid: every segment misspells a trait.
		var b strings.Builder
		b.WriteString("version: 1\ntraits:\n")
		for k := 0; b.Len() < n/2; k++ {
			fmt.Fprintf(&b, "  customer_trait_number_%d: count(purchase) over 30d\n", k)
		}
		b.WriteString("segments:\n")
		for i := 0; b.Len() < n-60; i++ {
			fmt.Fprintf(&b, "  s%d: { when: \"customer_trait_numbr_%d > 1\" }\n", i, i)
		}
		return b.String()
	}},
	{"list_errors", func(n int) string {
		// Invalid: every list item is an error.
		return longWhen(n, "a in [b", ", b")
	}},
	{"deep_parens", func(n int) string {
		// Invalid once deeper than MaxExprDepth.
		d := (n - 100) / 2
		return "version: 1\ntraits:\n  a: count(purchase) over 30d\nsegments:\n  x: { when: \"" + strings.Repeat("(", d) + "a > 1" + strings.Repeat(")", d) + "\" }\n"
	}},
	{"deep_not", func(n int) string {
		return longWhen(n, "", "not ") // ends in "not a > 0"
	}},
}

// fill writes head, then item(i) for i = 0, 1, ... while the result stays
// under n bytes minus room for tail, then tail.
func fill(n int, head string, item func(b *strings.Builder, i int), tail string) string {
	var b strings.Builder
	b.WriteString(head)
	var one strings.Builder
	for i := 0; ; i++ {
		one.Reset()
		item(&one, i)
		if b.Len()+one.Len()+len(tail)+16 > n {
			break
		}
		b.WriteString(one.String())
	}
	b.WriteString(tail)
	return b.String()
}

// longWhen is a segment whose condition is first followed by as many
// copies of rest as fit in n bytes.
func longWhen(n int, first, rest string) string {
	head := "version: 1\ntraits:\n  a: count(purchase) over 30d\nsegments:\n  x: { when: \"" + first
	tail := "\" }\n"
	switch {
	case strings.Contains(first, "["):
		tail = "]" + tail
	case rest == "not ":
		tail = "a > 0" + tail
	case first == "a":
		tail = " > 1" + tail
	}
	return fill(n, head, func(b *strings.Builder, i int) { b.WriteString(rest) }, tail)
}

// compileWork compiles src and returns the heap allocations it made, in
// objects and bytes: a measure of work that, unlike time, does not depend
// on the machine or its load.
func compileWork(src []byte) (allocs, bytes uint64) {
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	Compile("scale.yaml", src)
	runtime.ReadMemStats(&m1)
	return m1.Mallocs - m0.Mallocs, m1.TotalAlloc - m0.TotalAlloc
}

// TestCompileScalesLinearly compiles each shape at n and 8n bytes and
// requires the work (allocations, in objects and in bytes) to grow by less
// than 12 times: about 8 for linear work, 64 for quadratic.
func TestCompileScalesLinearly(t *testing.T) {
	const n = 8 << 10
	for _, s := range scalingShapes {
		t.Run(s.name, func(t *testing.T) {
			small, large := []byte(s.gen(n)), []byte(s.gen(8*n))
			compileWork(small) // warm up lazily built tables
			a1, b1 := compileWork(small)
			a8, b8 := compileWork(large)
			ra, rb := float64(a8)/float64(a1), float64(b8)/float64(b1)
			t.Logf("%d -> %d bytes of rules: allocations %d -> %d (x%.1f), allocated bytes %d -> %d (x%.1f)", len(small), len(large), a1, a8, ra, b1, b8, rb)
			if ra > 12 || rb > 12 {
				t.Errorf("compiling 8 times more rules (%d -> %d bytes) allocates x%.1f objects and x%.1f bytes; want < x12 (linear is x8, quadratic x64)", len(small), len(large), ra, rb)
			}
		})
	}
}

// BenchmarkCompileLarge compiles rules files of 10 KiB, 100 KiB and 1 MiB:
// "mixed" (genRules: many traits and segments, and some long
// expressions) and "long_expr" (one segment whose condition is the whole
// file, the worst case of the quadratic compiler this replaced).
func BenchmarkCompileLarge(b *testing.B) {
	gens := []struct {
		name string
		gen  func(n int) string
	}{{"mixed", genRules}, {"long_expr", scalingShape("arithmetic")}}
	for _, g := range gens {
		for _, size := range []struct {
			name string
			n    int
		}{{"10KiB", 10 << 10}, {"100KiB", 100 << 10}, {"1MiB", 1 << 20}} {
			src := []byte(g.gen(size.n))
			b.Run(g.name+"/"+size.name, func(b *testing.B) {
				b.SetBytes(int64(len(src)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Compile("large.yaml", src); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func scalingShape(name string) func(int) string {
	for _, s := range scalingShapes {
		if s.name == name {
			return s.gen
		}
	}
	panic("no scaling shape " + name)
}
