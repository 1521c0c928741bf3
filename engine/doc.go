// Package engine is segd's pipeline: it consumes input events from Kafka,
// keeps each customer's state, evaluates the segment rules and publishes
// segment ENTER/EXIT changes.
//
// # Tasks
//
// Input topics are co-partitioned by customer id, so partition number p of
// every input topic holds the same customers. The engine runs one task per
// partition number. A task owns that partition's customers in the state
// store (state.Partition) and is the only goroutine that touches them:
//
//	poll -> decode -> (dead letter | apply) -> ... -> commit
//
// While the process runs fewer partitions than it has cores, a task's
// decoder goroutine decodes each poll's records ahead of it
// (decodeahead.go): the task takes the events it finds decoded and
// decodes the others itself, with the same result. A commit writer parks
// briefly while a decoder waits to start (internal/handoff), so that the
// decoder is not left waiting for the writer's core.
//
// Applying an event first fires every timer due at or before the event's
// time (each at its own time), then updates the customer's traits
// (rules.Apply), re-evaluates the segments the event type can affect, emits
// a change for each flipped result and reschedules the customer's timer at
// the earliest instant any of its time-dependent segments could flip
// (rules.NextChange).
//
// # Time
//
// Event time only. A task's clock is its watermark: the largest event time
// it has applied. A late event is applied at the watermark. In live mode an
// idle task's watermark follows the wall clock (clock.idle_after), so
// time-based exits are not stuck waiting for traffic; replays use event time
// alone, which makes them deterministic. The watermark is stored with the
// offsets, so a restart resumes the same clock.
//
// # Commit protocol and guarantees
//
// A task commits every commit.max_events records, commit.max_bytes staged
// or commit.interval, in one Pebble batch: dirty customer records, timer
// index changes, the input offsets, the watermark, and the outbox (the
// SegmentChange records and dead letters produced since the last commit).
// A publisher goroutine per partition reads committed outbox entries,
// writes them to Kafka with acks=all, and deletes them only after the
// acknowledgement. Hence:
//
//   - no transition is lost: it is durable in the same batch as the state
//     and offset that caused it, and leaves the outbox only once acknowledged;
//   - a duplicate (a re-send after a crash between the ack and the delete)
//     is a byte-identical copy with the same deterministic id;
//   - ENTER and EXIT alternate per (customer, segment): the record's
//     per-segment sequence number decides which comes next;
//   - a bad record is dead-lettered through the same outbox, atomically
//     with the offset that skips it; the partition keeps moving.
package engine
