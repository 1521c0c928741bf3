package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/internal/segdtest"
	"github.com/segd/segd/schemas"
)

// TestGenAndDeleteThroughConfig runs segd gen and segd customers delete
// with segd run's config file (and with its SEGD_KAFKA_* environment
// alone) against a broker that demands TLS and SCRAM-SHA-256: they
// connect with the config's security, write to the config's topic names
// in each topic's format, and print no password.
func TestGenAndDeleteThroughConfig(t *testing.T) {
	dir := t.TempDir()
	const password = "pw-gen-Q7-never-printed"
	serverCert, caFile := segdtest.TestCA(t, dir)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "segd", password),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	addr := cluster.ListenAddrs()[0]
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "segd.yaml")
	writeConfig := func(purchasesFormat, moreKafka string) {
		t.Helper()
		cfg := fmt.Sprintf(`kafka:%s
  brokers: [%q]
  tls: {enabled: true, ca_file: %q}
  sasl: {mechanism: scram-sha-256, username: segd, password_file: %q}
  topics:
    purchases: {name: shop.purchases, format: %s}
    browses: {name: shop.browses}
    engagements: {name: shop.engagements}
    profiles: {name: shop.profiles}
rules: {file: %q}
state: {dir: %q}
`, moreKafka, addr, caFile, pwFile, purchasesFormat, absPath(t, "../../examples/rules.yaml"), filepath.Join(dir, "state"))
		if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("json", "")
	segd := func(args ...string) (string, error) {
		cmd := exec.Command(segdBinary(t), args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if strings.Contains(string(out), password) {
			t.Fatalf("segd %s printed the SASL password:\n%s", args[0], out)
		}
		return string(out), err
	}

	const n = 400
	out, err := segd("gen", "--config", cfgFile, "--count", fmt.Sprint(n), "--rate", "2000", "--create-topics", "2")
	if err != nil || !strings.Contains(out, fmt.Sprintf("sent %d events", n)) {
		t.Fatalf("segd gen --config: %v\n%s", err, out)
	}
	sec, err := connectors.NewSecurity(connectors.SecurityOptions{TLS: true, CAFile: caFile, Mechanism: "scram-sha-256", Username: "segd", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	read := func(topic string) []connectors.Message {
		return segdtest.ReadTopicSecure(t, []string{addr}, sec, topic, 2, 0, 0)
	}
	total := 0
	for _, tc := range []struct {
		topic string
		typ   schemas.EventType
		json  bool
	}{
		{"shop.purchases", schemas.EventPurchase, true},
		{"shop.browses", schemas.EventBrowse, false},
		{"shop.engagements", schemas.EventEngagement, false},
		{"shop.profiles", schemas.EventProfile, false},
	} {
		msgs := read(tc.topic)
		if len(msgs) == 0 {
			t.Fatalf("%s is empty: gen did not write to the config's topic", tc.topic)
		}
		format := connectors.FormatAvro
		if tc.json {
			format = connectors.FormatJSON
		}
		dec, err := connectors.NewDecoder(connectors.DecoderOptions{Type: tc.typ, Format: format})
		if err != nil {
			t.Fatal(err)
		}
		var e schemas.Event
		for _, m := range msgs {
			e.Reset()
			if err := dec.Decode(m.Value, &e); err != nil {
				t.Fatalf("%s holds a record its configured format cannot decode: %v (%q)", tc.topic, err, m.Value)
			}
			if e.CustomerID != string(m.Key) {
				t.Fatalf("%s: record keyed %q is of customer %q", tc.topic, m.Key, e.CustomerID)
			}
		}
		total += len(msgs)
	}
	if total != n {
		t.Fatalf("the config's topics hold %d events, gen sent %d", total, n)
	}
	out, err = segd("customers", "delete", "--config", cfgFile, "gone-1", "gone-2")
	if err != nil || !strings.Contains(out, "deletion requested for 2 customer(s) on shop.profiles") {
		t.Fatalf("segd customers delete --config: %v\n%s", err, out)
	}
	// A running segd's environment alone, as in its container, and a
	// config holding only the connection (no rules or state: what segd
	// run alone needs) serve as well.
	env := []string{"SEGD_KAFKA_BROKERS=" + addr, "SEGD_KAFKA_TLS_ENABLED=true", "SEGD_KAFKA_TLS_CA_FILE=" + caFile,
		"SEGD_KAFKA_SASL_MECHANISM=scram-sha-256", "SEGD_KAFKA_SASL_USERNAME=segd", "SEGD_KAFKA_SASL_PASSWORD_FILE=" + pwFile,
		"SEGD_KAFKA_TOPICS_PROFILES_NAME=shop.profiles"}
	cmd := exec.Command(segdBinary(t), "customers", "delete", "gone-3")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "on shop.profiles") || strings.Contains(string(out), password) {
		t.Fatalf("segd customers delete with SEGD_KAFKA_* only: %v\n%s", err, out)
	}
	// Only a password in the environment (as in segd's pod) names no
	// cluster: a usage error, not a config's problem.
	cmd = exec.Command(segdBinary(t), "customers", "delete", "gone-5")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "SEGD_KAFKA_SASL_PASSWORD="+password)
	if out, err := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "usage:") || strings.Contains(string(out), password) {
		t.Fatalf("segd customers delete with only a password in the environment: %v\n%s", err, out)
	}
	clientCfg := filepath.Join(dir, "client.yaml")
	if err := os.WriteFile(clientCfg, []byte(fmt.Sprintf("kafka:\n  brokers: [%q]\n  tls: {enabled: true, ca_file: %q}\n  sasl: {mechanism: scram-sha-256, username: segd, password_file: %q}\n  topics: {profiles: {name: shop.profiles}}\n",
		addr, caFile, pwFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := segd("customers", "delete", "--config", clientCfg, "gone-4"); err != nil {
		t.Fatalf("segd customers delete with a connection-only config: %v\n%s", err, out)
	}
	tombstones := map[string]bool{}
	for _, m := range read("shop.profiles") {
		if m.Value == nil {
			tombstones[string(m.Key)] = true
		}
	}
	if len(tombstones) != 4 || !tombstones["gone-1"] || !tombstones["gone-2"] || !tombstones["gone-3"] || !tombstones["gone-4"] {
		t.Fatalf("tombstones on shop.profiles: %v, want gone-1 to gone-4", tombstones)
	}

	// A --format the config's topics do not have, and a topic gen cannot
	// write, are refused before anything is sent.
	var stdout, stderr bytes.Buffer
	if code := run([]string{"gen", "--config", cfgFile, "--format", "avro", "--count", "1"}, &stdout, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "--format avro, but kafka.topics.purchases.format is json") {
		t.Fatalf("gen --format avro with a json topic: exit %d, stderr %q", code, stderr.String())
	}
	writeConfig("confluent", "\n  schema_registry_url: http://127.0.0.1:1")
	stderr.Reset()
	start := time.Now()
	if code := run([]string{"gen", "--config", cfgFile, "--count", "1"}, &stdout, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "kafka.topics.purchases.format is confluent") {
		t.Fatalf("gen with a confluent topic: exit %d, stderr %q (after %s)", code, stderr.String(), time.Since(start))
	}
}
