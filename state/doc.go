// Package state keeps segd's per-partition durable state in one embedded
// Pebble store: customer records behind a bounded write-back cache, the
// input offsets, a timer index, the outbox of records to publish, and a
// segment membership index with per-segment counts.
//
// state stores records as bytes and knows nothing of rules: the engine
// supplies the decoded record type (Record) and its decoder (Options.Decode).
//
// # Commit unit
//
// Everything a task changes between two commits (dirty records, deletions,
// offsets, timer moves, outbox appends, membership changes) is staged and
// written by Partition.Commit in ONE Pebble batch. A crash at any point
// leaves the store at the previous commit or the new one, never between, so
// offsets, records, timers and outbox always agree. See docs/state.md.
//
// # Concurrency
//
// A Partition belongs to one task goroutine. Only ReadOutbox, DeleteOutbox
// and OutboxDepth may be called from another goroutine (the publisher).
// Store methods are safe for concurrent use.
//
// # Failures
//
// Pebble's panics and fatal errors never leave the package: they fail the
// store, and every later operation returns an error wrapping
// ErrStoreFailed (ErrCorrupt for corruption). A full disk holds writes
// until space returns (DiskFull). See health.go, space.go and docs/state.md.
package state
