package segment

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/internal/gen"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/state"
)

// avroInput decodes a topic's plain Avro values.
type avroInput struct{ c *schemas.AvroCodec }

func (a avroInput) Decode(v []byte, e *schemas.Event) error { return a.c.Decode(v, e) }

// BenchmarkProcessorHandle is the per-partition core alone: generated
// Avro records over customers (Zipf activity) through Handle, over Pebble
// on disk with the standard bench rules, a commit every 10,000 records.
// ns/op is per record.
//
// record-B/customer is the mean stored record of the customers the run
// made (envelope included): a deterministic figure, unlike ns/op on a
// shared machine. segments=1000 repeats the standard segments under new
// ids, as make bench's 1000-segment row does (target 2b).
func BenchmarkProcessorHandle(b *testing.B) {
	for _, customers := range []int{10000, 200000} {
		b.Run(map[int]string{10000: "customers=10k", 200000: "customers=200k"}[customers], func(b *testing.B) {
			benchHandle(b, customers, standardRules(b, 0))
		})
	}
	b.Run("customers=10k/segments=1000", func(b *testing.B) {
		benchHandle(b, 10000, standardRules(b, 1000))
	})
}

// standardRules compiles bench/standard.yaml, its segments repeated under
// new ids up to segments (0: as they are).
func standardRules(b *testing.B, segments int) *rules.RuleSet {
	rs, err := rules.CompileFile("../bench/standard.yaml")
	if err != nil || segments == 0 {
		if err != nil {
			b.Fatal(err)
		}
		return rs
	}
	src, err := os.ReadFile("../bench/standard.yaml")
	if err != nil {
		b.Fatal(err)
	}
	head, _, ok := strings.Cut(string(src), "\nsegments:\n")
	if !ok {
		b.Fatal("bench/standard.yaml has no segments section")
	}
	var out strings.Builder
	out.WriteString(head + "\nsegments:\n")
	base := rs.Segments()
	for i := range segments {
		sg := base[i%len(base)]
		fmt.Fprintf(&out, "  %s_%d: { when: %q }\n", sg.ID, i/len(base), sg.When)
	}
	rs, err = rules.Compile("standard-repeated.yaml", []byte(out.String()))
	if err != nil {
		b.Fatal(err)
	}
	if n := len(rs.Segments()); n != segments {
		b.Fatalf("%d segments compiled, want %d", n, segments)
	}
	return rs
}

func benchHandle(b *testing.B, customers int, rs *rules.RuleSet) {
	codecs, err := schemas.NewCodecs()
	if err != nil {
		b.Fatal(err)
	}
	inputs := map[string]Input{}
	topics := [schemas.NumEventTypes]string{}
	for t := schemas.EventPurchase; t <= schemas.EventProfile; t++ {
		c, err := schemas.NewAvroCodec(t, schemas.SchemaText(t))
		if err != nil {
			b.Fatal(err)
		}
		topics[t] = t.String()
		inputs[topics[t]] = Input{Type: t, Decoder: avroInput{c}}
	}
	g, err := gen.New(gen.Config{Seed: 42, Customers: customers, EventsPerHour: float64(customers), Start: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()})
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]Record, 300000)
	var e schemas.Event
	for i := range recs {
		g.Next(&e)
		v, err := codecs[e.Type].AppendEncode(nil, &e)
		if err != nil {
			b.Fatal(err)
		}
		recs[i] = Record{Topic: topics[e.Type], Offset: int64(i), Key: []byte(e.CustomerID), Value: v, Time: time.UnixMilli(e.Time)}
	}
	st, err := OpenStore(filepath.Join(b.TempDir(), "state"), func() *rules.RuleSet { return rs }, state.Options{CacheBytes: 512 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	part, err := st.Partition(0)
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(rs, part, Options{Inputs: inputs, ChangesTopic: DefaultChangesTopic, DeadLetterTopic: DefaultDeadLetterTopic,
		EncodeChange: schemas.AppendSegmentChangeAvro, DedupHorizon: time.Hour, MaxRecordBytes: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	wall := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := p.Handle(&recs[i%len(recs)], wall); err != nil {
			b.Fatal(err)
		}
		if i%10000 == 9999 {
			if err := p.Commit(); err != nil {
				b.Fatal(err)
			}
			// The outbox is not the core's cost: empty it as a publisher would.
			if err := part.DeleteOutbox(part.OutboxReleased()); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	// Timers fired per record: how many checks time alone caused, a
	// deterministic figure for a given b.N (-benchtime=300000x).
	b.ReportMetric(float64(p.Stats().Timers)/float64(b.N), "timers/record")
	if d := p.Stats().DeadLetters; len(d) > 0 {
		b.Fatalf("dead letters: %v", d)
	}
	if err := p.Commit(); err != nil {
		b.Fatal(err)
	}
	var n, size int
	var buf []byte
	err = part.Range(func(_ string, rec state.Record) error {
		buf = rec.AppendBinary(buf[:0])
		n++
		size += 1 + len(buf) // and the envelope byte
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if n > 0 {
		b.ReportMetric(float64(size)/float64(n), "record-B/customer")
	}
}

// BenchmarkChangeID is the id of each of ten changes one event causes
// (the same customer, time and life; ten segments): formatted whole
// (appendChangeID, as every change did before) and by the processor,
// which formats the shared times once. ns/op is per change.
func BenchmarkChangeID(b *testing.B) {
	segs := make([]string, 10)
	for i := range segs {
		segs[i] = fmt.Sprintf("active_browsers_%d", i)
	}
	const at, born = int64(1733300000123), int64(1733100000456)
	b.Run("whole", func(b *testing.B) {
		var buf []byte
		for i := range b.N {
			buf = appendChangeID(buf[:0], "cust-000042", segs[i%10], uint64(i&7), at+int64(i/10), born)
		}
	})
	b.Run("processor", func(b *testing.B) {
		var p Processor
		for i := range b.N {
			_ = p.changeID("cust-000042", segs[i%10], uint64(i&7), at+int64(i/10), born)
		}
	})
}
