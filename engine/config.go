package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/segd/segd/segment"

	"github.com/segd/segd/internal/envconf"

	"gopkg.in/yaml.v3"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/rules"
	"github.com/segd/segd/schemas"
)

// Config is the whole configuration of a segd process. Zero values mean
// "use the default"; EnsureDefaults fills them in and Validate reports every
// problem at once. docs/config.md documents each field.
type Config struct {
	Kafka   KafkaConfig   `yaml:"kafka"`
	Rules   RulesConfig   `yaml:"rules"`
	State   StateConfig   `yaml:"state"`
	Commit  CommitConfig  `yaml:"commit"`
	Clock   ClockConfig   `yaml:"clock"`
	Input   InputConfig   `yaml:"input"`
	Output  OutputConfig  `yaml:"output"`
	Consent ConsentConfig `yaml:"consent"`
	API     APIConfig     `yaml:"api"`
	Log     LogConfig     `yaml:"log"`
}

// KafkaConfig says where Kafka is and which topics segd uses.
type KafkaConfig struct {
	// Brokers is the bootstrap list. Required.
	Brokers []string `yaml:"brokers"`
	// Group is the consumer group: instances with the same group share
	// the partitions (Assignment "group"), and offsets are committed to
	// it for lag monitoring (the store's offsets are the truth). Default
	// "segd".
	Group string `yaml:"group"`
	// Assignment is how this process gets its partitions: "group"
	// (default) joins Group with segd's co-partitioning assignor, so several
	// instances share the partitions and take over each other's when one
	// leaves or dies; "all" owns every partition without joining (one
	// instance per group; no rebalances).
	Assignment string `yaml:"assignment"`
	// SessionTimeout: an instance that sends no heartbeat for this long
	// is dropped from the group and its partitions move (the failover
	// time after a crash). Default 10s; 6s..5m (the broker's
	// group.min/max.session.timeout.ms bound it too).
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// RebalanceTimeout bounds how long an instance may take to hand its
	// partitions over in a rebalance (commit, publish, flush the
	// changelog). Default 60s.
	RebalanceTimeout time.Duration `yaml:"rebalance_timeout"`
	// HeartbeatInterval. Default 1s; below SessionTimeout/3.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// ChangelogReplication is the replication factor segd creates its own
	// topics with (changelog, merges). Default: 3, or the number of
	// brokers if fewer.
	ChangelogReplication int `yaml:"changelog_replication"`
	// CreateTopics: true (default) creates every topic segd may write that
	// does not exist yet (the changes and dead-letter topics, each
	// segment's own topic:) with the input topics' partition count and
	// ChangelogReplication, at start and at every rules reload; false
	// makes segd refuse to start (or refuse the reload) naming the missing
	// topics. segd's merges and changelog topics are always created.
	CreateTopics string `yaml:"create_topics"`
	// SchemaRegistryURL is a Confluent-compatible schema registry, needed
	// when an input topic's format is "confluent". Default none.
	SchemaRegistryURL string `yaml:"schema_registry_url"`
	// StartFrom is where a partition without a stored offset starts:
	// "earliest" (default) or "latest".
	StartFrom string `yaml:"start_from"`
	// MaxWait bounds how long a fetch waits for new records. Default 250ms,
	// at least 10ms: kafka-go also gives a fetch's response this long
	// (less a quarter, its allowance for the round trip) to start
	// arriving, and retries a fetch that misses it without a word, so a
	// value near the brokers' round trip never reads a large fetch.
	MaxWait time.Duration `yaml:"max_wait"`
	// MaxTaskIdle: a partition merges its input topics by timestamp; when
	// one topic is behind with nothing fetched yet, the others wait this
	// long for it. Default 500ms.
	MaxTaskIdle time.Duration `yaml:"max_task_idle"`
	// MaxBufferedRecords bounds, per partition, the input records fetched
	// and not yet handed to the task, over all its input topics (each
	// topic gets an equal share); a topic whose share is full pauses
	// fetching. Default 10000.
	MaxBufferedRecords int `yaml:"max_buffered_records"`
	// MaxBufferedBytes bounds the same records' keys, values and headers
	// per partition, shared out the same way. Default 64 MiB.
	MaxBufferedBytes int64 `yaml:"max_buffered_bytes"`
	// Topics names the input and output topics.
	Topics TopicsConfig `yaml:"topics"`
	// TLS encrypts every connection to Kafka.
	TLS TLSConfig `yaml:"tls"`
	// SASL authenticates segd to Kafka.
	SASL SASLConfig `yaml:"sasl"`
}

// TLSConfig configures TLS to the brokers.
type TLSConfig struct {
	// Enabled turns TLS on. Default false.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs to trust. Default: the system's.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and key, for
	// mutual TLS. Default none.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the broker certificate.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify skips the broker certificate check (tests only).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// SASLConfig configures SASL authentication. The password comes from
// exactly one of Password, PasswordFile and PasswordEnv; it never appears
// in logs or error messages.
type SASLConfig struct {
	// Mechanism is plain, scram-sha-256 or scram-sha-512. Default none.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	// Password inline (prefer PasswordFile or PasswordEnv).
	Password string `yaml:"password"`
	// PasswordFile is a file holding the password (trailing newline
	// ignored), e.g. a mounted Kubernetes secret.
	PasswordFile string `yaml:"password_file"`
	// PasswordEnv names an environment variable holding the password.
	PasswordEnv string `yaml:"password_env"`
	// InsecureAllowPlaintext lets mechanism plain run without
	// kafka.tls.enabled, which sends the password in the clear: Validate
	// refuses that unless this is true, and segd then logs a warning at
	// every start. Default false.
	InsecureAllowPlaintext bool `yaml:"insecure_allow_plaintext"`
}

// TopicsConfig names segd's topics.
type TopicsConfig struct {
	Purchases   InputTopic `yaml:"purchases"`   // default customer.purchases
	Browses     InputTopic `yaml:"browses"`     // default customer.browses
	Engagements InputTopic `yaml:"engagements"` // default customer.engagements
	Profiles    InputTopic `yaml:"profiles"`    // default customer.profiles
	// Changes receives SegmentChange records. Default segment.changes.
	Changes string `yaml:"changes"`
	// DeadLetter receives records segd cannot use. Default segd.deadletter.
	DeadLetter string `yaml:"dead_letter"`
	// Merges carries identity merges between partitions (segd's own
	// topic, created with the input topics' partition count). Default
	// segd.merges.
	Merges string `yaml:"merges"`
	// Changelog receives every committed state change (state.changelog),
	// so a partition can be rebuilt on another instance. segd creates it
	// compacted, with the input topics' partition count. Default
	// "<group>-changelog".
	Changelog string `yaml:"changelog"`
}

// InputTopic is one input topic and how its values are encoded.
type InputTopic struct {
	Name string `yaml:"name"`
	// Format is "avro" (plain Avro binary with the schema in schemas/,
	// default), "confluent" (Avro in the Confluent wire format; needs
	// kafka.schema_registry_url) or "json".
	Format string `yaml:"format"`
	// SchemaFile, for the avro format, is the writer schema (.avsc) the
	// producers use, when it is not the one in schemas/; for the
	// confluent format, it is the reader schema the registry's writer
	// schemas are resolved to (its defaults fill the fields an older
	// writer lacks), when it is not the one in schemas/. Default none.
	SchemaFile string `yaml:"schema_file"`
}

// RulesConfig points at the rules file.
type RulesConfig struct {
	// File is the rules file (YAML). Required.
	File string `yaml:"file"`
	// WatchInterval: the file is checked this often and reloaded when it
	// changes (as POST /v1/rules/reload does). Default 2s; negative: never.
	WatchInterval time.Duration `yaml:"watch_interval"`
}

// StateConfig configures the embedded Pebble store.
type StateConfig struct {
	// Dir holds the store. Default ./segd-data.
	Dir string `yaml:"dir"`
	// CacheBytes bounds the in-memory write-back cache of customer records.
	// Default 256 MiB.
	CacheBytes int64 `yaml:"cache_bytes"`
	// BlockCacheBytes is Pebble's block cache: the store's blocks (records,
	// timer and outbox keys) read back from files. Default 128 MiB.
	BlockCacheBytes int64 `yaml:"block_cache_bytes"`
	// ColdCacheBytes holds the encodings of records the write-back cache
	// evicted, so that a customer seen again is decoded from memory
	// instead of read from Pebble. Default 128 MiB.
	ColdCacheBytes int64 `yaml:"cold_cache_bytes"`
	// Changelog is "on" (default) or "off". On, every commit is also sent
	// to kafka.topics.changelog, and a partition whose local state is
	// missing or behind is restored from it before it runs. Off, a
	// partition that moves starts over from its input topics' retention.
	Changelog string `yaml:"changelog"`
}

// CommitConfig says how often a task commits state, offsets and outbox in
// one atomic batch.
type CommitConfig struct {
	// Interval is the longest time between commits. Default 200ms.
	Interval time.Duration `yaml:"interval"`
	// MaxEvents commits after this many events. Default 50000.
	MaxEvents int `yaml:"max_events"`
	// MaxBytes commits once the next commit would write about this many
	// bytes (its changes and index entries plus its dirty records'
	// in-memory size), whatever its events: a rule set with many
	// segments stages megabytes of changes in a few thousand events.
	// Default 32 MiB; 1 MiB..1 GiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// WhenCaughtUp is "on" (default) or "off". On, a partition that has
	// handled everything its input holds and has changes waiting to be
	// published commits at once instead of waiting for Interval: changes
	// leave within a produce round trip of their event. Under load the
	// input is never drained, so commits still come from Interval and
	// MaxEvents (docs/operations.md, "Latency").
	WhenCaughtUp string `yaml:"when_caught_up"`
}

// ClockConfig configures event time.
type ClockConfig struct {
	// IdleAfter: once a task has seen no event for this long, its watermark
	// follows the wall clock (minus IdleLag) so time-based exits are never
	// stuck. Default 2s; a negative value disables it (event time only).
	IdleAfter time.Duration `yaml:"idle_after"`
	// IdleLag is how far behind the wall clock an idle watermark stays, to
	// leave room for events still in flight. Default 1s.
	IdleLag time.Duration `yaml:"idle_lag"`
}

// Defaults and upper limits of the profile attribute bounds. The upper
// limits keep a customer's record far below the changelog's per-record
// limit (changelogMaxMessage; docs/state.md).
const (
	DefaultMaxAttributes     = segment.DefaultMaxAttributes
	DefaultMaxAttributeBytes = segment.DefaultMaxAttributeBytes
	maxMaxAttributes         = 1 << 16
	maxMaxAttributeBytes     = 1 << 20
)

// InputConfig bounds what an input record may be.
type InputConfig struct {
	// MaxRecordBytes: larger values are dead-lettered. Default 1 MiB.
	MaxRecordBytes int `yaml:"max_record_bytes"`
	// MaxFutureSkew: events stamped further than this ahead of the wall
	// clock are dead-lettered. Default 1h.
	MaxFutureSkew time.Duration `yaml:"max_future_skew"`
	// DedupHorizon: an event id seen again within this much event time for
	// the same customer is applied once. Default 1h.
	DedupHorizon time.Duration `yaml:"dedup_horizon"`
	// MaxAttributes bounds the profile attributes one customer may hold,
	// and the attributes one profile event may carry: an update past it
	// is dead-lettered (too_many_attributes). Default 256; 1..65536.
	MaxAttributes int `yaml:"max_attributes"`
	// MaxAttributeBytes bounds the total size of one customer's profile
	// attributes (names plus values: a string's length, 8 for a number,
	// 1 for a boolean): an update past it is dead-lettered
	// (too_many_attributes). Default 65536 (64 KiB); 64..1048576.
	MaxAttributeBytes int `yaml:"max_attribute_bytes"`
}

// OutputConfig configures the SegmentChange records.
type OutputConfig struct {
	// Format is "avro" (default; schemas/segment_change.avsc) or "json".
	Format string `yaml:"format"`
	// UnknownTopicTimeout: a record whose topic Kafka says does not exist
	// is retried this long (a topic created a moment ago answers so
	// briefly), then set aside as a dead letter so the partition's output
	// goes on. Default 2m; 1s..24h.
	UnknownTopicTimeout time.Duration `yaml:"unknown_topic_timeout"`
}

// ConsentConfig configures consent handling.
type ConsentConfig struct {
	// Attribute is the boolean profile attribute that, when false, keeps a
	// customer out of every segment marked requires_consent. Default
	// consent_marketing.
	Attribute string `yaml:"attribute"`
}

// APIConfig configures the HTTP API.
type APIConfig struct {
	// Addr is the listen address. Default 127.0.0.1:8080; "off" disables.
	Addr string `yaml:"addr"`
	// Token is deprecated: one bearer token with every scope (read, pii
	// and admin), named "api.token" in the audit log. Prefer Auth.
	// Default none.
	Token string `yaml:"token"`
	// ReadyMaxLag: /readyz answers 503 while any partition is more than
	// this many records behind the end of an input topic. Default 100000;
	// negative: lag never affects readiness.
	ReadyMaxLag int64 `yaml:"ready_max_lag"`
	// InsecureAllowUnauthenticated lets segd serve a non-loopback Addr
	// with no credentials configured, to anyone who can reach it. Validate
	// refuses that configuration unless this is true; segd then logs a
	// warning at every start. Default false.
	InsecureAllowUnauthenticated bool `yaml:"insecure_allow_unauthenticated"`
	// AllowedHosts are the Host header names (without port) the API
	// answers, against DNS rebinding; others get 421. Default: localhost,
	// 127.0.0.1 and ::1 while Addr is a loopback address, no check
	// otherwise. When set, it is checked whatever Addr is, except on
	// /healthz, /readyz and /metrics of a non-loopback Addr (probes and
	// scrapes send the pod IP). "*" turns the check off.
	AllowedHosts []string `yaml:"allowed_hosts"`
	// CORSOrigins are the browser origins (scheme://host[:port]) allowed
	// to call the API from other sites. Default none: no CORS headers,
	// cross-site mutations refused.
	CORSOrigins []string `yaml:"cors_origins"`
	// ReadTimeout bounds reading a whole request, body included. Default
	// 30s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing a response, from the end of the request
	// headers. Default 2m (a preview over a large store takes a while).
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes keep-alive connections idle this long. Default
	// 2m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// AdminConcurrency is how many rules previews and reloads may run at
	// once; more get 429. Default 2.
	AdminConcurrency int `yaml:"admin_concurrency"`
	// AdminRate is how many previews and reloads one client (credential,
	// or address without one) may start per minute, with bursts of up to
	// a third of it (at least 1); more get 429. Default 30.
	AdminRate int `yaml:"admin_rate"`
	// DownloadLinkTTL is how long a signed member export link stays
	// valid. Default 1m; 1s..1h.
	DownloadLinkTTL time.Duration `yaml:"download_link_ttl"`
	// Auth names the API's bearer tokens.
	Auth APIAuthConfig `yaml:"auth"`
	// TLS serves the API over HTTPS, optionally with client certificates.
	TLS APITLSConfig `yaml:"tls"`
}

// LogConfig configures logging.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // json (default) or console
}

// Default topic names.
const (
	DefaultPurchasesTopic   = "customer.purchases"
	DefaultBrowsesTopic     = "customer.browses"
	DefaultEngagementsTopic = "customer.engagements"
	DefaultProfilesTopic    = "customer.profiles"
	DefaultChangesTopic     = segment.DefaultChangesTopic
	DefaultDeadLetterTopic  = segment.DefaultDeadLetterTopic
	DefaultMergesTopic      = "segd.merges"
)

// EnsureDefaults fills zero fields with their defaults.
func (c *Config) EnsureDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	k := &c.Kafka
	def(&k.Group, "segd")
	def(&k.StartFrom, "earliest")
	def(&k.Assignment, "group")
	if k.SessionTimeout == 0 {
		k.SessionTimeout = 10 * time.Second
	}
	if k.RebalanceTimeout == 0 {
		k.RebalanceTimeout = 60 * time.Second
	}
	if k.HeartbeatInterval == 0 {
		k.HeartbeatInterval = time.Second
	}
	if k.MaxWait == 0 {
		k.MaxWait = 250 * time.Millisecond
	}
	if k.MaxTaskIdle == 0 {
		k.MaxTaskIdle = 500 * time.Millisecond
	}
	if k.MaxBufferedRecords == 0 {
		k.MaxBufferedRecords = connectors.DefaultMaxBufferedRecords
	}
	if k.MaxBufferedBytes == 0 {
		k.MaxBufferedBytes = connectors.DefaultMaxBufferedBytes
	}
	t := &k.Topics
	def(&t.Purchases.Name, DefaultPurchasesTopic)
	def(&t.Browses.Name, DefaultBrowsesTopic)
	def(&t.Engagements.Name, DefaultEngagementsTopic)
	def(&t.Profiles.Name, DefaultProfilesTopic)
	for _, in := range []*InputTopic{&t.Purchases, &t.Browses, &t.Engagements, &t.Profiles} {
		def(&in.Format, "avro")
	}
	def(&t.Changes, DefaultChangesTopic)
	def(&t.DeadLetter, DefaultDeadLetterTopic)
	def(&t.Merges, DefaultMergesTopic)
	def(&t.Changelog, k.Group+"-changelog")
	if c.Rules.WatchInterval == 0 {
		c.Rules.WatchInterval = 2 * time.Second
	}
	def(&c.Kafka.CreateTopics, "true")
	def(&c.State.Dir, "segd-data")
	def(&c.State.Changelog, "on")
	if c.State.CacheBytes == 0 {
		c.State.CacheBytes = 256 << 20
	}
	if c.State.BlockCacheBytes == 0 {
		c.State.BlockCacheBytes = 128 << 20
	}
	if c.State.ColdCacheBytes == 0 {
		c.State.ColdCacheBytes = 128 << 20
	}
	if c.Commit.Interval == 0 {
		c.Commit.Interval = 200 * time.Millisecond
	}
	if c.Commit.MaxEvents == 0 {
		c.Commit.MaxEvents = 50000
	}
	if c.Commit.MaxBytes == 0 {
		c.Commit.MaxBytes = 32 << 20
	}
	def(&c.Commit.WhenCaughtUp, "on")
	if c.Clock.IdleAfter == 0 {
		c.Clock.IdleAfter = 2 * time.Second
	}
	if c.Clock.IdleLag == 0 {
		c.Clock.IdleLag = time.Second
	}
	if c.Input.MaxRecordBytes == 0 {
		c.Input.MaxRecordBytes = 1 << 20
	}
	if c.Input.MaxFutureSkew == 0 {
		c.Input.MaxFutureSkew = time.Hour
	}
	if c.Input.DedupHorizon == 0 {
		c.Input.DedupHorizon = time.Hour
	}
	if c.Input.MaxAttributes == 0 {
		c.Input.MaxAttributes = DefaultMaxAttributes
	}
	if c.Input.MaxAttributeBytes == 0 {
		c.Input.MaxAttributeBytes = DefaultMaxAttributeBytes
	}
	def(&c.Output.Format, "avro")
	if c.Output.UnknownTopicTimeout == 0 {
		c.Output.UnknownTopicTimeout = 2 * time.Minute
	}
	def(&c.Consent.Attribute, segment.DefaultConsentAttribute)
	def(&c.API.Addr, "127.0.0.1:8080")
	if c.API.ReadyMaxLag == 0 {
		c.API.ReadyMaxLag = 100000
	}
	c.API.ensureDefaults()
	def(&c.Log.Level, "info")
	def(&c.Log.Format, "json")
}

// ConfigError lists every problem Validate found.
type ConfigError struct {
	Problems []string
}

func (e *ConfigError) Error() string {
	return "invalid config: " + strings.Join(e.Problems, "; ")
}

// Validate reports every invalid field, naming the field, its value and the
// limit. Call EnsureDefaults first.
func (c *Config) Validate() error {
	return validate(c.validateKafka, c.validateTopics, c.validateLimits, c.validateExposure, c.validateOutput)
}

// validate runs checks and gathers the problems they find.
func validate(checks ...func(problem)) error {
	var p []string
	bad := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	for _, check := range checks {
		check(bad)
	}
	if len(p) > 0 {
		return &ConfigError{Problems: p}
	}
	return nil
}

// problem records one problem of a config, in the words of its keys.
type problem func(format string, args ...any)

// validateKafka checks the connection, security and consumer group keys.
func (c *Config) validateKafka(bad problem) {
	if len(c.Kafka.Brokers) == 0 {
		bad("kafka.brokers is empty: give at least one host:port")
	}
	for i, b := range c.Kafka.Brokers {
		if !strings.Contains(b, ":") {
			bad("kafka.brokers[%d] (%q) must be host:port", i, b)
		}
	}
	if sa := c.Kafka.SASL; sa.Mechanism != "" {
		switch strings.ToLower(sa.Mechanism) {
		case "plain", "scram-sha-256", "scram-sha-512":
		default:
			bad("kafka.sasl.mechanism (%q) must be plain, scram-sha-256 or scram-sha-512", sa.Mechanism)
		}
		if sa.Username == "" {
			bad("kafka.sasl.username is empty")
		}
		n := 0
		for _, v := range []string{sa.Password, sa.PasswordFile, sa.PasswordEnv} {
			if v != "" {
				n++
			}
		}
		if n != 1 {
			bad("kafka.sasl: give exactly one of password, password_file and password_env (found %d)", n)
		}
		if sa.PasswordEnv != "" && os.Getenv(sa.PasswordEnv) == "" {
			bad("kafka.sasl.password_env: environment variable %s is empty or unset", sa.PasswordEnv)
		}
	} else if c.Kafka.SASL.Username != "" {
		bad("kafka.sasl.username is set but kafka.sasl.mechanism is empty")
	}
	if t := c.Kafka.TLS; !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "") {
		bad("kafka.tls files are set but kafka.tls.enabled is false")
	}
	if c.Kafka.StartFrom != "earliest" && c.Kafka.StartFrom != "latest" {
		bad("kafka.start_from (%q) must be earliest or latest", c.Kafka.StartFrom)
	}
	if c.Kafka.MaxWait < 10*time.Millisecond || c.Kafka.MaxWait > time.Minute {
		bad("kafka.max_wait (%s) must be between 10ms and 1m", c.Kafka.MaxWait)
	}
	if c.Kafka.MaxTaskIdle < 0 || c.Kafka.MaxTaskIdle > time.Hour {
		bad("kafka.max_task_idle (%s) must be between 0 and 1h", c.Kafka.MaxTaskIdle)
	}
	if c.Kafka.MaxBufferedRecords < 100 || c.Kafka.MaxBufferedRecords > 10_000_000 {
		bad("kafka.max_buffered_records (%d) must be between 100 and 10000000", c.Kafka.MaxBufferedRecords)
	}
	if c.Kafka.MaxBufferedBytes < 1<<20 || c.Kafka.MaxBufferedBytes > 16<<30 {
		bad("kafka.max_buffered_bytes (%d) must be between 1048576 (1 MiB) and 17179869184 (16 GiB)", c.Kafka.MaxBufferedBytes)
	}
	if c.Kafka.Assignment != "group" && c.Kafka.Assignment != "all" {
		bad("kafka.assignment (%q) must be group or all", c.Kafka.Assignment)
	}
	if c.Kafka.SessionTimeout < 6*time.Second || c.Kafka.SessionTimeout > 5*time.Minute {
		bad("kafka.session_timeout (%s) must be between 6s and 5m", c.Kafka.SessionTimeout)
	}
	if c.Kafka.RebalanceTimeout < time.Second || c.Kafka.RebalanceTimeout > 30*time.Minute {
		bad("kafka.rebalance_timeout (%s) must be between 1s and 30m", c.Kafka.RebalanceTimeout)
	}
	if c.Kafka.HeartbeatInterval < 100*time.Millisecond || c.Kafka.HeartbeatInterval > c.Kafka.SessionTimeout/3 {
		bad("kafka.heartbeat_interval (%s) must be between 100ms and a third of kafka.session_timeout (%s)", c.Kafka.HeartbeatInterval, c.Kafka.SessionTimeout)
	}
	if ct := c.Kafka.CreateTopics; ct != "true" && ct != "false" {
		bad("kafka.create_topics (%q) must be true or false", ct)
	}
	if c.Kafka.ChangelogReplication < 0 || c.Kafka.ChangelogReplication > 7 {
		bad("kafka.changelog_replication (%d) must be between 1 and 7, or 0 for the default", c.Kafka.ChangelogReplication)
	}
	if c.State.Changelog != "on" && c.State.Changelog != "off" {
		bad("state.changelog (%q) must be on or off", c.State.Changelog)
	}
}

// validateTopics checks the topics' formats and that no two roles share a
// topic.
func (c *Config) validateTopics(bad problem) {
	t := c.Kafka.Topics
	seen := map[string]string{}
	for _, in := range []struct {
		field string
		t     InputTopic
	}{{"purchases", t.Purchases}, {"browses", t.Browses}, {"engagements", t.Engagements}, {"profiles", t.Profiles}} {
		if in.t.SchemaFile != "" && in.t.Format != "avro" && in.t.Format != "confluent" {
			bad("kafka.topics.%s.schema_file is set but the format is %s: it is for the avro and confluent formats", in.field, in.t.Format)
		}
		switch in.t.Format {
		case "avro", "json":
		case "confluent":
			if c.Kafka.SchemaRegistryURL == "" {
				bad("kafka.topics.%s.format is confluent but kafka.schema_registry_url is empty", in.field)
			}
		default:
			bad("kafka.topics.%s.format (%q) must be avro, confluent or json", in.field, in.t.Format)
		}
		if prev, dup := seen[in.t.Name]; dup {
			bad("kafka.topics.%s.name (%q) is also kafka.topics.%s.name: every input needs its own topic", in.field, in.t.Name, prev)
		}
		seen[in.t.Name] = in.field
	}
	if _, dup := seen[t.Changes]; dup {
		bad("kafka.topics.changes (%q) is also an input topic", t.Changes)
	}
	if _, dup := seen[t.DeadLetter]; dup {
		bad("kafka.topics.dead_letter (%q) is also an input topic", t.DeadLetter)
	}
	if _, dup := seen[t.Changelog]; dup || t.Changelog == t.Changes || t.Changelog == t.DeadLetter || t.Changelog == t.Merges {
		bad("kafka.topics.changelog (%q) is also another of segd's topics: it must be its own", t.Changelog)
	}
}

// validateLimits checks the rules file and the bounds on state, commits,
// the clock and input records.
func (c *Config) validateLimits(bad problem) {
	if c.Rules.File == "" {
		bad("rules.file is empty: name a rules file")
	}
	if c.State.CacheBytes < 1<<20 {
		bad("state.cache_bytes (%d) must be >= 1048576 (1 MiB)", c.State.CacheBytes)
	}
	if c.State.ColdCacheBytes < 1<<20 {
		bad("state.cold_cache_bytes (%d) must be >= 1048576 (1 MiB)", c.State.ColdCacheBytes)
	}
	if c.State.BlockCacheBytes < 1<<20 {
		bad("state.block_cache_bytes (%d) must be >= 1048576 (1 MiB)", c.State.BlockCacheBytes)
	}
	if c.Commit.Interval < time.Millisecond || c.Commit.Interval > time.Minute {
		bad("commit.interval (%s) must be between 1ms and 1m", c.Commit.Interval)
	}
	if c.Commit.MaxEvents < 1 || c.Commit.MaxEvents > 1_000_000 {
		bad("commit.max_events (%d) must be between 1 and 1000000", c.Commit.MaxEvents)
	}
	if c.Commit.MaxBytes < 1<<20 || c.Commit.MaxBytes > 1<<30 {
		bad("commit.max_bytes (%d) must be between 1048576 (1 MiB) and 1073741824 (1 GiB)", c.Commit.MaxBytes)
	}
	if c.Commit.WhenCaughtUp != "on" && c.Commit.WhenCaughtUp != "off" {
		bad("commit.when_caught_up (%q) must be on or off", c.Commit.WhenCaughtUp)
	}
	if c.Clock.IdleLag < 0 {
		bad("clock.idle_lag (%s) must be >= 0", c.Clock.IdleLag)
	}
	if c.Input.MaxRecordBytes < 64 {
		bad("input.max_record_bytes (%d) must be >= 64", c.Input.MaxRecordBytes)
	}
	if c.Input.MaxFutureSkew < 0 {
		bad("input.max_future_skew (%s) must be >= 0", c.Input.MaxFutureSkew)
	}
	if c.Input.DedupHorizon < 0 {
		bad("input.dedup_horizon (%s) must be >= 0", c.Input.DedupHorizon)
	}
	if c.Input.MaxAttributes < 1 || c.Input.MaxAttributes > maxMaxAttributes {
		bad("input.max_attributes (%d) must be in 1..%d", c.Input.MaxAttributes, maxMaxAttributes)
	}
	if c.Input.MaxAttributeBytes < 64 || c.Input.MaxAttributeBytes > maxMaxAttributeBytes {
		bad("input.max_attribute_bytes (%d) must be in 64..%d", c.Input.MaxAttributeBytes, maxMaxAttributeBytes)
	}
}

// validateExposure checks what could expose data: the API's listener and
// credentials, and a SASL password sent in the clear.
func (c *Config) validateExposure(bad problem) {
	if c.API.Addr != "off" && !strings.Contains(c.API.Addr, ":") {
		bad("api.addr (%q) must be host:port or off", c.API.Addr)
	}
	c.API.validate(bad)
	if sa := c.Kafka.SASL; strings.EqualFold(sa.Mechanism, "plain") && !c.Kafka.TLS.Enabled && !sa.InsecureAllowPlaintext {
		bad("kafka.sasl.mechanism is plain but kafka.tls.enabled is false: the password would cross the network in the clear; enable kafka.tls or set kafka.sasl.insecure_allow_plaintext: true")
	}
}

// validateOutput checks the output encoding and the logs.
func (c *Config) validateOutput(bad problem) {
	if c.Output.Format != "avro" && c.Output.Format != "json" {
		bad("output.format (%q) must be avro or json", c.Output.Format)
	}
	if d := c.Output.UnknownTopicTimeout; d < time.Second || d > 24*time.Hour {
		bad("output.unknown_topic_timeout (%s) must be between 1s and 24h", d)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level (%q) must be debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "console" {
		bad("log.format (%q) must be json or console", c.Log.Format)
	}
}

// LoadConfig reads a YAML config file (unknown fields are errors), applies
// SEGD_* environment overrides, fills defaults and validates. path may be
// empty: then only the environment and defaults count.
func LoadConfig(path string, environ []string) (*Config, error) {
	return loadConfig(path, environ, (*Config).Validate)
}

// LoadClientConfig is LoadConfig for a command that only talks to segd's
// topics (segd gen, segd changes, segd customers delete): it checks the
// Kafka connection, the topics and the output format, not what only segd
// run needs (its rules file, state, API), so that the config or the
// SEGD_* environment of a running segd serves them as it is.
func LoadClientConfig(path string, environ []string) (*Config, error) {
	return loadConfig(path, environ, (*Config).validateClient)
}

// validateClient is Validate for LoadClientConfig.
func (c *Config) validateClient() error {
	return validate(c.validateKafka, c.validateTopics, c.validateOutput)
}

// HasKafkaEnv reports whether environ sets any kafka.* field of the
// config (a SEGD_KAFKA_* variable): a running segd's connection settings.
func HasKafkaEnv(environ []string) bool {
	prefix := EnvName("kafka") + "_"
	for _, kv := range environ {
		if strings.HasPrefix(kv, prefix) {
			return true
		}
	}
	return false
}

func loadConfig(path string, environ []string, validate func(*Config) error) (*Config, error) {
	var c Config
	if path != "" {
		src, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(src, &doc); err != nil {
			return nil, fmt.Errorf("config %s: not valid YAML: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		if p := checkYAML(&doc); len(p) > 0 {
			return nil, fmt.Errorf("config %s: %w", path, &ConfigError{Problems: p})
		}
		dec := yaml.NewDecoder(bytes.NewReader(src))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(&c, environ); err != nil {
		return nil, err
	}
	c.EnsureDefaults()
	if err := validate(&c); err != nil {
		if path != "" {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		return nil, err
	}
	return &c, nil
}

// EnvName returns the environment variable that overrides a config field
// given by its YAML path, e.g. "kafka.brokers" -> SEGD_KAFKA_BROKERS.
func EnvName(path string) string { return envconf.Name(envPrefix, path) }

const envPrefix = "SEGD"

var durationType = reflect.TypeOf(time.Duration(0))

// applyEnv sets every field whose SEGD_* variable is present. Lists are
// comma-separated.
func applyEnv(c *Config, environ []string) error {
	if p := envconf.Apply(c, envPrefix, environ); len(p) > 0 {
		return &ConfigError{Problems: p}
	}
	return nil
}

// ConfigFields lists every leaf field's YAML path, for docs and tests.
func ConfigFields() []string { return envconf.Fields(&Config{}) }

// Security builds the Kafka connection security of the config, reading the
// SASL password from wherever the config says. Errors never contain it.
func (c *Config) Security() (*connectors.Security, error) {
	sa := c.Kafka.SASL
	password := sa.Password
	switch {
	case sa.PasswordFile != "":
		b, err := os.ReadFile(sa.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("kafka.sasl.password_file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	case sa.PasswordEnv != "":
		password = os.Getenv(sa.PasswordEnv)
	}
	t := c.Kafka.TLS
	sec, err := connectors.NewSecurity(connectors.SecurityOptions{
		TLS: t.Enabled, CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify,
		Mechanism: sa.Mechanism, Username: sa.Username, Password: password,
	})
	if err != nil {
		return nil, fmt.Errorf("kafka security: %w", err)
	}
	return sec, nil
}

// CheckFiles reports, without connecting to Kafka, every problem that
// New would meet in what the config names: the rules file must compile
// (each error as file:line:col), Avro schema files must read and parse,
// the TLS files and the SASL password file must load, and
// consent.attribute must be a plain name. It returns nothing for a
// config New would accept this far. Call it on a validated config.
func (c *Config) CheckFiles() []string {
	var p []string
	if c.Rules.File != "" {
		if _, err := rules.CompileFile(c.Rules.File); err != nil {
			var errs rules.Errors
			if errors.As(err, &errs) {
				for _, e := range errs {
					p = append(p, fmt.Sprintf("rules.file: %v", e))
				}
			} else {
				p = append(p, fmt.Sprintf("rules.file: %v", err))
			}
		}
	}
	t := c.Kafka.Topics
	for _, in := range []struct {
		field string
		t     InputTopic
		typ   schemas.EventType
	}{{"purchases", t.Purchases, schemas.EventPurchase}, {"browses", t.Browses, schemas.EventBrowse}, {"engagements", t.Engagements, schemas.EventEngagement}, {"profiles", t.Profiles, schemas.EventProfile}} {
		if in.t.SchemaFile == "" || (in.t.Format != "avro" && in.t.Format != "confluent") {
			continue
		}
		b, err := os.ReadFile(in.t.SchemaFile)
		if err != nil {
			p = append(p, fmt.Sprintf("kafka.topics.%s.schema_file: %v", in.field, err))
			continue
		}
		// The registry is only asked once records arrive.
		reg := connectors.NewRegistry("http://unused.invalid", connectors.RegistryOptions{})
		if _, err := connectors.NewDecoder(connectors.DecoderOptions{Type: in.typ, Format: connectors.Format(in.t.Format), Schema: string(b), Registry: reg}); err != nil {
			p = append(p, fmt.Sprintf("kafka.topics.%s.schema_file (%s): %v", in.field, in.t.SchemaFile, err))
		}
	}
	if _, err := c.Security(); err != nil {
		p = append(p, err.Error())
	}
	if a := c.Consent.Attribute; strings.TrimSpace(a) != a || strings.ContainsAny(a, " \t\n") {
		p = append(p, fmt.Sprintf("consent.attribute (%q) must be a profile attribute name, without spaces", a))
	}
	return p
}

// checkYAML walks a config file's YAML against Config and reports, by
// config key and line, every key Config does not have (with the keys its
// section allows and the nearest one) and every value of the wrong type,
// so that no Go type or field name reaches the user.
func checkYAML(doc *yaml.Node) []string {
	if doc.Kind == 0 {
		return nil // an empty file
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil
		}
		doc = doc.Content[0]
	}
	var p []string
	checkYAMLNode(doc, reflect.TypeOf(Config{}), "", &p)
	return p
}

func checkYAMLNode(n *yaml.Node, t reflect.Type, path string, p *[]string) {
	bad := func(format string, args ...any) {
		*p = append(*p, fmt.Sprintf("line %d: ", n.Line)+fmt.Sprintf(format, args...))
	}
	name := path
	if name == "" {
		name = "the config"
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // empty: the default
	}
	switch {
	case t == durationType:
		if _, err := time.ParseDuration(n.Value); n.Kind != yaml.ScalarNode || err != nil {
			bad("%s (%s) must be a duration such as 250ms, 10s or 5m", name, yamlText(n))
		}
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad("%s must be a mapping of %s", name, strings.Join(yamlKeys(t), ", "))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := k.Value
			if path != "" {
				key = path + "." + k.Value
			}
			f, ok := yamlField(t, k.Value)
			if !ok {
				msg := fmt.Sprintf("line %d: unknown key %s", k.Line, key)
				if near := nearest(k.Value, yamlKeys(t)); near != "" {
					if path != "" {
						near = path + "." + near
					}
					msg += fmt.Sprintf(" (did you mean %s?)", near)
				}
				*p = append(*p, msg+fmt.Sprintf(": %s has %s", name, strings.Join(yamlKeys(t), ", ")))
				continue
			}
			checkYAMLNode(v, f.Type, key, p)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad("%s (%s) must be a list, e.g. [a, b]", name, yamlText(n))
			return
		}
		for _, e := range n.Content {
			if e.Kind != yaml.ScalarNode {
				bad("%s: every item must be a plain value", name)
				return
			}
		}
	default:
		if n.Kind != yaml.ScalarNode {
			bad("%s must be a single value, not a %s", name, map[yaml.Kind]string{yaml.MappingNode: "mapping", yaml.SequenceNode: "list"}[n.Kind])
			return
		}
		switch t.Kind() {
		case reflect.Int, reflect.Int64, reflect.Int32:
			if _, err := strconv.ParseInt(n.Value, 0, 64); err != nil {
				bad("%s (%s) must be a whole number", name, yamlText(n))
			}
		case reflect.Bool:
			if _, err := strconv.ParseBool(n.Value); err != nil {
				bad("%s (%s) must be true or false", name, yamlText(n))
			}
		}
	}
}

func yamlText(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(n.Value)
	}
	return map[yaml.Kind]string{yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list"}[n.Kind]
}

func yamlField(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == key && name != "" {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}

// nearest returns the candidate closest to s by edit distance, if it is
// close enough to be a likely typo.
func nearest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD || (d == bestD && best == "" && d <= len(s)/3) {
			best, bestD = c, d
		}
	}
	if bestD > 2 && !strings.HasPrefix(best, s) {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
