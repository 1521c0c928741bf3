package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/state"
)

// ReplaySummary is what a replay did.
type ReplaySummary struct {
	// Invalid counts the lines skipped and records dead-lettered, all
	// reasons; Skipped has them by reason.
	Events, Invalid int64
	Skipped         map[string]int64
	// FirstSkipped are the first few skipped lines of a file replay.
	FirstSkipped []SkippedLine
	// Duplicates counts events not applied because an earlier event of
	// the replay had the same customer_id and event_id.
	Duplicates int64
	// TooLate counts events older than the clock minus the longest window:
	// counted, not applied (as in live mode).
	TooLate        int64
	Enters, Exits  map[string]int64 // by segment
	Sizes          map[string]int64 // final members by segment
	LastEventTime  int64
	ChangesWritten int64
	// RecordsLost counts input records Kafka deleted (retention) while
	// the replay read the topics: the rebuilt state misses them.
	RecordsLost int64
	// Evaluations counts segment evaluations (one segment for one
	// customer at one instant): the work incremental evaluation saves.
	Evaluations int64
	Elapsed     time.Duration
}

func NewReplaySummary() *ReplaySummary {
	return &ReplaySummary{Skipped: map[string]int64{}, Enters: map[string]int64{}, Exits: map[string]int64{}, Sizes: map[string]int64{}}
}

// MaxReportedLines is how many skipped lines a summary names.
const MaxReportedLines = 5

// SkippedLine is an input line a replay skipped.
type SkippedLine struct {
	File   string
	Line   int
	Reason string
	Err    string
}

// WriteSummary prints what was skipped and per-segment counts.
func (s *ReplaySummary) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "%d events (%d invalid skipped) in %s, last event time %s\n", s.Events, s.Invalid, s.Elapsed.Round(time.Millisecond), schemas.FormatTime(s.LastEventTime))
	if len(s.Skipped) > 0 {
		reasons := make([]string, 0, len(s.Skipped))
		for r := range s.Skipped {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		fmt.Fprint(w, "skipped:")
		for _, r := range reasons {
			fmt.Fprintf(w, " %s=%d", r, s.Skipped[r])
		}
		fmt.Fprintln(w)
		for _, l := range s.FirstSkipped {
			fmt.Fprintf(w, "  %s:%d: %s: %s\n", l.File, l.Line, l.Reason, l.Err)
		}
		if n := s.Invalid - int64(len(s.FirstSkipped)); len(s.FirstSkipped) > 0 && n > 0 {
			fmt.Fprintf(w, "  ... and %d more (each is in the log)\n", n)
		}
	}
	if s.Duplicates > 0 {
		fmt.Fprintf(w, "%d duplicate events not applied (same customer_id and event_id as an earlier event)\n", s.Duplicates)
	}
	if s.TooLate > 0 {
		fmt.Fprintf(w, "%d events too late (older than the clock minus the longest window): not applied\n", s.TooLate)
	}
	if s.RecordsLost > 0 {
		fmt.Fprintf(w, "WARNING: %d input records were deleted by Kafka (retention) before the replay read them; the state misses them\n", s.RecordsLost)
	}
	ids := make([]string, 0, len(s.Sizes))
	for id := range s.Sizes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	fmt.Fprintf(w, "%-24s %8s %8s %8s\n", "segment", "ENTER", "EXIT", "size")
	for _, id := range ids {
		fmt.Fprintf(w, "%-24s %8d %8d %8d\n", id, s.Enters[id], s.Exits[id], s.Sizes[id])
	}
}

// CollectReplay writes the changes in the partitions' outboxes to out (nil:
// none), counts them and dead letters, and fills the final segment sizes.
// With clear, the outboxes are emptied: the changes of a replay are history,
// and a later `segd run` on the same state must not publish them.
func CollectReplay(st *state.Store, rs *rules.RuleSet, procs []*Processor, out io.Writer, sum *ReplaySummary, clear bool) error {
	var c schemas.SegmentChange
	for _, p := range procs {
		var last uint64
		err := p.part.ReadOutbox(0, 1<<62, func(seq uint64, v []byte) error {
			last = seq
			env, err := DecodeEnvelope(v)
			if err != nil {
				return err
			}
			if env.Topic == p.opt.DeadLetterTopic {
				sum.Invalid++
				reason := "invalid"
				if r, ok := env.HeaderValue("segd-reason"); ok {
					reason = string(r)
				}
				sum.Skipped[reason]++
				return nil
			}
			if err := schemas.DecodeSegmentChangeJSON(env.Value, &c); err != nil {
				return err
			}
			if c.Kind == schemas.Enter {
				sum.Enters[c.SegmentID]++
			} else {
				sum.Exits[c.SegmentID]++
			}
			if out != nil {
				if _, err := out.Write(append(env.Value, '\n')); err != nil {
					return err
				}
				sum.ChangesWritten++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("replay output: %w", err)
		}
		if clear && last > 0 {
			if err := p.part.DeleteOutbox(last); err != nil {
				return err
			}
		}
	}
	for _, s := range rs.Segments() {
		n, err := st.CountMembers(s.ID)
		if err != nil {
			return err
		}
		sum.Sizes[s.ID] = n
	}
	return nil
}

// UndoReplay removes what a failed replay wrote to its state dir and says
// so in the error.
func UndoReplay(err error, dir string, undo func() error) error {
	if uerr := undo(); uerr != nil {
		return fmt.Errorf("%w (removing the partial state in %s failed: %v; remove it before a retry)", err, dir, uerr)
	}
	return fmt.Errorf("%w (the partial state in %s was removed: the same replay can be retried)", err, dir)
}

// ReplaySeen remembers the (customer, event id) pairs a replay applied,
// on disk (state.SeenSet), so each is applied once across all inputs.
type ReplaySeen struct {
	set *state.SeenSet
	key []byte
}

// seenDirName is the seen sets' directory prefix inside the replay's state
// dir; each is removed at the end of the replay.
const seenDirName = "replay-seen"

// OpenReplaySeen opens seen set i (one per goroutine applying events) in
// the replay's state dir.
func OpenReplaySeen(stateDir string, i int) (*ReplaySeen, error) {
	set, err := state.OpenSeenSet(fmt.Sprintf("%s%c%s-%d", stateDir, os.PathSeparator, seenDirName, i))
	if err != nil {
		return nil, err
	}
	return &ReplaySeen{set: set}, nil
}

// Seen reports whether the pair was seen before, and remembers it.
func (r *ReplaySeen) Seen(customer, eventID string) (bool, error) {
	r.key = binary.AppendUvarint(r.key[:0], uint64(len(customer)))
	r.key = append(append(r.key, customer...), eventID...)
	added, err := r.set.Add(r.key)
	return !added, err
}

func (r *ReplaySeen) Close() error { return r.set.Close() }

// FreshStateDir checks that dir is missing or empty (a replay builds a
// fresh store) and returns undo, which removes what a failed replay left
// there: the directory if the replay created it, else its contents. A
// directory that held anything is refused, so undo never removes a byte
// the replay did not write.
func FreshStateDir(dir string) (undo func() error, err error) {
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

// FinishReplay ends a replay's partitions together: every clock advances
// to the input's last event time, so partitions that saw their last event
// early still fire what is due by then; each commits, and sum takes their
// counts.
func FinishReplay(procs []*Processor, sum *ReplaySummary) error {
	for _, p := range procs {
		if err := p.Advance(sum.LastEventTime); err != nil {
			return err
		}
		if err := p.Commit(); err != nil {
			return err
		}
		sum.Duplicates += int64(p.stats.Duplicates)
		sum.TooLate += int64(p.stats.TooLate)
		sum.Evaluations += int64(p.stats.Evaluations)
	}
	return nil
}
