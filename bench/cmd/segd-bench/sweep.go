package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/segd/segd/rules"
)

// ScalePoint is one configuration of the scaling sweep: the Go-map limit
// and segd engine only over the same workload.
type ScalePoint struct {
	Customers      int     `json:"customers"`
	Active         int     `json:"active_customers"`
	Events         int     `json:"events"`
	Segments       int     `json:"segments"`
	LimitPerSec    float64 `json:"go_map_limit_events_per_sec"`
	EnginePerSec   float64 `json:"segd_engine_only_events_per_sec"`
	EngineVsLimit  float64 `json:"engine_only_vs_limit"`
	HeapBytes      uint64  `json:"heap_bytes"`
	CacheBytes     float64 `json:"cache_bytes"`
	StateBytes     int64   `json:"state_bytes"`
	RestartSeconds float64 `json:"restart_seconds"`
}

// sweepPoint is a configuration to measure.
type sweepPoint struct {
	customers, events, segments int
}

// parseSweep reads "customers:events:segments,..." e.g. "100000:300000:10".
func parseSweep(spec string) ([]sweepPoint, error) {
	var pts []sweepPoint
	for _, part := range strings.Split(spec, ",") {
		f := strings.Split(strings.TrimSpace(part), ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("--sweep %q: want customers:events:segments", part)
		}
		var n [3]int
		for i, x := range f {
			v, err := strconv.Atoi(x)
			if err != nil || v <= 0 {
				return nil, fmt.Errorf("--sweep %q: %q is not a positive number", part, x)
			}
			n[i] = v
		}
		pts = append(pts, sweepPoint{n[0], n[1], n[2]})
	}
	return pts, nil
}

// rulesWithSegments writes a copy of the rules file with n segments: the
// file's own, cut or repeated under new ids (same conditions, so the cost
// per segment stays that of the standard mix).
func rulesWithSegments(src string, n int, dir string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	var doc struct {
		Version  int64             `yaml:"version"`
		Traits   yaml.Node         `yaml:"traits"`
		Segments map[string]any    `yaml:"segments"`
		Extra    map[string]string `yaml:",inline"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return "", fmt.Errorf("%s: %w", src, err)
	}
	rs, err := rules.CompileFile(src)
	if err != nil {
		return "", err
	}
	base := rs.Segments()
	segs := map[string]any{}
	for i := 0; i < n; i++ {
		s := base[i%len(base)]
		id := s.ID
		if i >= len(base) {
			id = fmt.Sprintf("%s_%d", s.ID, i/len(base))
		}
		segs[id] = map[string]string{"when": s.When}
	}
	out, err := yaml.Marshal(map[string]any{"version": doc.Version, "traits": &doc.Traits, "segments": segs})
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, fmt.Sprintf("rules-%d.yaml", n))
	return path, os.WriteFile(path, out, 0o644)
}

// sweep measures every point with the limit and segd engine only.
func sweep(o options, pts []sweepPoint, res *Results) error {
	dir, err := os.MkdirTemp("", "segd-bench-sweep-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, pt := range pts {
		rulesFile, err := rulesWithSegments(o.rules, pt.segments, dir)
		if err != nil {
			return err
		}
		po := o
		po.customers, po.events, po.rules, po.cpuProfile = pt.customers, pt.events, rulesFile, ""
		rs, err := rules.CompileFile(rulesFile)
		if err != nil {
			return err
		}
		recs, end, active, err := workload(po)
		if err != nil {
			return err
		}
		r := Results{Active: active} // for its log lines
		if err := limitAndEngine(po, rs, recs, end, &r); err != nil {
			return fmt.Errorf("sweep %+v: %w", pt, err)
		}
		p := ScalePoint{Customers: pt.customers, Active: active, Events: len(recs), Segments: len(rs.Segments()),
			LimitPerSec: r.MapLimit.EventsPerSec, EnginePerSec: r.EngineOnly.EventsPerSec,
			EngineVsLimit: r.EngineOnly.EventsPerSec / r.MapLimit.EventsPerSec,
			HeapBytes:     r.PeakHeapBytes, CacheBytes: r.CacheBytes, StateBytes: r.StateBytes, RestartSeconds: r.RestartSeconds}
		logf("sweep %d customers (%d active), %d events, %d segments: limit %.0f/s, segd %.0f/s (%.0f%%), restart %.2fs",
			p.Customers, p.Active, p.Events, p.Segments, p.LimitPerSec, p.EnginePerSec, 100*p.EngineVsLimit, p.RestartSeconds)
		res.Scaling = append(res.Scaling, p)
	}
	return nil
}

func sweepMarkdown(pts []ScalePoint) string {
	if len(pts) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\nScaling (Go-map limit and segd engine only, one partition each, same workload per row):\n\n")
	b.WriteString("| customers | active | events | segments | limit events/s | segd events/s | segd/limit | cache MiB | heap MiB | state MiB | restart s |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range pts {
		fmt.Fprintf(&b, "| %d | %d | %d | %d | %.0f | %.0f | %.0f%% | %.0f | %.0f | %.1f | %.2f |\n",
			p.Customers, p.Active, p.Events, p.Segments, p.LimitPerSec, p.EnginePerSec, 100*p.EngineVsLimit,
			p.CacheBytes/(1<<20), float64(p.HeapBytes)/(1<<20), float64(p.StateBytes)/(1<<20), p.RestartSeconds)
	}
	return b.String()
}
