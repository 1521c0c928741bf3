package engine

import "sync/atomic"

// Progress is a summary of what the engine did, for status lines.
type Progress struct {
	Events      float64 // input events applied
	DeadLetters float64
	Enters      float64
	Exits       float64
	Published   float64 // outbox records acknowledged by Kafka
	OutboxDepth float64
}

// progressTotals are the engine's own counts behind Progress, pushed with
// the metrics at each commit and publish (what segd_events_applied_total,
// segd_dead_letters_total, segd_segment_changes_total and
// segd_outbox_published_total count).
type progressTotals struct {
	events, deadLetters, enters, exits, published atomic.Uint64
}

// Progress reads the engine's counters. Safe for concurrent use. Like
// the metrics, it counts the partitions Run runs, not a Local's.
func (e *Engine) Progress() Progress {
	t := &e.m.totals
	p := Progress{
		Events:      float64(t.events.Load()),
		DeadLetters: float64(t.deadLetters.Load()),
		Enters:      float64(t.enters.Load()),
		Exits:       float64(t.exits.Load()),
		Published:   float64(t.published.Load()),
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, rp := range e.parts {
		p.OutboxDepth += float64(rp.task.part.OutboxDepth())
	}
	return p
}
