package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/segd/segd/segment"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
)

// Handler returns segd's HTTP API (docs/api.md): health, readiness,
// Prometheus metrics, customers, segments and members, rules. Safe for
// concurrent use; it reads committed state, as fresh as the last commit.
func (e *Engine) Handler() http.Handler {
	h, _ := e.handler()
	return h
}

// routeMux is a ServeMux that remembers its patterns, so the OpenAPI
// check compares the document with the routes really served.
type routeMux struct {
	*http.ServeMux
	patterns []string
}

func (m *routeMux) Handle(pattern string, h http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, h)
}

func (m *routeMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.HandleFunc(pattern, h)
}

// handler builds the API's handler and returns the route patterns it
// serves.
func (e *Engine) handler() (http.Handler, []string) {
	mux := &routeMux{ServeMux: http.NewServeMux()}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !e.ready.Load() {
			msg := "not ready: partitions not assigned yet (joining the consumer group or rebalancing)"
			if n := e.restoringNow.Load(); n > 0 {
				msg = fmt.Sprintf("not ready: restoring partition %d from the changelog", n-1)
			}
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": msg})
			return
		}
		if limit := e.cfg.API.ReadyMaxLag; limit >= 0 {
			e.mu.Lock()
			for id, rp := range e.parts {
				if lag := rp.task.maxLag.Load(); lag > limit {
					e.mu.Unlock()
					writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": fmt.Sprintf("not ready: partition %d is %d records behind (api.ready_max_lag %d)", id, lag, limit)})
					return
				}
			}
			e.mu.Unlock()
		}
		// Readiness is about serving answers, which a partition that
		// cannot publish still does (from committed state): it stays
		// ready, and says what is wrong (docs/api.md).
		body := map[string]any{}
		var problems []string
		if failing := e.PublishFailures(); len(failing) > 0 {
			problems = append(problems, "publishing fails")
			body["publish_failing"] = failing
		}
		if waits := e.DecodeWaits(); len(waits) > 0 {
			problems = append(problems, "decoding waits for the schema registry")
			body["decode_waiting"] = waits
		}
		if at := e.st.DiskFullSince(); !at.IsZero() {
			problems = append(problems, "the state disk is full: partitions paused")
			body["disk_full_since"] = at
		}
		body["status"] = "ready"
		if len(problems) > 0 {
			body["status"] = "ready, but " + strings.Join(problems, "; ")
		}
		writeJSON(w, http.StatusOK, body)
	})
	mux.Handle("GET /metrics", e.auth(promhttp.HandlerFor(e.m.reg, promhttp.HandlerOpts{})))
	mux.Handle("GET /v1/rules", e.auth(http.HandlerFunc(e.getRules)))
	mux.Handle("POST /v1/rules/reload", e.auth(http.HandlerFunc(e.postReload)))
	mux.Handle("GET /v1/customers/{id}", e.auth(http.HandlerFunc(e.getCustomer)))
	mux.Handle("DELETE /v1/customers/{id}", e.auth(http.HandlerFunc(e.deleteCustomer)))
	mux.Handle("GET /v1/segments", e.auth(http.HandlerFunc(e.getSegments)))
	mux.Handle("POST /v1/rules/preview", e.auth(http.HandlerFunc(e.previewRules)))
	mux.Handle("GET /v1/segments/{id}/members", e.auth(http.HandlerFunc(e.getMembers)))
	mux.Handle("POST /v1/segments/{id}/export", e.auth(http.HandlerFunc(e.postExport)))
	mux.Handle("GET /v1/segments/{id}/members.csv", e.signedLink(http.HandlerFunc(e.getMembersCSV)))
	// The built-in page (engine/web, embedded): no external resources.
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(webIndex)
	})
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", http.FileServerFS(webFiles)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	return e.protect(mux.ServeMux), mux.patterns
}

// PublishFailures lists the partitions of this process whose outbox
// cannot be published now, by partition.
func (e *Engine) PublishFailures() []PublishFailure {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []PublishFailure
	for _, rp := range e.parts {
		if f := rp.pub.failing.Load(); f != nil {
			out = append(out, *f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// previewRules evaluates the rules file in the request body against every
// customer's committed state and reports, per segment, the size now and
// under the candidate, who would enter and exit. It changes nothing.
func (e *Engine) previewRules(w http.ResponseWriter, r *http.Request) {
	sample := 10
	if v := r.URL.Query().Get("sample"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("sample (%q) must be an integer from 0 to 100", v))
			return
		}
		sample = n
	}
	// auth bounds the body to rules.MaxRulesBytes.
	body, err := io.ReadAll(r.Body)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("rules file over %d bytes", tooLarge.Limit))
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	if len(body) == 0 {
		writeError(w, http.StatusBadRequest, "the request body must be a rules file (YAML, docs/rules.md)")
		return
	}
	rs, err := rules.Compile("request.yaml", body)
	if errors.Is(err, rules.ErrLimit) {
		writeError(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	running := e.rs.Load()
	segs, err := segment.Preview(e.st, rs, running, e.cfg.Consent.Attribute, sample, e.ownedFilter())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "state unavailable: "+err.Error())
		return
	}
	out := make([]map[string]any, 0, len(segs))
	for _, s := range segs {
		out = append(out, map[string]any{
			"id": s.ID, "size_now": s.SizeNow, "size_new": s.SizeNew, "would_enter": s.WouldEnter, "would_exit": s.WouldExit,
			"sample_enter": nonNil(s.SampleEnter), "sample_exit": nonNil(s.SampleExit),
		})
	}
	var warnings []string
	for _, w := range rs.Warnings() {
		warnings = append(warnings, w.Error())
	}
	if note := segment.NoHistoryNote(segs, "NEW.yaml", running.File()); note != "" {
		warnings = append(warnings, note)
	}
	writeJSON(w, http.StatusOK, map[string]any{"version": rs.Version(), "hash": rs.Hash(), "segments": out, "warnings": nonNil(warnings)})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (e *Engine) getRules(w http.ResponseWriter, r *http.Request) {
	rs := e.rs.Load()
	e.mu.Lock()
	var lastErr any
	if e.lastReloadErr != nil {
		lastErr = e.lastReloadErr.Error()
	}
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"file": rs.File(), "version": rs.Version(), "hash": rs.Hash(),
		"traits": len(rs.Traits()), "segments": len(rs.Segments()), "last_reload_error": lastErr,
	})
}

func (e *Engine) postReload(w http.ResponseWriter, r *http.Request) {
	res, err := e.Reload(r.Context())
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"version": res.Version, "hash": res.Hash, "changes": res.Changes})
}

// validID bounds what a path id may be, so that a bad request gets a 400,
// not a store scan.
func validID(id string) bool {
	return id != "" && len(id) <= 256 && !strings.ContainsAny(id, "\x00\n\r")
}

func jsonValue(v schemas.Value) any {
	switch v.Kind {
	case schemas.KindString:
		return v.Str
	case schemas.KindNumber:
		return v.Num
	case schemas.KindBool:
		return v.Bool
	}
	return nil
}

// committedClock is partition p's clock as of its last commit: from its
// processor when this process runs it, else from the store.
func (e *Engine) committedClock(p int32) (int64, error) {
	e.mu.Lock()
	proc := e.procs[p]
	e.mu.Unlock()
	if proc != nil {
		return proc.CommittedClock(), nil
	}
	offs, err := e.st.CommittedOffsets(p)
	if err != nil {
		return 0, err
	}
	return offs[segment.ClockOffsetKey], nil
}

func (e *Engine) ownedPartitions() []int32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	ps := make([]int32, 0, len(e.parts)+len(e.localParts))
	for p := range e.parts {
		ps = append(ps, p)
	}
	ps = append(ps, e.localParts...)
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}

func (e *Engine) getCustomer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validID(id) {
		writeError(w, http.StatusBadRequest, "customer id must be 1-256 bytes without control characters")
		return
	}
	rs := e.rs.Load()
	for _, p := range e.ownedPartitions() {
		data, ok, err := e.st.Lookup(p, id)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "state unavailable: "+err.Error())
			return
		}
		if !ok {
			continue
		}
		c, err := segment.DecodeCustomer(rs, data)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "stored record cannot be decoded: "+err.Error())
			return
		}
		clock, err := e.committedClock(p)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "state unavailable: "+err.Error())
			return
		}
		var segs []map[string]any
		for i, s := range rs.Segments() {
			if in, since, seq := c.Member(i); in {
				segs = append(segs, map[string]any{"id": s.ID, "entered_at": schemas.FormatTime(since), "seq": seq})
			}
		}
		traits := map[string]any{}
		for i, t := range rs.Traits() {
			v := rs.TraitValue(i, c.Traits(), clock)
			if t.IsTime() && v.Kind == schemas.KindNumber {
				traits[t.Name] = schemas.FormatTime(int64(v.Num))
			} else {
				traits[t.Name] = jsonValue(v)
			}
		}
		profile := map[string]any{}
		for _, a := range c.Traits().Attrs() {
			profile[a.Name] = jsonValue(a.Value)
		}
		if segs == nil {
			segs = []map[string]any{}
		}
		masked := maskPII(r, traits, profile)
		writeJSON(w, http.StatusOK, map[string]any{
			"customer_id": id, "partition": p, "clock": schemas.FormatTime(clock),
			"segments": segs, "traits": traits, "profile": profile, "masked": masked,
		})
		return
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("customer %q is unknown to this instance", id))
}

func (e *Engine) getSegments(w http.ResponseWriter, r *http.Request) {
	rs := e.rs.Load()
	out := make([]map[string]any, 0, len(rs.Segments()))
	for _, s := range rs.Segments() {
		n, err := e.countMembers(s.ID)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "state unavailable: "+err.Error())
			return
		}
		e1, x1, e24, x24 := e.rates.counts(s.ID, e.opt.Now())
		out = append(out, map[string]any{
			"id": s.ID, "description": s.Description, "size": n, "when": s.When,
			"time_dependent": s.TimeDependent, "requires_consent": s.RequiresConsent,
			"enters_1h": e1, "exits_1h": x1, "enters_24h": e24, "exits_24h": x24,
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"segments": out})
}

// maxMembersLimit bounds one page of members.
const maxMembersLimit = 1000

func (e *Engine) getMembers(w http.ResponseWriter, r *http.Request) {
	seg := r.PathValue("id")
	if _, ok := e.rs.Load().SegmentIndex(seg); !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown segment %q", seg))
		return
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxMembersLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit (%q) must be an integer from 1 to %d", v, maxMembersLimit))
			return
		}
		limit = n
	}
	cursor := r.URL.Query().Get("cursor")
	if cursor != "" && !validID(cursor) {
		writeError(w, http.StatusBadRequest, "bad cursor")
		return
	}
	ids, next, err := e.listMembers(seg, cursor, limit)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "state unavailable: "+err.Error())
		return
	}
	if ids == nil {
		ids = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"segment": seg, "members": ids, "next_cursor": next})
}

// deleteCustomer requests erasure: it writes a tombstone for the customer
// to the profile topic, so the deletion goes through the customer's
// partition like any event (EXIT with cause DELETION, state removed), in
// order with the customer's other events. 202: accepted, applied shortly.
func (e *Engine) deleteCustomer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validID(id) {
		writeError(w, http.StatusBadRequest, "customer id must be 1-256 bytes without control characters")
		return
	}
	e.mu.Lock()
	prod := e.prod
	e.mu.Unlock()
	if prod == nil {
		writeError(w, http.StatusServiceUnavailable, "not running")
		return
	}
	if err := prod.Write(r.Context(), DeletionRequest(e.cfg.Kafka.Topics.Profiles.Name, id, e.opt.Now())); err != nil {
		writeError(w, http.StatusServiceUnavailable, "cannot write the deletion request: "+err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"customer_id": id, "status": "deletion requested"})
}

// DeletionRequest is the record that erases a customer: a tombstone keyed
// by the customer id on the profile topic (it also lets compaction drop the
// customer's profile records from Kafka).
func DeletionRequest(profilesTopic, customerID string, now time.Time) connectors.Message {
	return connectors.Message{Topic: profilesTopic, Key: []byte(customerID), Value: nil, Time: now}
}
