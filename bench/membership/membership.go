// Package membership is the benchmark's agreement check: a digest of final
// segment memberships that the segd driver and the goka baseline (its own
// module) compute with the same code.
package membership

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
)

// Pair is one (customer, segment) membership in the form Digest takes.
func Pair(customer, segment string) string { return customer + "\x00" + segment }

// Digest is SHA-256 over the sorted pairs, one per line. It sorts pairs in
// place.
func Digest(pairs []string) string {
	sort.Strings(pairs)
	h := sha256.New()
	for _, p := range pairs {
		h.Write([]byte(p))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}
