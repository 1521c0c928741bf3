package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/schemas"
)

// realRegistry returns the directory and URL of the schema registry that
// `make test-registry` (deploy/registry/with-registry.sh) started. Without
// one the test skips, unless SEGD_REQUIRE_REGISTRY is set (make test and
// make test-registry set it): then it fails.
func realRegistry(t *testing.T) (dir, url string) {
	t.Helper()
	dir = os.Getenv("SEGD_REGISTRY_DIR")
	if dir == "" {
		if os.Getenv("SEGD_REQUIRE_REGISTRY") != "" {
			t.Fatal("SEGD_REQUIRE_REGISTRY is set but SEGD_REGISTRY_DIR is not: run the tests through deploy/registry/with-registry.sh (make test-registry)")
		}
		t.Skip("needs a real schema registry: make test-registry starts one (Apicurio Registry) and sets SEGD_REGISTRY_DIR")
	}
	b, err := os.ReadFile(filepath.Join(dir, "url"))
	if err != nil {
		t.Fatalf("SEGD_REGISTRY_DIR %s: %v", dir, err)
	}
	return dir, strings.TrimSpace(string(b))
}

// registryScript runs deploy/registry/registry.sh CMD DIR.
func registryScript(t *testing.T, cmd, dir string) {
	t.Helper()
	out, err := exec.Command("../deploy/registry/registry.sh", cmd, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("registry.sh %s: %v\n%s", cmd, err, out)
	}
	t.Logf("registry.sh %s: %s", cmd, bytes.TrimSpace(out))
}

// registryCall sends body (JSON, or nothing) to the registry and returns
// the status and answer.
func registryCall(t *testing.T, method, url string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// registerSchema registers schema under subject and returns its id.
func registerSchema(t *testing.T, url, subject, schema string) uint32 {
	t.Helper()
	code, out := registryCall(t, http.MethodPost, url+"/subjects/"+subject+"/versions", map[string]string{"schema": schema})
	var res struct {
		ID uint32 `json:"id"`
	}
	if code != http.StatusOK || json.Unmarshal(out, &res) != nil || res.ID == 0 {
		t.Fatalf("register %s: %d %s", subject, code, out)
	}
	return res.ID
}

// TestRealRegistryEndToEnd runs Confluent-framed Avro through a real schema
// registry (Apicurio Registry, its Confluent-compatible API) into a real
// engine over the embedded broker: schemas registered with compatibility
// NONE; records written with the reader's own schema, an older writer
// schema (no currency, no quantity: the reader's defaults EUR and 0 are
// applied), a newer one (an added coupon field: ignored); an unknown id
// (one unknown_schema_id dead letter) and a writer without amount (one
// incompatible_schema dead letter). Then the registry is SIGKILLed while
// records with a registered but never fetched schema id arrive: nothing is
// dead-lettered, the partitions wait (readyz, metrics), and once the
// registry is started again (same storage: ids kept) every record is
// applied exactly once.
func TestRealRegistryEndToEnd(t *testing.T) {
	dir, url := realRegistry(t)
	// Apicurio's default compatibility is NONE (Confluent's BACKWARD); say
	// so explicitly. Apicurio answers a PUT of NONE on a registry without
	// a compatibility rule with 404 ("no rule"), so GET /config decides.
	if code, out := registryCall(t, http.MethodPut, url+"/config", map[string]string{"compatibility": "NONE"}); code != http.StatusOK && code != http.StatusNotFound {
		t.Fatalf("PUT /config: %d %s", code, out)
	}
	if code, out := registryCall(t, http.MethodGet, url+"/config", nil); code != http.StatusOK || !strings.Contains(string(out), `"NONE"`) {
		t.Fatalf("GET /config: %d %s, want compatibility NONE", code, out)
	}

	// The reader: segd's purchase schema with currency defaulting to EUR,
	// so a default shows in the traits (segd's own defaults are zeros).
	base := schemas.SchemaText(schemas.EventPurchase)
	reader := strings.Replace(base, `{"name": "currency", "type": "string", "default": ""`, `{"name": "currency", "type": "string", "default": "EUR"`, 1)
	if reader == base {
		t.Fatal("purchase.avsc changed: no currency field with an empty default")
	}
	readerFile := filepath.Join(t.TempDir(), "purchase-reader.avsc")
	if err := os.WriteFile(readerFile, []byte(reader), 0o644); err != nil {
		t.Fatal(err)
	}
	older := schemaWithout(t, reader, "currency", "quantity")
	newer := schemaWith(t, reader, map[string]any{"name": "coupon", "type": "string", "default": ""})
	noAmount := schemaWithout(t, reader, "amount")
	newest := schemaWith(t, reader, map[string]any{"name": "gift_wrap", "type": "boolean", "default": false})

	run := time.Now().UnixNano()
	subject := fmt.Sprintf("rr%d.purchases-value", run)
	idReader := registerSchema(t, url, subject, reader)
	idOlder := registerSchema(t, url, subject, older)
	idNewer := registerSchema(t, url, subject, newer)
	idNoAmount := registerSchema(t, url, subject, noAmount)
	const unknownID = 999_999
	t.Logf("schema ids: reader %d, older %d, newer %d, no amount %d", idReader, idOlder, idNewer, idNoAmount)

	prefix := fmt.Sprintf("rr%d.", run)
	ts := topicSet{prefix + "purchases", prefix + "browses", prefix + "engagements", prefix + "profiles", prefix + "changes", prefix + "deadletter"}
	const partitions = 2
	broker, err := connectors.StartEmbeddedBroker(0, partitions, ts[:]...)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	prod, err := connectors.NewProducer(broker.Addrs(), connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	at := time.UnixMilli(1_700_000_000_000)
	seq := 0
	sent := map[string]int{} // good records per customer
	send := func(customer string, id uint32, writer string, edit func(map[string]any)) {
		t.Helper()
		seq++
		rec := purchaseRecord(fmt.Sprintf("%s-%d", customer, seq), customer, at.Add(time.Duration(seq)*time.Second), 10)
		if edit != nil {
			edit(rec)
		}
		v := confluentPurchase(t, id, writer, rec)
		if err := prod.Write(context.Background(), connectors.Message{Topic: ts[0], Key: []byte(customer), Value: v, Time: at}); err != nil {
			t.Fatal(err)
		}
	}
	drop := func(names ...string) func(map[string]any) {
		return func(r map[string]any) {
			for _, n := range names {
				delete(r, n)
			}
		}
	}

	cfg := registryTestConfig(t, broker.Addrs(), ts, url, readerFile)
	eng := startTopicSetEngine(t, cfg)
	waitFor(t, 30*time.Second, "ready", eng.ready.Load)

	// alice: the reader's schema (GBP, 1 item each). bob: the older writer
	// (EUR and 0 items, from the reader's defaults). carol: the newer one.
	for i := 0; i < 3; i++ {
		send("alice", idReader, reader, nil)
		send("bob", idOlder, older, drop("currency", "quantity"))
		send("carol", idNewer, newer, func(r map[string]any) { r["coupon"] = "SPRING" })
	}
	sent["alice"], sent["bob"], sent["carol"] = 3, 3, 3
	send("mallory", unknownID, reader, nil)
	send("mallory", idNoAmount, noAmount, drop("amount"))
	waitFor(t, 30*time.Second, "9 applied and 2 dead letters", func() bool {
		p := eng.Progress()
		return p.Events == 9 && p.DeadLetters == 2
	})
	wantTraits := map[string]map[string]float64{
		"alice": {"orders": 3, "eur_orders": 0, "items": 3, "spend": 30},
		"bob":   {"orders": 3, "eur_orders": 3, "items": 0, "spend": 30},
		"carol": {"orders": 3, "eur_orders": 0, "items": 3, "spend": 30},
	}
	for c, want := range wantTraits {
		got := customerTraits(t, eng, c)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: trait %s = %v, want %v (all: %v)", c, k, got[k], v, got)
			}
		}
	}
	dls := readAll(t, broker.Addrs(), ts[5], partitions, 2, 30*time.Second)
	reasons := map[string]int{}
	for _, m := range dls {
		for _, h := range m.Headers {
			if h.Key == "segd-reason" {
				reasons[string(h.Value)]++
			}
		}
	}
	if len(dls) != 2 || reasons["unknown_schema_id"] != 1 || reasons["incompatible_schema"] != 1 {
		t.Fatalf("dead letters: %d, by reason %v; want one unknown_schema_id and one incompatible_schema", len(dls), reasons)
	}

	// The outage. newest is registered (stored) but never fetched by segd.
	idNewest := registerSchema(t, url, subject, newest)
	registryScript(t, "kill", dir)
	killedAt := time.Now()
	customers := []string{"dave", "erin", "frank", "grace", "heidi", "ivan"}
	for round := 0; round < 5; round++ {
		for _, c := range customers {
			send(c, idNewest, newest, func(r map[string]any) { r["gift_wrap"] = true })
			sent[c]++
		}
	}
	// Behind them, records of ids segd has cached: they must wait too.
	for _, c := range []string{"alice", "bob", "carol"} {
		send(c, idReader, reader, nil)
		sent[c]++
	}
	waitFor(t, 30*time.Second, "both partitions waiting, backoff grown", func() bool {
		w := eng.DecodeWaits()
		return len(w) == partitions && w[0].Attempts >= 5 && w[1].Attempts >= 5
	})
	st := eng.Status()
	if !st.Ready || len(st.DecodeWaiting) == 0 {
		t.Fatalf("status during the outage: %+v", st)
	}
	t.Logf("status during the outage: %+v", st)
	if n := metricSum(t, eng, "segd_decode_waiting"); n != partitions {
		t.Errorf("segd_decode_waiting sums to %v, want %d", n, partitions)
	}
	if n := metricSum(t, eng, "segd_registry_errors_total"); n < 10 {
		t.Errorf("segd_registry_errors_total %v, want >= 10", n)
	}
	if p := eng.Progress(); p.Events != 9 || p.DeadLetters != 2 {
		t.Fatalf("during the outage: %v applied, %v dead letters; want 9 and 2", p.Events, p.DeadLetters)
	}

	registryScript(t, "start", dir)
	restartedAt := time.Now()
	if code, out := registryCall(t, http.MethodGet, fmt.Sprintf("%s/schemas/ids/%d", url, idNewest), nil); code != http.StatusOK {
		t.Fatalf("the restarted registry lost schema %d: %d %s", idNewest, code, out)
	}
	total := 0
	for _, n := range sent {
		total += n
	}
	waitFor(t, 30*time.Second, "every record applied", func() bool { return eng.Progress().Events == float64(total) })
	recovered := time.Since(restartedAt)
	waitFor(t, 10*time.Second, "the waits cleared", func() bool { return len(eng.DecodeWaits()) == 0 })
	t.Logf("registry down %v; every waiting record applied %v after it answered again", restartedAt.Sub(killedAt).Round(time.Millisecond), recovered.Round(time.Millisecond))
	if p := eng.Progress(); p.DeadLetters != 2 {
		t.Errorf("%v dead letters after the outage, want still 2", p.DeadLetters)
	}
	for c, n := range sent {
		if got := customerTraits(t, eng, c)["orders"]; got != float64(n) {
			t.Errorf("%s: %v orders applied, want %d (each exactly once)", c, got, n)
		}
	}
	if st := eng.Status(); !st.Ready || len(st.DecodeWaiting) != 0 {
		t.Errorf("status after the outage: %+v", st)
	}
}

// schemaWithout returns schema without the named top-level fields.
func schemaWithout(t *testing.T, schema string, names ...string) string {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal([]byte(schema), &s); err != nil {
		t.Fatal(err)
	}
	var kept []any
	for _, f := range s["fields"].([]any) {
		keep := true
		for _, n := range names {
			keep = keep && f.(map[string]any)["name"] != n
		}
		if keep {
			kept = append(kept, f)
		}
	}
	s["fields"] = kept
	b, _ := json.Marshal(s)
	return string(b)
}

// schemaWith returns schema with field added at the end.
func schemaWith(t *testing.T, schema string, field map[string]any) string {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal([]byte(schema), &s); err != nil {
		t.Fatal(err)
	}
	s["fields"] = append(s["fields"].([]any), field)
	b, _ := json.Marshal(s)
	return string(b)
}
