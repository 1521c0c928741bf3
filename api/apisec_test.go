package api

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/segd/segd/engine"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/internal/segdtest"
	"github.com/segd/segd/rules"
)

// apiRequest is a request for calling the handler in process, as a
// same-origin client on loopback sends it: Host localhost, and a YAML
// body type on a POST.
func apiRequest(method, target string, body io.Reader) *http.Request {
	r := httptest.NewRequest(method, target, body)
	r.Host = "localhost"
	if method == http.MethodPost {
		r.Header.Set("Content-Type", "application/yaml")
	}
	return r
}

// tinyRules is a small valid rules file, for previews.
const tinyRules = "version: 1\ntraits:\n  n: count(purchase)\nsegments:\n  x: { when: \"n > 1\" }\n"

// Tokens of the tests: one per scope, named.
const (
	readToken  = "rd-0123456789abcdef0123"
	piiToken   = "pi-0123456789abcdef0123"
	adminToken = "ad-0123456789abcdef0123"
)

// withTokens configures one token per scope, inline.
func withTokens(c *engine.Config) {
	c.API.Auth.ReadTokens = []string{"dashboard:" + readToken}
	c.API.Auth.PIITokens = []string{"analyst:" + piiToken}
	c.API.Auth.AdminTokens = []string{"ops:" + adminToken}
}

// secServer is an engine with generated state whose API serves on a real
// loopback listener, as segd run serves it.
type secServer struct {
	eng  *engine.Engine
	srv  *Server
	cfg  *engine.Config
	base string // http://127.0.0.1:port
	logs *syncBuffer
	ids  []string // customers, in order of first appearance
}

func startSecServer(t *testing.T, configure func(*engine.Config)) *secServer {
	t.Helper()
	cfg := &engine.Config{}
	cfg.Kafka.Brokers = []string{"127.0.0.1:1"}
	cfg.Rules.File = "../examples/rules.yaml"
	cfg.State.Dir = filepath.Join(t.TempDir(), "state")
	cfg.API.Addr = "127.0.0.1:0"
	if configure != nil {
		configure(cfg)
	}
	cfg.EnsureDefaults()
	logs := &syncBuffer{}
	log := zerolog.New(logs).Level(zerolog.DebugLevel)
	eng, err := engine.New(cfg, engine.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	l, err := eng.OpenLocal(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ids := feedGenerated(t, l, gen.Config{Customers: 60, Duration: 2 * 86400_000, EventsPerHour: 60})
	srv, err := New(eng, &cfg.API, log)
	if err != nil {
		t.Fatal(err)
	}
	addr, stop, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	scheme := "http"
	if cfg.API.TLS.CertFile != "" {
		scheme = "https"
	}
	return &secServer{eng: eng, srv: srv, cfg: cfg, base: scheme + "://" + addr, logs: logs, ids: ids}
}

// call is one request to the server.
type call struct {
	method, path, token, body string
	header                    map[string]string
}

// do sends c with client (http.DefaultClient if nil) and returns the
// status, the headers and the body.
func (s *secServer) do(t *testing.T, client *http.Client, c call) (int, http.Header, string) {
	t.Helper()
	if c.method == "" {
		c.method = http.MethodGet
	}
	req, err := http.NewRequest(c.method, s.base+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.method == http.MethodPost {
		req.Header.Set("Content-Type", "application/yaml")
	}
	for k, v := range c.header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// profiled is a customer that has profile attributes.
func (s *secServer) profiled(t *testing.T) string {
	t.Helper()
	for _, id := range s.ids {
		var c struct {
			Profile map[string]any `json:"profile"`
		}
		rec := httptest.NewRecorder()
		req := apiRequest(http.MethodGet, "/v1/customers/"+id, nil)
		req.SetPathValue("id", id)
		req = req.WithContext(context.WithValue(req.Context(), principalKey{}, principal{scopes: scopeAll}))
		s.srv.getCustomer(rec, req)
		if json.Unmarshal(rec.Body.Bytes(), &c) == nil && len(c.Profile) > 0 {
			return id
		}
	}
	t.Fatal("no generated customer has a profile")
	return ""
}

// TestAPIScopes: with tokens configured, nothing but health, readiness,
// metrics and the page answers without one (the issue: anyone read PII
// and erased customers), each scope gets exactly its routes, and profile
// values are masked without the pii scope.
func TestAPIScopes(t *testing.T) {
	s := startSecServer(t, withTokens)
	id := s.profiled(t)
	cases := []struct {
		c    call
		want int
	}{
		{call{path: "/healthz"}, 200},
		{call{path: "/readyz"}, 503}, // a Local engine is never ready; it answers anyway
		{call{path: "/metrics"}, 200},
		{call{path: "/"}, 200},
		{call{path: "/v1/customers/" + id}, 401},
		{call{path: "/v1/segments"}, 401},
		{call{path: "/v1/segments/vip/members"}, 401},
		{call{method: "DELETE", path: "/v1/customers/" + id}, 401},
		{call{method: "POST", path: "/v1/rules/reload", body: "{}"}, 401},
		{call{method: "POST", path: "/v1/rules/preview", body: tinyRules}, 401},
		{call{path: "/v1/segments", token: "not-a-token-0123456789"}, 401},
		{call{path: "/v1/segments", token: readToken}, 200},
		{call{path: "/v1/rules", token: readToken}, 200},
		{call{path: "/v1/segments/vip/members", token: readToken}, 200},
		{call{path: "/v1/customers/" + id, token: readToken}, 200},
		{call{method: "DELETE", path: "/v1/customers/" + id, token: readToken}, 403},
		{call{method: "DELETE", path: "/v1/customers/" + id, token: piiToken}, 403},
		{call{method: "POST", path: "/v1/rules/preview", token: readToken, body: tinyRules}, 403},
		{call{method: "POST", path: "/v1/rules/reload", token: piiToken, body: "{}"}, 403},
		{call{method: "POST", path: "/v1/rules/preview", token: adminToken, body: tinyRules}, 200},
		// Past auth: a Local engine has no producer to write the tombstone.
		{call{method: "DELETE", path: "/v1/customers/" + id, token: adminToken}, 503},
	}
	for _, c := range cases {
		if code, _, body := s.do(t, nil, c.c); code != c.want {
			t.Errorf("%s %s (token %q): %d %s, want %d", c.c.method, c.c.path, c.c.token, code, body, c.want)
		}
	}
	profile := func(token string) (map[string]any, map[string]any, bool) {
		t.Helper()
		code, _, body := s.do(t, nil, call{path: "/v1/customers/" + id, token: token})
		var c struct {
			Profile, Traits map[string]any
			Masked          bool
		}
		if code != 200 || json.Unmarshal([]byte(body), &c) != nil {
			t.Fatalf("customer: %d %s", code, body)
		}
		return c.Profile, c.Traits, c.Masked
	}
	for _, tok := range []string{readToken, adminToken} {
		p, tr, masked := profile(tok)
		if !masked || len(p) == 0 {
			t.Errorf("without pii: masked %v, profile %v", masked, p)
		}
		for k, v := range p {
			if v != maskedValue {
				t.Errorf("without pii the profile shows %s=%v", k, v)
			}
		}
		for k, v := range tr {
			if v != maskedValue {
				t.Errorf("without pii the traits show %s=%v", k, v)
			}
		}
	}
	p, _, masked := profile(piiToken)
	unmasked := 0
	for _, v := range p {
		if v != maskedValue {
			unmasked++
		}
	}
	if masked || unmasked == 0 {
		t.Errorf("with pii: masked %v, profile %v", masked, p)
	}
}

// TestAPIHostAllowList: on loopback the API answers loopback Host names
// only (DNS rebinding: a page of rebind.evil.example resolved to
// 127.0.0.1 sends its own name); beyond loopback a configured list holds,
// but probes and scrapes with the pod IP as Host get through.
func TestAPIHostAllowList(t *testing.T) {
	s := startSecServer(t, nil) // loopback, no credentials: the default
	id := s.ids[0]
	for host, want := range map[string]int{"rebind.evil.example": 421, "rebind.evil.example:80": 421, "localhost": 200, "127.0.0.1": 200, "[::1]:8080": 200, "LOCALHOST.": 200} {
		if code, _, body := s.do(t, nil, call{path: "/v1/customers/" + id, header: map[string]string{"Host": host}}); code != want {
			t.Errorf("Host %s: %d %s, want %d", host, code, body, want)
		}
	}
	if code, _, _ := s.do(t, nil, call{path: "/healthz", header: map[string]string{"Host": "rebind.evil.example"}}); code != 421 {
		t.Errorf("/healthz with a foreign Host on loopback: %d, want 421", code)
	}

	// Beyond loopback (the handler of a pod's config, on a test listener).
	_, api, _ := localServerWith(t, func(c *engine.Config) {
		c.API.Addr = "0.0.0.0:8080"
		c.API.AllowedHosts = []string{"segd.example"}
		withTokens(c)
	})
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	get := func(path, host string) int {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+readToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		path, host string
		want       int
	}{{"/healthz", "10.1.2.3:8080", 200}, {"/metrics", "10.1.2.3:8080", 200}, {"/readyz", "10.1.2.3:8080", 503},
		{"/v1/segments", "10.1.2.3:8080", 421}, {"/v1/segments", "segd.example:8080", 200}} {
		if got := get(c.path, c.host); got != c.want {
			t.Errorf("non-loopback %s Host %s: %d, want %d", c.path, c.host, got, c.want)
		}
	}
}

// TestAPICrossSiteRequestsRefused: a cross-site simple POST (text/plain,
// a form) or one with a foreign Origin changes nothing (the issue: reload
// and preview answered 200); no CORS headers unless configured; the page
// carries its security headers.
func TestAPICrossSiteRequestsRefused(t *testing.T) {
	s := startSecServer(t, func(c *engine.Config) { c.API.CORSOrigins = []string{"https://console.example"} })
	evil := "https://evil.example"
	cases := []struct {
		c    call
		want int
	}{
		{call{method: "POST", path: "/v1/rules/reload", header: map[string]string{"Content-Type": "text/plain", "Origin": evil}}, 403},
		{call{method: "POST", path: "/v1/rules/preview", body: tinyRules, header: map[string]string{"Content-Type": "text/plain", "Origin": evil}}, 403},
		{call{method: "POST", path: "/v1/rules/preview", body: tinyRules, header: map[string]string{"Content-Type": "text/plain"}}, 415},
		{call{method: "POST", path: "/v1/rules/reload", body: "a=b", header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, 415},
		{call{method: "POST", path: "/v1/rules/reload", header: map[string]string{"Content-Type": "multipart/form-data; boundary=x"}}, 415},
		{call{method: "POST", path: "/v1/rules/preview", body: tinyRules, header: map[string]string{"Content-Type": "application/json", "Origin": evil}}, 403},
		{call{method: "POST", path: "/v1/rules/preview", body: tinyRules, header: map[string]string{"Sec-Fetch-Site": "cross-site"}}, 403},
		{call{method: "DELETE", path: "/v1/customers/" + s.ids[0], header: map[string]string{"Origin": evil}}, 403},
		{call{method: "POST", path: "/v1/rules/preview", body: tinyRules, header: map[string]string{"Origin": "https://console.example"}}, 200},
	}
	for _, c := range cases {
		if code, _, body := s.do(t, nil, c.c); code != c.want {
			t.Errorf("%s %s %v: %d %s, want %d", c.c.method, c.c.path, c.c.header, code, body, c.want)
		}
	}
	// Same origin: the page's own requests pass.
	code, _, body := s.do(t, nil, call{method: "POST", path: "/v1/rules/preview", body: tinyRules, header: map[string]string{"Origin": s.base}})
	if code != 200 {
		t.Errorf("same-origin preview: %d %s", code, body)
	}
	_, h, _ := s.do(t, nil, call{path: "/v1/segments", header: map[string]string{"Origin": evil}})
	if h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS header for a foreign origin: %q", h.Get("Access-Control-Allow-Origin"))
	}
	code, h, _ = s.do(t, nil, call{method: "OPTIONS", path: "/v1/rules/preview", header: map[string]string{"Origin": "https://console.example", "Access-Control-Request-Method": "POST"}})
	if code != 204 || h.Get("Access-Control-Allow-Origin") != "https://console.example" || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight of a configured origin: %d %v", code, h)
	}
	_, h, _ = s.do(t, nil, call{path: "/"})
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "script-src 'self'") || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("page headers: %v", h)
	}
	_, h, _ = s.do(t, nil, call{path: "/v1/segments"})
	if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Cache-Control") != "no-store" {
		t.Errorf("API headers: %v", h)
	}
}

// TestAPISlowBodyCutOff: a client that trickles a request body is cut off
// after api.read_timeout (the issue: it held a connection and a goroutine
// for ever).
func TestAPISlowBodyCutOff(t *testing.T) {
	s := startSecServer(t, func(c *engine.Config) { c.API.ReadTimeout = 500 * time.Millisecond })
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/rules/preview HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/yaml\r\nContent-Length: 100000\r\n\r\nversion: 1\n")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := conn.Write([]byte("#")); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	// A response and the close, or a reset (the server closes with body
	// bytes unread): either way the connection is cut, which is the point.
	_, err = io.ReadAll(conn)
	if took := time.Since(start); took > 5*time.Second || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("the trickling connection lasted %s (%v); api.read_timeout is 500ms", took, err)
	}
}

// TestAPIBodyLimits: bodies over the route's limit get 413, before or
// while they are read, and a rules file over a compile limit too.
func TestAPIBodyLimits(t *testing.T) {
	s := startSecServer(t, nil)
	big := strings.Repeat("#", rules.MaxRulesBytes+1)
	if code, _, body := s.do(t, nil, call{method: "POST", path: "/v1/rules/preview", body: big}); code != 413 {
		t.Errorf("preview of %d bytes: %d %s", len(big), code, body)
	}
	// No Content-Length: cut off while read.
	req, _ := http.NewRequest(http.MethodPost, s.base+"/v1/rules/preview", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("chunked preview of %d bytes: %d", len(big), resp.StatusCode)
	}
	if code, _, body := s.do(t, nil, call{method: "POST", path: "/v1/rules/reload", body: strings.Repeat("x", 64<<10)}); code != 413 {
		t.Errorf("reload with a 64 KiB body: %d %s", code, body)
	}
	deep := "version: 1\nsegments:\n  x:\n    when: \"" + strings.Repeat("(", rules.MaxExprDepth+5) + "1 > 0" + strings.Repeat(")", rules.MaxExprDepth+5) + "\"\n"
	if code, _, body := s.do(t, nil, call{method: "POST", path: "/v1/rules/preview", body: deep}); code != 413 {
		t.Errorf("preview nested past rules.MaxExprDepth: %d %s", code, body)
	}
}

// TestAPIPreviewFlood: previews past a client's rate, or past the
// concurrency limit, get 429 with Retry-After; other clients go on.
func TestAPIPreviewFlood(t *testing.T) {
	s := startSecServer(t, func(c *engine.Config) {
		withTokens(c)
		c.API.Auth.AdminTokens = append(c.API.Auth.AdminTokens, "other:"+adminToken+"x")
		c.API.AdminRate = 6 // bursts of 2
	})
	var mu sync.Mutex
	codes := map[int]int{}
	retryAfter := ""
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, h, _ := s.do(t, nil, call{method: "POST", path: "/v1/rules/preview", body: tinyRules, token: adminToken})
			mu.Lock()
			defer mu.Unlock()
			codes[code]++
			if code == 429 {
				retryAfter = h.Get("Retry-After")
			}
		}()
	}
	wg.Wait()
	if codes[200] < 1 || codes[200] > 2 || codes[429] < 18 || codes[200]+codes[429] != 20 {
		t.Errorf("a flood of 20 previews: %v, want at most 2 answered and the rest 429", codes)
	}
	if n, err := strconv.Atoi(retryAfter); err != nil || n < 1 {
		t.Errorf("Retry-After %q", retryAfter)
	}
	if code, _, body := s.do(t, nil, call{method: "POST", path: "/v1/rules/preview", body: tinyRules, token: adminToken + "x"}); code != 200 {
		t.Errorf("another client during the flood: %d %s", code, body)
	}
	// Every slot taken: 429 at once, whoever asks.
	for range cap(s.srv.g.adminSem) {
		s.srv.g.adminSem <- struct{}{}
	}
	s.srv.g.limiter = newRateLimiter(100000)
	code, h, _ := s.do(t, nil, call{method: "POST", path: "/v1/rules/reload", body: "{}", token: adminToken + "x"})
	if code != 429 || h.Get("Retry-After") != "1" {
		t.Errorf("a reload while previews run (api.admin_concurrency): %d Retry-After %q", code, h.Get("Retry-After"))
	}
	if !strings.Contains(s.logs.String(), `"action":"preview","who":"ops"`) || !strings.Contains(s.logs.String(), `"outcome":"refused"`) {
		t.Errorf("the refused previews are not in the audit log")
	}
}

// TestAPITokenRotation: tokens in files rotate without a restart, on a
// change of the file and on SIGHUP (Server.ReloadCredentials); a broken file
// keeps the previous tokens.
func TestAPITokenRotation(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "read")
	const oldTok, newTok = "old-token-0123456789abcdef", "new-token-0123456789abcdef"
	write := func(s string) {
		t.Helper()
		// As a Kubernetes Secret update does: a new file renamed over.
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	write("# rotated by the test\nold:" + oldTok + "\n")
	s := startSecServer(t, func(c *engine.Config) {
		c.API.Auth.ReadTokensFile = file
		c.API.Auth.WatchInterval = 20 * time.Millisecond
	})
	status := func(tok string) int {
		code, _, _ := s.do(t, nil, call{path: "/v1/segments", token: tok})
		return code
	}
	if status(oldTok) != 200 || status(newTok) != 401 || status("") != 401 {
		t.Fatalf("before rotation: old %d, new %d, none %d", status(oldTok), status(newTok), status(""))
	}
	write("old:" + oldTok + "\nnew:" + newTok + "\n")
	waitFor(t, 5*time.Second, "the new token accepted", func() bool { return status(newTok) == 200 })
	if status(oldTok) != 200 {
		t.Fatal("the old token stopped working while both are listed")
	}
	write("new:" + newTok + "\n")
	waitFor(t, 5*time.Second, "the old token refused", func() bool { return status(oldTok) == 401 })
	write("new:short\n")
	waitFor(t, 5*time.Second, "the broken file logged", func() bool {
		return strings.Contains(s.logs.String(), "api.auth.read_tokens_file "+file+" line 1 (new): a token must be at least 16 characters")
	})
	if status(newTok) != 200 {
		t.Fatal("a broken token file dropped the running tokens")
	}

	// SIGHUP: segd run calls Server.ReloadCredentials; the file is read at
	// once, whenever the watcher would next look.
	write("hup:" + oldTok + "\n")
	if err := s.srv.ReloadCredentials(); err != nil {
		t.Fatal(err)
	}
	if status(oldTok) != 200 || status(newTok) != 401 {
		t.Fatalf("after ReloadCredentials: old %d new %d", status(oldTok), status(newTok))
	}
	for _, tok := range []string{oldTok, newTok} {
		if strings.Contains(s.logs.String(), tok) {
			t.Fatal("a token reached the log")
		}
	}
}

// TestAPITLSAndClientCertificates: the API serves HTTPS with the
// configured certificate, reloads a renewed one without a restart, and
// authenticates client certificates of the configured CA with their
// scopes; a certificate of another CA does not get in.
func TestAPITLSAndClientCertificates(t *testing.T) {
	dir := t.TempDir()
	pki := segdtest.NewPKI(t, dir, "segd-test")
	certFile, keyFile, _ := pki.Issue("segd-server", true)
	_, _, etl := pki.Issue("etl", false)
	_, _, ops := pki.Issue("ops-bot", false)
	_, _, stranger := segdtest.NewPKI(t, dir, "other").Issue("stranger", false)
	s := startSecServer(t, func(c *engine.Config) {
		withTokens(c)
		c.API.TLS.CertFile, c.API.TLS.KeyFile, c.API.TLS.ClientCAFile = certFile, keyFile, pki.CAFile
		c.API.TLS.AdminSubjects = []string{"ops-bot"}
		c.API.Auth.WatchInterval = 20 * time.Millisecond
	})
	roots := pki.Roots()
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}}
	}
	if !strings.HasPrefix(s.base, "https://") {
		t.Fatal(s.base)
	}
	cases := []struct {
		name   string
		client *http.Client
		c      call
		want   int
	}{
		{"no credential", client(), call{path: "/v1/segments"}, 401},
		{"token over TLS", client(), call{path: "/v1/segments", token: readToken}, 200},
		{"client certificate", client(etl), call{path: "/v1/segments"}, 200},
		{"client certificate, admin route", client(etl), call{method: "POST", path: "/v1/rules/preview", body: tinyRules}, 403},
		{"admin subject", client(ops), call{method: "POST", path: "/v1/rules/preview", body: tinyRules}, 200},
	}
	for _, c := range cases {
		if code, _, body := s.do(t, c.client, c.c); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.want)
		}
	}
	if !strings.Contains(s.logs.String(), `"who":"cert:CN=ops-bot,O=segd test"`) {
		t.Error("the audit log does not name the client certificate's subject")
	}
	// Sent even though the server asks for its CA's certificates only.
	forced := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &stranger, nil }}}}
	if resp, err := forced.Get(s.base + "/v1/segments"); err == nil {
		resp.Body.Close()
		t.Errorf("a client certificate of another CA: %d, want a failed handshake", resp.StatusCode)
	}
	plain, err := http.Get("http://" + strings.TrimPrefix(s.base, "https://") + "/v1/segments")
	if err == nil {
		plain.Body.Close()
		if plain.StatusCode != 400 {
			t.Errorf("plain HTTP to the TLS port: %d", plain.StatusCode)
		}
	}

	// Renewal: a new certificate in the files is served without a restart.
	serial := func() int64 {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(s.base, "https://"), &tls.Config{RootCAs: roots})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	before := serial()
	pki.Issue("segd-server", true)
	waitFor(t, 5*time.Second, "the renewed certificate served", func() bool { return serial() != before })
}

// TestAPIRequireClientCertificate: with client_auth require, a
// connection without a certificate fails; client certificates count as
// credentials for a non-loopback address.
func TestAPIRequireClientCertificate(t *testing.T) {
	dir := t.TempDir()
	pki := segdtest.NewPKI(t, dir, "segd-test")
	certFile, keyFile, _ := pki.Issue("segd-server", true)
	_, _, etl := pki.Issue("etl", false)
	s := startSecServer(t, func(c *engine.Config) {
		c.API.TLS.CertFile, c.API.TLS.KeyFile, c.API.TLS.ClientCAFile, c.API.TLS.ClientAuth = certFile, keyFile, pki.CAFile, "require"
	})
	roots := pki.Roots()
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	if resp, err := noCert.Get(s.base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("no client certificate: %d, want a failed handshake", resp.StatusCode)
	}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{etl}}}}
	if code, _, body := s.do(t, withCert, call{path: "/v1/segments"}); code != 200 {
		t.Errorf("client certificate: %d %s", code, body)
	}
	cfg := engine.Config{}
	cfg.API.Addr = "0.0.0.0:8080"
	cfg.API.TLS = s.cfg.API.TLS
	cfg.EnsureDefaults()
	if !cfg.API.HasCredentials() {
		t.Error("client certificates do not count as credentials")
	}
}

// TestAPIListenRefusesUnsafeAddr: the API's listener refuses a
// non-loopback api.addr with no credentials on its own (the config check
// is engine.TestUnsafeConfigsRefused), and with the explicit opt-out it
// listens and logs it loudly.
func TestAPIListenRefusesUnsafeAddr(t *testing.T) {
	eng, _, c := localEngineWith(t, func(c *engine.Config) { c.API.Addr = "0.0.0.0:0" })
	srv, err := New(eng, &c.API, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.Listen(); err == nil || !strings.Contains(err.Error(), "api.addr") {
		t.Errorf("Listen on 0.0.0.0 without credentials: %v", err)
	}
	logs := &syncBuffer{}
	full := engine.Config{API: engine.APIConfig{Addr: "0.0.0.0:0", InsecureAllowUnauthenticated: true}}
	full.EnsureDefaults()
	srv, err = New(newFakeEngine(t), &full.API, zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	_, stop, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if want := `"level":"warn","component":"api","addr":"0.0.0.0:0","message":"INSECURE: the API answers anyone`; !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %s:\n%s", want, logs)
	}
}

// TestAPIExportLink: a member export is a short-lived signed link issued
// to an authenticated request: the download needs no token in its URL,
// and a tampered or expired link is refused.
func TestAPIExportLink(t *testing.T) {
	s := startSecServer(t, withTokens)
	seg := ""
	var want int64
	sizes, err := s.eng.SegmentSizes()
	if err != nil {
		t.Fatal(err)
	}
	for _, sz := range sizes {
		if sz.Size > 0 {
			seg, want = sz.Segment.ID, sz.Size
			break
		}
	}
	if seg == "" {
		t.Fatal("no segment has members")
	}
	if code, _, _ := s.do(t, nil, call{method: "POST", path: "/v1/segments/" + seg + "/export", body: "{}"}); code != 401 {
		t.Errorf("export without a token: %d", code)
	}
	code, _, body := s.do(t, nil, call{method: "POST", path: "/v1/segments/" + seg + "/export", body: "{}", token: readToken})
	var link struct{ URL, ExpiresAt string }
	if code != 200 || json.Unmarshal([]byte(body), &link) != nil || !strings.HasPrefix(link.URL, "/v1/segments/"+seg+"/members.csv?") {
		t.Fatalf("export: %d %s", code, body)
	}
	if strings.Contains(link.URL, readToken) {
		t.Fatal("the link carries the token")
	}
	code, h, csvBody := s.do(t, nil, call{path: link.URL})
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/csv") || !strings.Contains(h.Get("Content-Disposition"), "attachment") {
		t.Fatalf("download: %d %v", code, h)
	}
	lines := strings.Split(strings.TrimSpace(csvBody), "\n")
	if lines[0] != "customer_id" || int64(len(lines)-1) != want {
		t.Errorf("the CSV has %d ids, the segment %d members", len(lines)-1, want)
	}
	tampered := strings.Replace(link.URL, "/"+seg+"/", "/vip/", 1)
	if seg == "vip" {
		tampered = strings.Replace(link.URL, "/vip/", "/lapsed/", 1)
	}
	past := time.Now().Add(-time.Minute).Unix()
	expired := fmt.Sprintf("/v1/segments/%s/members.csv?expires=%d&sig=%s", seg, past, s.srv.g.linkSig(seg, past))
	for _, u := range []string{tampered, expired, "/v1/segments/" + seg + "/members.csv", link.URL + "x"} {
		if code, _, _ := s.do(t, nil, call{path: u}); code != 403 {
			t.Errorf("%s: %d, want 403", u, code)
		}
	}
}

// TestAPINoSecretsInLogsOrAnswers: tokens, right or wrong, never appear in
// the log or in any answer; the audit log names who did what.
func TestAPINoSecretsInLogsOrAnswers(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "admin")
	const fileTok = "file-token-0123456789abcdef"
	os.WriteFile(file, []byte("robot:"+fileTok+"\n"), 0o600)
	s := startSecServer(t, func(c *engine.Config) {
		withTokens(c)
		c.API.Token = "legacy-token-0123456789"
		c.API.Auth.AdminTokensFile = file
		c.Log.Level = "debug"
	})
	secrets := []string{readToken, piiToken, adminToken, fileTok, "legacy-token-0123456789", "wrong-token-0123456789abc"}
	var answers strings.Builder
	for _, tok := range secrets {
		for _, c := range []call{
			{path: "/v1/segments", token: tok},
			{path: "/v1/customers/" + s.ids[0], token: tok},
			{path: "/v1/customers/" + s.ids[0] + "?token=" + tok, token: tok},
			{method: "POST", path: "/v1/rules/preview", body: tinyRules, token: tok},
			{method: "POST", path: "/v1/rules/reload", body: "{}", token: tok},
			{method: "DELETE", path: "/v1/customers/" + s.ids[1], token: tok},
			{method: "POST", path: "/v1/segments/vip/export", body: "{}", token: tok},
			{path: "/metrics", token: tok},
		} {
			code, h, body := s.do(t, nil, c)
			fmt.Fprintf(&answers, "%d %v %s\n", code, h, strings.ReplaceAll(body, tok, "<echoed in the query>"))
		}
	}
	// A token file that does not parse is logged without its contents.
	os.WriteFile(file, []byte("robot:"+fileTok+" trailing\n"), 0o600)
	err := s.srv.ReloadCredentials()
	if err == nil {
		t.Fatal("a token file with a space in a token loaded")
	}
	s.srv.log.Error().Err(err).Msg("reload")
	logs := s.logs.String()
	if !strings.Contains(logs, `"component":"audit","action":"erase","who":"ops"`) || !strings.Contains(logs, `"action":"reload","who":"api.token"`) ||
		!strings.Contains(logs, `"action":"preview","who":"robot"`) || !strings.Contains(logs, `"action":"erase","who":"dashboard"`) {
		t.Errorf("the audit log lacks actions:\n%s", logs)
	}
	for _, tok := range secrets {
		if strings.Contains(logs, tok) {
			t.Errorf("the log carries a token (%s...)", tok[:4])
		}
		if strings.Contains(answers.String(), tok) || strings.Contains(err.Error(), tok) {
			t.Errorf("an answer carries a token (%s...)", tok[:4])
		}
	}
	// Counted in metrics.
	code, _, metrics := s.do(t, nil, call{path: "/metrics"})
	if code != 200 || !strings.Contains(metrics, `segd_api_admin_actions_total{action="erase",outcome="refused"}`) || !strings.Contains(metrics, `segd_api_refused_total{reason="unauthenticated"}`) {
		t.Errorf("admin actions are not counted:\n%s", grepLines(metrics, "segd_api_"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			out = append(out, sc.Text())
		}
	}
	return strings.Join(out, "\n")
}
