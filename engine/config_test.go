package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestConfigDefaultsAndEnv(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "segd.yaml")
	src := "kafka:\n  brokers: [a:9092]\n  topics:\n    purchases: {name: shop.purchases, format: json}\nrules:\n  file: r.yaml\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path, []string{"SEGD_STATE_DIR=/data", "SEGD_KAFKA_BROKERS=x:1, y:2", "SEGD_COMMIT_INTERVAL=50ms", "OTHER=1"})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"purchases name", cfg.Kafka.Topics.Purchases.Name, "shop.purchases"},
		{"purchases format", cfg.Kafka.Topics.Purchases.Format, "json"},
		{"browses default", cfg.Kafka.Topics.Browses.Name, DefaultBrowsesTopic},
		{"browses format default", cfg.Kafka.Topics.Browses.Format, "avro"},
		{"env state dir", cfg.State.Dir, "/data"},
		{"env brokers", strings.Join(cfg.Kafka.Brokers, ","), "x:1,y:2"},
		{"env duration", cfg.Commit.Interval, 50 * time.Millisecond},
		{"cache default", cfg.State.CacheBytes, int64(256 << 20)},
		{"block cache default", cfg.State.BlockCacheBytes, int64(128 << 20)},
		{"cold cache default", cfg.State.ColdCacheBytes, int64(128 << 20)},
		{"group default", cfg.Kafka.Group, "segd"},
		{"buffered records default", cfg.Kafka.MaxBufferedRecords, 10000},
		{"buffered bytes default", cfg.Kafka.MaxBufferedBytes, int64(64 << 20)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestConfigValidateNamesFields(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"empty", "", []string{"kafka.brokers is empty", "rules.file is empty"}},
		{"bad values", "kafka: {brokers: [nohost], start_from: middle}\nrules: {file: r}\ncommit: {max_events: -5, max_bytes: 1000}\noutput: {format: xml}\n",
			[]string{`kafka.brokers[0] ("nohost") must be host:port`, `kafka.start_from ("middle")`, "commit.max_events (-5) must be between 1 and 1000000", "commit.max_bytes (1000) must be between 1048576 (1 MiB) and 1073741824 (1 GiB)", `output.format ("xml")`}},
		{"confluent needs registry", "kafka: {brokers: [a:1], topics: {browses: {format: confluent}}}\nrules: {file: r}\n",
			[]string{"kafka.topics.browses.format is confluent but kafka.schema_registry_url is empty"}},
		{"duplicate topic", "kafka: {brokers: [a:1], topics: {browses: {name: customer.purchases}}}\nrules: {file: r}\n",
			[]string{`kafka.topics.browses.name ("customer.purchases") is also kafka.topics.purchases.name`}},
		{"unknown field", "kafka: {brokerz: [a:1]}\n", []string{"unknown key kafka.brokerz (did you mean kafka.brokers?)"}},
		{"sasl", "kafka: {brokers: [a:1], sasl: {mechanism: kerberos, password: x, password_env: Y_UNSET_VAR_FOR_TEST}}\nrules: {file: r}\n",
			[]string{`kafka.sasl.mechanism ("kerberos") must be plain, scram-sha-256 or scram-sha-512`, "kafka.sasl.username is empty", "exactly one of password, password_file and password_env (found 2)", "Y_UNSET_VAR_FOR_TEST is empty or unset"}},
		{"tls off with files", "kafka: {brokers: [a:1], tls: {ca_file: ca.pem}}\nrules: {file: r}\n",
			[]string{"kafka.tls files are set but kafka.tls.enabled is false"}},
		{"tiny cache", "kafka: {brokers: [a:1]}\nrules: {file: r}\nstate: {cache_bytes: 10}\n", []string{"state.cache_bytes (10) must be >= 1048576"}},
		{"tiny block cache", "kafka: {brokers: [a:1]}\nrules: {file: r}\nstate: {block_cache_bytes: 10}\n", []string{"state.block_cache_bytes (10) must be >= 1048576"}},
		{"buffer bounds", "kafka: {brokers: [a:1], max_buffered_records: 5, max_buffered_bytes: -1}\nrules: {file: r}\n",
			[]string{"kafka.max_buffered_records (5) must be between 100 and 10000000", "kafka.max_buffered_bytes (-1) must be between 1048576 (1 MiB) and 17179869184 (16 GiB)"}},
		{"fetch wait under a round trip", "kafka: {brokers: [a:1], max_wait: 2ms}\nrules: {file: r}\n",
			[]string{"kafka.max_wait (2ms) must be between 10ms and 1m"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte(c.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(path, nil)
			if err == nil {
				t.Fatalf("got no error, want %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigEnvBadValue(t *testing.T) {
	_, err := LoadConfig("", []string{"SEGD_COMMIT_MAX_EVENTS=lots", "SEGD_KAFKA_BROKERS=a:1", "SEGD_RULES_FILE=r"})
	if err == nil || !strings.Contains(err.Error(), "SEGD_COMMIT_MAX_EVENTS") || !strings.Contains(err.Error(), "commit.max_events") {
		t.Fatalf("got %v, want an error naming SEGD_COMMIT_MAX_EVENTS and commit.max_events", err)
	}
}

// Every config field must be documented in docs/config.md.
func TestConfigFieldsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range ConfigFields() {
		name := f
		if strings.HasPrefix(f, "kafka.topics.") && strings.Count(f, ".") == 3 {
			if _, last, _ := strings.Cut(f[len("kafka.topics."):], "."); last == "format" || last == "schema_file" {
				name = "kafka.topics.*." + last
			}
		}
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/config.md does not document %s", name)
		}
	}
}

// TestUnsafeConfigsRefused: segd refuses a non-loopback api.addr with no
// credentials and SASL PLAIN without TLS, naming the key, unless the
// explicit opt-out is set (and then logs it loudly).
func TestUnsafeConfigsRefused(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("x:0123456789abcdef0123\n"), 0o600)
	cases := []struct {
		yaml string
		want string // "" for valid
	}{
		{"api: {addr: \"0.0.0.0:8080\"}\n", `api.addr ("0.0.0.0:8080") is not a loopback address and no API credentials are configured`},
		{"api: {addr: \":8080\"}\n", `api.addr (":8080") is not a loopback address`},
		{"api: {addr: \"10.0.0.7:8080\"}\n", `api.addr ("10.0.0.7:8080") is not a loopback address`},
		{"api: {addr: \"0.0.0.0:8080\", insecure_allow_unauthenticated: true}\n", ""},
		{"api: {addr: \"0.0.0.0:8080\", auth: {read_tokens_file: " + tokens + "}}\n", ""},
		{"api: {addr: \"127.0.0.1:8080\"}\n", ""},
		{"api: {addr: \"[::1]:8080\"}\n", ""},
		{"api: {addr: \"localhost:8080\"}\n", ""},
		{"api: {auth: {read_tokens: [short]}}\n", "api.auth.read_tokens: entry 1 (read-1): a token must be at least 16 characters"},
		{"api: {tls: {cert_file: a.pem}}\n", "api.tls.cert_file and api.tls.key_file go together"},
		{"kafka: {sasl: {mechanism: plain, username: u, password: p}}\n", "kafka.sasl.mechanism is plain but kafka.tls.enabled is false"},
		{"kafka: {sasl: {mechanism: PLAIN, username: u, password: p, insecure_allow_plaintext: true}}\n", ""},
		{"kafka: {sasl: {mechanism: plain, username: u, password: p}, tls: {enabled: true}}\n", ""},
		{"kafka: {sasl: {mechanism: scram-sha-256, username: u, password: p}}\n", ""},
	}
	for _, c := range cases {
		path := filepath.Join(dir, "c.yaml")
		src := "kafka: {brokers: [a:1]}\nrules: {file: r}\n"
		if strings.HasPrefix(c.yaml, "kafka:") {
			src = "rules: {file: r}\n" + strings.Replace(c.yaml, "kafka: {", "kafka: {brokers: [a:1], ", 1)
		} else {
			src += c.yaml
		}
		os.WriteFile(path, []byte(src), 0o644)
		_, err := LoadConfig(path, nil)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.yaml, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want %q", c.yaml, err, c.want)
		}
	}
	// The environment counts too (the API's listener refuses on its own:
	// api.TestAPIListenRefusesUnsafeAddr).
	if _, err := LoadConfig("", []string{"SEGD_KAFKA_BROKERS=a:1", "SEGD_RULES_FILE=r", "SEGD_API_ADDR=0.0.0.0:8080"}); err == nil || !strings.Contains(err.Error(), "api.addr") {
		t.Errorf("SEGD_API_ADDR=0.0.0.0:8080: %v", err)
	}
	// The opt-outs are logged loudly.
	logs := &syncBuffer{}
	cfg := &Config{}
	cfg.Kafka.Brokers = []string{"127.0.0.1:1"}
	cfg.Kafka.SASL = SASLConfig{Mechanism: "plain", Username: "u", Password: "p", InsecureAllowPlaintext: true}
	cfg.Rules.File = "../examples/rules.yaml"
	cfg.State.Dir = filepath.Join(dir, "state")
	cfg.API.Addr = "0.0.0.0:0"
	cfg.API.InsecureAllowUnauthenticated = true
	cfg.EnsureDefaults()
	e2, err := New(cfg, Options{Logger: zerolog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	for _, want := range []string{`"level":"warn","component":"engine","message":"INSECURE: SASL PLAIN without TLS`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}
