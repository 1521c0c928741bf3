package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/segd/segd/engine"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/segment"
)

// fakeEngine is an Engine of canned answers: the handler tests that test
// HTTP behaviour run against it, with no broker and no store.
type fakeEngine struct {
	mu        sync.Mutex
	status    engine.Status
	rs        *rules.RuleSet
	reloadErr error
	customers map[string]engine.CustomerView
	custErr   error
	sizes     []engine.SegmentSize
	members   map[string][]string
	preview   *engine.Preview
	// reload answers Reload; erase answers EraseCustomer.
	reload func() (*engine.ReloadResult, error)
	erase  error
	erased []string
	reg    *prometheus.Registry
}

const fakeRules = "version: 3\ntraits:\n  orders: count(purchase)\n  last_order_at: last(purchase.ts)\nsegments:\n  buyer: { when: \"orders >= 1\" }\n  vip: { when: \"orders >= 10\", description: big spenders }\n"

func newFakeEngine(t testing.TB) *fakeEngine {
	t.Helper()
	rs, err := rules.Compile("fake.yaml", []byte(fakeRules))
	if err != nil {
		t.Fatal(err)
	}
	segs := rs.Segments()
	return &fakeEngine{
		status: engine.Status{Ready: true, Restoring: -1, Lags: []engine.PartitionLag{{Partition: 0, Lag: 3}}},
		rs:     rs,
		customers: map[string]engine.CustomerView{"alice": {
			ID: "alice", Partition: 0, Clock: 1707566402000,
			Segments: []engine.Membership{{Segment: "buyer", EnteredAt: 1704103200000, Seq: 1}},
			Traits:   []engine.TraitValue{{Name: "orders", Value: schemas.Number(2)}, {Name: "last_order_at", Value: schemas.Number(1704103200000), Time: true}},
			Profile:  []schemas.Attribute{{Name: "email", Value: schemas.String("alice@example.com")}},
		}},
		sizes: []engine.SegmentSize{
			{Segment: segs[0], Size: 1, Enters1h: 3, Exits1h: 2, Enters24h: 3, Exits24h: 2},
			{Segment: segs[1], Size: 0},
		},
		members: map[string][]string{"buyer": {"alice"}},
		preview: &engine.Preview{Segments: []segment.PreviewSegment{{ID: "x", SizeNow: 0, SizeNew: 1, WouldEnter: 1, SampleEnter: []string{"alice"}}}},
		reload: func() (*engine.ReloadResult, error) {
			return &engine.ReloadResult{Version: 4, Hash: "h", Changes: 1}, nil
		},
		erase: engine.ErrNotRunning,
		reg:   prometheus.NewRegistry(),
	}
}

func (f *fakeEngine) Status() engine.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}
func (f *fakeEngine) Rules() *rules.RuleSet  { return f.rs }
func (f *fakeEngine) LastReloadError() error { return f.reloadErr }
func (f *fakeEngine) Customer(id string) (engine.CustomerView, bool, error) {
	if f.custErr != nil {
		return engine.CustomerView{}, false, f.custErr
	}
	c, ok := f.customers[id]
	return c, ok, nil
}
func (f *fakeEngine) SegmentSizes() ([]engine.SegmentSize, error) { return f.sizes, nil }
func (f *fakeEngine) Members(seg, cursor string, limit int) ([]string, string, error) {
	return f.members[seg], "", nil
}
func (f *fakeEngine) PreviewRules(*rules.RuleSet, int) (*engine.Preview, error) {
	return f.preview, nil
}
func (f *fakeEngine) Reload(context.Context) (*engine.ReloadResult, error) { return f.reload() }
func (f *fakeEngine) EraseCustomer(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.erase == nil {
		f.erased = append(f.erased, id)
	}
	return f.erase
}
func (f *fakeEngine) Registry() *prometheus.Registry             { return f.reg }
func (f *fakeEngine) RegisterMetrics(cs ...prometheus.Collector) { f.reg.MustRegister(cs...) }

// fakeServer is the API, with one token per scope, of a fake engine.
func fakeServer(t *testing.T) (*fakeEngine, http.Handler) {
	t.Helper()
	f := newFakeEngine(t)
	cfg := &engine.Config{}
	withTokens(cfg)
	cfg.EnsureDefaults()
	srv, err := New(f, &cfg.API, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return f, srv.Handler()
}

// serve sends one in-process request and decodes the JSON answer.
func serve(t *testing.T, h http.Handler, method, target, token, body string) (int, map[string]any) {
	t.Helper()
	req := apiRequest(method, target, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	if ct := rec.Header().Get("Content-Type"); ct == "application/json" {
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: bad JSON %q", method, target, rec.Body)
		}
	}
	if rec.Code >= 400 && out["error"] == nil && target != "/readyz" {
		t.Errorf("%s %s: %d without a JSON error", method, target, rec.Code)
	}
	return rec.Code, out
}

// TestHandlersOverAFakeEngine: the routes' answers (status codes, JSON,
// validation, masking, readiness) from the engine's read model, with a
// fake of the Engine interface: no broker, no store.
func TestHandlersOverAFakeEngine(t *testing.T) {
	f, h := fakeServer(t)
	cases := []struct {
		method, path, token, body string
		code                      int
		check                     func(map[string]any) bool
	}{
		{"GET", "/healthz", "", "", 200, nil},
		{"GET", "/readyz", "", "", 200, func(b map[string]any) bool { return b["status"] == "ready" }},
		{"GET", "/v1/rules", "", "", 401, nil},
		{"GET", "/v1/rules", readToken, "", 200, func(b map[string]any) bool {
			return b["version"] == 3.0 && b["segments"] == 2.0 && b["traits"] == 2.0 && b["file"] == "fake.yaml" && b["last_reload_error"] == nil
		}},
		{"GET", "/v1/customers/alice", piiToken, "", 200, func(b map[string]any) bool {
			segs := b["segments"].([]any)
			traits, profile := b["traits"].(map[string]any), b["profile"].(map[string]any)
			return len(segs) == 1 && segs[0].(map[string]any)["id"] == "buyer" && segs[0].(map[string]any)["entered_at"] == "2024-01-01T10:00:00Z" &&
				traits["orders"] == 2.0 && traits["last_order_at"] == "2024-01-01T10:00:00Z" && profile["email"] == "alice@example.com" &&
				b["clock"] == "2024-02-10T12:00:02Z" && b["masked"] == false
		}},
		{"GET", "/v1/customers/alice", readToken, "", 200, func(b map[string]any) bool {
			return b["masked"] == true && b["profile"].(map[string]any)["email"] == maskedValue && b["traits"].(map[string]any)["orders"] == maskedValue
		}},
		{"GET", "/v1/customers/nobody", readToken, "", 404, nil},
		{"GET", "/v1/segments", readToken, "", 200, func(b map[string]any) bool {
			segs := b["segments"].([]any)
			buyer, vip := segs[0].(map[string]any), segs[1].(map[string]any)
			return len(segs) == 2 && buyer["id"] == "buyer" && buyer["size"] == 1.0 && buyer["enters_1h"] == 3.0 && buyer["exits_24h"] == 2.0 &&
				vip["description"] == "big spenders" && vip["size"] == 0.0 && vip["when"] == "(orders >= 10)"
		}},
		{"GET", "/v1/segments/buyer/members", readToken, "", 200, func(b map[string]any) bool {
			m := b["members"].([]any)
			return len(m) == 1 && m[0] == "alice" && b["next_cursor"] == ""
		}},
		{"GET", "/v1/segments/vip/members", readToken, "", 200, func(b map[string]any) bool { return len(b["members"].([]any)) == 0 }},
		{"GET", "/v1/segments/nope/members", readToken, "", 404, nil},
		{"GET", "/v1/segments/buyer/members?limit=0", readToken, "", 400, nil},
		{"GET", "/v1/segments/buyer/members?limit=abc", readToken, "", 400, nil},
		{"GET", "/v1/segments/buyer/members?limit=100000", readToken, "", 400, nil},
		{"GET", "/v2/whatever", readToken, "", 404, nil},
		{"POST", "/v1/rules/preview?sample=5", adminToken, tinyRules, 200, func(b map[string]any) bool {
			s := b["segments"].([]any)[0].(map[string]any)
			return b["version"] == 1.0 && s["id"] == "x" && s["size_new"] == 1.0 && fmt.Sprint(s["sample_enter"]) == "[alice]" && fmt.Sprint(s["sample_exit"]) == "[]"
		}},
		{"POST", "/v1/rules/preview", adminToken, "version: 1\nsegments:\n  x: { when: \"nope > 1\" }\n", 400, func(b map[string]any) bool {
			return strings.Contains(fmt.Sprint(b["error"]), "request.yaml:3:")
		}},
		{"POST", "/v1/rules/preview?sample=1000", adminToken, tinyRules, 400, nil},
		{"POST", "/v1/rules/preview", "", tinyRules, 401, nil},
		{"POST", "/v1/rules/preview", adminToken, "", 400, nil},
		{"POST", "/v1/rules/reload", adminToken, "{}", 200, func(b map[string]any) bool { return b["version"] == 4.0 && b["changes"] == 1.0 }},
		{"DELETE", "/v1/customers/alice", adminToken, "", 503, func(b map[string]any) bool { return b["error"] == "not running" }},
	}
	for _, c := range cases {
		code, body := serve(t, h, c.method, c.path, c.token, c.body)
		if code != c.code || c.check != nil && !c.check(body) {
			t.Errorf("%s %s: %d %v, want %d", c.method, c.path, code, body, c.code)
		}
	}

	// Erasure goes to the engine; its failures are 503s that say why.
	f.erase = nil
	if code, body := serve(t, h, "DELETE", "/v1/customers/bob", adminToken, ""); code != 202 || body["status"] != "deletion requested" || len(f.erased) != 1 || f.erased[0] != "bob" {
		t.Errorf("erase: %d %v, erased %v", code, body, f.erased)
	}
	f.erase = errors.New("broker down")
	if code, body := serve(t, h, "DELETE", "/v1/customers/bob", adminToken, ""); code != 503 || !strings.Contains(fmt.Sprint(body["error"]), "cannot write the deletion request: broker down") {
		t.Errorf("erase failing: %d %v", code, body)
	}
	// A reload that does not compile: 422 with the engine's error.
	f.reload = func() (*engine.ReloadResult, error) {
		return nil, errors.New("rules.yaml:5:15: segment x: unknown trait \"m\"")
	}
	if code, body := serve(t, h, "POST", "/v1/rules/reload", adminToken, "{}"); code != 422 || !strings.Contains(fmt.Sprint(body["error"]), "rules.yaml:5:15") {
		t.Errorf("broken reload: %d %v", code, body)
	}
	f.reloadErr = errors.New("rules.yaml:3: broken")
	if _, body := serve(t, h, "GET", "/v1/rules", readToken, ""); body["last_reload_error"] != "rules.yaml:3: broken" {
		t.Errorf("last_reload_error: %v", body)
	}
	// Stored state that cannot be read or decoded.
	f.custErr = fmt.Errorf("%w: bad version byte", engine.ErrCorruptRecord)
	if code, body := serve(t, h, "GET", "/v1/customers/alice", readToken, ""); code != 500 || !strings.Contains(fmt.Sprint(body["error"]), "stored record cannot be decoded") {
		t.Errorf("corrupt record: %d %v", code, body)
	}
	f.custErr = errors.New("pebble: closed")
	if code, body := serve(t, h, "GET", "/v1/customers/alice", readToken, ""); code != 503 || body["error"] != "state unavailable: pebble: closed" {
		t.Errorf("store closed: %d %v", code, body)
	}
	// The API's own metrics are served with the engine's.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, apiRequest("GET", "/metrics", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "segd_api_tokens 3") {
		t.Errorf("/metrics: %d %s", rec.Code, rec.Body)
	}
}

// TestReadinessOverAFakeEngine: /readyz maps the engine's status to 503
// while not ready (saying why) and to 200 with the problems named while
// ready.
func TestReadinessOverAFakeEngine(t *testing.T) {
	f, h := fakeServer(t)
	since := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		status engine.Status
		code   int
		want   string
		keys   []string
	}{
		{engine.Status{Restoring: -1}, 503, "not ready: partitions not assigned yet (joining the consumer group or rebalancing)", nil},
		{engine.Status{Restoring: 2}, 503, "not ready: restoring partition 2 from the changelog", nil},
		{engine.Status{Ready: true, Restoring: -1, Lags: []engine.PartitionLag{{Partition: 0, Lag: 5}, {Partition: 1, Lag: 250000}}}, 503, "not ready: partition 1 is 250000 records behind (api.ready_max_lag 100000)", nil},
		{engine.Status{Ready: true, Restoring: -1, Lags: []engine.PartitionLag{{Partition: 0, Lag: 100000}}}, 200, "ready", nil},
		{engine.Status{Ready: true, Restoring: -1,
			PublishFailing: []engine.PublishFailure{{Partition: 3, Since: since, Error: "topic missing"}},
			DecodeWaiting:  []engine.DecodeWait{{Partition: 0, Topic: "t", Offset: 6, Since: since, Attempts: 5, Error: "registry down"}},
			DiskFullSince:  since,
		}, 200, "ready, but publishing fails; decoding waits for the schema registry; the state disk is full: partitions paused", []string{"publish_failing", "decode_waiting", "disk_full_since"}},
	}
	for _, c := range cases {
		f.mu.Lock()
		f.status = c.status
		f.mu.Unlock()
		code, body := serve(t, h, "GET", "/readyz", "", "")
		if code != c.code || body["status"] != c.want {
			t.Errorf("status %+v: %d %v, want %d %q", c.status, code, body, c.code, c.want)
		}
		for _, k := range c.keys {
			if body[k] == nil {
				t.Errorf("status %+v: the body lacks %s: %v", c.status, k, body)
			}
		}
	}
}
