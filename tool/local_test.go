package tool

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/segd/segd/engine"

	"github.com/rs/zerolog"
	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/schemas"
)

// TestLocalMatchesReplay feeds the same generated traffic to Local as Avro
// records and to Replay as JSON lines: the change streams must be equal,
// byte for byte (both write JSON changes), and a corrupt record must come
// out as a dead letter without stopping the partition.
func TestLocalMatchesReplay(t *testing.T) {
	dir := t.TempDir()
	g, err := gen.New(gen.Config{Customers: 300, EventsPerHour: 400, Duration: 20 * 86400_000})
	if err != nil {
		t.Fatal(err)
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &engine.Config{}
	cfg.Kafka.Brokers = []string{"127.0.0.1:1"} // never dialled
	cfg.Rules.File = "../bench/standard.yaml"
	cfg.State.Dir = filepath.Join(dir, "local")
	cfg.Output.Format = "json"
	cfg.Commit.MaxEvents = 777
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(cfg, engine.Options{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	l, err := eng.OpenLocal(1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	topics := map[schemas.EventType]string{
		schemas.EventPurchase: cfg.Kafka.Topics.Purchases.Name, schemas.EventBrowse: cfg.Kafka.Topics.Browses.Name,
		schemas.EventEngagement: cfg.Kafka.Topics.Engagements.Name, schemas.EventProfile: cfg.Kafka.Topics.Profiles.Name,
	}
	var jsonl bytes.Buffer
	var e schemas.Event
	var buf []byte
	var last int64
	var offset int64
	for g.Next(&e) {
		jsonl.Write(schemas.AppendJSON(nil, &e))
		jsonl.WriteByte('\n')
		buf, err = codecs[e.Type].AppendEncode(buf[:0], &e)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Handle(0, topics[e.Type], offset, []byte(e.CustomerID), buf, time.UnixMilli(e.Time)); err != nil {
			t.Fatal(err)
		}
		offset++
		last = e.Time
		if offset == 1000 {
			// A corrupt record in the middle of the stream.
			if err := l.Handle(0, topics[schemas.EventPurchase], offset, []byte("cx"), []byte{0xff, 0xff, 0xff}, time.UnixMilli(last)); err != nil {
				t.Fatal(err)
			}
			offset++
		}
	}
	if err := l.Advance(0, last); err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(); err != nil {
		t.Fatal(err)
	}
	var local bytes.Buffer
	deadLetters := 0
	if err := l.Drain(func(topic string, key, value []byte) error {
		if topic == cfg.Kafka.Topics.DeadLetter {
			deadLetters++
			return nil
		}
		local.Write(value)
		local.WriteByte('\n')
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if deadLetters != 1 {
		t.Fatalf("%d dead letters, want 1", deadLetters)
	}
	input := filepath.Join(dir, "events.jsonl")
	if err := os.WriteFile(input, jsonl.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var replayed bytes.Buffer
	if _, err := Replay(context.Background(), ReplayOptions{
		RulesFile: "../bench/standard.yaml", StateDir: filepath.Join(dir, "replay"), Inputs: []string{input},
		Partitions: 1, Output: &replayed, Log: zerolog.Nop(),
	}); err != nil {
		t.Fatal(err)
	}
	if replayed.Len() == 0 {
		t.Fatal("replay produced no changes")
	}
	if !bytes.Equal(local.Bytes(), replayed.Bytes()) {
		a := bytes.Split(local.Bytes(), []byte("\n"))
		b := bytes.Split(replayed.Bytes(), []byte("\n"))
		for i := 0; i < min(len(a), len(b)); i++ {
			if !bytes.Equal(a[i], b[i]) {
				t.Fatalf("change %d differs:\nlocal:  %s\nreplay: %s", i, a[i], b[i])
			}
		}
		t.Fatalf("local wrote %d changes, replay %d", len(a)-1, len(b)-1)
	}
	// Drained entries are gone; Close is safe twice.
	n := 0
	l.Drain(func(string, []byte, []byte) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d entries left after Drain", n)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
