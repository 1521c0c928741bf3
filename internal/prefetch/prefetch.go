// Package prefetch asks the CPU to bring memory into its cache ahead of
// use. A loop over records scattered on the heap (a commit encoding its
// dirty customers) waits on one cache miss after another; announcing the
// next records' addresses while the current one is worked on lets the
// misses overlap. A hint only: it never faults and changes no value.
package prefetch

import "unsafe"

// Line hints that the cache line holding p will be read soon. p may be
// nil or point anywhere: a prefetch of an unmapped address is ignored.
func Line(p unsafe.Pointer) { line(uintptr(p)) }
