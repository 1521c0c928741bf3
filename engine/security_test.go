package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/internal/segdtest"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/segd/segd/connectors"
)

// syncBuffer is the shared log sink safe for concurrent writers.
type syncBuffer = segdtest.SyncBuffer

// TestTLSAndSCRAM runs the engine against a broker that demands TLS and
// SCRAM-SHA-256, with the password in a file: events flow, the password
// never reaches the logs, and a wrong password fails with a clear error
// that does not echo it either.
func TestTLSAndSCRAM(t *testing.T) {
	dir := t.TempDir()
	const password = "pw-Zx81-very-secret"
	serverCert, caFile := segdtest.TestCA(t, dir)
	topics := []string{DefaultPurchasesTopic, DefaultBrowsesTopic, DefaultEngagementsTopic, DefaultProfilesTopic, DefaultChangesTopic, DefaultDeadLetterTopic}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topics...),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "segd", password),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rulesPath := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rulesPath, []byte(testRules), 0o644)
	newConfig := func(name, pwFile string) *Config {
		cfg := &Config{}
		cfg.Kafka.Brokers = brokers
		cfg.Kafka.MaxWait = 50 * time.Millisecond
		cfg.Kafka.TLS.Enabled = true
		cfg.Kafka.TLS.CAFile = caFile
		cfg.Kafka.SASL.Mechanism = "scram-sha-256"
		cfg.Kafka.SASL.Username = "segd"
		cfg.Kafka.SASL.PasswordFile = pwFile
		for _, in := range []*InputTopic{&cfg.Kafka.Topics.Purchases, &cfg.Kafka.Topics.Browses, &cfg.Kafka.Topics.Engagements, &cfg.Kafka.Topics.Profiles} {
			in.Format = "json"
		}
		cfg.Rules.File = rulesPath
		cfg.State.Dir = filepath.Join(dir, name)
		cfg.Commit.Interval = 20 * time.Millisecond
		cfg.Clock.IdleAfter = -1
		cfg.API.Addr = "off"
		cfg.EnsureDefaults()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := newConfig("good", pwFile)
	sec, err := cfg.Security()
	if err != nil {
		t.Fatal(err)
	}
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.Write(context.Background(), connectors.Message{Topic: DefaultPurchasesTopic, Key: []byte("alice"),
		Value: []byte(`{"type":"purchase","event_id":"e1","customer_id":"alice","ts":"2024-01-01T10:00:00Z","amount":1200}`)}); err != nil {
		t.Fatalf("produce over TLS+SCRAM: %v", err)
	}
	logs := &syncBuffer{}
	eng, err := New(cfg, Options{Logger: zerolog.New(logs).Level(zerolog.DebugLevel)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	waitFor(t, 20*time.Second, "changes published over TLS+SCRAM", func() bool {
		p := eng.Progress()
		return p.Events == 1 && p.Published == 2 // alice enters buyer and vip
	})
	c, err := connectors.NewPartitionConsumer(connectors.PartitionConsumerOptions{Brokers: brokers, Topics: []string{DefaultChangesTopic}, StopAtEnd: true, Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	var got int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		msgs, err := c.Poll(context.Background(), make([]connectors.Message, 0, 16), 100*time.Millisecond)
		got += len(msgs)
		if err != nil {
			break
		}
	}
	c.Close()
	if got != 2 {
		t.Fatalf("read %d changes back over TLS+SCRAM, want 2", got)
	}
	// The producer stamped the record when it sent it, so both changes
	// count in the event-to-change latency histogram.
	waitFor(t, 5*time.Second, "latency observations", func() bool {
		return histogramCount(t, eng, "segd_event_to_change_seconds") == 2 && histogramCount(t, eng, "segd_consume_to_change_seconds") == 2
	})
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	eng.Close()
	if logs.String() == "" {
		t.Fatal("the engine logged nothing: the secret check below would prove nothing")
	}
	if strings.Contains(logs.String(), password) {
		t.Fatal("the SASL password reached the logs")
	}

	// A wrong password: Run fails, saying why, without the password.
	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("not-the-password-Q7"), 0o600)
	bad, err := New(newConfig("bad", wrong), Options{Logger: zerolog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	err = bad.Run(ctx2)
	if err == nil || ctx2.Err() != nil {
		t.Fatalf("Run with a wrong password: %v (context %v)", err, ctx2.Err())
	}
	if !strings.Contains(strings.ToLower(err.Error()), "sasl") && !strings.Contains(strings.ToLower(err.Error()), "auth") {
		t.Errorf("error does not say authentication failed: %v", err)
	}
	if strings.Contains(err.Error(), "not-the-password-Q7") || strings.Contains(logs.String(), "not-the-password-Q7") {
		t.Error("the wrong password was echoed")
	}
	t.Logf("wrong password: %v", err)
}

// histogramCount is the sample count of a histogram in the engine's registry.
func histogramCount(t *testing.T, eng *Engine, name string) uint64 {
	t.Helper()
	mfs, err := eng.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var n uint64
			for _, m := range mf.Metric {
				n += m.GetHistogram().GetSampleCount()
			}
			return n
		}
	}
	return 0
}
