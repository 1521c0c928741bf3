package engine

import (
	dto "github.com/prometheus/client_model/go"
)

// Progress is a summary of what the engine did, for status lines.
type Progress struct {
	Events      float64 // input events applied
	DeadLetters float64
	Enters      float64
	Exits       float64
	Published   float64 // outbox records acknowledged by Kafka
	OutboxDepth float64
}

// Progress reads the engine's counters. Safe for concurrent use.
func (e *Engine) Progress() Progress {
	var p Progress
	mfs, err := e.m.reg.Gather()
	if err != nil {
		return p
	}
	sum := func(mf *dto.MetricFamily, label, value string) float64 {
		total := 0.0
		for _, m := range mf.Metric {
			if label != "" {
				match := false
				for _, l := range m.Label {
					if l.GetName() == label && l.GetValue() == value {
						match = true
					}
				}
				if !match {
					continue
				}
			}
			switch {
			case m.Counter != nil:
				total += m.Counter.GetValue()
			case m.Gauge != nil:
				total += m.Gauge.GetValue()
			}
		}
		return total
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "segd_events_applied_total":
			p.Events = sum(mf, "", "")
		case "segd_dead_letters_total":
			p.DeadLetters = sum(mf, "", "")
		case "segd_segment_changes_total":
			p.Enters = sum(mf, "kind", "ENTER")
			p.Exits = sum(mf, "kind", "EXIT")
		case "segd_outbox_published_total":
			p.Published = sum(mf, "", "")
		case "segd_outbox_depth":
			p.OutboxDepth = sum(mf, "", "")
		}
	}
	return p
}
