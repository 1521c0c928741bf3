package rules

import (
	"errors"
	"fmt"
)

// Limits on what Compile accepts. They bound the work and memory of a
// compilation, which matters because the rules of a preview come from an
// HTTP request. Within them, compilation takes time and memory roughly
// linear in the size of the file (BenchmarkCompileLarge,
// TestCompileScalesLinearly).
const (
	// MaxRulesBytes is the largest rules file Compile and CompileFile
	// accept. Callers that receive rules (the API, file loaders) should
	// refuse bigger bodies before reading them whole.
	MaxRulesBytes = 1 << 20
	// MaxExprDepth is how deeply an expression may nest: every
	// parenthesis, not, unary minus and function call that encloses a
	// part of it counts one level. A chain such as a and b and c ... does
	// not nest, however long.
	MaxExprDepth = 64
	// MaxTraits is the most traits a rules file may define: every trait
	// costs state for every customer.
	MaxTraits = 10000
	// MaxSegments is the most segments a rules file may define.
	MaxSegments = 10000
	// MaxErrors is the most errors Compile reports; it stops at the next
	// one and says so.
	MaxErrors = 100
)

// ErrLimit marks errors for a rules file that exceeds one of the limits
// above; test with errors.Is on Compile's error.
var ErrLimit = errors.New("rules: limit exceeded")

// hintBudget bounds the work of "did you mean" hints over trait names, in
// cells of the edit distance table, over one compilation: once spent,
// unknown names get no hint. A typical file spends a few thousand.
const hintBudget = 1 << 24

// limitError is the Error for an exceeded limit.
func limitError(pos Pos, format string, args ...any) *Error {
	return &Error{Pos: pos, Msg: fmt.Sprintf(format, args...), Err: ErrLimit}
}

func tooLarge(file string, size int64) *Error {
	return limitError(Pos{File: file, Line: 1, Col: 1},
		"rules file is %d bytes, over the limit of %d (MaxRulesBytes): remove unused traits and segments, or shorten long conditions", size, MaxRulesBytes)
}
