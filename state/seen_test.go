package state

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// A SeenSet answers across its batch commits, and Close removes it.
func TestSeenSet(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "seen")
	s, err := OpenSeenSet(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 3*seenBatchKeys + 7
	for round := 0; round < 2; round++ {
		for i := 0; i < n; i++ {
			added, err := s.Add([]byte(fmt.Sprintf("k%d", i)))
			if err != nil {
				t.Fatal(err)
			}
			if added != (round == 0) {
				t.Fatalf("round %d key %d: added %v", round, i, added)
			}
		}
	}
	if _, err := OpenSeenSet(dir); err == nil {
		t.Fatal("a second set opened in the same dir")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("dir still there after Close: %v", err)
	}
}
