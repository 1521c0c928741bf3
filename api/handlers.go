// Package api is segd's HTTP API (docs/api.md): health, readiness,
// Prometheus metrics, customers, segments and members, rules, the
// built-in page, and their protections (tokens and scopes, TLS, the Host
// allow-list, CORS, rate limits, the audit log). It reads the engine
// through the narrow Engine interface, which *engine.Engine implements;
// the engine knows nothing of HTTP.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/segd/segd/engine"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
)

// Engine is what the API reads and asks of the engine: *engine.Engine's
// read model. Every method must be safe for concurrent use.
type Engine interface {
	// Status is the engine's readiness, for /readyz.
	Status() engine.Status
	// Rules is the running rule set; LastReloadError why the last
	// reload failed (nil if it did not).
	Rules() *rules.RuleSet
	LastReloadError() error
	// Customer is a customer's committed state; false if this instance
	// does not hold them. An error wrapping engine.ErrCorruptRecord: the
	// record cannot be decoded; another: the state is unavailable.
	Customer(id string) (engine.CustomerView, bool, error)
	// SegmentSizes are the running rules' segments with their sizes and
	// rates.
	SegmentSizes() ([]engine.SegmentSize, error)
	// Members is a page of a segment's members after cursor; next is ""
	// after the last page.
	Members(segment, cursor string, limit int) (ids []string, next string, err error)
	// PreviewRules evaluates a candidate rule set against the committed
	// state, changing nothing.
	PreviewRules(candidate *rules.RuleSet, sample int) (*engine.Preview, error)
	// Reload re-reads the rules file and switches to it.
	Reload(ctx context.Context) (*engine.ReloadResult, error)
	// EraseCustomer requests a customer's erasure (engine.ErrNotRunning
	// while the engine does not run).
	EraseCustomer(ctx context.Context, id string) error
	// Registry gathers the metrics /metrics serves; RegisterMetrics adds
	// the API's own to it.
	Registry() *prometheus.Registry
	RegisterMetrics(cs ...prometheus.Collector)
}

// Server is the API of one engine: its handler, its protections, and its
// listener (Listen).
type Server struct {
	eng Engine
	cfg *engine.APIConfig
	log zerolog.Logger
	g   *apiGuard
}

// New builds the API of eng as cfg configures it (defaults applied),
// logging to log. It loads the token and TLS files, and registers the
// API's metrics with eng.
func New(eng Engine, cfg *engine.APIConfig, log zerolog.Logger) (*Server, error) {
	g, err := newAPIGuard(cfg, log)
	if err != nil {
		return nil, err
	}
	eng.RegisterMetrics(g.refused, g.actions, g.loaded)
	return &Server{eng: eng, cfg: cfg, log: log.With().Str("component", "api").Logger(), g: g}, nil
}

// ReloadCredentials re-reads the API's token files and TLS files (segd
// run does on SIGHUP). A file that does not load keeps the previous
// credentials; the error names it.
func (s *Server) ReloadCredentials() error {
	return s.g.reloadFiles(true)
}

// Handler returns the API's handler. Safe for concurrent use; it reads
// committed state, as fresh as the last commit.
func (s *Server) Handler() http.Handler {
	h, _ := s.handler()
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
func (s *Server) handler() (http.Handler, []string) {
	mux := &routeMux{ServeMux: http.NewServeMux()}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.getReadyz)
	mux.Handle("GET /metrics", s.auth(promhttp.HandlerFor(s.eng.Registry(), promhttp.HandlerOpts{})))
	mux.Handle("GET /v1/rules", s.auth(http.HandlerFunc(s.getRules)))
	mux.Handle("POST /v1/rules/reload", s.auth(http.HandlerFunc(s.postReload)))
	mux.Handle("GET /v1/customers/{id}", s.auth(http.HandlerFunc(s.getCustomer)))
	mux.Handle("DELETE /v1/customers/{id}", s.auth(http.HandlerFunc(s.deleteCustomer)))
	mux.Handle("GET /v1/segments", s.auth(http.HandlerFunc(s.getSegments)))
	mux.Handle("POST /v1/rules/preview", s.auth(http.HandlerFunc(s.previewRules)))
	mux.Handle("GET /v1/segments/{id}/members", s.auth(http.HandlerFunc(s.getMembers)))
	mux.Handle("POST /v1/segments/{id}/export", s.auth(http.HandlerFunc(s.postExport)))
	mux.Handle("GET /v1/segments/{id}/members.csv", s.signedLink(http.HandlerFunc(s.getMembersCSV)))
	// The built-in page (api/web, embedded): no external resources.
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(webIndex)
	})
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", http.FileServerFS(webFiles)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	return s.protect(mux.ServeMux), mux.patterns
}

func (s *Server) getReadyz(w http.ResponseWriter, r *http.Request) {
	st := s.eng.Status()
	if !st.Ready {
		msg := "not ready: partitions not assigned yet (joining the consumer group or rebalancing)"
		if st.Restoring >= 0 {
			msg = fmt.Sprintf("not ready: restoring partition %d from the changelog", st.Restoring)
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": msg})
		return
	}
	if limit := s.cfg.ReadyMaxLag; limit >= 0 {
		for _, l := range st.Lags {
			if l.Lag > limit {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": fmt.Sprintf("not ready: partition %d is %d records behind (api.ready_max_lag %d)", l.Partition, l.Lag, limit)})
				return
			}
		}
	}
	// Readiness is about serving answers, which a partition that
	// cannot publish still does (from committed state): it stays
	// ready, and says what is wrong (docs/api.md).
	body := map[string]any{}
	var problems []string
	if len(st.PublishFailing) > 0 {
		problems = append(problems, "publishing fails")
		body["publish_failing"] = st.PublishFailing
	}
	if len(st.DecodeWaiting) > 0 {
		problems = append(problems, "decoding waits for the schema registry")
		body["decode_waiting"] = st.DecodeWaiting
	}
	if !st.DiskFullSince.IsZero() {
		problems = append(problems, "the state disk is full: partitions paused")
		body["disk_full_since"] = st.DiskFullSince
	}
	body["status"] = "ready"
	if len(problems) > 0 {
		body["status"] = "ready, but " + strings.Join(problems, "; ")
	}
	writeJSON(w, http.StatusOK, body)
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
func (s *Server) previewRules(w http.ResponseWriter, r *http.Request) {
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
	p, err := s.eng.PreviewRules(rs, sample)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "state unavailable: "+err.Error())
		return
	}
	out := make([]map[string]any, 0, len(p.Segments))
	for _, s := range p.Segments {
		out = append(out, map[string]any{
			"id": s.ID, "size_now": s.SizeNow, "size_new": s.SizeNew, "would_enter": s.WouldEnter, "would_exit": s.WouldExit,
			"sample_enter": nonNil(s.SampleEnter), "sample_exit": nonNil(s.SampleExit),
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"version": rs.Version(), "hash": rs.Hash(), "segments": out, "warnings": nonNil(p.Warnings)})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (s *Server) getRules(w http.ResponseWriter, r *http.Request) {
	rs := s.eng.Rules()
	var lastErr any
	if err := s.eng.LastReloadError(); err != nil {
		lastErr = err.Error()
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"file": rs.File(), "version": rs.Version(), "hash": rs.Hash(),
		"traits": len(rs.Traits()), "segments": len(rs.Segments()), "last_reload_error": lastErr,
	})
}

func (s *Server) postReload(w http.ResponseWriter, r *http.Request) {
	res, err := s.eng.Reload(r.Context())
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

func (s *Server) getCustomer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validID(id) {
		writeError(w, http.StatusBadRequest, "customer id must be 1-256 bytes without control characters")
		return
	}
	c, ok, err := s.eng.Customer(id)
	if errors.Is(err, engine.ErrCorruptRecord) {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "state unavailable: "+err.Error())
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("customer %q is unknown to this instance", id))
		return
	}
	segs := make([]map[string]any, 0, len(c.Segments))
	for _, m := range c.Segments {
		segs = append(segs, map[string]any{"id": m.Segment, "entered_at": schemas.FormatTime(m.EnteredAt), "seq": m.Seq})
	}
	traits := map[string]any{}
	for _, t := range c.Traits {
		if t.Time {
			traits[t.Name] = schemas.FormatTime(int64(t.Value.Num))
		} else {
			traits[t.Name] = jsonValue(t.Value)
		}
	}
	profile := map[string]any{}
	for _, a := range c.Profile {
		profile[a.Name] = jsonValue(a.Value)
	}
	masked := maskPII(r, traits, profile)
	writeJSON(w, http.StatusOK, map[string]any{
		"customer_id": id, "partition": c.Partition, "clock": schemas.FormatTime(c.Clock),
		"segments": segs, "traits": traits, "profile": profile, "masked": masked,
	})
}

func (s *Server) getSegments(w http.ResponseWriter, r *http.Request) {
	sizes, err := s.eng.SegmentSizes()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "state unavailable: "+err.Error())
		return
	}
	out := make([]map[string]any, 0, len(sizes))
	for _, z := range sizes {
		sg := z.Segment
		out = append(out, map[string]any{
			"id": sg.ID, "description": sg.Description, "size": z.Size, "when": sg.When,
			"time_dependent": sg.TimeDependent, "requires_consent": sg.RequiresConsent,
			"enters_1h": z.Enters1h, "exits_1h": z.Exits1h, "enters_24h": z.Enters24h, "exits_24h": z.Exits24h,
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"segments": out})
}

// maxMembersLimit bounds one page of members.
const maxMembersLimit = 1000

// knownSegment tells whether the running rules define segment id.
func (s *Server) knownSegment(id string) bool {
	_, ok := s.eng.Rules().SegmentIndex(id)
	return ok
}

func (s *Server) getMembers(w http.ResponseWriter, r *http.Request) {
	seg := r.PathValue("id")
	if !s.knownSegment(seg) {
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
	ids, next, err := s.eng.Members(seg, cursor, limit)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "state unavailable: "+err.Error())
		return
	}
	if ids == nil {
		ids = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"segment": seg, "members": ids, "next_cursor": next})
}

// deleteCustomer requests erasure: the engine writes a tombstone for the
// customer to the profile topic, so the deletion goes through the
// customer's partition like any event (EXIT with cause DELETION, state
// removed), in order with the customer's other events. 202: accepted,
// applied shortly.
func (s *Server) deleteCustomer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validID(id) {
		writeError(w, http.StatusBadRequest, "customer id must be 1-256 bytes without control characters")
		return
	}
	if err := s.eng.EraseCustomer(r.Context(), id); errors.Is(err, engine.ErrNotRunning) {
		writeError(w, http.StatusServiceUnavailable, "not running")
		return
	} else if err != nil {
		writeError(w, http.StatusServiceUnavailable, "cannot write the deletion request: "+err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"customer_id": id, "status": "deletion requested"})
}

var _ Engine = (*engine.Engine)(nil)
