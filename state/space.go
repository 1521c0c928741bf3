package state

import (
	"errors"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Full disk.
//
// The store's file system is wrapped by vfs.OnDiskFull: the first write
// that meets ENOSPC calls onDiskFull, which holds every new write of the
// store (Pebble's included) until a probe file of Options.DiskFullProbeBytes
// can be written again, then lets the failed write retry. Nothing fails and
// nothing is lost meanwhile: commits block once Pebble's buffers fill, and
// the engine stops applying input while DiskFull reports true (its
// partitions pause), so no offset moves past the state. While the store is
// opening, a full disk fails Open with ErrDiskFull instead of waiting.

// diskFullPollMax bounds the wait between two probes of a full disk.
const diskFullPollMax = 5 * time.Second

// onDiskFull waits until space returns (see above), or until the wait is
// abandoned (AbandonDiskWait, Close): then the write fails with ENOSPC.
func (h *health) onDiskFull() {
	if h.opening.Load() {
		return
	}
	select {
	case <-h.abandon:
		return
	default:
	}
	start := time.Now()
	h.since.Store(start.UnixMilli())
	h.diskFull.Store(true)
	defer func() {
		h.diskFull.Store(false)
		h.since.Store(0)
	}()
	h.log.Error().Str("state_dir", h.dir).
		Msg("disk full: state writes wait and every partition pauses; they resume when space returns (free space on the state volume)")
	wait, lastLog := 50*time.Millisecond, start
	for {
		select {
		case <-h.abandon:
			h.log.Error().Str("state_dir", h.dir).Dur("waited", time.Since(start)).
				Msg("disk full: gave up waiting for space; the store fails (restart segd once space is back)")
			return
		case <-time.After(wait):
		}
		err := h.probeSpace()
		if err == nil {
			h.log.Warn().Str("state_dir", h.dir).Dur("paused", time.Since(start)).Msg("disk space is back: state writes resume")
			return
		}
		if time.Since(lastLog) >= time.Minute {
			lastLog = time.Now()
			h.log.Error().Err(err).Str("state_dir", h.dir).Dur("waited", time.Since(start)).Msg("disk still full: partitions stay paused")
		}
		wait = min(2*wait, diskFullPollMax)
	}
}

// probeName is the file probeSpace writes and removes.
const probeName = "SEGD-SPACE-PROBE"

// probeSpace writes (and removes) a probe file of h.probe bytes, synced,
// on the file system under the disk-full wrapper: nil when it fits.
func (h *health) probeSpace() error {
	path := h.fs.PathJoin(h.dir, probeName)
	f, err := h.fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	chunk := make([]byte, 64<<10)
	for left := h.probe; left > 0 && err == nil; left -= int64(len(chunk)) {
		_, err = f.Write(chunk[:min(int64(len(chunk)), left)])
	}
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close(), h.fs.Remove(path))
}

// DiskFull reports whether the store's disk is full now: writes wait for
// space, and the engine pauses its partitions. Safe for concurrent use.
func (s *Store) DiskFull() bool { return s.h.diskFull.Load() }

// DiskFull reports whether the store's disk is full now (Store.DiskFull).
// Safe for concurrent use.
func (p *Partition) DiskFull() bool { return p.s.h.diskFull.Load() }

// DiskFullSince is when the disk filled (the zero time when it is not
// full). Safe for concurrent use.
func (s *Store) DiskFullSince() time.Time {
	if ms := s.h.since.Load(); ms != 0 {
		return time.UnixMilli(ms)
	}
	return time.Time{}
}

// AbandonDiskWait makes writes waiting for space on a full disk fail now,
// and later ones fail at once: the store then fails (ErrStoreFailed). For
// a shutdown that cannot wait for space. Safe for concurrent use and to
// call twice.
func (s *Store) AbandonDiskWait() {
	s.h.abandonMu.Lock()
	defer s.h.abandonMu.Unlock()
	select {
	case <-s.h.abandon:
	default:
		close(s.h.abandon)
	}
}
