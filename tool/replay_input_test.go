package tool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/segment"
)

// replayNow is the wall clock of the replays in these tests.
var replayNow = func() time.Time { return time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC) }

// goodLines are n purchases of five customers, 17 hours apart from
// 2011-01-01, in time order.
func goodLines(n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		at := time.Date(2011, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * 17 * time.Hour)
		out = append(out, fmt.Sprintf(`{"type":"purchase","event_id":"o-%d","customer_id":"c%d","ts":%q,"amount":%d}`, i, i%5, at.Format(time.RFC3339), 50+i*7))
	}
	return out
}

// badLines are one line per way an input line can be bad, with the reason
// a replay skips it for (blank lines are not bad: ignored).
var badLines = []struct{ line, reason string }{
	{`{"type":"purchase", broken`, "json_decode"},
	{`{"type":"purchase","event_id":"x1","customer_id":"c1","ts":"2011-13-45T00:00:00Z","amount":5}`, "bad_timestamp"},
	{`{"type":"purchase","event_id":"x2","customer_id":"c1","ts":253402300800000,"amount":5}`, "bad_timestamp"},
	{`{"type":"purchase","event_id":"x3","customer_id":"c1","ts":"1969-07-20T20:17:00Z","amount":5}`, "bad_timestamp"},
	{`{"type":"purchase","event_id":"x4","customer_id":"c1","ts":"2204-03-02T09:00:00Z","amount":5}`, "future_timestamp"},
	{`{"type":"purchase","event_id":"x5","customer_id":"c2","ts":"2020-06-01T00:00:00Z","amount":5}`, "out_of_order_future"},
	{`{"type":"purchase","event_id":"x6","ts":"2011-01-05T00:00:00Z","amount":5}`, "missing_customer_id"},
	{`{"type":"purchase","customer_id":"c3","ts":"2011-01-05T00:00:00Z","amount":5}`, "missing_event_id"},
	{`{"type":"purchase","event_id":"x8","customer_id":"c3","ts":"2011-01-05T00:00:00Z","amount":5,"categories":["` + strings.Repeat("a", 1<<20) + `"]}`, "too_large"},
	{`{"type":"profile","event_id":"x9","customer_id":"c1","ts":"2011-01-05T00:00:00Z","delete":"true"}`, "bad_field"},
	{``, ""},
}

// mixLines puts bad lines between good ones, one every three, and returns
// the file's text, the line number of each bad line, and the text of the
// good lines alone.
func mixLines(good []string) (mixed string, badAt []int, clean string) {
	var m, c strings.Builder
	line := 0
	for i, g := range good {
		if i%3 == 1 && i/3 < len(badLines) {
			m.WriteString(badLines[i/3].line + "\n")
			line++
			badAt = append(badAt, line)
		}
		m.WriteString(g + "\n")
		c.WriteString(g + "\n")
		line++
	}
	return m.String(), badAt, c.String()
}

func replayTexts(t *testing.T, opt ReplayOptions, texts ...string) ([]byte, *segment.ReplaySummary, error) {
	t.Helper()
	dir := t.TempDir()
	for i, text := range texts {
		p := filepath.Join(dir, fmt.Sprintf("in%d.jsonl", i))
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		opt.Inputs = append(opt.Inputs, p)
	}
	var out bytes.Buffer
	if opt.RulesFile == "" {
		opt.RulesFile = "../examples/rules.yaml"
	}
	if opt.StateDir == "" {
		opt.StateDir = filepath.Join(dir, "state")
	}
	opt.Output, opt.Now = &out, replayNow
	sum, err := Replay(context.Background(), opt)
	return out.Bytes(), sum, err
}

// TestReplaySkipsBadLinesByReason: every kind of bad line is skipped and
// counted by reason, the first five are named by file:line, and the output
// equals the replay of the good lines alone. Before, the year-10000 line
// aborted the replay and the 2204 or 2020 line made every later event too
// late.
func TestReplaySkipsBadLinesByReason(t *testing.T) {
	mixed, badAt, clean := mixLines(goodLines(60))
	got, sum, err := replayTexts(t, ReplayOptions{}, mixed)
	if err != nil {
		t.Fatal(err)
	}
	want, wantSum, err := replayTexts(t, ReplayOptions{}, clean)
	if err != nil {
		t.Fatal(err)
	}
	wantSkipped := map[string]int64{}
	for _, b := range badLines {
		if b.reason != "" {
			wantSkipped[b.reason]++
		}
	}
	if !reflect.DeepEqual(sum.Skipped, wantSkipped) || sum.Invalid != int64(len(badLines)-1) {
		t.Errorf("skipped %v (%d), want %v", sum.Skipped, sum.Invalid, wantSkipped)
	}
	if len(got) == 0 || !bytes.Equal(got, want) || sum.Events != wantSum.Events || sum.TooLate != 0 {
		t.Errorf("output with bad lines (%d bytes, %d events, %d too late) differs from the output without (%d bytes, %d events)",
			len(got), sum.Events, sum.TooLate, len(want), wantSum.Events)
	}
	if len(sum.FirstSkipped) != segment.MaxReportedLines {
		t.Fatalf("%d skipped lines reported: %v", len(sum.FirstSkipped), sum.FirstSkipped)
	}
	for i, l := range sum.FirstSkipped {
		if filepath.Base(l.File) != "in0.jsonl" || l.Line != badAt[i] || l.Reason != badLines[i].reason {
			t.Errorf("reported %s:%d %s, want in0.jsonl:%d %s", l.File, l.Line, l.Reason, badAt[i], badLines[i].reason)
		}
	}
	var w bytes.Buffer
	sum.WriteSummary(&w)
	for _, s := range []string{"skipped: bad_field=1 bad_timestamp=3 future_timestamp=1 json_decode=1 missing_customer_id=1 missing_event_id=1 out_of_order_future=1 too_large=1",
		fmt.Sprintf("in0.jsonl:%d: json_decode:", badAt[0]), "... and 5 more"} {
		if !strings.Contains(w.String(), s) {
			t.Errorf("summary lacks %q:\n%s", s, w.String())
		}
	}
}

// TestReplayStrictStopsAtFirstBadLine: --strict names file:line of the
// first bad line, and the failed replay removes the state it created, so
// the same replay into the same dir works next.
func TestReplayStrictStopsAtFirstBadLine(t *testing.T) {
	mixed, badAt, _ := mixLines(goodLines(60))
	stateDir := filepath.Join(t.TempDir(), "state")
	_, _, err := replayTexts(t, ReplayOptions{Strict: true, StateDir: stateDir}, mixed)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("in0.jsonl:%d: json_decode", badAt[0])) || !strings.Contains(err.Error(), "was removed") {
		t.Fatalf("strict replay: %v", err)
	}
	if _, err := os.Stat(stateDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed replay left its state dir: %v", err)
	}
	if _, _, err := replayTexts(t, ReplayOptions{StateDir: stateDir}, mixed); err != nil {
		t.Fatalf("retry: %v", err)
	}
	// A dir the user made (empty) stays, emptied; one with files is refused.
	own := t.TempDir()
	if _, _, err := replayTexts(t, ReplayOptions{Strict: true, StateDir: own}, mixed); err == nil {
		t.Fatal("strict replay passed")
	}
	if entries, err := os.ReadDir(own); err != nil || len(entries) != 0 {
		t.Fatalf("user's dir after a failed replay: %v %v", entries, err)
	}
	os.WriteFile(filepath.Join(own, "keep"), nil, 0o644)
	if _, _, err := replayTexts(t, ReplayOptions{StateDir: own}, mixed); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("replay into a dir with a file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(own, "keep")); err != nil {
		t.Fatal("the user's file is gone")
	}
}

// TestReplayWildRuleKeepsOrderedInput: lines in time order are never
// out_of_order_future, also after long gaps (one 10 lines before the end),
// and a second file starting earlier than the first ended does not cost
// the first file's tail.
func TestReplayWildRuleKeepsOrderedInput(t *testing.T) {
	line := func(i int, at time.Time) string {
		return fmt.Sprintf(`{"type":"browse","event_id":"b-%d","customer_id":"c%d","ts":%q,"page":"product"}`, i, i%7, at.Format(time.RFC3339))
	}
	t0 := time.Date(2011, 1, 1, 0, 0, 0, 0, time.UTC)
	var gaps, a, b strings.Builder
	for i := 0; i < 100; i++ {
		at := t0.Add(time.Duration(i) * time.Hour)
		if i >= 50 {
			at = at.Add(90 * 24 * time.Hour)
		}
		if i >= 90 {
			at = at.Add(400 * 24 * time.Hour)
		}
		gaps.WriteString(line(i, at) + "\n")
		a.WriteString(line(i, t0.Add(300*24*time.Hour+time.Duration(i)*time.Hour)) + "\n")
		b.WriteString(line(1000+i, t0.Add(time.Duration(i)*time.Minute)) + "\n")
	}
	for _, tc := range []struct {
		name  string
		texts []string
	}{{"gaps", []string{gaps.String()}}, {"second file earlier", []string{a.String(), b.String()}}} {
		_, sum, err := replayTexts(t, ReplayOptions{}, tc.texts...)
		if err != nil {
			t.Fatal(err)
		}
		if sum.Skipped[reasonOutOfOrderFuture] != 0 || sum.Events != int64(100*len(tc.texts)) {
			t.Errorf("%s: skipped %v, %d events", tc.name, sum.Skipped, sum.Events)
		}
	}
}

// TestReplayAppliesEachEventIDOnce: two overlapping files both hold the
// o-1 purchase; it counts once (spend 95, not 150) and the summary says a
// duplicate was dropped. The output equals one file holding each event once.
func TestReplayAppliesEachEventIDOnce(t *testing.T) {
	rulesPath := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(rulesPath, []byte(`version: 1
traits:
  spend_30d: sum(purchase.amount) over 30d
segments:
  spender: { when: "spend_30d >= 100" }
  buyer: { when: "spend_30d > 0" }
  ninety: { when: "spend_30d >= 90" }
`), 0o644)
	o1 := `{"type":"purchase","event_id":"o-1","customer_id":"c1","ts":"2011-03-01T10:00:00Z","amount":55}` + "\n"
	o2 := `{"type":"purchase","event_id":"o-2","customer_id":"c1","ts":"2011-03-05T10:00:00Z","amount":40}` + "\n"
	// The copy of o-1 in the second file comes when the clock is days
	// past it: beyond the live de-duplication horizon (1h).
	got, sum, err := replayTexts(t, ReplayOptions{RulesFile: rulesPath}, o1+o2, o1)
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := replayTexts(t, ReplayOptions{RulesFile: rulesPath}, o1+o2)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Duplicates != 1 || sum.Sizes["spender"] != 0 || sum.Sizes["buyer"] != 1 || !bytes.Equal(got, want) {
		t.Fatalf("duplicates %d, sizes %v, output:\n%s\nwant:\n%s", sum.Duplicates, sum.Sizes, got, want)
	}
	if !strings.Contains(string(got), `"spend_30d":95`) {
		t.Fatalf("output lacks spend_30d 95:\n%s", got)
	}
	var w bytes.Buffer
	sum.WriteSummary(&w)
	if !strings.Contains(w.String(), "1 duplicate events not applied") {
		t.Fatalf("summary:\n%s", w.String())
	}
}

// FuzzLineReader: the line reader returns the lines of its input, whatever
// the chunking, and reports the too-long ones by size.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nbb\r\n\nccc"), 2)
	f.Add([]byte(strings.Repeat("x", 70000)+"\nshort\n"), 100)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		max = 1 + abs(max)%200000
		want := strings.Split(string(data), "\n")
		if len(data) == 0 || data[len(data)-1] == '\n' {
			want = want[:len(want)-1]
		}
		lr := newLineReader(bytes.NewReader(data), max)
		for i, w := range want {
			w = strings.TrimSuffix(w, "\r")
			line, size, oversize, err := lr.next()
			if err != nil {
				t.Fatalf("line %d: %v", i+1, err)
			}
			if lr.n != i+1 || oversize != (len(w) > max) || (!oversize && (string(line) != w || size != len(w))) {
				t.Fatalf("line %d: got %q size %d oversize %v, want %q (max %d)", i+1, line, size, oversize, w, max)
			}
		}
		if _, _, _, err := lr.next(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the last line: %v", err)
		}
	})
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// TestReplayBoundsAttributes: a profile line over input.max_attributes is
// skipped as too_many_attributes (live dead-letters it); it used to be
// applied, or to end the replay once the bound reached the processor.
func TestReplayBoundsAttributes(t *testing.T) {
	rulesPath := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(rulesPath, []byte(`version: 1
traits:
  spend_30d: sum(purchase.amount) over 30d
segments:
  buyer: { when: "spend_30d > 0" }
`), 0o644)
	var attrs []string
	for i := 0; i < segment.DefaultMaxAttributes+1; i++ {
		attrs = append(attrs, fmt.Sprintf(`"a%d":1`, i))
	}
	big := `{"type":"profile","event_id":"p-1","customer_id":"c1","ts":"2011-03-01T09:00:00Z","attributes":{` + strings.Join(attrs, ",") + "}}\n"
	o1 := `{"type":"purchase","event_id":"o-1","customer_id":"c1","ts":"2011-03-01T10:00:00Z","amount":55}` + "\n"
	_, sum, err := replayTexts(t, ReplayOptions{RulesFile: rulesPath}, big+o1)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Skipped["too_many_attributes"] != 1 || sum.Events != 1 || sum.Sizes["buyer"] != 1 {
		t.Fatalf("skipped %v, events %d, sizes %v: want the profile line skipped and the purchase applied", sum.Skipped, sum.Events, sum.Sizes)
	}
}
