package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/state"
)

// Options are the dependencies of an Engine that do not come from Config.
type Options struct {
	// Logger receives the engine's logs. Zero: no logs.
	Logger zerolog.Logger
	// Now is the wall clock. Default time.Now.
	Now func() time.Time
	// OnChange, if set, is called by publishers with every SegmentChange
	// record after Kafka acknowledged it (the demo prints them). It runs on
	// publisher goroutines, concurrently, and must not block.
	OnPublished func(topic string, key, value []byte)
}

// Engine is one segd process's pipeline: for each input partition number, a
// task and a publisher, over one Pebble store. Create it with New, run it
// with Run, and Close it.
type Engine struct {
	cfg *Config
	opt Options
	log zerolog.Logger
	rs  atomic.Pointer[rules.RuleSet]
	st  *state.Store
	sec *connectors.Security // nil: plaintext
	// localParts are the partitions an open Local feeds (guarded by mu).
	localParts []int32
	// procs are the processors of the partitions this process runs, live
	// or Local (guarded by mu), for API reads of their committed clock.
	procs map[int32]*processor
	// rates counts changes per segment over the last hour and day.
	rates segmentRates
	m     *metrics

	mu            sync.Mutex
	parts         map[int32]*runningPartition
	lastReloadErr error
	prod          *connectors.Producer // set while Run runs
	reloadMu      sync.Mutex
	ready         atomic.Bool
	closed        atomic.Bool
}

type runningPartition struct {
	task *task
	pub  *publisher
}

// New compiles the rules and opens the state store. It does not touch Kafka
// yet: Run does.
func New(cfg *Config, opt Options) (*Engine, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	rs, err := rules.CompileFile(cfg.Rules.File)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	sec, err := cfg.Security()
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, opt: opt, sec: sec, log: opt.Logger.With().Str("component", "engine").Logger(), m: newMetrics(), parts: map[int32]*runningPartition{}}
	e.rs.Store(rs)
	st, err := state.Open(cfg.State.Dir, state.Options{
		CacheBytes: cfg.State.CacheBytes,
		Decode: func(_ string, data []byte) (state.Record, error) {
			return decodeCustomer(e.rs.Load(), data)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", cfg.State.Dir, err)
	}
	e.st = st
	e.m.registerStore(st)
	e.m.reg.MustRegister(segmentSizes{e})
	e.log.Info().Int64("rules_version", rs.Version()).Str("rules_hash", rs.Hash()).
		Int("segments", len(rs.Segments())).Int("traits", len(rs.Traits())).Str("state_dir", cfg.State.Dir).Msg("engine ready")
	return e, nil
}

// Registry exposes the engine's metrics (for tests and embedding).
func (e *Engine) Registry() *prometheus.Registry { return e.m.reg }

// consumedTopics are the input topics and the merges topic, which every
// partition reads.
func (e *Engine) consumedTopics() []string {
	return append(e.inputTopics(), e.cfg.Kafka.Topics.Merges)
}

// inputTopics returns the input topics in a fixed order.
func (e *Engine) inputTopics() []string {
	t := e.cfg.Kafka.Topics
	return []string{t.Purchases.Name, t.Browses.Name, t.Engagements.Name, t.Profiles.Name}
}

func (e *Engine) inputs() (map[string]topicInput, error) {
	t := e.cfg.Kafka.Topics
	var reg *connectors.Registry
	if e.cfg.Kafka.SchemaRegistryURL != "" {
		reg = connectors.NewRegistry(e.cfg.Kafka.SchemaRegistryURL, connectors.RegistryOptions{})
	}
	out := map[string]topicInput{}
	for _, in := range []struct {
		t   InputTopic
		typ schemas.EventType
	}{{t.Purchases, schemas.EventPurchase}, {t.Browses, schemas.EventBrowse}, {t.Engagements, schemas.EventEngagement}, {t.Profiles, schemas.EventProfile}} {
		var schema string
		if in.t.SchemaFile != "" {
			b, err := os.ReadFile(in.t.SchemaFile)
			if err != nil {
				return nil, fmt.Errorf("schema for %s: %w", in.t.Name, err)
			}
			schema = string(b)
		}
		dec, err := connectors.NewDecoder(connectors.DecoderOptions{
			Type: in.typ, Format: connectors.Format(in.t.Format), Schema: schema, Registry: reg, MaxBytes: e.cfg.Input.MaxRecordBytes,
		})
		if err != nil {
			return nil, fmt.Errorf("decoder for %s: %w", in.t.Name, err)
		}
		out[in.t.Name] = topicInput{typ: in.typ, decoder: dec}
	}
	return out, nil
}

func (e *Engine) encoder() (changeEncoder, error) {
	switch e.cfg.Output.Format {
	case "json":
		return func(dst []byte, c *schemas.SegmentChange) ([]byte, error) {
			return schemas.AppendSegmentChangeJSON(dst, c), nil
		}, nil
	case "avro":
		return schemas.AppendSegmentChangeAvro, nil
	}
	return nil, fmt.Errorf("output.format %q", e.cfg.Output.Format)
}

// Run consumes, segments and publishes until ctx is done or a task fails.
// On return every task has committed what it applied and the publishers
// have sent what they could within a few seconds.
func (e *Engine) Run(ctx context.Context) error {
	if e.closed.Load() {
		return errors.New("engine: Run after Close")
	}
	brokers := e.cfg.Kafka.Brokers
	n, err := connectors.CheckCoPartitioned(ctx, brokers, e.sec, e.inputTopics())
	if err != nil {
		return fmt.Errorf("input topics: %w", err)
	}
	// segd's own merges topic follows the inputs' partition count.
	if err := connectors.EnsureTopics(ctx, brokers, e.sec, []connectors.TopicSpec{{Name: e.cfg.Kafka.Topics.Merges, Partitions: n}}); err != nil {
		return fmt.Errorf("merges topic: %w", err)
	}
	if _, err := connectors.CheckCoPartitioned(ctx, brokers, e.sec, e.consumedTopics()); err != nil {
		return fmt.Errorf("merges topic %s: %w", e.cfg.Kafka.Topics.Merges, err)
	}
	inputs, err := e.inputs()
	if err != nil {
		return err
	}
	enc, err := e.encoder()
	if err != nil {
		return err
	}
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{Security: e.sec})
	if err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	defer prod.Close()
	e.mu.Lock()
	e.prod = prod
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.prod = nil
		e.mu.Unlock()
	}()
	var out sink = prod
	if e.opt.OnPublished != nil {
		out = tapSink{next: prod, fn: e.opt.OnPublished}
	}

	if e.cfg.API.Addr != "off" {
		ln, err := net.Listen("tcp", e.cfg.API.Addr)
		if err != nil {
			return fmt.Errorf("api.addr %s: %w", e.cfg.API.Addr, err)
		}
		srv := &http.Server{Handler: e.Handler(), ReadHeaderTimeout: 10 * time.Second}
		serveDone := make(chan struct{})
		go func() {
			defer close(serveDone)
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				e.log.Error().Err(err).Msg("api server stopped")
			}
		}()
		defer func() {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			srv.Shutdown(sctx)
			<-serveDone
		}()
		e.log.Info().Str("addr", ln.Addr().String()).Msg("api listening")
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	groupCh := make(chan partitionOffsets, 64)
	groupDone := make(chan struct{})
	go func() {
		defer close(groupDone)
		e.commitGroupOffsets(groupCh)
	}()
	defer func() { close(groupCh); <-groupDone }()
	var (
		taskWG, pubWG sync.WaitGroup
		errOnce       sync.Once
		firstErr      error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	pubCtx, pubCancel := context.WithCancel(context.Background())
	defer pubCancel()

	for p := int32(0); p < int32(n); p++ {
		rp, err := e.startPartition(runCtx, p, inputs, enc, out)
		if err != nil {
			fail(err)
			break
		}
		rp.task.groupOut = groupCh
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			rp.pub.run(pubCtx)
		}()
		taskWG.Add(1)
		go func() {
			defer taskWG.Done()
			if err := rp.task.run(runCtx); err != nil {
				fail(err)
			}
		}()
	}
	e.ready.Store(true)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		e.watchRules(runCtx)
	}()
	defer func() { <-watchDone }()
	e.log.Info().Int("partitions", n).Strs("brokers", brokers).Msg("running")
	<-runCtx.Done()
	e.ready.Store(false)
	taskWG.Wait()

	// Tasks have committed; give the publishers a bounded time to send what
	// is committed. Whatever is left stays in the outbox for the next start.
	flushCtx, flushCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer flushCancel()
	pubCancel()
	pubWG.Wait()
	e.mu.Lock()
	for id, rp := range e.parts {
		if err := rp.pub.flush(flushCtx); err != nil {
			e.log.Warn().Err(err).Int32("partition", id).Msg("outbox not fully published at shutdown; it will be sent on restart")
		}
		if err := rp.task.src.Close(); err != nil {
			e.log.Warn().Err(err).Int32("partition", id).Msg("close consumer")
		}
		if err := rp.task.proc.part.Close(); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("close partition %d: %w", id, err)
		}
		delete(e.parts, id)
		delete(e.procs, id)
	}
	e.mu.Unlock()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// processorOptions are the config's processor settings, for live and
// Local partitions alike.
func (e *Engine) processorOptions(enc changeEncoder) processorOptions {
	t := e.cfg.Kafka.Topics
	return processorOptions{
		changesTopic:    t.Changes,
		deadLetterTopic: t.DeadLetter,
		encodeChange:    enc,
		consentAttr:     e.cfg.Consent.Attribute,
		dedupHorizon:    e.cfg.Input.DedupHorizon.Milliseconds(),
		mergesTopic:     t.Merges,
	}
}

func (e *Engine) startPartition(ctx context.Context, p int32, inputs map[string]topicInput, enc changeEncoder, out sink) (*runningPartition, error) {
	part, err := e.st.Partition(p)
	if err != nil {
		return nil, fmt.Errorf("open partition %d: %w", p, err)
	}
	proc, err := newProcessor(e.rs.Load(), part, e.processorOptions(enc))
	if err != nil {
		return nil, fmt.Errorf("partition %d: %w", p, err)
	}
	offs, err := part.Offsets()
	if err != nil {
		return nil, fmt.Errorf("partition %d offsets: %w", p, err)
	}
	start := map[string]int64{}
	for _, topic := range e.consumedTopics() {
		if off, ok := offs[topic]; ok {
			start[topic] = off
		}
	}
	src, err := connectors.NewPartitionConsumer(connectors.PartitionConsumerOptions{
		Brokers:   e.cfg.Kafka.Brokers,
		Topics:    e.consumedTopics(),
		Partition: int(p),
		Offsets:   start,
		Latest:    e.cfg.Kafka.StartFrom == "latest",
		MaxIdle:   e.cfg.Kafka.MaxTaskIdle,
		// The documented meaning of kafka.max_wait: a fetch waits at most
		// this long for new records.
		FetchMaxWait: e.cfg.Kafka.MaxWait,
		Security:     e.sec,
	})
	if err != nil {
		return nil, fmt.Errorf("partition %d consumer: %w", p, err)
	}
	log := e.log.With().Int32("partition", p).Logger()
	pm := e.m.partition(p)
	pm.outboxDepth.Set(float64(part.OutboxDepth()))
	pub := newPublisher(part, out, log, pm)
	pub.lat = &latencyTracker{}
	proc.lat = pub.lat
	proc.rates = &e.rates
	tk := openTask(p, part, proc, src, pub, taskOptions{
		inputs:         inputs,
		commitInterval: e.cfg.Commit.Interval,
		commitEvents:   e.cfg.Commit.MaxEvents,
		maxRecordBytes: e.cfg.Input.MaxRecordBytes,
		maxFutureSkew:  e.cfg.Input.MaxFutureSkew,
		idleAfter:      e.cfg.Clock.IdleAfter,
		idleLag:        e.cfg.Clock.IdleLag,
		maxWait:        e.cfg.Kafka.MaxWait,
		now:            e.opt.Now,
	}, log, pm)
	// The group learns the stored position at once, even if nothing new
	// arrives.
	for topic, off := range start {
		tk.committed[topic] = off
	}
	rp := &runningPartition{task: tk, pub: pub}
	e.mu.Lock()
	e.parts[p] = rp
	if e.procs == nil {
		e.procs = map[int32]*processor{}
	}
	e.procs[p] = proc
	e.mu.Unlock()
	log.Info().Interface("offsets", start).Int64("watermark", proc.clock).Msg("partition assigned")
	return rp, nil
}

// commitGroupOffsets commits what tasks report to the consumer group, for
// lag monitoring. Failures are logged, never fatal: the store's offsets are
// the truth.
func (e *Engine) commitGroupOffsets(ch <-chan partitionOffsets) {
	gc := connectors.NewGroupOffsetCommitter(e.cfg.Kafka.Brokers, e.cfg.Kafka.Group, e.sec)
	var lastWarn time.Time
	for po := range ch {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := gc.Commit(ctx, po.partition, po.next)
		cancel()
		if err != nil && time.Since(lastWarn) > time.Minute {
			lastWarn = time.Now()
			e.log.Warn().Err(err).Str("group", e.cfg.Kafka.Group).Msg("cannot commit consumer group offsets (lag monitoring only)")
		}
	}
}

// Close closes the store. Safe to call twice.
func (e *Engine) Close() error {
	if !e.closed.CompareAndSwap(false, true) {
		return nil
	}
	if e.st != nil {
		return e.st.Close()
	}
	return nil
}

// tapSink reports every acknowledged record to a callback.
type tapSink struct {
	next sink
	fn   func(topic string, key, value []byte)
}

func (t tapSink) Write(ctx context.Context, msgs ...connectors.Message) error {
	if err := t.next.Write(ctx, msgs...); err != nil {
		return err
	}
	for i := range msgs {
		t.fn(msgs[i].Topic, msgs[i].Key, msgs[i].Value)
	}
	return nil
}
