package kpart

import (
	"fmt"
	"testing"
)

// The Java client's murmur2 on known keys (values from Kafka's own
// DefaultPartitionerTest / Utils.murmur2 tests).
func TestMurmur2KnownValues(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want int32
	}{
		{"21", -973932308},
		{"foobar", -790332482},
		{"a-little-bit-long-string", -985981536},
		{"a-little-bit-longer-string", -1486304829},
		{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
		{"abc", 479470107},
	} {
		if got := int32(murmur2([]byte(tc.key))); got != tc.want {
			t.Errorf("murmur2(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
}

func TestForIsInRange(t *testing.T) {
	for n := 1; n < 40; n++ {
		for i := 0; i < 1000; i++ {
			if p := For([]byte(fmt.Sprint("c", i)), n); p < 0 || p >= n {
				t.Fatalf("For(c%d, %d) = %d", i, n, p)
			}
		}
	}
}

func TestForAllocatesNothing(t *testing.T) {
	key := []byte("customer-123456")
	if a := testing.AllocsPerRun(100, func() { For(key, 12) }); a != 0 {
		t.Fatalf("For allocates %.0f times per call", a)
	}
}
