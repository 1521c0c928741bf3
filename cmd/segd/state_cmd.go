package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/segd/segd/tool"
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
	before, after, err := tool.Scrub(*dir)
	if err != nil {
		fmt.Fprintln(stderr, "segd state scrub:", err)
		return 1
	}
	fmt.Fprintf(stdout, "scrubbed %s: %d bytes before, %d after\n", *dir, before, after)
	return 0
}
