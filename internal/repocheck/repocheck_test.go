// Package repocheck holds checks on the repository itself: that its tests
// read nothing outside it, so a clone anywhere passes `make test`.
package repocheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/segd/segd/internal/retail"
)

// repoRoot is the directory holding go.mod, two levels up from here.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// outsidePath matches the ways a file could name a place above the
// repository: the shared folder of the workplace, a path climbing out of
// the repository, and absolute paths into the machine's work area.
var outsidePath = regexp.MustCompile(`\.\./shared|"shared", "data"|"\.\.", "\.\.", "\.\."|\.\./\.\./\.\./|/work/`)

// TestNothingReadsOutsideTheRepository fails when a source file, script or
// Makefile names a path outside the repository (the data set once was read
// from ../shared/data, which a clone elsewhere does not have).
func TestNothingReadsOutsideTheRepository(t *testing.T) {
	root := repoRoot(t)
	var hits []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch rel {
			case ".git", "artifacts", "bin", ".cache", "tmp":
				return filepath.SkipDir
			}
			return nil
		}
		name := d.Name()
		if !(strings.HasSuffix(name, ".go") || strings.HasSuffix(name, ".sh") || name == "Makefile" || rel == filepath.Join(".ci", "run")) {
			return nil
		}
		if rel == filepath.Join("internal", "repocheck", "repocheck_test.go") {
			return nil // the patterns themselves
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if outsidePath.MatchString(line) {
				hits = append(hits, rel+":"+itoa(i+1)+": "+strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) > 0 {
		t.Fatalf("paths outside the repository (copy what a test needs into testdata/):\n%s", strings.Join(hits, "\n"))
	}
}

// TestRetailDataIsInTheRepository checks the data set the replay tests read
// is the repository's own copy.
func TestRetailDataIsInTheRepository(t *testing.T) {
	if os.Getenv("SEGD_RETAIL_DATA") != "" {
		t.Fatal("SEGD_RETAIL_DATA is set: tests must read the repository's own copy")
	}
	root := repoRoot(t)
	p, err := retail.Locate()
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(root, abs)
	if err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("retail.Locate() = %s, outside the repository %s", abs, root)
	}
	if fi, err := os.Stat(abs); err != nil || fi.Size() < 7_000_000 {
		t.Fatalf("data set %s: %v (size %v)", abs, err, fi)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
