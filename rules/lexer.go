package rules

import (
	"fmt"
	"strconv"
	"strings"
)

type tokKind uint8

const (
	tEOF tokKind = iota
	tIdent
	tNumber
	tDuration
	tString
	tOp // operators and punctuation; text holds it
	tIllegal
)

type token struct {
	kind tokKind
	text string  // source text (for strings: the unquoted value)
	num  float64 // tNumber; tDuration in milliseconds
	off  int     // byte offset in the expression
}

func (t token) String() string {
	switch t.kind {
	case tEOF:
		return "end of expression"
	case tString:
		return strconv.Quote(t.text)
	}
	return fmt.Sprintf("%q", t.text)
}

// durationUnits in milliseconds. Months and years are not offered: their
// length varies, and a window must be exact.
var durationUnits = map[string]int64{
	"ms": 1,
	"s":  1000,
	"m":  60 * 1000,
	"h":  60 * 60 * 1000,
	"d":  24 * 60 * 60 * 1000,
	"w":  7 * 24 * 60 * 60 * 1000,
}

// lex splits an expression into tokens. Errors are reported as tIllegal
// tokens so the parser can place them.
func lex(src string) []token {
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case isLetter(c):
			j := i + 1
			for j < len(src) && (isLetter(src[j]) || isDigit(src[j])) {
				j++
			}
			toks = append(toks, token{kind: tIdent, text: src[i:j], off: i})
			i = j
		case isDigit(c):
			j := i
			for j < len(src) && (isDigit(src[j]) || src[j] == '.' || src[j] == '_') {
				j++
			}
			numText := strings.ReplaceAll(src[i:j], "_", "")
			k := j
			for k < len(src) && isLetter(src[k]) {
				k++
			}
			unit := src[j:k]
			f, err := strconv.ParseFloat(numText, 64)
			if err != nil {
				toks = append(toks, token{kind: tIllegal, text: src[i:k], off: i})
				i = k
				continue
			}
			if unit == "" {
				toks = append(toks, token{kind: tNumber, text: src[i:j], num: f, off: i})
			} else if ms, ok := durationUnits[unit]; ok {
				toks = append(toks, token{kind: tDuration, text: src[i:k], num: f * float64(ms), off: i})
			} else {
				toks = append(toks, token{kind: tIllegal, text: src[i:k], off: i})
			}
			i = k
		case c == '"' || c == '\'':
			j := i + 1
			var b strings.Builder
			closed := false
			for j < len(src) {
				if src[j] == '\\' && j+1 < len(src) {
					switch src[j+1] {
					case 'n':
						b.WriteByte('\n')
					case 't':
						b.WriteByte('\t')
					default:
						b.WriteByte(src[j+1])
					}
					j += 2
					continue
				}
				if src[j] == c {
					closed = true
					j++
					break
				}
				b.WriteByte(src[j])
				j++
			}
			if !closed {
				toks = append(toks, token{kind: tIllegal, text: src[i:], off: i})
				i = len(src)
				continue
			}
			toks = append(toks, token{kind: tString, text: b.String(), off: i})
			i = j
		default:
			two := ""
			if i+1 < len(src) {
				two = src[i : i+2]
			}
			switch two {
			case "==", "!=", "<=", ">=", "&&", "||":
				toks = append(toks, token{kind: tOp, text: two, off: i})
				i += 2
				continue
			}
			switch c {
			case '<', '>', '+', '-', '*', '/', '(', ')', '[', ']', ',', '.', '!':
				toks = append(toks, token{kind: tOp, text: string(c), off: i})
			case '=':
				toks = append(toks, token{kind: tIllegal, text: "=", off: i})
			default:
				toks = append(toks, token{kind: tIllegal, text: string(c), off: i})
			}
			i++
		}
	}
	return append(toks, token{kind: tEOF, off: len(src)})
}

func isLetter(c byte) bool { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
