package main

import (
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/segd/segd/schemas"
)

// appendChangeLine appends one segment change as a line of text, the
// format of the demo and of `segd changes`:
//
//	TIME KIND SEGMENT CUSTOMER  (CAUSE [EVENT]) TRAIT=VALUE...
//
// Numbers are shown as the input would have written them (formatNumber);
// traits named *_at hold Unix milliseconds and are shown as times.
func appendChangeLine(dst []byte, c *schemas.SegmentChange) []byte {
	start := len(dst)
	dst = append(dst, schemas.FormatTime(c.Time)...)
	dst = append(dst, ' ')
	if c.SegmentID == "" && c.Seq == 0 {
		// An erasure notice (docs/schemas.md), not a transition.
		dst = append(dst, "ERASED "...)
		dst = append(dst, c.CustomerID...)
		return append(dst, '\n')
	}
	dst = appendPadded(dst, c.Kind.String(), 5)
	dst = append(dst, ' ')
	dst = appendPadded(dst, c.SegmentID, 15)
	dst = append(dst, ' ')
	dst = append(dst, c.CustomerID...)
	dst = append(dst, "  ("...)
	dst = append(dst, strings.ToLower(c.Cause.String())...)
	if c.CauseEventID != "" {
		dst = append(dst, ' ')
		dst = append(dst, c.CauseEventID...)
	}
	dst = append(dst, ')')
	for _, t := range c.Traits {
		dst = append(dst, ' ')
		dst = append(dst, t.Name...)
		dst = append(dst, '=')
		switch t.Value.Kind {
		case schemas.KindNumber:
			if strings.HasSuffix(t.Name, "_at") {
				dst = append(dst, schemas.FormatTime(int64(t.Value.Num))...)
			} else {
				dst = append(dst, formatNumber(t.Value.Num)...)
			}
		case schemas.KindString:
			dst = strconv.AppendQuote(dst, t.Value.Str)
		case schemas.KindBool:
			dst = strconv.AppendBool(dst, t.Value.Bool)
		default:
			dst = append(dst, "null"...)
		}
	}
	if len(dst) == start {
		return dst
	}
	return append(dst, '\n')
}

// writeChangeLine writes appendChangeLine's line to w.
func writeChangeLine(w io.Writer, c *schemas.SegmentChange) error {
	_, err := w.Write(appendChangeLine(nil, c))
	return err
}

func appendPadded(dst []byte, s string, width int) []byte {
	dst = append(dst, s...)
	for i := len(s); i < width; i++ {
		dst = append(dst, ' ')
	}
	return dst
}

// formatNumber shows a number for people: rounded to 12 significant
// digits, which drops the binary floating-point residue of sums
// (247.59000000000003 is shown as 247.59, as the input wrote it) and
// keeps every digit an amount or count has, in plain decimal notation
// (no exponent) between 1e-6 and 1e21. For display only: state, Avro and
// JSON output keep the exact number.
func formatNumber(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) || v == 0 {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	r, err := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 12, 64), 64)
	if err != nil {
		r = v
	}
	if a := math.Abs(r); a >= 1e-6 && a < 1e21 {
		return strconv.FormatFloat(r, 'f', -1, 64)
	}
	return strconv.FormatFloat(r, 'g', -1, 64)
}
