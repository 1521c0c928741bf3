package tool

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/segd/segd/state"
)

// Scrub removes every byte of erased customers from the state directory of
// a stopped segd (docs/state.md, "Erasure"): it compacts the store and
// reopens it, which drops the write-ahead log segments Pebble kept for
// reuse. It refuses a directory without a store (opening would create
// one); a running engine's lock refuses it too. It returns the directory's
// size before and after.
func Scrub(dir string) (before, after int64, err error) {
	if m, _ := filepath.Glob(filepath.Join(dir, "MANIFEST-*")); len(m) == 0 {
		return 0, 0, fmt.Errorf("%s is not a segd state directory (no MANIFEST)", dir)
	}
	before = dirBytes(dir)
	raw := state.Options{Decode: func(_ string, data []byte) (state.Record, error) { return rawRecord(data), nil }}
	for i := 0; i < 2; i++ {
		st, err := state.Open(dir, raw)
		if err != nil {
			return before, 0, err
		}
		if i == 0 {
			if err := st.Scrub(); err != nil {
				st.Close()
				return before, 0, err
			}
		}
		if err := st.Close(); err != nil {
			return before, 0, err
		}
	}
	return before, dirBytes(dir), nil
}

// rawRecord is a stored record left undecoded: scrub never reads records.
type rawRecord []byte

func (r rawRecord) AppendBinary(dst []byte) []byte { return append(dst, r...) }
func (r rawRecord) SizeBytes() int                 { return len(r) }

func dirBytes(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}
