package schemas

import (
	"errors"
	"fmt"
	"io"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// The JSON scanner below is the syntax half of DecodeJSON: it checks a
// whole document the way encoding/json does (same grammar, same nesting
// limit) without building anything, and lets the decoder find values by
// their byte spans. Nothing here allocates except on an error.

// maxJSONDepth is encoding/json's nesting limit: a document nested deeper
// is a syntax error there, so it must be one here too.
const maxJSONDepth = 10000

// Value kinds of a jspan: the first byte of the value, except strings.
const (
	jNone   = 0   // absent
	jString = 's' // start..end is the raw text between the quotes
	jNumber = 'n' // start..end is the number's text
	jTrue   = 't'
	jFalse  = 'f'
	jNull   = 'z'
	jObject = '{' // start..end covers the braces
	jArray  = '['
	// jEscaped marks a jString whose raw text has a backslash or a byte
	// >= 0x80, so it needs unquoting (or a UTF-8 check) before use.
	jEscaped = 0x80
)

// jspan locates one JSON value in the input.
type jspan struct {
	start, end int
	kind       uint8 // jString.. ; jString|jEscaped for strings to unquote
}

func (s jspan) is(k uint8) bool { return s.kind&^jEscaped == k }

// jsonSyntaxError is a document encoding/json would not read.
type jsonSyntaxError struct {
	msg string
	off int
}

func (e *jsonSyntaxError) Error() string { return fmt.Sprintf("%s (offset %d)", e.msg, e.off) }

func syntaxErr(d []byte, i int, context string) error {
	if i >= len(d) {
		return io.ErrUnexpectedEOF
	}
	return &jsonSyntaxError{msg: fmt.Sprintf("invalid character %s %s", quoteChar(d[i]), context), off: i}
}

// quoteChar formats c as encoding/json does in its messages.
func quoteChar(c byte) string {
	if c == '\'' {
		return `'\''`
	}
	if c == '"' {
		return `'"'`
	}
	s := fmt.Sprintf("%q", rune(c))
	return "'" + s[1:len(s)-1] + "'"
}

func skipWS(d []byte, i int) int {
	for i < len(d) {
		switch d[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanValue checks the value at d[i] (no leading space) and returns its
// span and the index after it. depth is the nesting of the enclosing
// container (0 at the top).
func scanValue(d []byte, i, depth int) (jspan, int, error) {
	if i >= len(d) {
		return jspan{}, i, io.ErrUnexpectedEOF
	}
	switch c := d[i]; {
	case c == '"':
		end, esc, err := scanString(d, i)
		if err != nil {
			return jspan{}, i, err
		}
		k := uint8(jString)
		if esc {
			k |= jEscaped
		}
		return jspan{i + 1, end - 1, k}, end, nil
	case c == '{' || c == '[':
		end, err := scanContainer(d, i, depth+1)
		if err != nil {
			return jspan{}, i, err
		}
		return jspan{i, end, c}, end, nil
	case c == '-' || c >= '0' && c <= '9':
		end, err := scanNumber(d, i)
		if err != nil {
			return jspan{}, i, err
		}
		return jspan{i, end, jNumber}, end, nil
	case c == 't':
		return scanLiteral(d, i, "true", jTrue)
	case c == 'f':
		return scanLiteral(d, i, "false", jFalse)
	case c == 'n':
		return scanLiteral(d, i, "null", jNull)
	default:
		return jspan{}, i, syntaxErr(d, i, "looking for beginning of value")
	}
}

func scanLiteral(d []byte, i int, lit string, k uint8) (jspan, int, error) {
	for j := 0; j < len(lit); j++ {
		if i+j >= len(d) {
			return jspan{}, i, io.ErrUnexpectedEOF
		}
		if d[i+j] != lit[j] {
			return jspan{}, i, syntaxErr(d, i+j, "in literal "+lit+" (expecting "+quoteChar(lit[j])+")")
		}
	}
	return jspan{i, i + len(lit), k}, i + len(lit), nil
}

// scanString checks the string whose opening quote is d[i] and returns
// the index after its closing quote, and whether it holds a backslash or
// a non-ASCII byte.
func scanString(d []byte, i int) (int, bool, error) {
	i++
	esc := false
	for i < len(d) {
		c := d[i]
		switch {
		case c == '"':
			return i + 1, esc, nil
		case c == '\\':
			esc = true
			if i+1 >= len(d) {
				return i, esc, io.ErrUnexpectedEOF
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for j := 2; j < 6; j++ {
					if i+j >= len(d) {
						return i, esc, io.ErrUnexpectedEOF
					}
					if unhex(d[i+j]) < 0 {
						return i, esc, syntaxErr(d, i+j, "in \\u hexadecimal character escape")
					}
				}
				i += 6
			default:
				return i, esc, syntaxErr(d, i+1, "in string escape code")
			}
		case c < 0x20:
			return i, esc, syntaxErr(d, i, "in string literal")
		default:
			if c >= utf8.RuneSelf {
				esc = true
			}
			i++
		}
	}
	return i, esc, io.ErrUnexpectedEOF
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// scanNumber checks the JSON number at d[i].
func scanNumber(d []byte, i int) (int, error) {
	if d[i] == '-' {
		i++
		if i >= len(d) {
			return i, io.ErrUnexpectedEOF
		}
	}
	switch {
	case d[i] == '0':
		i++
	case d[i] >= '1' && d[i] <= '9':
		for i++; i < len(d) && d[i] >= '0' && d[i] <= '9'; i++ {
		}
	default:
		return i, syntaxErr(d, i, "in numeric literal")
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) {
			return i, io.ErrUnexpectedEOF
		}
		if d[i] < '0' || d[i] > '9' {
			return i, syntaxErr(d, i, "after decimal point in numeric literal")
		}
		for i++; i < len(d) && d[i] >= '0' && d[i] <= '9'; i++ {
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) {
			return i, io.ErrUnexpectedEOF
		}
		if d[i] < '0' || d[i] > '9' {
			return i, syntaxErr(d, i, "in exponent of numeric literal")
		}
		for i++; i < len(d) && d[i] >= '0' && d[i] <= '9'; i++ {
		}
	}
	return i, nil
}

var errJSONDepth = errors.New("exceeded max depth")

// scanContainer checks the object or array opening at d[i], at nesting
// depth depth, and returns the index after it.
func scanContainer(d []byte, i, depth int) (int, error) {
	if depth > maxJSONDepth {
		return i, &jsonSyntaxError{msg: "invalid character " + quoteChar(d[i]) + " " + errJSONDepth.Error(), off: i}
	}
	if d[i] == '{' {
		return scanObject(d, i, depth, nil)
	}
	i = skipWS(d, i+1)
	if i < len(d) && d[i] == ']' {
		return i + 1, nil
	}
	for {
		_, end, err := scanValue(d, i, depth)
		if err != nil {
			return end, err
		}
		i = skipWS(d, end)
		if i >= len(d) {
			return i, io.ErrUnexpectedEOF
		}
		switch d[i] {
		case ',':
			i = skipWS(d, i+1)
		case ']':
			return i + 1, nil
		default:
			return i, syntaxErr(d, i, "after array element")
		}
	}
}

// scanObject checks the object opening at d[i]; member, if not nil, is
// called with the span of each key (kind jString, maybe jEscaped) and its
// value, in order.
func scanObject(d []byte, i, depth int, member func(key, val jspan)) (int, error) {
	i = skipWS(d, i+1)
	if i < len(d) && d[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(d) {
			return i, io.ErrUnexpectedEOF
		}
		if d[i] != '"' {
			return i, syntaxErr(d, i, "looking for beginning of object key string")
		}
		end, esc, err := scanString(d, i)
		if err != nil {
			return end, err
		}
		key := jspan{i + 1, end - 1, jString}
		if esc {
			key.kind |= jEscaped
		}
		i = skipWS(d, end)
		if i >= len(d) {
			return i, io.ErrUnexpectedEOF
		}
		if d[i] != ':' {
			return i, syntaxErr(d, i, "after object key")
		}
		i = skipWS(d, i+1)
		val, end, err := scanValue(d, i, depth)
		if err != nil {
			return end, err
		}
		if member != nil {
			member(key, val)
		}
		i = skipWS(d, end)
		if i >= len(d) {
			return i, io.ErrUnexpectedEOF
		}
		switch d[i] {
		case ',':
			i = skipWS(d, i+1)
		case '}':
			return i + 1, nil
		default:
			return i, syntaxErr(d, i, "after object key:value pair")
		}
	}
}

// members iterates over the members of an object already checked by
// scanObject: it calls f with each key and value span, in order.
func members(d []byte, obj jspan, f func(key, val jspan)) {
	scanObject(d, int(obj.start), 1, f) //nolint:errcheck // checked before
}

// forItems iterates over the items of an array already checked.
func forItems(d []byte, arr jspan, f func(val jspan)) {
	i := skipWS(d, int(arr.start)+1)
	if d[i] == ']' {
		return
	}
	for {
		v, end, _ := scanValue(d, i, 1)
		f(v)
		i = skipWS(d, end)
		if d[i] == ']' {
			return
		}
		i = skipWS(d, i+1)
	}
}

// raw returns the bytes of s.
func (s jspan) raw(d []byte) []byte { return d[s.start:s.end] }

// appendUnquoted appends the string raw (the text between the quotes of
// a checked JSON string) as encoding/json decodes it: escapes resolved, a
// lone surrogate or invalid UTF-8 byte becoming U+FFFD.
func appendUnquoted(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '\\':
			switch raw[i+1] {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r := getu4(raw[i:])
				i += 6
				if utf16.IsSurrogate(r) {
					if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
						if dec := utf16.DecodeRune(r, getu4(raw[i:])); dec != utf8.RuneError {
							i += 6
							dst = utf8.AppendRune(dst, dec)
							continue
						}
					}
					r = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, r)
				continue
			default: // '"', '\\', '/'
				dst = append(dst, raw[i+1])
			}
			i += 2
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(raw[i:])
			i += size
			dst = utf8.AppendRune(dst, r)
		}
	}
	return dst
}

// getu4 decodes the \uXXXX escape at the start of s.
func getu4(s []byte) rune {
	var r rune
	for _, c := range s[2:6] {
		r = r<<4 | rune(unhex(c))
	}
	return r
}

// plain reports whether the raw text of a string is its value: no escape
// and valid UTF-8.
func plain(s jspan, d []byte) bool {
	if s.kind&jEscaped == 0 {
		return true
	}
	raw := s.raw(d)
	for _, c := range raw {
		if c == '\\' {
			return false
		}
	}
	return utf8.Valid(raw)
}

// jstring returns the value of the JSON string s as a new string that
// does not alias d.
func jstring(d []byte, s jspan) string {
	if plain(s, d) {
		return string(s.raw(d))
	}
	var buf [128]byte
	return string(appendUnquoted(buf[:0], s.raw(d)))
}

// jtemp returns the value of the JSON string s for immediate use: it may
// alias d or buf and must not be kept.
func jtemp(d []byte, s jspan, buf []byte) string {
	if plain(s, d) {
		return bstr(s.raw(d))
	}
	return bstr(appendUnquoted(buf[:0], s.raw(d)))
}

// bstr views b as a string without copying; b must not change while the
// string is in use, and the string must not be kept.
func bstr(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
