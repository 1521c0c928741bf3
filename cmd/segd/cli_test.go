package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHelpForEveryCommand: `segd CMD -h` and `--help` print that
// command's usage on stdout and exit 0, for every command, and the flag
// lines name a type or an upper-case placeholder for their argument (a
// backquoted phrase in a help string used to become the placeholder:
// `-config segd run`).
func TestHelpForEveryCommand(t *testing.T) {
	flagLine := regexp.MustCompile(`^  -[a-z][a-z0-9-]*( (string|int|uint|duration|float|value|[A-Z][A-Z_:]*))?$`)
	for _, cmd := range []string{"run", "demo", "gen", "replay", "customers", "customers delete", "state", "state scrub",
		"rules", "rules validate", "rules explain", "rules preview", "config", "config check", "broker", "changes"} {
		for _, h := range []string{"-h", "--help"} {
			args := append(strings.Fields(cmd), h)
			out, errs, code := runBinary(t, args...)
			if code != 0 || errs != "" {
				t.Errorf("segd %s: exit %d, stderr %q; want 0 and the usage on stdout", strings.Join(args, " "), code, errs)
				continue
			}
			if !strings.Contains(strings.ToLower(out), "usage") {
				t.Errorf("segd %s: no usage in %q", strings.Join(args, " "), out)
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "  -") && !flagLine.MatchString(line) {
					t.Errorf("segd %s: garbled flag line %q", strings.Join(args, " "), line)
				}
			}
		}
	}
	// A help flag after other arguments still asks for help, and is not
	// taken for a file name.
	out, errs, code := runBinary(t, "rules", "validate", "x.yaml", "-h")
	if code != 0 || strings.Contains(out+errs, "no such file") || !strings.Contains(out, "usage: segd rules validate") {
		t.Errorf("segd rules validate x.yaml -h: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	out, _, code = runBinary(t, "help", "replay")
	if code != 0 || !strings.Contains(out, "-config FILE") || !strings.Contains(out, "-from-topics") {
		t.Errorf("segd help replay: exit %d, %q", code, out)
	}
}

// TestVersion: `segd --version` and `segd version` print the module
// version and the commit the binary was built from. The go command stamps
// the commit only in a checkout whose .git is a directory (not in a git
// worktree) and only with -buildvcs on (make build passes auto), so the
// test builds from a fresh clone of HEAD.
func TestVersion(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("no git: %v", err)
	}
	tmp := t.TempDir()
	clone := filepath.Join(tmp, "src")
	bin := filepath.Join(tmp, "segd")
	for _, c := range [][]string{
		{"git", "clone", "-q", "--no-checkout", "../..", clone},
		{"git", "-C", clone, "checkout", "-q", strings.TrimSpace(string(head))},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	build := exec.Command("go", "build", "-buildvcs=auto", "-o", bin, "./cmd/segd")
	build.Dir = clone
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, arg := range []string{"--version", "version"} {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(bin, arg)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("segd %s: %v: %s", arg, err, stderr.String())
		}
		out := stdout.String()
		if !strings.HasPrefix(out, "segd ") || !strings.Contains(out, "commit "+strings.TrimSpace(string(head))) || !strings.Contains(out, "github.com/segd/segd") {
			t.Errorf("segd %s: %q lacks the version, module and commit %s", arg, out, head)
		}
	}
}

// TestNumericFlagsRejected: zero, negative and absurd values of numeric
// flags stop the command at once with a message naming the flag and
// exit 2, instead of running with them (--rate 0 used to send nothing,
// forever).
func TestNumericFlagsRejected(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--rate", "0"}, "--rate 0: must be between 1 and"},
		{[]string{"demo", "--partitions", "0"}, "--partitions 0: must be between 1 and 1000"},
		{[]string{"demo", "--partitions", "-4"}, "--partitions -4"},
		{[]string{"demo", "--partitions", "100000"}, "--partitions 100000"},
		{[]string{"demo", "--customers", "0"}, "--customers 0"},
		{[]string{"demo", "--history-events", "-1"}, "--history-events -1: must be at least 1"},
		{[]string{"demo", "--history", "0s"}, "--history 0s: must be more than 0"},
		{[]string{"demo", "--live-rate", "-5"}, "--live-rate -5"},
		{[]string{"demo", "--duration", "-1s"}, "--duration -1s: must not be negative"},
		{[]string{"demo", "--port", "70000"}, "--port 70000"},
		{[]string{"gen", "--brokers", "127.0.0.1:1", "--rate", "0"}, "--rate 0"},
		{[]string{"gen", "--brokers", "127.0.0.1:1", "--customers", "-1"}, "--customers -1"},
		{[]string{"gen", "--brokers", "127.0.0.1:1", "--create-topics", "-2"}, "--create-topics -2"},
		{[]string{"broker", "--port", "-1"}, "--port -1"},
		{[]string{"rules", "preview", "x.yaml", "--state-dir", ".", "--sample", "0"}, "--sample 0"},
	} {
		_, errs, code := runBinary(t, tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("segd %s: exit %d, stderr %q; want 2 and %q", strings.Join(tc.args, " "), code, errs, tc.want)
		}
	}
}

// TestConfigCheckLoadsEverything: `segd config check` loads what `segd
// run` would, not just the YAML: a missing or broken rules file, an
// unreadable schema or TLS file are each reported, and the check fails.
func TestConfigCheckLoadsEverything(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	badRules := write("bad.yaml", "version: 1\ntraits:\n  orders_30d: count(purchase) over 30d\nsegments:\n  vip: { when: \"order_30d >= 2\" }\n")
	badSchema := write("purchase.avsc", "{not a schema")
	for _, tc := range []struct {
		config string
		want   []string
	}{
		{"kafka: {brokers: [a:1]}\nrules: {file: " + filepath.Join(dir, "missing.yaml") + "}\n", []string{"rules.file: ", "missing.yaml: no such file"}},
		{"kafka: {brokers: [a:1]}\nrules: {file: " + badRules + "}\n", []string{`rules.file: ` + badRules + `:5:17: segment vip: unknown trait "order_30d"`}},
		{"kafka:\n  brokers: [a:1]\n  topics: {purchases: {schema_file: " + badSchema + "}}\n  tls: {enabled: true, ca_file: " + filepath.Join(dir, "ca.pem") + "}\nrules: {file: ../../examples/rules.yaml}\n",
			[]string{"kafka.topics.purchases.schema_file (" + badSchema + ")", "ca.pem"}},
	} {
		path := write("c.yaml", tc.config)
		out, errs, code := runBinary(t, "config", "check", path)
		if code != 1 {
			t.Errorf("config\n%s: exit %d, want 1; stdout %q stderr %q", tc.config, code, out, errs)
		}
		for _, w := range tc.want {
			if !strings.Contains(errs, w) {
				t.Errorf("config\n%s: stderr %q lacks %q", tc.config, errs, w)
			}
		}
	}
	path := write("ok.yaml", "kafka: {brokers: [a:1]}\nrules: {file: ../../examples/rules.yaml}\n")
	if out, errs, code := runBinary(t, "config", "check", path); code != 0 || !strings.Contains(out, "ok") {
		t.Errorf("a good config: exit %d, %q %q", code, out, errs)
	}
}

// TestConfigErrorsNameKeys: mistakes in a config file are reported by
// config key and line, with the keys the section has and the nearest
// one, never with Go's type or field names.
func TestConfigErrorsNameKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("kafka:\n  broker: [a:1]\n  topics:\n    purchases: {nme: x}\ncommit: {interval: 5 minutes, max_events: lots}\nrules: {file: ../../examples/rules.yaml}\nlogg: {}\n"), 0o644)
	_, errs, code := runBinary(t, "config", "check", path)
	if code != 1 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"line 2: unknown key kafka.broker (did you mean kafka.brokers?): kafka has brokers, group,",
		"line 4: unknown key kafka.topics.purchases.nme (did you mean kafka.topics.purchases.name?): kafka.topics.purchases has name, format, schema_file",
		`line 5: commit.interval ("5 minutes") must be a duration such as 250ms, 10s or 5m`,
		`line 5: commit.max_events ("lots") must be a whole number`,
		"line 7: unknown key logg (did you mean log?)",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	for _, leak := range []string{"engine.", "not found in type", "%!", "time.Duration", "!!str"} {
		if strings.Contains(errs, leak) {
			t.Errorf("stderr leaks %q:\n%s", leak, errs)
		}
	}
}

// The demo prints the page's address: with port 0 it must be the port the
// API gets, not ":0".
func TestFreeAddrResolvesPortZero(t *testing.T) {
	got := freeAddr("127.0.0.1:0")
	if _, port, err := net.SplitHostPort(got); err != nil || port == "0" || port == "" {
		t.Fatalf("freeAddr(127.0.0.1:0) = %q", got)
	}
}
