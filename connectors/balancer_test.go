package connectors

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/segmentio/kafka-go"
)

func numbersUpTo(n int) []int {
	ns := make([]int, n)
	for i := range ns {
		ns[i] = i
	}
	return ns
}

// checkSplit fails unless got assigns every number exactly once, in
// shares that differ by at most one.
func checkSplit(t *testing.T, what string, got [][]int, numbers []int) {
	t.Helper()
	seen := map[int]int{}
	lo, hi := len(numbers), 0
	for i, g := range got {
		lo, hi = min(lo, len(g)), max(hi, len(g))
		for _, n := range g {
			if prev, dup := seen[n]; dup {
				t.Fatalf("%s: %d given to members %d and %d: %v", what, n, prev, i, got)
			}
			seen[n] = i
		}
	}
	if len(seen) != len(numbers) {
		t.Fatalf("%s: %d of %d numbers assigned: %v", what, len(seen), len(numbers), got)
	}
	if hi-lo > 1 {
		t.Fatalf("%s: shares from %d to %d: %v", what, lo, hi, got)
	}
}

func TestStickyAssign(t *testing.T) {
	cases := []struct {
		name  string
		prefs [][]int
		n     int
		want  string
	}{
		{"no preferences split in order", [][]int{nil, nil, nil}, 7, "[[0 1 2] [3 4] [5 6]]"},
		{"everyone keeps its own", [][]int{{4, 5}, {0, 1}, {2, 3}}, 6, "[[4 5] [0 1] [2 3]]"},
		// Three members ran 12 partitions, 4 each; a fourth joins and
		// gets one from each: 3 move, not the 6 a range split moves.
		{"a joining member takes only its share", [][]int{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}, nil}, 12, "[[0 1 2] [4 5 6] [8 9 10] [3 7 11]]"},
		// The member of 4..7 left: its numbers are spread, the others keep theirs.
		{"a leaving member's share is spread", [][]int{{0, 1, 2, 3}, {8, 9, 10, 11}}, 12, "[[0 1 2 3 4 5] [6 7 8 9 10 11]]"},
		{"a restarted member gets its own back", [][]int{{0, 1}, {2, 3}, {4, 5}}, 6, "[[0 1] [2 3] [4 5]]"},
		{"two claim one: the first wins", [][]int{{0, 1}, {1, 2}}, 4, "[[0 1] [2 3]]"},
		{"preferences beyond the numbers are ignored", [][]int{{7, 8, 9}, nil}, 4, "[[0 1] [2 3]]"},
		{"a greedy preference keeps only a share", [][]int{{0, 1, 2, 3, 4, 5}, nil, nil}, 6, "[[0 1] [2 3] [4 5]]"},
		{"more members than numbers", [][]int{nil, {1}, nil}, 2, "[[0] [1] []]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := stickyAssign(tc.prefs, numbersUpTo(tc.n))
			checkSplit(t, tc.name, got, numbersUpTo(tc.n))
			if fmt.Sprint(got) != tc.want {
				t.Fatalf("got %v, want %s", got, tc.want)
			}
		})
	}
}

// Whatever the preferences, the split is complete and even, and a member
// whose preferences nobody else shares keeps min(its share, them).
func TestStickyAssignProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 2000; iter++ {
		m, n := 1+rng.IntN(8), rng.IntN(40)
		numbers := numbersUpTo(n)
		prefs := make([][]int, m)
		// Disjoint preferences (each number to at most one member, some
		// to none), as members that each ran their own partitions.
		for _, x := range rng.Perm(n + 3) {
			if i := rng.IntN(m + 1); i < m {
				prefs[i] = append(prefs[i], x)
			}
		}
		got := stickyAssign(prefs, numbers)
		what := fmt.Sprintf("prefs %v over %d", prefs, n)
		checkSplit(t, what, got, numbers)
		kept := 0
		wantKept := 0
		for i := range prefs {
			mine := 0
			for _, x := range prefs[i] {
				if x < n {
					mine++
				}
				if slices.Contains(got[i], x) {
					kept++
				}
			}
			wantKept += min(mine, n/m)
		}
		// Every member keeps at least min(preferred, q) of its own.
		if kept < wantKept {
			t.Fatalf("%s: kept %d preferred, at least %d possible: %v", what, kept, wantKept, got)
		}
		if again := stickyAssign(prefs, numbers); fmt.Sprint(again) != fmt.Sprint(got) {
			t.Fatalf("%s: not deterministic: %v then %v", what, got, again)
		}
	}
}

// The preferences travel in the join metadata; garbage there is no
// preference, never a failed assignment.
func TestPreferredMetadata(t *testing.T) {
	if got := decodePreferred(encodePreferred([]int{3, 0, 300, 70000})); fmt.Sprint(got) != "[3 0 300 70000]" {
		t.Fatalf("round trip: %v", got)
	}
	for _, bad := range [][]byte{nil, {}, {9, 1}, {preferV1, 0x80}, {preferV1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		if got := decodePreferred(bad); got != nil {
			t.Fatalf("decode %x = %v, want none", bad, got)
		}
	}
	parts := []kafka.Partition{}
	for _, topic := range []string{"a", "b"} {
		for i := 3; i >= 0; i-- {
			parts = append(parts, kafka.Partition{Topic: topic, ID: i})
		}
	}
	members := []kafka.GroupMember{
		{ID: "m1", Topics: []string{"a", "b"}, UserData: encodePreferred([]int{2, 3})},
		{ID: "m2", Topics: []string{"a", "b"}, UserData: []byte("garbage")},
	}
	got := coPartitionBalancer{}.AssignGroups(members, parts)
	if fmt.Sprint(got["m1"]["a"], got["m1"]["b"], got["m2"]["a"], got["m2"]["b"]) != "[2 3] [2 3] [0 1] [0 1]" {
		t.Fatalf("assignment %v", got)
	}
}

func FuzzDecodePreferred(f *testing.F) {
	f.Add(encodePreferred([]int{1, 2, 3}))
	f.Add([]byte{preferV1, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		ps := decodePreferred(b)
		if len(ps) > maxPreferred {
			t.Fatalf("%d numbers", len(ps))
		}
		for _, p := range ps {
			if p < 0 {
				t.Fatalf("negative %d", p)
			}
		}
		if ps != nil {
			if again := decodePreferred(encodePreferred(ps)); fmt.Sprint(again) != fmt.Sprint(ps) {
				t.Fatalf("re-encode: %v then %v", ps, again)
			}
		}
	})
}
