package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segd/segd/segment"

	"github.com/cockroachdb/pebble/v2/vfs"
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
	// OnPublished, if set, is called by publishers with every record
	// (segment changes and dead letters) after Kafka acknowledged it (the
	// demo prints the changes). It runs on publisher goroutines,
	// concurrently, and must not block.
	OnPublished func(topic string, key, value []byte)
	// StateFS is the file system of the state store. Default: the OS
	// (tests inject faults through it).
	StateFS vfs.FS
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
	// clLimits are the changelog topic's (set by Run before partitions
	// start; zero: the store's defaults).
	clLimits changelogLimits
	// localParts are the partitions an open Local feeds (guarded by mu).
	localParts []int32
	// procs are the processors of the partitions this process runs, live
	// or Local (guarded by mu), for API reads of their committed clock.
	procs map[int32]*segment.Processor
	// keepBackfillOutbox leaves a backfill's changes and dead letters in
	// the outboxes (tests compare them with a live run's).
	keepBackfillOutbox bool
	// rates counts changes per segment over the last hour and day.
	rates segmentRates
	m     *metrics

	mu            sync.Mutex
	parts         map[int32]*runningPartition
	lastReloadErr error
	prod          *connectors.Producer // set while Run runs
	layout        outputLayout         // set while Run runs
	// reloadMu serializes rule reloads with partition starts.
	reloadMu sync.Mutex
	// lifecycleMu serializes partition restores and starts with the
	// stale-copy sweep, which must not drop a partition being restored.
	lifecycleMu sync.Mutex
	// restoreHook, if set, runs as a partition's restore begins (tests).
	restoreHook func(p int32)
	ready       atomic.Bool
	closed      atomic.Bool
	// gen is the consumer group generation running now (group
	// assignment), for committing group offsets.
	gen atomic.Pointer[connectors.Generation]
	// restoringNow is 1 + the partition being restored, 0 when none.
	restoringNow atomic.Int64
	// stoppedAt is when the partitions last stopped for a rebalance.
	stoppedAt atomic.Pointer[time.Time]
}

type runningPartition struct {
	task *task
	pub  *publisher
	cl   *changelogPublisher // nil without a changelog
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
	if sa := cfg.Kafka.SASL; strings.EqualFold(sa.Mechanism, "plain") && !cfg.Kafka.TLS.Enabled && sa.InsecureAllowPlaintext {
		e.log.Warn().Msg("INSECURE: SASL PLAIN without TLS sends the Kafka password in the clear (kafka.sasl.insecure_allow_plaintext)")
	}
	st, err := e.openState()
	if err != nil {
		return nil, err // state.Open names the directory
	}
	e.st = st
	e.m.registerStore(st)
	e.m.reg.MustRegister(segmentSizes{e})
	e.log.Info().Int64("rules_version", rs.Version()).Str("rules_hash", rs.Hash()).
		Int("segments", len(rs.Segments())).Int("traits", len(rs.Traits())).Str("state_dir", cfg.State.Dir).Msg("engine ready")
	return e, nil
}

// Registry exposes the engine's metrics (for tests and embedding).
func (e *Engine) Registry() *prometheus.Registry { return e.m.reg.Registry }

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

func (e *Engine) inputs() (map[string]segment.Input, error) {
	t := e.cfg.Kafka.Topics
	var reg *connectors.Registry
	if e.cfg.Kafka.SchemaRegistryURL != "" {
		reg = connectors.NewRegistry(e.cfg.Kafka.SchemaRegistryURL, connectors.RegistryOptions{})
	}
	out := map[string]segment.Input{}
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
			Type: in.typ, Format: connectors.Format(in.t.Format), Schema: schema, Registry: reg,
		})
		if err != nil {
			return nil, fmt.Errorf("decoder for %s: %w", in.t.Name, err)
		}
		out[in.t.Name] = segment.Input{Type: in.typ, Decoder: dec}
	}
	return out, nil
}

func (e *Engine) encoder() (segment.ChangeEncoder, error) {
	switch e.cfg.Output.Format {
	case "json":
		return schemas.AppendSegmentChangeJSON, nil
	case "avro":
		return schemas.AppendSegmentChangeAvro, nil
	}
	return nil, fmt.Errorf("output.format %q", e.cfg.Output.Format)
}

// cluster is the Kafka cluster of the config.
func (e *Engine) cluster() connectors.Cluster {
	return connectors.Cluster{Brokers: e.cfg.Kafka.Brokers, Security: e.sec}
}

// Run consumes, segments and publishes until ctx is done or a task fails.
// On return every task has committed what it applied and the publishers
// have sent what they could within a few seconds.
func (e *Engine) Run(ctx context.Context) error {
	if e.closed.Load() {
		return errors.New("engine: Run after Close")
	}
	layout, err := e.prepareTopics(ctx)
	if err != nil {
		return err
	}
	inputs, err := e.inputs()
	if err != nil {
		return err
	}
	enc, err := e.encoder()
	if err != nil {
		return err
	}
	out, closeOutput, err := e.openOutput(layout)
	if err != nil {
		return err
	}
	defer closeOutput()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	groupCh := make(chan partitionOffsets, 64)
	// Cancel before waiting, or an error return (runCtx still live) would
	// wait for the background goroutines forever.
	stopBackground := e.startBackground(runCtx, groupCh)
	defer func() { cancel(); stopBackground() }()
	rt := &partitionRuntime{inputs: inputs, enc: enc, out: out, groupOut: groupCh}
	if e.changelogOn() {
		rt.changelog = func() *connectors.ChangelogWriter {
			return e.cluster().ChangelogWriter(e.cfg.Kafka.Topics.Changelog)
		}
		rt.changelogLimits = layout.changelog
	}
	if e.cfg.Kafka.Assignment == "all" {
		parts := make([]int32, layout.partitions)
		for i := range parts {
			parts[i] = int32(i)
		}
		e.log.Info().Int("partitions", layout.partitions).Strs("brokers", e.cfg.Kafka.Brokers).Msg("running every partition (kafka.assignment all)")
		if err := e.runPartitions(runCtx, parts, rt); err != nil {
			return err
		}
		return ctx.Err()
	}
	return e.runGroup(ctx, runCtx, layout.partitions, rt)
}

// prepareTopics checks that the inputs are co-partitioned and creates (or
// checks) segd's own topics to match: merges, changelog, outputs.
func (e *Engine) prepareTopics(ctx context.Context) (outputLayout, error) {
	n, err := e.cluster().CheckCoPartitioned(ctx, e.inputTopics())
	if err != nil {
		return outputLayout{}, fmt.Errorf("input topics: %w", err)
	}
	rf, err := e.replication(ctx)
	if err != nil {
		return outputLayout{}, err
	}
	// segd's own merges topic follows the inputs' partition count.
	if err := e.cluster().EnsureTopics(ctx, []connectors.TopicSpec{{Name: e.cfg.Kafka.Topics.Merges, Partitions: n, Replication: rf}}); err != nil {
		return outputLayout{}, fmt.Errorf("merges topic: %w", err)
	}
	if _, err := e.cluster().CheckCoPartitioned(ctx, e.consumedTopics()); err != nil {
		return outputLayout{}, fmt.Errorf("merges topic %s: %w", e.cfg.Kafka.Topics.Merges, err)
	}
	layout := outputLayout{partitions: n, replication: rf}
	if e.changelogOn() {
		if layout.changelog, err = e.ensureChangelog(ctx, n, rf); err != nil {
			return outputLayout{}, err
		}
		e.clLimits = layout.changelog
	}
	if err := e.ensureOutputTopics(ctx, e.rs.Load(), layout); err != nil {
		return outputLayout{}, err
	}
	return layout, nil
}

// openOutput opens the producer every partition publishes with (tapped
// for Options.OnPublished) and shows it and the layout to reloads, which
// create new segment topics; closeOutput undoes it.
func (e *Engine) openOutput(layout outputLayout) (out sink, closeOutput func(), err error) {
	prod, err := connectors.NewProducer(e.cfg.Kafka.Brokers, connectors.ProducerOptions{Security: e.sec})
	if err != nil {
		return nil, nil, fmt.Errorf("producer: %w", err)
	}
	e.mu.Lock()
	e.prod = prod
	e.layout = layout
	e.mu.Unlock()
	out = prod
	if e.opt.OnPublished != nil {
		out = tapSink{next: prod, fn: e.opt.OnPublished}
	}
	return out, func() {
		e.mu.Lock()
		e.prod = nil
		e.layout = outputLayout{}
		e.mu.Unlock()
		prod.Close()
	}, nil
}

// startBackground starts what runs beside the partitions until ctx ends:
// the consumer group offset committer (fed by groupCh), the rules file
// watcher and the stale-copy sweep. stop waits for them once ctx ended.
func (e *Engine) startBackground(ctx context.Context, groupCh chan partitionOffsets) (stop func()) {
	var wg sync.WaitGroup
	groupDone := make(chan struct{})
	go func() {
		defer close(groupDone)
		e.commitGroupOffsets(groupCh)
	}()
	wg.Add(2)
	go func() {
		defer wg.Done()
		e.watchRules(ctx)
	}()
	go func() {
		defer wg.Done()
		e.sweepStaleCopies(ctx)
	}()
	return func() {
		wg.Wait()
		close(groupCh)
		<-groupDone
	}
}

// runGroup joins the consumer group and runs each generation's partitions
// until ctx ends or a partition fails.
func (e *Engine) runGroup(ctx, runCtx context.Context, n int, rt *partitionRuntime) error {
	group, err := connectors.JoinGroup(connectors.GroupOptions{
		Brokers:           e.cfg.Kafka.Brokers,
		Group:             e.cfg.Kafka.Group,
		Topics:            e.consumedTopics(),
		SessionTimeout:    e.cfg.Kafka.SessionTimeout,
		RebalanceTimeout:  e.cfg.Kafka.RebalanceTimeout,
		HeartbeatInterval: e.cfg.Kafka.HeartbeatInterval,
		Security:          e.sec,
		Logf: func(format string, args ...any) {
			e.log.Debug().Str("component", "group").Msgf(format, args...)
		},
		// Before its first generation an instance asks for the
		// partitions its store is in sync with the changelog on: a
		// restarted instance gets them back and needs no restore.
		Prefer: func() []int { return e.inSyncPartitions(runCtx, n) },
	})
	if err != nil {
		return err
	}
	defer group.Close()
	e.log.Info().Str("group", e.cfg.Kafka.Group).Int("partitions", n).Strs("brokers", e.cfg.Kafka.Brokers).Msg("joining consumer group")
	for {
		gen, err := group.Next(runCtx)
		if runCtx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if gen != nil {
				// The assignment itself is wrong: no retry fixes it.
				return fmt.Errorf("consumer group %s: %w", e.cfg.Kafka.Group, err)
			}
			// The group client keeps trying (a coordinator not there
			// yet, moving after a broker failure): so do we.
			e.log.Warn().Err(err).Str("group", e.cfg.Kafka.Group).Msg("consumer group not joined yet; retrying")
			select {
			case <-runCtx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
			continue
		}
		if err := e.runGeneration(runCtx, gen, rt); err != nil {
			return err
		}
		if runCtx.Err() != nil {
			return ctx.Err()
		}
	}
}

// runGeneration runs one consumer group generation's partitions until the
// generation ends (a rebalance) or ctx does.
func (e *Engine) runGeneration(ctx context.Context, gen *connectors.Generation, rt *partitionRuntime) error {
	e.m.rebalances.Inc()
	parts := make([]int32, len(gen.Partitions))
	for i, p := range gen.Partitions {
		parts[i] = int32(p)
	}
	e.log.Info().Int32("generation", gen.ID).Str("member", gen.MemberID).Ints("partitions", gen.Partitions).Msg("partitions assigned")
	e.gen.Store(gen)
	defer e.gen.Store(nil)
	var runErr error
	gen.Run(func(gctx context.Context) {
		c, stop := context.WithCancel(ctx)
		defer stop()
		defer context.AfterFunc(gctx, stop)()
		runErr = e.runPartitions(c, parts, rt)
	})
	if runErr == nil && ctx.Err() == nil {
		e.log.Info().Int32("generation", gen.ID).Msg("rebalance: partitions handed back")
	}
	return runErr
}

// partitionRuntime is what every partition of a Run shares.
type partitionRuntime struct {
	inputs   map[string]segment.Input
	enc      segment.ChangeEncoder
	out      sink
	groupOut chan<- partitionOffsets
	// changelog, if set, makes a changelog writer per partition;
	// changelogLimits are its topic's.
	changelog       func() *connectors.ChangelogWriter
	changelogLimits changelogLimits
}

func (e *Engine) changelogOn() bool { return e.cfg.State.Changelog == "on" }

// runPartitions runs the given partitions until ctx is done (a rebalance or
// shutdown) or one of them fails: each is first restored from the changelog
// if its local state is missing or behind, then its task, outbox publisher
// and changelog publisher run. On return every task has committed, the
// publishers have sent what they could within a bound, and the partitions
// are closed. It returns the first failure, or nil when ctx ended.
func (e *Engine) runPartitions(ctx context.Context, parts []int32, rt *partitionRuntime) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
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

	// The stale-copy sweep waits while partitions restore and start; a
	// rule reload waits only while one starts (startRunning), never for a
	// restore.
	e.lifecycleMu.Lock()
	for _, p := range parts {
		if rt.changelog != nil {
			if err := e.prepareState(runCtx, p); err != nil {
				if runCtx.Err() == nil {
					fail(err)
				}
				break
			}
		}
		rp, err := e.startRunning(runCtx, p, rt)
		if err != nil {
			if runCtx.Err() == nil {
				fail(err)
			}
			break
		}
		if rp.cl != nil {
			pubWG.Add(1)
			go func() {
				defer pubWG.Done()
				rp.cl.run(pubCtx)
			}()
		}
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
	e.lifecycleMu.Unlock()
	if runCtx.Err() == nil {
		e.m.owned.Set(float64(len(parts)))
		if at := e.stoppedAt.Swap(nil); at != nil {
			e.m.rebalancePause.Observe(time.Since(*at).Seconds())
		}
		e.ready.Store(true)
		e.log.Info().Int("partitions", len(parts)).Msg("running")
	}
	<-runCtx.Done()
	e.ready.Store(false)
	stopped := time.Now()
	e.stoppedAt.Store(&stopped)
	e.waitTasks(&taskWG)

	pubCancel()
	pubWG.Wait()
	if err := e.handOver(parts); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}

// handOver ends partitions whose tasks have committed: the publishers get a
// bounded time to send what is committed, then the partitions close and
// leave the running set. Whatever is not sent stays in the store: the
// outbox for whoever runs the partition next from this store, the changelog
// entries likewise (another instance restores from the changelog as far as
// it goes and re-derives the rest from the input).
func (e *Engine) handOver(parts []int32) error {
	flushCtx, flushCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer flushCancel()
	// Flush without holding e.mu: up to 10 s of Kafka writes must not
	// block /readyz and the API, which only read e.parts.
	e.mu.Lock()
	stopping := map[int32]*runningPartition{}
	for _, p := range parts {
		if rp := e.parts[p]; rp != nil {
			stopping[p] = rp
		}
	}
	e.mu.Unlock()
	for _, p := range parts {
		if rp := stopping[p]; rp != nil {
			e.flushPartition(flushCtx, p, rp)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var firstErr error
	for _, p := range parts {
		rp := stopping[p]
		if rp == nil {
			continue
		}
		if err := rp.task.part.Close(); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("close partition %d: %w", p, err)
		}
		delete(e.parts, p)
		delete(e.procs, p)
		e.m.forgetPartition(p)
	}
	e.m.owned.Set(0)
	return firstErr
}

// flushPartition sends what partition p committed, within ctx, and closes
// its consumer and changelog writer.
func (e *Engine) flushPartition(ctx context.Context, p int32, rp *runningPartition) {
	// The changelog first: the outbox publishes only what the changelog
	// holds, so the next owner never re-derives a change that consumers
	// already have.
	if rp.cl != nil {
		if err := rp.cl.flush(ctx); err != nil {
			e.log.Warn().Err(err).Int32("partition", p).Msg("changelog not fully written at hand-over")
		}
		rp.cl.w.Close()
	}
	if err := rp.pub.flush(ctx); err != nil {
		e.log.Warn().Err(err).Int32("partition", p).Msg("outbox not fully published at hand-over; it will be sent when this store runs the partition again")
	}
	if err := rp.task.src.Close(); err != nil {
		e.log.Warn().Err(err).Int32("partition", p).Msg("close consumer")
	}
}

// startRunning opens partition p's task and publishers (restored, if it
// had to be) and brings its state to the running rules. It holds reloadMu,
// so a reload cannot switch the rules between the partition's start and
// its task joining the running ones: each starts with the rules every
// other one runs.
func (e *Engine) startRunning(ctx context.Context, p int32, rt *partitionRuntime) (*runningPartition, error) {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	rp, err := e.startPartition(ctx, p, rt.inputs, rt.enc, rt.out)
	if err != nil {
		return nil, err
	}
	rp.task.groupOut = rt.groupOut
	if rt.changelog != nil {
		if err := rp.task.part.EnableChangelog(); err != nil {
			return nil, err
		}
		rp.task.part.SetChangelogCommitBytes(rt.changelogLimits.commitBytes)
		rp.cl = newChangelogPublisher(rp.task.part, rt.changelog(), rp.task.log, rp.task.m)
		rp.cl.limits = rt.changelogLimits
		// Outbox entries wait for the changelog (state.Partition.
		// ReadOutbox): wake the publisher as soon as they are released.
		rp.cl.sent = rp.pub.poke
		rp.task.cl = rp.cl
	}
	// State evaluated with other rules (changed while the partition was
	// stopped, or run by an instance with other rules) is brought to the
	// running rules before any new input, like a live reload.
	n, ran, err := rp.task.proc.ReconcileRules(10000)
	if err != nil {
		return nil, fmt.Errorf("partition %d: reconcile rules: %w", p, err)
	}
	if ran {
		rp.task.log.Warn().Str("stored_rules_hash", rp.task.proc.StoredRulesBefore()).Str("rules_hash", rp.task.proc.Rules().Hash()).Int("changes", n).
			Msg("partition state was evaluated with other rules: re-evaluated every customer with the running rules (RULE_CHANGE)")
	}
	return rp, nil
}

// processorOptions are the config's processor settings, for live, Local
// and backfill partitions alike.
func (e *Engine) processorOptions(inputs map[string]segment.Input, enc segment.ChangeEncoder, onChange func(segment.Change)) segment.Options {
	t := e.cfg.Kafka.Topics
	return segment.Options{
		Inputs:            inputs,
		ChangesTopic:      t.Changes,
		DeadLetterTopic:   t.DeadLetter,
		MergesTopic:       t.Merges,
		EncodeChange:      enc,
		ConsentAttribute:  e.cfg.Consent.Attribute,
		DedupHorizon:      e.cfg.Input.DedupHorizon,
		MaxRecordBytes:    e.cfg.Input.MaxRecordBytes,
		MaxFutureSkew:     e.cfg.Input.MaxFutureSkew,
		MaxAttributes:     e.cfg.Input.MaxAttributes,
		MaxAttributeBytes: e.cfg.Input.MaxAttributeBytes,
		Transient:         isTransient,
		OnChange:          onChange,
		Log:               segment.SampledLog(e.log),
	}
}

// isTransient reports a decode error that is not the record's fault (the
// schema registry is out of reach).
func isTransient(err error) bool { return errors.Is(err, connectors.ErrTransient) }

func (e *Engine) startPartition(ctx context.Context, p int32, inputs map[string]segment.Input, enc segment.ChangeEncoder, out sink) (*runningPartition, error) {
	// A rebalance or shutdown while partitions start stops the rest.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	part, err := e.st.Partition(p)
	if err != nil {
		return nil, fmt.Errorf("open partition %d: %w", p, err)
	}
	obs := &changeObserver{rates: &e.rates, lat: &latencyTracker{}}
	proc, err := segment.New(e.rs.Load(), part, e.processorOptions(inputs, enc, obs.observe))
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
	// A fetch retried in a loop (a broker down, responses slower than
	// kafka.max_wait) fails every backoff; the metric counts each, the
	// log says so every few seconds.
	fetchWarns := &warnLimiter{every: 5 * time.Second}
	src, err := connectors.NewPartitionConsumer(connectors.PartitionConsumerOptions{
		Brokers:   e.cfg.Kafka.Brokers,
		Topics:    e.consumedTopics(),
		Partition: int(p),
		Offsets:   start,
		Latest:    e.cfg.Kafka.StartFrom == "latest",
		MaxIdle:   e.cfg.Kafka.MaxTaskIdle,
		// Back-pressure: what the partition may hold fetched but not
		// yet processed.
		MaxBufferedRecords: e.cfg.Kafka.MaxBufferedRecords,
		MaxBufferedBytes:   e.cfg.Kafka.MaxBufferedBytes,
		// The documented meaning of kafka.max_wait: a fetch waits at most
		// this long for new records.
		FetchMaxWait: e.cfg.Kafka.MaxWait,
		Security:     e.sec,
		OnFetchError: func(topic string, err error) {
			e.m.fetchErrors.Inc()
			if n, ok := fetchWarns.allow(); ok {
				e.log.Warn().Err(err).Int32("partition", p).Str("topic", topic).Int64("suppressed", n).Msg("fetch failed; retrying")
			}
		},
		OnRecordsLost: func(topic string, from, to int64) {
			e.m.recordsLost.WithLabelValues(topic).Add(float64(to - from))
			logRecordsLost(e.log, topic, p, from, to)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("partition %d consumer: %w", p, err)
	}
	log := e.log.With().Int32("partition", p).Logger()
	pm := e.m.partition(p)
	pm.outboxDepth.Set(float64(part.OutboxDepth()))
	pm.changelogDepth.Set(float64(part.ChangelogDepth()))
	pm.reportBuffered(src.Buffered())
	pub := newPublisher(part, out, log, pm, setAsidePolicy{deadLetterTopic: e.cfg.Kafka.Topics.DeadLetter, unknownTopicFor: e.cfg.Output.UnknownTopicTimeout})
	pub.lat = obs.lat
	tk := openTask(p, proc, src, pub, obs, taskOptions{
		commitInterval: e.cfg.Commit.Interval,
		commitEvents:   e.cfg.Commit.MaxEvents,
		commitCaughtUp: e.cfg.Commit.WhenCaughtUp == "on",
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
	for topic, lag := range src.StartLag() {
		tk.setLag(topic, lag)
	}
	rp := &runningPartition{task: tk, pub: pub}
	e.mu.Lock()
	e.parts[p] = rp
	if e.procs == nil {
		e.procs = map[int32]*segment.Processor{}
	}
	e.procs[p] = proc
	e.mu.Unlock()
	log.Info().Interface("offsets", start).Int64("watermark", proc.Clock()).Msg("partition assigned")
	return rp, nil
}

// replication is the replication factor of the topics segd creates
// (merges, changelog): kafka.changelog_replication, else 3 or the number
// of brokers if fewer.
func (e *Engine) replication(ctx context.Context) (int, error) {
	if rf := e.cfg.Kafka.ChangelogReplication; rf > 0 {
		return rf, nil
	}
	n, err := e.cluster().BrokerCount(ctx)
	if err != nil {
		return 0, fmt.Errorf("count brokers: %w", err)
	}
	return min(3, max(1, n)), nil
}

// changelogMaxCompactionLag bounds how long a superseded changelog value
// (an erased customer's earlier state) stays in Kafka; its tombstone goes
// after the topic's delete.retention.ms (Kafka's default: a day).
const changelogMaxCompactionLag = 24 * time.Hour

// ensureChangelog creates the changelog topic (compacted, one partition
// per input partition) or checks the one that exists, and returns how its
// record batch limit cuts commits.
func (e *Engine) ensureChangelog(ctx context.Context, n, rf int) (changelogLimits, error) {
	topic := e.cfg.Kafka.Topics.Changelog
	spec := connectors.TopicSpec{Name: topic, Partitions: n, Replication: rf, Compacted: true,
		Configs: map[string]string{
			"max.message.bytes": strconv.Itoa(changelogMaxMessage),
			// Kafka never compacts the active segment: rolling it hourly
			// lets old versions of a customer go, so a restore reads
			// about one record per customer rather than every commit.
			"segment.ms": "3600000",
			// Erasure: a superseded value (an erased customer's earlier
			// state) is compacted away within a day, not whenever the
			// dirty ratio happens to call for a cleaning.
			"max.compaction.lag.ms": strconv.FormatInt(changelogMaxCompactionLag.Milliseconds(), 10),
		}}
	if err := e.cluster().EnsureTopics(ctx, []connectors.TopicSpec{spec}); err != nil {
		return changelogLimits{}, fmt.Errorf("changelog topic %s: %w", topic, err)
	}
	counts, err := e.cluster().PartitionCounts(ctx, []string{topic})
	if err != nil {
		return changelogLimits{}, fmt.Errorf("changelog topic %s: %w", topic, err)
	}
	if counts[topic] != n {
		return changelogLimits{}, fmt.Errorf("changelog topic %s has %d partitions, the input topics %d: a changelog partition holds one input partition's state, so they must match (delete the changelog or name another in kafka.topics.changelog)", topic, counts[topic], n)
	}
	maxMsg, err := e.cluster().TopicMaxMessageBytes(ctx, topic)
	if err != nil {
		// Not fatal: describing configs may be denied where writing
		// is allowed. Assume a broker's default limit.
		e.log.Warn().Err(err).Str("topic", topic).Int64("assumed_max_message_bytes", changelogAssumedMessage).
			Msg("cannot read the changelog topic's max.message.bytes; cutting commits for the broker default")
		maxMsg = changelogAssumedMessage
	}
	lim, err := limitsFor(maxMsg, e.cfg.Input.MaxAttributeBytes)
	if err != nil {
		return changelogLimits{}, fmt.Errorf("changelog topic %s: %w", topic, err)
	}
	return lim, nil
}

// logRecordsLost warns that Kafka deleted input records before segd read
// them. Nothing in segd can bring them back; the fix is in the topic's
// retention (or in how far behind segd was allowed to fall).
func logRecordsLost(log zerolog.Logger, topic string, p int32, from, to int64) {
	log.Warn().Str("topic", topic).Int32("partition", p).Int64("from", from).Int64("to", to).Int64("records", to-from).
		Msg("input records were deleted by Kafka (retention or DeleteRecords) before segd read them; state misses them: raise the topic's retention.ms/retention.bytes (records stamped with old event times are deleted by time retention at once), or keep segd from falling this far behind")
}

// commitGroupOffsets commits what tasks report to the consumer group, for
// lag monitoring: through the current generation when this process is a
// member, else as a non-member. Failures are logged, never fatal: the
// store's offsets are the truth.
func (e *Engine) commitGroupOffsets(ch <-chan partitionOffsets) {
	gc := e.cluster().GroupOffsetCommitter(e.cfg.Kafka.Group)
	defer gc.Close()
	warns := warnLimiter{every: time.Minute}
	for po := range ch {
		var err error
		if e.cfg.Kafka.Assignment == "group" {
			gen := e.gen.Load()
			if gen == nil {
				continue // between generations: the next report will do
			}
			err = gen.CommitOffsets(po.partition, po.next)
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = gc.Commit(ctx, po.partition, po.next)
			cancel()
		}
		if err == nil {
			continue
		}
		if n, ok := warns.allow(); ok {
			e.log.Warn().Err(err).Str("group", e.cfg.Kafka.Group).Int64("suppressed", n).Msg("cannot commit consumer group offsets (lag monitoring only)")
		}
	}
}

// inSyncPartitions are the partitions below n whose local state is the
// changelog's latest (decideRestore would keep it). Partitions it cannot
// tell about are left out: a preference, not a promise.
func (e *Engine) inSyncPartitions(ctx context.Context, n int) []int {
	if !e.changelogOn() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var out []int
	for p := 0; p < n; p++ {
		synced, ok, err := e.st.SyncedEnd(int32(p))
		if err != nil || !ok {
			continue
		}
		end, err := e.cluster().ChangelogEnd(ctx, e.cfg.Kafka.Topics.Changelog, p)
		if err != nil {
			continue
		}
		if d, _ := decideRestore(synced, true, end); d == keepLocal {
			out = append(out, p)
		}
	}
	return out
}

// countMembers counts a segment's committed members in the partitions this
// process runs: the store may also hold partitions it ran before a
// rebalance moved them, which are someone else's now.
func (e *Engine) countMembers(segment string) (int64, error) {
	return e.st.CountMembersOf(segment, e.ownedFilter())
}

// listMembers is a page of a segment's committed members in the
// partitions this process runs (see countMembers).
func (e *Engine) listMembers(segmentID, cursor string, limit int) ([]string, string, error) {
	return segment.ListMembers(e.st, e.rs.Load(), segmentID, cursor, limit, e.ownedFilter())
}

// ownedFilter reports whether this process runs a partition now.
func (e *Engine) ownedFilter() func(int32) bool {
	owned := map[int32]bool{}
	for _, p := range e.ownedPartitions() {
		owned[p] = true
	}
	return func(p int32) bool { return owned[p] }
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
