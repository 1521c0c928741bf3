package engine

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/segd/segd/schemas"
	"github.com/segd/segd/state"
)

// Reasons a replay skips a line that live mode has no dead letter for.
const (
	// reasonOutOfOrderFuture: the line's time is far ahead of its
	// neighbours in the input (see wildFilter).
	reasonOutOfOrderFuture = "out_of_order_future"
)

// DefaultReplayMaxLineBytes is the default ReplayOptions.MaxLineBytes:
// input.max_record_bytes's default.
const DefaultReplayMaxLineBytes = 1 << 20

// DefaultReplayMaxJump is the default ReplayOptions.MaxJump.
const DefaultReplayMaxJump = 7 * 24 * 60 * 60 * 1000 // ms

// replayNeighbours is K, the number of neighbours on each side that the
// wild-timestamp rule compares a line with.
const replayNeighbours = 15

// maxReportedLines is how many skipped lines a summary names.
const maxReportedLines = 5

// SkippedLine is an input line a replay skipped.
type SkippedLine struct {
	File   string
	Line   int
	Reason string
	Err    string
}

// lineReader reads the lines of a file, each without its end of line
// ("\n" or "\r\n"). A line longer than max bytes is read to its end but
// not kept: next reports its size with oversize set, and the line after it
// is read normally.
type lineReader struct {
	r   *bufio.Reader
	max int
	buf []byte
	n   int // lines read
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line (valid until the next call) and its number;
// io.EOF after the last.
func (l *lineReader) next() (line []byte, size int, oversize bool, err error) {
	l.buf = l.buf[:0]
	for {
		chunk, rerr := l.r.ReadSlice('\n')
		full, eof := errors.Is(rerr, bufio.ErrBufferFull), errors.Is(rerr, io.EOF)
		if rerr != nil && !full && !eof {
			return nil, 0, false, rerr
		}
		if eof && size == 0 && len(chunk) == 0 {
			return nil, 0, false, io.EOF
		}
		if rerr == nil {
			chunk = chunk[:len(chunk)-1] // the '\n'
		}
		size += len(chunk)
		if !oversize {
			if len(l.buf)+len(chunk) <= l.max+1 { // room for a final '\r'
				l.buf = append(l.buf, chunk...)
			} else {
				oversize = true
				l.buf = l.buf[:0]
			}
		}
		if !full {
			break
		}
	}
	l.n++
	if !oversize && len(l.buf) > 0 && l.buf[len(l.buf)-1] == '\r' {
		l.buf = l.buf[:len(l.buf)-1]
		size--
	}
	if len(l.buf) > l.max {
		oversize = true
	}
	return l.buf, size, oversize, nil
}

// pendingEvent is a decoded, valid input line waiting for the
// wild-timestamp decision.
type pendingEvent struct {
	e    schemas.Event
	file string
	line int
}

// wildFilter decides which valid lines carry a wild timestamp: one far
// ahead of the input's own progress, such as a 2026 line in a 2011
// export, which would otherwise move the clock years ahead and make every
// later event too late. A line is wild if its time is more than jump
// ahead of both the median time of the K valid lines before it and the
// median time of the K valid lines after it, in read order over all
// inputs (where fewer than K exist, of those there are; a side with none
// is left out). The decision depends only on the input's order, not on
// partitioning or commit size. Lines in time order are never wild, and a
// line after a legitimate gap is not either: the lines after it are as
// late as it is. Not safe for concurrent use.
type wildFilter struct {
	k    int
	jump int64
	ring []pendingEvent // k+1 slots: the line being decided and the k after it
	head int
	n    int
	prev []int64 // times of the last k decided lines, a ring
	pn   int     // decided lines so far
	tmp  []int64
}

func newWildFilter(k int, jump int64) *wildFilter {
	return &wildFilter{k: k, jump: jump, ring: make([]pendingEvent, k+1), prev: make([]int64, k)}
}

// slot returns the free slot the next line decodes into. Only valid
// while not full.
func (w *wildFilter) slot() *pendingEvent {
	return &w.ring[(w.head+w.n)%len(w.ring)]
}

// push keeps the line decoded into slot.
func (w *wildFilter) push() { w.n++ }

// full reports whether the oldest line has its K successors: pop it.
func (w *wildFilter) full() bool { return w.n == len(w.ring) }

func (w *wildFilter) median(ts []int64) int64 {
	slices.Sort(ts)
	return ts[(len(ts)-1)/2]
}

// pop decides the oldest pending line and removes it. The event stays
// valid until the next slot call. ref is the time it was compared with.
func (w *wildFilter) pop() (pe *pendingEvent, wild bool, ref int64) {
	pe = &w.ring[w.head]
	t := pe.e.Time
	have := false
	if w.n > 1 {
		w.tmp = w.tmp[:0]
		for i := 1; i < w.n; i++ {
			w.tmp = append(w.tmp, w.ring[(w.head+i)%len(w.ring)].e.Time)
		}
		ref, have = w.median(w.tmp), true
	}
	if w.pn > 0 {
		w.tmp = append(w.tmp[:0], w.prev[:min(w.pn, w.k)]...)
		if m := w.median(w.tmp); !have || m > ref {
			ref, have = m, true
		}
	}
	wild = have && t > ref+w.jump
	w.prev[w.pn%w.k] = t
	w.pn++
	w.head = (w.head + 1) % len(w.ring)
	w.n--
	return pe, wild, ref
}

// replaySeen remembers the (customer, event id) pairs a replay applied,
// on disk (state.SeenSet), so each is applied once across all inputs.
type replaySeen struct {
	set *state.SeenSet
	key []byte
}

// seenDirName is the seen set's directory inside the replay's state dir,
// removed at the end of the replay.
const seenDirName = "replay-seen"

func openReplaySeen(stateDir string) (*replaySeen, error) {
	set, err := state.OpenSeenSet(stateDir + string(os.PathSeparator) + seenDirName)
	if err != nil {
		return nil, err
	}
	return &replaySeen{set: set}, nil
}

// seen reports whether the pair was seen before, and remembers it.
func (r *replaySeen) seen(customer, eventID string) (bool, error) {
	r.key = binary.AppendUvarint(r.key[:0], uint64(len(customer)))
	r.key = append(append(r.key, customer...), eventID...)
	added, err := r.set.Add(r.key)
	return !added, err
}

func (r *replaySeen) close() error { return r.set.Close() }

// freshStateDir checks that dir is missing or empty (a replay builds a
// fresh store) and returns undo, which removes what a failed replay left
// there: the directory if the replay created it, else its contents. A
// directory that held anything is refused, so undo never removes a byte
// the replay did not write.
func freshStateDir(dir string) (undo func() error, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return func() error { return os.RemoveAll(dir) }, nil
	case err != nil:
		return nil, fmt.Errorf("replay: state dir: %w", err)
	case len(entries) > 0:
		return nil, fmt.Errorf("replay: state dir %s is not empty; replays build a fresh store", dir)
	}
	return func() error {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := os.RemoveAll(dir + string(os.PathSeparator) + e.Name()); err != nil {
				return err
			}
		}
		return nil
	}, nil
}
