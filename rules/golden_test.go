package rules

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segd/segd/schemas"
)

var rewrite = flag.Bool("rewrite", false, "rewrite golden files in testdata/ with the current output")

// A golden file is a list of cases:
//
//	<command>
//	<input lines, no blank line>
//	----
//	<expected output lines>
//	<blank line>
//
// Commands: "compile" prints the errors (or "ok" and the segments), "explain"
// prints WriteExplain's output.
type goldenCase struct {
	cmd, input, output string
	line               int
}

func readGolden(t *testing.T, path string) []goldenCase {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cases []goldenCase
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); {
		if strings.TrimSpace(lines[i]) == "" || strings.HasPrefix(lines[i], "#") {
			i++
			continue
		}
		c := goldenCase{cmd: lines[i], line: i + 1}
		i++
		var in, out []string
		for i < len(lines) && lines[i] != "----" {
			in = append(in, lines[i])
			i++
		}
		i++ // ----
		for i < len(lines) && lines[i] != "" {
			out = append(out, lines[i])
			i++
		}
		c.input, c.output = strings.Join(in, "\n")+"\n", strings.Join(out, "\n")
		cases = append(cases, c)
	}
	return cases
}

func runGolden(c goldenCase) string {
	rs, err := Compile("rules.yaml", []byte(c.input))
	switch c.cmd {
	case "compile":
		if err != nil {
			return err.Error()
		}
		var b strings.Builder
		b.WriteString("ok")
		for _, s := range rs.Segments() {
			fmt.Fprintf(&b, "\n%s: %s reads %s", s.ID, s.When, rs.DescribeReads(s))
		}
		for _, w := range rs.Warnings() {
			b.WriteString("\n" + w.Error())
		}
		return b.String()
	case "explain":
		if err != nil {
			return err.Error()
		}
		var b strings.Builder
		WriteExplain(&b, rs)
		// Blank lines end a case in the golden format.
		return strings.ReplaceAll(strings.TrimRight(b.String(), "\n"), "\n\n", "\n")
	}
	return "unknown command " + c.cmd
}

func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cases := readGolden(t, f)
			var out strings.Builder
			for _, c := range cases {
				got := runGolden(c)
				if *rewrite {
					fmt.Fprintf(&out, "%s\n%s----\n%s\n\n", c.cmd, c.input, got)
					continue
				}
				if got != c.output {
					t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", f, c.line, c.cmd, got, c.output)
				}
			}
			if *rewrite {
				if err := os.WriteFile(f, []byte(out.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// The example rules shipped with segd must compile.
func TestExamplesCompile(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples")
	}
	for _, f := range files {
		if _, err := CompileFile(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func FuzzCompile(f *testing.F) {
	f.Add(shopRules)
	for _, path := range []string{"testdata/errors.txt", "testdata/semantics.txt"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, c := range strings.Split(string(b), "\n\n") {
			if _, in, ok := strings.Cut(c, "\n"); ok {
				in, _, _ = strings.Cut(in, "----")
				f.Add(in)
			}
		}
	}
	e := &schemas.Event{Type: schemas.EventPurchase, CustomerID: "c", Time: 1700000000000, Amount: 5, Categories: []string{"a"}}
	f.Fuzz(func(t *testing.T, src string) {
		rs, err := Compile("fuzz.yaml", []byte(src))
		if err != nil {
			for _, e := range err.(Errors) {
				if e.Pos.Line < 1 || e.Pos.Col < 1 {
					t.Fatalf("error without a position: %v", e)
				}
			}
			return
		}
		// A compiled rule set must evaluate and encode without panicking.
		s := rs.NewState()
		for _, typ := range []schemas.EventType{schemas.EventPurchase, schemas.EventBrowse, schemas.EventEngagement, schemas.EventProfile} {
			e.Type = typ
			rs.Apply(s, e, e.Time)
		}
		for i := range rs.Segments() {
			rs.Eval(i, s, e.Time)
			rs.NextChange(i, s, e.Time)
		}
		s2 := rs.NewState()
		if err := rs.DecodeState(s.AppendBinary(nil), s2); err != nil {
			t.Fatalf("round trip: %v", err)
		}
		// And its state decoder must not panic on garbage.
		rs.DecodeState([]byte(src), s2)
	})
}

// Every YAML example in docs/rules.md compiles, and its segments behave as
// the page says (the worked window example is TestDocsWorkedExample).
func TestDocsExamplesCompile(t *testing.T) {
	doc, err := os.ReadFile("../docs/rules.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(doc), "```yaml\n")
	if len(blocks) < 2 {
		t.Fatal("no yaml examples in docs/rules.md")
	}
	for i, b := range blocks[1:] {
		src, _, _ := strings.Cut(b, "```")
		if _, err := Compile(fmt.Sprintf("docs/rules.md example %d", i+1), []byte(src)); err != nil {
			t.Errorf("docs example %d does not compile:\n%s\n%v", i+1, src, err)
		}
	}
}

// TestDocsWorkedExample checks the table of docs/rules.md's worked window
// example.
func TestDocsWorkedExample(t *testing.T) {
	rs := mustCompile(t, "version: 1\ntraits:\n  orders_30d: count(purchase) over 30d\nsegments:\n  x: { when: \"orders_30d >= 1\" }\n")
	s := rs.NewState()
	for _, ts := range []string{"2024-01-01T10:00:00Z", "2024-01-05T09:30:00Z"} {
		e := &schemas.Event{Type: schemas.EventPurchase, Time: at(ts)}
		rs.Apply(s, e, e.Time)
	}
	for _, c := range []struct {
		clock string
		want  float64
	}{{"2024-01-30T23:59:59.999Z", 2}, {"2024-01-31T00:00:00Z", 1}, {"2024-02-04T00:00:00Z", 0}} {
		if got := rs.TraitValue(0, s, at(c.clock)); got.Num != c.want {
			t.Errorf("orders_30d at %s = %v, docs say %v", c.clock, got.Num, c.want)
		}
	}
	if next, _ := rs.NextChange(0, s, at("2024-01-31T00:00:00Z")); next != at("2024-02-04T00:00:00Z") {
		t.Errorf("EXIT at %s, docs say 2024-02-04T00:00:00Z", schemas.FormatTime(next))
	}
}
