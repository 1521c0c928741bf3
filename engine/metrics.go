package engine

import (
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/schemas"
	"github.com/segd/segd/segment"
	"github.com/segd/segd/state"
)

// metrics holds every segd_* metric. Tasks count in plain integers on the
// hot path and push deltas here at each commit, so an event costs no atomic
// operations.
type metrics struct {
	reg *registry
	// totals are what Progress reports, counted beside the metrics.
	totals progressTotals

	events        *prometheus.CounterVec // type
	deadLetters   *prometheus.CounterVec // reason
	duplicates    prometheus.Counter
	late          prometheus.Counter
	tooLate       prometheus.Counter
	deletions     prometheus.Counter
	changes       *prometheus.CounterVec // kind
	timers        prometheus.Counter
	commitSeconds prometheus.Histogram
	published     *prometheus.CounterVec // partition
	publishFail   *prometheus.GaugeVec   // partition
	publishErrs   *prometheus.CounterVec // partition
	setAside      *prometheus.CounterVec // class
	publishSecs   prometheus.Histogram
	eventToChange prometheus.Histogram
	consumeToChg  prometheus.Histogram
	corruptOutbox prometheus.Counter
	watermark     *prometheus.GaugeVec // partition
	outboxDepth   *prometheus.GaugeVec // partition
	evaluations   prometheus.Counter
	transitions   *prometheus.CounterVec // segment, kind
	lag           *prometheus.GaugeVec   // topic, partition
	bufRecords    *prometheus.GaugeVec   // partition
	bufBytes      *prometheus.GaugeVec   // partition
	pausedTopics  *prometheus.GaugeVec   // partition

	changelogRecords *prometheus.CounterVec // partition
	changelogSecs    prometheus.Histogram
	changelogDepth   *prometheus.GaugeVec // partition
	restoring        prometheus.Gauge
	restoreRecords   prometheus.Counter
	restoreSeconds   prometheus.Histogram
	rebalances       prometheus.Counter
	owned            prometheus.Gauge
	rebalancePause   prometheus.Histogram
	fetchErrors      prometheus.Counter
	recordsLost      *prometheus.CounterVec
	registryErrs     *prometheus.CounterVec // partition
	decodeWait       *prometheus.GaugeVec   // partition
}

func newMetrics() *metrics {
	reg := newRegistry()
	m := &metrics{
		reg: reg,
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "segd_events_applied_total", Help: "Input events applied to customer state, by event type.",
		}, []string{"type"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "segd_dead_letters_total", Help: "Input records sent to the dead-letter topic, by reason.",
		}, []string{"reason"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "segd_duplicate_events_total", Help: "Events skipped because their id was applied recently.",
		}),
		late: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "segd_late_events_total", Help: "Events older than their partition's watermark (applied at the watermark).",
		}),
		tooLate: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "segd_too_late_events_total", Help: "Behavioral events older than the longest window (plus a bucket) behind the watermark: counted and ignored.",
		}),
		deletions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "segd_customer_deletions_total", Help: "Customers erased.",
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "segd_segment_changes_total", Help: "Segment transitions emitted, by kind (ENTER, EXIT).",
		}, []string{"kind"}),
		timers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "segd_timers_fired_total", Help: "Customer timers fired as event time advanced.",
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "segd_commit_seconds", Help: "Duration of a task's atomic commit (state, offsets, outbox); of a pipelined one, its staging plus its writer's time.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "segd_outbox_published_total", Help: "Outbox records acknowledged by Kafka, by partition.",
		}, []string{"partition"}),
		publishFail: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "segd_publish_failing", Help: "1 while a partition's outbox cannot be published to Kafka (its last attempt failed), by partition.",
		}, []string{"partition"}),
		publishErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "segd_publish_errors_total", Help: "Failed outbox publish attempts, by partition.",
		}, []string{"partition"}),
		setAside: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "segd_outbox_set_aside_total", Help: "Outbox records Kafka refused for good, set aside as dead letters (class permanent or unknown_topic) or dropped (a dead letter refused for good), by class.",
		}, []string{"class"}),
		publishSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "segd_publish_seconds", Help: "Duration of one outbox publish round trip (read, write acks=all, delete).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		eventToChange: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "segd_event_to_change_seconds", Help: "From an input record's Kafka timestamp to Kafka's acknowledgement of a change it caused (records stamped over a day ago are left out).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}),
		consumeToChg: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "segd_consume_to_change_seconds", Help: "From segd reading an input record to Kafka's acknowledgement of a change it caused.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}),
		evaluations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "segd_rule_evaluations_total", Help: "Segment conditions evaluated (only the segments an event can affect are).",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "segd_segment_transitions_total", Help: "Segment changes by segment and kind (ENTER, EXIT).",
		}, []string{"segment", "kind"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "segd_consumer_lag", Help: "Records behind the end of each input topic partition, as of the last record read.",
		}, []string{"topic", "partition"}),
		bufRecords: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "segd_consumer_buffered_records", Help: "Input records fetched but not yet processed, by partition (bounded by kafka.max_buffered_records), as of the task's last poll.",
		}, []string{"partition"}),
		bufBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "segd_consumer_buffered_bytes", Help: "Keys, values and headers of the input records fetched but not yet processed, by partition (bounded by kafka.max_buffered_bytes), as of the task's last poll.",
		}, []string{"partition"}),
		pausedTopics: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "segd_consumer_paused_topics", Help: "Input topics of a partition whose fetching waits because their share of the buffer is full (they are ahead of the others, or the partition is behind), as of the task's last poll.",
		}, []string{"partition"}),
		corruptOutbox: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "segd_outbox_corrupt_total", Help: "Outbox entries skipped because they could not be decoded.",
		}),
		watermark: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "segd_watermark_seconds", Help: "Event-time watermark of each partition, Unix seconds.",
		}, []string{"partition"}),
		outboxDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "segd_outbox_depth", Help: "Committed outbox records not yet acknowledged by Kafka.",
		}, []string{"partition"}),
		changelogRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "segd_changelog_records_total", Help: "State changelog records acknowledged by Kafka, by partition.",
		}, []string{"partition"}),
		changelogSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "segd_changelog_write_seconds", Help: "Duration of one changelog write (read pending entries, produce acks=all, delete).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		changelogDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "segd_changelog_depth", Help: "Committed changelog entries (one per commit) not yet acknowledged by Kafka.",
		}, []string{"partition"}),
		restoring: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "segd_restoring_partitions", Help: "Partitions being restored from the changelog now (/readyz is false meanwhile).",
		}),
		restoreRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "segd_restore_records_total", Help: "Changelog records applied while restoring partitions.",
		}),
		restoreSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "segd_restore_seconds", Help: "Duration of one partition's restore from the changelog.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16),
		}),
		rebalances: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "segd_rebalances_total", Help: "Consumer group generations this instance joined.",
		}),
		owned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "segd_owned_partitions", Help: "Partitions this instance runs now.",
		}),
		rebalancePause: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "segd_rebalance_pause_seconds", Help: "From this instance's partitions stopping for a rebalance to all of its new ones running (restores included).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16),
		}),
		fetchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "segd_fetch_errors_total", Help: "Failed input fetches (a broker down, a leader moving, a response slower than kafka.max_wait allows); each is retried.",
		}),
		recordsLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "segd_input_records_lost_total", Help: "Input records Kafka deleted (retention, DeleteRecords) before segd read them, by topic: state misses them.",
		}, []string{"topic"}),
	}
	m.registryErrs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "segd_registry_errors_total", Help: "Transient failures (schema registry down, slow, 5xx) decoding an input record, by partition; each is retried, the partition waiting at the record.",
	}, []string{"partition"})
	m.decodeWait = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "segd_decode_waiting", Help: "1 while a partition waits at a record it cannot decode because the schema registry does not answer, by partition.",
	}, []string{"partition"})
	reg.MustRegister(m.registryErrs, m.decodeWait)
	reg.MustRegister(m.fetchErrors, m.recordsLost, m.bufRecords, m.bufBytes, m.pausedTopics)
	reg.MustRegister(m.changelogRecords, m.changelogSecs, m.changelogDepth, m.restoring, m.restoreRecords, m.restoreSeconds, m.rebalances, m.owned, m.rebalancePause)
	reg.MustRegister(m.events, m.deadLetters, m.duplicates, m.late, m.tooLate, m.deletions, m.changes, m.timers,
		m.commitSeconds, m.published, m.publishFail, m.publishErrs, m.setAside, m.publishSecs, m.eventToChange, m.consumeToChg, m.corruptOutbox, m.evaluations, m.transitions, m.lag, m.watermark, m.outboxDepth,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// registry is a Prometheus registry that remembers the names of the
// metric families registered with it, so that the dashboard, alert and
// docs checks compare with what segd really exports.
type registry struct {
	*prometheus.Registry
	mu    sync.Mutex
	names map[string]bool
}

func newRegistry() *registry {
	return &registry{Registry: prometheus.NewRegistry(), names: map[string]bool{}}
}

var descName = regexp.MustCompile(`fqName: "([^"]+)"`)

// MustRegister registers cs and records their metric names.
func (r *registry) MustRegister(cs ...prometheus.Collector) {
	r.Registry.MustRegister(cs...)
	ch := make(chan *prometheus.Desc, 16)
	go func() {
		defer close(ch)
		for _, c := range cs {
			c.Describe(ch)
		}
	}()
	r.mu.Lock()
	defer r.mu.Unlock()
	for d := range ch {
		if m := descName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
}

// metricNames returns the names of every registered metric family.
func (r *registry) metricNames() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]bool, len(r.names))
	for n := range r.names {
		out[n] = true
	}
	return out
}

// partitionMetrics are a partition's labelled children, resolved once.
type partitionMetrics struct {
	all             *metrics
	events          [schemas.NumEventTypes]prometheus.Counter
	enter, exit     prometheus.Counter
	published       prometheus.Counter
	publishFailing  prometheus.Gauge
	publishErrors   prometheus.Counter
	setAside        *prometheus.CounterVec
	publishSeconds  prometheus.Histogram
	eventToChange   prometheus.Histogram
	consumeToChange prometheus.Histogram
	corruptOutbox   prometheus.Counter
	watermark       prometheus.Gauge
	outboxDepth     prometheus.Gauge
	bufRecords      prometheus.Gauge
	bufBytes        prometheus.Gauge
	pausedTopics    prometheus.Gauge

	changelogRecords prometheus.Counter
	changelogSeconds prometheus.Histogram
	changelogDepth   prometheus.Gauge

	registryErrors prometheus.Counter
	decodeWaiting  prometheus.Gauge
}

// forgetPartition removes the gauges of a partition this process no
// longer runs: left behind, a handed-over partition's last outbox depth or
// lag would hold alerts (and anyone waiting for zero) forever. Counters
// stay; they just stop growing.
func (m *metrics) forgetPartition(p int32) {
	label := strconv.Itoa(int(p))
	m.watermark.DeleteLabelValues(label)
	m.outboxDepth.DeleteLabelValues(label)
	m.publishFail.DeleteLabelValues(label)
	m.changelogDepth.DeleteLabelValues(label)
	m.decodeWait.DeleteLabelValues(label)
	m.lag.DeletePartialMatch(prometheus.Labels{"partition": label})
	m.bufRecords.DeleteLabelValues(label)
	m.bufBytes.DeleteLabelValues(label)
	m.pausedTopics.DeleteLabelValues(label)
}

func (m *metrics) partition(p int32) *partitionMetrics {
	label := strconv.Itoa(int(p))
	pm := &partitionMetrics{
		all:             m,
		enter:           m.changes.WithLabelValues("ENTER"),
		exit:            m.changes.WithLabelValues("EXIT"),
		published:       m.published.WithLabelValues(label),
		publishFailing:  m.publishFail.WithLabelValues(label),
		publishErrors:   m.publishErrs.WithLabelValues(label),
		setAside:        m.setAside,
		publishSeconds:  m.publishSecs,
		eventToChange:   m.eventToChange,
		consumeToChange: m.consumeToChg,
		corruptOutbox:   m.corruptOutbox,
		watermark:       m.watermark.WithLabelValues(label),
		outboxDepth:     m.outboxDepth.WithLabelValues(label),
		bufRecords:      m.bufRecords.WithLabelValues(label),
		bufBytes:        m.bufBytes.WithLabelValues(label),
		pausedTopics:    m.pausedTopics.WithLabelValues(label),

		changelogRecords: m.changelogRecords.WithLabelValues(label),
		changelogSeconds: m.changelogSecs,
		changelogDepth:   m.changelogDepth.WithLabelValues(label),

		registryErrors: m.registryErrs.WithLabelValues(label),
		decodeWaiting:  m.decodeWait.WithLabelValues(label),
	}
	for t := 1; t < schemas.NumEventTypes; t++ {
		pm.events[t] = m.events.WithLabelValues(schemas.EventType(t).String())
	}
	return pm
}

// report pushes what the processor counted since the last report.
func (pm *partitionMetrics) report(p *segment.Processor, last *segment.Stats, commit time.Duration) {
	s := p.Stats()
	for t := 1; t < schemas.NumEventTypes; t++ {
		if d := s.Events[t] - last.Events[t]; d > 0 {
			pm.events[t].Add(float64(d))
			pm.all.totals.events.Add(d)
		}
	}
	addDelta(pm.all.duplicates, s.Duplicates, &last.Duplicates)
	addDelta(pm.all.late, s.Late, &last.Late)
	addDelta(pm.all.tooLate, s.TooLate, &last.TooLate)
	addDelta(pm.all.deletions, s.Deleted, &last.Deleted)
	pm.all.totals.enters.Add(s.Enters - last.Enters)
	pm.all.totals.exits.Add(s.Exits - last.Exits)
	addDelta(pm.enter, s.Enters, &last.Enters)
	addDelta(pm.exit, s.Exits, &last.Exits)
	addDelta(pm.all.timers, s.Timers, &last.Timers)
	addDelta(pm.all.evaluations, s.Evaluations, &last.Evaluations)
	if last.SegmentChanges == nil {
		last.SegmentChanges = map[string][2]uint64{}
	}
	for seg, n := range s.SegmentChanges {
		l := last.SegmentChanges[seg]
		if d := n[0] - l[0]; d > 0 {
			pm.all.transitions.WithLabelValues(seg, "ENTER").Add(float64(d))
		}
		if d := n[1] - l[1]; d > 0 {
			pm.all.transitions.WithLabelValues(seg, "EXIT").Add(float64(d))
		}
		last.SegmentChanges[seg] = n
	}
	last.Events = s.Events
	if last.DeadLetters == nil {
		last.DeadLetters = map[string]uint64{}
	}
	for reason, n := range s.DeadLetters {
		if d := n - last.DeadLetters[reason]; d > 0 {
			pm.all.deadLetters.WithLabelValues(reason).Add(float64(d))
			pm.all.totals.deadLetters.Add(d)
			last.DeadLetters[reason] = n
		}
	}
	pm.all.commitSeconds.Observe(commit.Seconds())
	pm.watermark.Set(float64(p.Clock()) / 1000)
	pm.outboxDepth.Set(float64(p.Partition().OutboxDepth()))
	// Also here, not only after a write: while the changelog cannot be
	// written (a broker down) the depth must show it growing.
	pm.changelogDepth.Set(float64(p.Partition().ChangelogDepth()))
}

// reportBuffered exports what the partition's consumer buffers.
func (pm *partitionMetrics) reportBuffered(s connectors.BufferStats) {
	pm.bufRecords.Set(float64(s.Records))
	pm.bufBytes.Set(float64(s.Bytes))
	pm.pausedTopics.Set(float64(s.PausedTopics))
}

func addDelta(c prometheus.Counter, now uint64, last *uint64) {
	if d := now - *last; d > 0 {
		c.Add(float64(d))
	}
	*last = now
}

// registerStore exports the state store's statistics, read when scraped.
func (m *metrics) registerStore(st *state.Store) {
	gauge := func(name, help string, f func(state.Metrics) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(st.Metrics()) })
	}
	counter := func(name, help string, f func(state.Metrics) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(st.Metrics()) })
	}
	m.reg.MustRegister(
		counter("segd_cache_hits_total", "Customer record lookups served by the write-back cache.", func(x state.Metrics) float64 { return float64(x.CacheHits) }),
		counter("segd_cache_misses_total", "Customer record lookups the write-back cache missed (new customers, the cold tier's and Pebble's reads).", func(x state.Metrics) float64 { return float64(x.CacheMisses) }),
		counter("segd_cache_cold_hits_total", "Cache misses served by the cold tier (evicted records kept encoded in memory, state.cold_cache_bytes) instead of a Pebble read.", func(x state.Metrics) float64 { return float64(x.ColdHits) }),
		gauge("segd_cache_bytes", "Approximate bytes of decoded records in the cache.", func(x state.Metrics) float64 { return float64(x.CacheBytes) }),
		gauge("segd_cache_entries", "Customer records in the cache.", func(x state.Metrics) float64 { return float64(x.CacheEntries) }),
		gauge("segd_state_disk_bytes", "Disk space used by the Pebble store.", func(x state.Metrics) float64 { return float64(x.DiskBytes) }),
		gauge("segd_state_read_amplification", "Pebble read amplification.", func(x state.Metrics) float64 { return float64(x.ReadAmp) }),
		counter("segd_state_compactions_total", "Pebble compactions.", func(x state.Metrics) float64 { return float64(x.Compactions) }),
		counter("segd_state_filter_skips_total", "Lookups of customers the partition never stored, answered by its customer-id filter without reading Pebble.", func(x state.Metrics) float64 { return float64(x.FilterSkips) }),
		gauge("segd_state_filter_bytes", "Memory of the customer-id filters (docs/state.md).", func(x state.Metrics) float64 { return float64(x.FilterBytes) }),
		gauge("segd_timers_pending", "Timers in the in-memory near-horizon heaps.", func(x state.Metrics) float64 { return float64(x.TimersPending) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "segd_state_disk_full", Help: "1 while the state disk is full: writes wait and every partition is paused."},
			func() float64 { return b2f(st.DiskFull()) }),
	)
}

// segmentSizes exports segd_segment_size{segment}, the committed member
// count of each segment of the running rules, read when scraped (from the
// per-partition counters: no record is decoded).
type segmentSizes struct{ e *Engine }

var segmentSizeDesc = prometheus.NewDesc("segd_segment_size", "Committed members of each segment of the running rules.", []string{"segment"}, nil)

func (c segmentSizes) Describe(ch chan<- *prometheus.Desc) { ch <- segmentSizeDesc }

func (c segmentSizes) Collect(ch chan<- prometheus.Metric) {
	rs := c.e.rs.Load()
	if rs == nil {
		return
	}
	for _, s := range rs.Segments() {
		n, err := c.e.countMembers(s.ID)
		if err != nil {
			return // store closed: nothing to report
		}
		ch <- prometheus.MustNewConstMetric(segmentSizeDesc, prometheus.GaugeValue, float64(n), s.ID)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
