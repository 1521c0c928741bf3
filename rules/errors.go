package rules

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
)

// ErrUnknownSegment is returned for a segment id the rule set does not define.
var ErrUnknownSegment = errors.New("rules: unknown segment")

// Pos is a position in a rules file. Line and Col are 1-based.
type Pos struct {
	File string
	Line int
	Col  int
}

func (p Pos) String() string {
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Error is one problem in a rules file.
type Error struct {
	Pos Pos
	Msg string
	// Warning marks a lint finding that does not stop compilation.
	Warning bool
	// Err, if set, classifies the problem (ErrLimit); Unwrap returns it.
	Err error
}

// Unwrap returns e.Err, so that errors.Is(err, ErrLimit) works on Compile's
// error.
func (e *Error) Unwrap() error { return e.Err }

func (e *Error) Error() string {
	if e.Warning {
		return e.Pos.String() + ": warning: " + e.Msg
	}
	return e.Pos.String() + ": " + e.Msg
}

// Errors is every problem found in a rules file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the errors, for errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i].Pos, es[j].Pos
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	return es
}

// didYouMean returns a hint naming the candidate closest to name, or "".
func didYouMean(name string, candidates []string) string {
	hint, _ := didYouMeanWithin(name, candidates, math.MaxInt)
	return hint
}

// didYouMeanWithin is didYouMean computing at most budget cells of edit
// distance tables; it returns the hint ("" once the budget runs out) and
// the cells it computed. Candidates whose length alone puts them farther
// than the best so far cost nothing.
func didYouMeanWithin(name string, candidates []string, budget int) (string, int) {
	best, bestD := "", len(name)/2+2
	spent := 0
	for _, c := range candidates {
		if d := len(name) - len(c); d > bestD || -d > bestD {
			continue // the distance is at least the difference in length
		}
		cells := (len(name) + 1) * (len(c) + 1)
		if cells > budget-spent {
			return "", spent
		}
		spent += cells
		if d := editDistance(name, c); d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	if best == "" {
		return "", spent
	}
	return fmt.Sprintf(" (did you mean %q?)", best), spent
}

func editDistance(a, b string) int {
	// Two rows of the table; on the stack for names of usual length.
	var buf [2 * 64]int
	var prev, cur []int
	if n := len(b) + 1; n <= len(buf)/2 {
		prev, cur = buf[:n], buf[n:2*n]
	} else {
		prev, cur = make([]int, n), make([]int, n)
	}
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
