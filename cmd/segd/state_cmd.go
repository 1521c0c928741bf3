package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/segd/segd/state"
)

// runState implements `segd state scrub --state-dir DIR`: the maintenance
// step that removes every byte of erased customers from a state directory
// (see docs/state.md, "Erasure"). The engine must be stopped: Pebble's lock
// refuses a second opener.
func runState(args []string, stdout, stderr io.Writer) int {
	const use = "usage: segd state scrub --state-dir DIR"
	if len(args) < 1 || args[0] != "scrub" {
		fmt.Fprintln(stderr, use)
		return 2
	}
	fs := flag.NewFlagSet("segd state scrub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("state-dir", "", "the engine's state.dir (required; the engine must be stopped)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, use)
		return 2
	}
	// Refuse anything but an existing store: opening would create one.
	if m, _ := filepath.Glob(filepath.Join(*dir, "MANIFEST-*")); len(m) == 0 {
		fmt.Fprintf(stderr, "segd state scrub: %s is not a segd state directory (no MANIFEST)\n", *dir)
		return 1
	}
	before := dirBytes(*dir)
	if err := scrub(*dir); err != nil {
		fmt.Fprintln(stderr, "segd state scrub:", err)
		return 1
	}
	fmt.Fprintf(stdout, "scrubbed %s: %d bytes before, %d after\n", *dir, before, dirBytes(*dir))
	return 0
}

// scrub compacts the store and reopens it, which drops the write-ahead log
// segments Pebble kept for reuse.
func scrub(dir string) error {
	raw := state.Options{Decode: func(_ string, data []byte) (state.Record, error) { return rawRecord(data), nil }}
	for i := 0; i < 2; i++ {
		st, err := state.Open(dir, raw)
		if err != nil {
			return err
		}
		if i == 0 {
			if err := st.Scrub(); err != nil {
				st.Close()
				return err
			}
		}
		if err := st.Close(); err != nil {
			return err
		}
	}
	return nil
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
