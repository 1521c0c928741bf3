package main

import (
	"bytes"
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
