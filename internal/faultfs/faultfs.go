// Package faultfs wraps a Pebble file system to inject faults in tests:
// a disk that is full on demand.
package faultfs

import (
	"os"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// DiskFull is a file system whose file creations, writes and syncs fail
// with ENOSPC while it is full (SetFull); reads and removals always work.
// Safe for concurrent use.
type DiskFull struct {
	*errorfs.FS
	toggle *errorfs.Toggle
}

// NewDiskFull wraps inner (nil: the OS), not full.
func NewDiskFull(inner vfs.FS) *DiskFull {
	if inner == nil {
		inner = vfs.Default
	}
	t := &errorfs.Toggle{Injector: errorfs.InjectorFunc(noSpace)}
	return &DiskFull{FS: errorfs.Wrap(inner, t), toggle: t}
}

// SetFull makes the disk full or gives the space back.
func (d *DiskFull) SetFull(full bool) {
	if full {
		d.toggle.On()
	} else {
		d.toggle.Off()
	}
}

func noSpace(op errorfs.Op) error {
	switch op.Kind {
	case errorfs.OpCreate, errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpFileSync:
		return &os.PathError{Op: "write", Path: op.Path, Err: syscall.ENOSPC}
	}
	return nil
}
