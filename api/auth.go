package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/segd/segd/engine"
	"github.com/segd/segd/rules"
)

// scope is a set of API permissions (docs/api.md, "Security").
type scope uint8

const (
	scopeRead scope = 1 << iota
	scopePII
	scopeAdmin

	scopeAll = scopeRead | scopePII | scopeAdmin
)

// scopeNames maps a configured scope to what it grants: pii and admin
// include read; admin does not include pii.
var scopeNames = map[string]scope{"read": scopeRead, "pii": scopeRead | scopePII, "admin": scopeRead | scopeAdmin}

// principal is who made a request.
type principal struct {
	// name is the token's name, "cert:" and the client certificate's
	// subject, or "anonymous". Never a token.
	name          string
	scopes        scope
	authenticated bool
}

type principalKey struct{}

// requestPrincipal is the principal auth attached to r; anonymous with no
// scope outside auth.
func requestPrincipal(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

// tokenEntry is one accepted token. Only its SHA-256 is kept, so that
// comparisons take the same time whatever the token's length.
type tokenEntry struct {
	name   string
	sum    [sha256.Size]byte
	scopes scope
}

// parseTokenEntries parses "NAME:TOKEN" or bare "TOKEN" entries of one
// scope (engine.ParseAPITokens) and keeps their hashes. where names an
// entry in errors (which never contain a token).
func parseTokenEntries(entries []string, scopeName string, where func(i int) string) ([]tokenEntry, error) {
	toks, err := engine.ParseAPITokens(entries, scopeName, where)
	if err != nil {
		return nil, err
	}
	out := make([]tokenEntry, 0, len(toks))
	for _, t := range toks {
		out = append(out, tokenEntry{name: t.Name, sum: sha256.Sum256([]byte(t.Token)), scopes: scopeNames[scopeName]})
	}
	return out, nil
}

// apiGuard holds what the API's protections need: credentials (rotated
// while running), the Host allow-list, CORS origins, admin limits, the
// download link key and the TLS files. Safe for concurrent use.
type apiGuard struct {
	cfg *engine.APIConfig
	log zerolog.Logger
	// audit logs every admin action.
	audit zerolog.Logger

	tokens atomic.Pointer[[]tokenEntry]
	// filesMu serializes reloads of the token and TLS files; stamp is
	// the last loaded token files' contents hash.
	filesMu sync.Mutex
	stamp   [sha256.Size]byte
	tls     *certReloader // nil without api.tls

	// open: no credential is configured, so anonymous requests get every
	// scope (loopback, or api.insecure_allow_unauthenticated).
	open bool
	// hosts is the Host allow-list (nil: no check); probesExempt lets
	// /healthz, /readyz and /metrics through it on a non-loopback address.
	hosts        map[string]bool
	probesExempt bool
	cors         map[string]bool

	adminSem chan struct{}
	limiter  *rateLimiter
	linkKey  [32]byte

	refused *prometheus.CounterVec // reason
	actions *prometheus.CounterVec // action, outcome
	loaded  prometheus.Gauge
}

func newAPIGuard(cfg *engine.APIConfig, log zerolog.Logger) (*apiGuard, error) {
	g := &apiGuard{
		cfg:      cfg,
		log:      log.With().Str("component", "api").Logger(),
		audit:    log.With().Str("component", "audit").Logger(),
		open:     !cfg.HasCredentials() && (cfg.Addr == "off" || engine.LoopbackAddr(cfg.Addr) || cfg.InsecureAllowUnauthenticated),
		cors:     map[string]bool{},
		adminSem: make(chan struct{}, max(cfg.AdminConcurrency, 1)),
		limiter:  newRateLimiter(max(cfg.AdminRate, 1)),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "segd_api_refused_total", Help: "API requests refused, by reason (unauthenticated, forbidden, host, origin, content_type, too_large, rate_limited, busy, bad_link).",
		}, []string{"reason"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "segd_api_admin_actions_total", Help: "Admin API actions (erase, reload, preview) by outcome (ok, refused, failed).",
		}, []string{"action", "outcome"}),
		loaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "segd_api_tokens", Help: "API bearer tokens accepted now.",
		}),
	}
	if _, err := rand.Read(g.linkKey[:]); err != nil {
		return nil, fmt.Errorf("api: download link key: %w", err)
	}
	hosts := cfg.AllowedHosts
	if len(hosts) == 0 && engine.LoopbackAddr(cfg.Addr) {
		hosts = engine.DefaultAllowedHosts
	}
	if len(hosts) > 0 {
		g.hosts = map[string]bool{}
		for _, h := range hosts {
			g.hosts[strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")] = true
		}
		g.probesExempt = !engine.LoopbackAddr(cfg.Addr)
	}
	for _, o := range cfg.CORSOrigins {
		g.cors[strings.ToLower(o)] = true
	}
	if err := g.loadTokens(); err != nil {
		return nil, err
	}
	if cfg.TLS.CertFile != "" {
		g.tls = &certReloader{certFile: cfg.TLS.CertFile, keyFile: cfg.TLS.KeyFile, caFile: cfg.TLS.ClientCAFile}
		if _, err := g.tls.reload(); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// tokenFiles are the configured token files and their scopes.
func (g *apiGuard) tokenFiles() []struct{ key, scope, path string } {
	a := g.cfg.Auth
	var out []struct{ key, scope, path string }
	for _, f := range []struct{ key, scope, path string }{
		{"api.auth.read_tokens_file", "read", a.ReadTokensFile}, {"api.auth.pii_tokens_file", "pii", a.PIITokensFile}, {"api.auth.admin_tokens_file", "admin", a.AdminTokensFile},
	} {
		if f.path != "" {
			out = append(out, f)
		}
	}
	return out
}

// loadTokens reads every token source and swaps the accepted set. On
// error the previous set stays. Errors name the file and line, never a
// token.
func (g *apiGuard) loadTokens() error {
	g.filesMu.Lock()
	defer g.filesMu.Unlock()
	_, err := g.loadTokensLocked(true)
	return err
}

func (g *apiGuard) loadTokensLocked(force bool) (changed bool, err error) {
	a := g.cfg.Auth
	var all []tokenEntry
	if g.cfg.Token != "" {
		all = append(all, tokenEntry{name: "api.token", sum: sha256.Sum256([]byte(g.cfg.Token)), scopes: scopeAll})
	}
	for _, s := range []struct {
		key, scope string
		entries    []string
	}{{"api.auth.read_tokens", "read", a.ReadTokens}, {"api.auth.pii_tokens", "pii", a.PIITokens}, {"api.auth.admin_tokens", "admin", a.AdminTokens}} {
		es, err := parseTokenEntries(s.entries, s.scope, func(i int) string { return fmt.Sprintf("%s entry %d", s.key, i+1) })
		if err != nil {
			return false, err
		}
		all = append(all, es...)
	}
	h := sha256.New()
	for _, f := range g.tokenFiles() {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return false, fmt.Errorf("%s: %w", f.key, err)
		}
		h.Write(b)
		h.Write([]byte{0})
		var lines []string
		var lineNo []int
		for i, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				lines = append(lines, l)
				lineNo = append(lineNo, i+1)
			}
		}
		es, err := parseTokenEntries(lines, f.scope, func(i int) string { return fmt.Sprintf("%s %s line %d", f.key, f.path, lineNo[i]) })
		if err != nil {
			return false, err
		}
		all = append(all, es...)
	}
	var stamp [sha256.Size]byte
	copy(stamp[:], h.Sum(nil))
	if !force && stamp == g.stamp {
		return false, nil
	}
	g.stamp = stamp
	g.tokens.Store(&all)
	g.loaded.Set(float64(len(all)))
	return true, nil
}

// reloadFiles re-reads the token files and the TLS files when they
// changed (force: whatever their contents). A file that does not load
// keeps what was loaded before; the error says which file.
func (g *apiGuard) reloadFiles(force bool) error {
	g.filesMu.Lock()
	defer g.filesMu.Unlock()
	var errs []error
	if changed, err := g.loadTokensLocked(force); err != nil {
		errs = append(errs, err)
	} else if changed {
		g.log.Info().Int("tokens", len(*g.tokens.Load())).Msg("api tokens reloaded")
	}
	if g.tls != nil {
		if changed, err := g.tls.reload(); err != nil {
			errs = append(errs, err)
		} else if changed {
			g.log.Info().Str("cert_file", g.cfg.TLS.CertFile).Msg("api TLS files reloaded")
		}
	}
	return errors.Join(errs...)
}

var errBadToken = errors.New("missing or wrong bearer token")

// authenticate finds who sent r: a bearer token wins over a client
// certificate; without either the request is anonymous, with every scope
// only when no credential is configured.
func (g *apiGuard) authenticate(r *http.Request) (principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return principal{name: "anonymous"}, errBadToken
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		var match *tokenEntry
		entries := *g.tokens.Load()
		for i := range entries {
			// Compare with every entry, so the time says nothing about
			// which one matched.
			if subtle.ConstantTimeCompare(sum[:], entries[i].sum[:]) == 1 && match == nil {
				match = &entries[i]
			}
		}
		if match == nil {
			return principal{name: "anonymous"}, errBadToken
		}
		return principal{name: match.name, scopes: match.scopes, authenticated: true}, nil
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.PeerCertificates) > 0 {
		cert := r.TLS.PeerCertificates[0]
		p := principal{name: "cert:" + cert.Subject.String(), authenticated: true}
		for _, s := range g.cfg.TLS.ClientScopes {
			p.scopes |= scopeNames[s]
		}
		cn := cert.Subject.CommonName
		for _, s := range g.cfg.TLS.PIISubjects {
			if s == cn {
				p.scopes |= scopeNames["pii"]
			}
		}
		for _, s := range g.cfg.TLS.AdminSubjects {
			if s == cn {
				p.scopes |= scopeNames["admin"]
			}
		}
		return p, nil
	}
	if g.open {
		return principal{name: "anonymous", scopes: scopeAll}, nil
	}
	return principal{name: "anonymous"}, nil
}

// routeRule is what a route requires.
type routeRule struct {
	scope scope
	// action names an admin action for the audit log.
	action string
	// limited routes count against api.admin_concurrency and
	// api.admin_rate.
	limited bool
	// maxBody bounds the request body; 0: defaultMaxBody.
	maxBody int64
}

// defaultMaxBody bounds the body of routes that take none.
const defaultMaxBody = 4 << 10

// routeRules maps a mux pattern to what it requires. A pattern missing
// here requires admin (fail closed).
var routeRules = map[string]routeRule{
	"GET /metrics":                      {scope: scopeRead},
	"GET /v1/rules":                     {scope: scopeRead},
	"GET /v1/segments":                  {scope: scopeRead},
	"GET /v1/segments/{id}/members":     {scope: scopeRead},
	"POST /v1/segments/{id}/export":     {scope: scopeRead},
	"GET /v1/customers/{id}":            {scope: scopeRead},
	"DELETE /v1/customers/{id}":         {scope: scopeAdmin, action: "erase"},
	"POST /v1/rules/reload":             {scope: scopeAdmin, action: "reload", limited: true},
	"POST /v1/rules/preview":            {scope: scopeAdmin, action: "preview", limited: true, maxBody: rules.MaxRulesBytes},
	"GET /v1/segments/{id}/members.csv": {}, // a signed link, checked by signedLink
}

// auth guards one route of the mux: it authenticates the request, checks
// the route's scope (routeRules), bounds its body, applies the admin
// limits and writes the audit log of admin actions.
func (s *Server) auth(h http.Handler) http.Handler {
	g := s.g
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rule, ok := routeRules[r.Pattern]
		if !ok {
			rule = routeRule{scope: scopeAdmin}
		}
		if r.Pattern == "GET /metrics" && g.cfg.Auth.Metrics != "read" {
			rule.scope = 0
		}
		p, err := g.authenticate(r)
		if rule.action != "" {
			sw := &statusWriter{ResponseWriter: w}
			w = sw
			defer func() { g.auditAction(r, rule.action, p, sw.code()) }()
		}
		if err != nil || p.scopes&rule.scope != rule.scope && !p.authenticated {
			g.refused.WithLabelValues("unauthenticated").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="segd"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		if p.scopes&rule.scope != rule.scope {
			g.refused.WithLabelValues("forbidden").Inc()
			writeError(w, http.StatusForbidden, fmt.Sprintf("the credential %q lacks the scope this needs", p.name))
			return
		}
		limit := rule.maxBody
		if limit == 0 {
			limit = defaultMaxBody
		}
		if r.ContentLength > limit {
			g.refused.WithLabelValues("too_large").Inc()
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", limit))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		if rule.limited {
			key := p.name
			if !p.authenticated {
				key = "addr:" + remoteHost(r)
			}
			if ok, wait := g.limiter.allow(key, time.Now()); !ok {
				g.refused.WithLabelValues("rate_limited").Inc()
				w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
				writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many previews and reloads from this client (api.admin_rate %d per minute)", g.cfg.AdminRate))
				return
			}
			select {
			case g.adminSem <- struct{}{}:
				defer func() { <-g.adminSem }()
			default:
				g.refused.WithLabelValues("busy").Inc()
				w.Header().Set("Retry-After", "1")
				writeError(w, http.StatusTooManyRequests, fmt.Sprintf("%d previews or reloads are running (api.admin_concurrency)", cap(g.adminSem)))
				return
			}
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// auditAction logs an admin action: who, what, the outcome.
func (g *apiGuard) auditAction(r *http.Request, action string, p principal, code int) {
	outcome := "ok"
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusTooManyRequests || code == http.StatusRequestEntityTooLarge:
		outcome = "refused"
	case code >= 400:
		outcome = "failed"
	}
	g.actions.WithLabelValues(action, outcome).Inc()
	ev := g.audit.Info()
	if outcome != "ok" {
		ev = g.audit.Warn()
	}
	ev = ev.Str("action", action).Str("who", p.name).Str("remote_addr", remoteHost(r)).Int("status", code).Str("outcome", outcome)
	if action == "erase" {
		ev = ev.Str("customer_id", r.PathValue("id"))
	}
	ev.Msg("admin action")
}

func remoteHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Content-Security-Policy of the page (no inline code, nothing from
// elsewhere, never in a frame) and of every other answer.
const (
	pageCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
		"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
	apiCSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
)

// protect wraps the whole API: security headers, the Host allow-list,
// CORS (only for api.cors_origins) and cross-site request forgery checks
// on every mutating request: a foreign Origin is refused, and a POST must
// carry a JSON or YAML body type, which a cross-site form or simple
// request cannot send without a CORS preflight.
func (s *Server) protect(h http.Handler) http.Handler {
	g := s.g
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("X-Frame-Options", "DENY")
		hdr.Set("Referrer-Policy", "no-referrer")
		if r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/ui/") {
			hdr.Set("Content-Security-Policy", pageCSP)
		} else {
			hdr.Set("Content-Security-Policy", apiCSP)
			hdr.Set("Cache-Control", "no-store")
		}
		if r.TLS != nil {
			hdr.Set("Strict-Transport-Security", "max-age=31536000")
		}
		if !g.hostAllowed(r) {
			g.refused.WithLabelValues("host").Inc()
			writeError(w, http.StatusMisdirectedRequest, "this Host is not served here (api.allowed_hosts)")
			return
		}
		origin := strings.ToLower(r.Header.Get("Origin"))
		corsOK := origin != "" && g.cors[origin]
		if corsOK {
			hdr.Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
			hdr.Add("Vary", "Origin")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				hdr.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
				hdr.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
				hdr.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions {
			if !corsOK && (origin != "" && !sameHost(origin, r.Host) || origin == "" && r.Header.Get("Sec-Fetch-Site") == "cross-site") {
				g.refused.WithLabelValues("origin").Inc()
				writeError(w, http.StatusForbidden, "cross-site request refused (api.cors_origins)")
				return
			}
			if r.Method == http.MethodPost && !jsonOrYAML(r.Header.Get("Content-Type")) {
				g.refused.WithLabelValues("content_type").Inc()
				writeError(w, http.StatusUnsupportedMediaType, "a POST needs Content-Type application/json or application/yaml")
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// hostAllowed checks r's Host against the allow-list.
func (g *apiGuard) hostAllowed(r *http.Request) bool {
	if g.hosts == nil || g.hosts["*"] {
		return true
	}
	if g.probesExempt && (r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics") {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	return g.hosts[host]
}

// sameHost tells whether an Origin names the host the request was sent
// to.
func sameHost(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
}

func jsonOrYAML(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	switch mt {
	case "application/json", "application/yaml", "application/x-yaml", "text/yaml":
		return true
	}
	return false
}

// rateLimiter is a token bucket per client: perMinute a minute, bursts of
// a third of it (at least 1).
type rateLimiter struct {
	mu      sync.Mutex
	rate    float64 // per second
	burst   float64
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(perMinute int) *rateLimiter {
	return &rateLimiter{rate: float64(perMinute) / 60, burst: math.Max(1, float64(perMinute/3)), buckets: map[string]*bucket{}}
}

// allow takes a token from key's bucket, or says how long until one is
// there.
func (l *rateLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= 10000 {
			// Forget full buckets: they would allow a burst anyway.
			for k, ob := range l.buckets {
				if ob.tokens+now.Sub(ob.last).Seconds()*l.rate >= l.burst {
					delete(l.buckets, k)
				}
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// maskedValue replaces trait and profile values for a caller without
// the pii scope.
const maskedValue = "***"

// maskPII replaces every value of the maps unless r's caller has the pii
// scope, and tells whether it did.
func maskPII(r *http.Request, maps ...map[string]any) bool {
	if requestPrincipal(r).scopes&scopePII != 0 {
		return false
	}
	for _, m := range maps {
		for k := range m {
			m[k] = maskedValue
		}
	}
	return true
}
