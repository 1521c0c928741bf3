package state

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rs/zerolog"
)

// Failure handling.
//
// Pebble reports what it cannot continue from through Logger.Fatalf and
// expects it not to return; its default reaction to a corrupt block is
// such a Fatalf. A store here never lets that crash the process:
//
//   - Every call into Pebble runs inside Store.guard, which turns a panic
//     into an error and marks the store failed.
//   - Fatalf records the error and marks the store failed. Called on a
//     goroutine inside guard (a commit, a read, Open) it panics, and guard
//     recovers that panic on the same goroutine. Called on one of Pebble's
//     own background goroutines it parks that goroutine for good instead:
//     a panic there would end the process, and returning would let Pebble
//     go on from a state it declared broken. The store is then not closed
//     (Close would wait for the parked goroutine); the process must exit.
//   - Data corruption (a checksum mismatch) is reported by Pebble's
//     DataCorruption event and by the errors it returns: the store is
//     marked failed with ErrCorrupt, and a marker file makes the next Open
//     refuse the directory with ErrCorrupt too, so an operator or the
//     engine rebuilds it instead of reading bad data again.
//
// After a failure every operation returns an error wrapping
// ErrStoreFailed (and ErrCorrupt for corruption).

var (
	// ErrStoreFailed marks every operation of a store after Pebble reported
	// an error it cannot continue from (a failed write-ahead log write, a
	// corrupt block, a panic): the store must be closed and opened again,
	// or rebuilt.
	ErrStoreFailed = errors.New("state: store failed")
	// ErrDiskFull marks an Open or a write that failed because the disk is
	// full (ENOSPC).
	ErrDiskFull = errors.New("state: disk full")
)

// CorruptMarker is the file a store that found corruption leaves in its
// directory; Open refuses a directory holding it (ErrCorrupt) until the
// directory is wiped (Wipe).
const CorruptMarker = "SEGD-CORRUPT"

// health is a store's failure state and Pebble hooks. Safe for concurrent
// use: Pebble calls the hooks from any goroutine.
type health struct {
	dir    string
	fs     vfs.FS // the file system under the disk-full wrapper
	log    zerolog.Logger
	failed atomic.Pointer[error]
	parked atomic.Bool // a Pebble goroutine is parked after a Fatalf

	// Disk full (see space.go).
	diskFull  atomic.Bool
	opening   atomic.Bool // Open runs: fail at once instead of waiting
	probe     int64
	abandon   chan struct{} // closed by AbandonDiskWait or Close
	abandonMu sync.Mutex
	since     atomic.Int64 // Unix ms the disk filled, 0 when not full
}

// fatalPanic is what Fatalf panics with inside guard.
type fatalPanic struct{ err error }

// err returns the store's failure, nil while it works.
func (h *health) err() error {
	if p := h.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail marks the store failed with cause (the first failure wins) and
// returns the store's failure. Corruption leaves the marker file.
func (h *health) fail(cause error) error {
	corrupt := isCorruption(cause) || errors.Is(cause, ErrCorrupt)
	var err error
	switch {
	case corrupt && !errors.Is(cause, ErrCorrupt):
		err = fmt.Errorf("%w: %w in %s: %w", ErrStoreFailed, ErrCorrupt, h.dir, cause)
	case vfs.IsNoSpaceError(cause) && !errors.Is(cause, ErrDiskFull):
		err = fmt.Errorf("%w: %w in %s: %w", ErrStoreFailed, ErrDiskFull, h.dir, cause)
	default:
		err = fmt.Errorf("%w: %s: %w", ErrStoreFailed, h.dir, cause)
	}
	if !h.failed.CompareAndSwap(nil, &err) {
		return h.err()
	}
	if corrupt {
		h.log.Error().Err(cause).Str("state_dir", h.dir).
			Msg("state store is corrupt: stopping; the next start rebuilds it from the changelog (state.changelog on) or refuses to start")
		h.markCorrupt(cause)
	} else {
		h.log.Error().Err(cause).Str("state_dir", h.dir).Msg("state store failed: every partition stops; restart segd")
	}
	return err
}

// markCorrupt leaves CorruptMarker in the directory (best effort: the
// disk may be the problem).
func (h *health) markCorrupt(cause error) {
	if h.fs == nil || h.dir == "" {
		return
	}
	f, err := h.fs.Create(h.fs.PathJoin(h.dir, CorruptMarker), vfs.WriteCategoryUnspecified)
	if err != nil {
		h.log.Warn().Err(err).Msg("cannot write the corruption marker")
		return
	}
	_, err = f.Write([]byte(time.Now().UTC().Format(time.RFC3339) + " " + cause.Error() + "\n"))
	err = errors.Join(err, f.Sync(), f.Close())
	if err != nil {
		h.log.Warn().Err(err).Msg("cannot write the corruption marker")
	}
}

// check classifies an error Pebble returned: corruption fails the store;
// anything else is returned as is.
func (h *health) check(err error) error {
	if err == nil {
		return nil
	}
	if isCorruption(err) {
		return h.fail(err)
	}
	return err
}

// isCorruption reports whether err is marked as Pebble corruption (its
// own marks, or a standard wrap of pebble.ErrCorruption).
func isCorruption(err error) bool {
	return pebble.IsCorruptionError(err) || errors.Is(err, pebble.ErrCorruption)
}

// guardFunc is guard's name as runtime frames report it.
const guardFunc = "github.com/segd/segd/state.(*health).guard"

// guard runs fn, a call into Pebble on behalf of op: it refuses to run
// once the store failed, turns a panic (Fatalf's included) into an error
// and fails the store on corruption. A panic must never leave the state
// package: it would take the process down with it.
func (h *health) guard(op string, fn func() error) (err error) {
	if err := h.err(); err != nil {
		return err
	}
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if fp, ok := r.(fatalPanic); ok {
			err = fmt.Errorf("%s: %w", op, h.fail(fp.err))
			return
		}
		buf := make([]byte, 16<<10)
		buf = buf[:runtime.Stack(buf, false)]
		h.log.Error().Str("op", op).Interface("panic", r).Str("stack", string(buf)).Msg("state operation panicked")
		cause := fmt.Errorf("%s panicked: %v", op, r)
		if e, ok := r.(error); ok {
			cause = fmt.Errorf("%s panicked: %w", op, e)
		}
		err = h.fail(cause)
	}()
	return h.check(fn())
}

// insideGuard reports whether the calling goroutine runs inside guard.
func insideGuard() bool {
	var pcs [512]uintptr
	n := runtime.Callers(3, pcs[:])
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if f.Function == guardFunc {
			return true
		}
		if !more {
			return false
		}
	}
}

// pebbleLogger routes Pebble's logs to zerolog. Fatalf never returns and
// never crashes the process (see the top of this file).
type pebbleLogger struct{ h *health }

func (l pebbleLogger) Infof(format string, args ...any) {
	if e := l.h.log.Info(); e.Enabled() {
		e.Str("pebble", strings.TrimSpace(fmt.Sprintf(format, args...))).Msg("pebble")
	}
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.h.log.Error().Str("pebble", strings.TrimSpace(fmt.Sprintf(format, args...))).Msg("pebble error")
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	err := fmt.Errorf("pebble: "+format, args...)
	if len(args) > 0 {
		// Keep the marks (corruption, ENOSPC) of an error argument.
		if e, ok := args[len(args)-1].(error); ok {
			err = fmt.Errorf("pebble: %s: %w", strings.TrimSpace(fmt.Sprintf(format, args...)), e)
		}
	}
	l.h.fail(err)
	if insideGuard() {
		panic(fatalPanic{err})
	}
	l.h.parked.Store(true)
	l.h.log.Error().Err(err).Msg("pebble background goroutine stopped after a fatal error; restart segd")
	select {}
}

// eventListener logs Pebble's events worth an operator's attention and
// fails the store on corruption instead of Pebble's default Fatalf.
func (h *health) eventListener() *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			if isCorruption(err) {
				h.fail(err)
				return
			}
			if vfs.IsNoSpaceError(err) {
				h.log.Warn().Err(err).Msg("pebble background work failed: disk full; it is retried")
				return
			}
			h.log.Error().Err(err).Msg("pebble background error")
		},
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			h.fail(corruptionError(info))
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			h.log.Warn().Str("path", info.Path).Str("op", info.OpType.String()).Int("write_bytes", info.WriteSize).
				Dur("duration", info.Duration).Msg("disk slow")
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			h.log.Warn().Str("reason", info.Reason).Msg("pebble write stall: commits wait for flushes or compactions")
		},
		WriteStallEnd: func() {
			h.log.Info().Msg("pebble write stall ended")
		},
	}
}

// corruptionError is the error a DataCorruption event describes, marked
// as corruption.
func corruptionError(info pebble.DataCorruptionInfo) error {
	err := info.Details
	if err == nil {
		err = errors.New("corruption")
	}
	if !isCorruption(err) {
		err = fmt.Errorf("%w: %w", pebble.ErrCorruption, err)
	}
	return fmt.Errorf("%s: %w", info.Path, err)
}

// guard1 is guard for a function with a result.
func guard1[T any](h *health, op string, fn func() (T, error)) (T, error) {
	var v T
	err := h.guard(op, func() error {
		var err error
		v, err = fn()
		return err
	})
	return v, err
}
