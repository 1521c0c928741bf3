// Package rules is segd's rule language: a YAML file of traits (per-customer
// aggregates over events, optionally filtered and windowed) and segments
// (boolean conditions over traits and profile attributes), compiled to
// typed closures.
//
// # Pieces
//
//   - Compile parses, type-checks and compiles a file into a RuleSet, or
//     returns Errors, each with file:line:col.
//   - State is one customer's accumulators; RuleSet.Apply feeds it an event.
//   - RuleSet.Eval evaluates a segment at a clock time; NextChange says when
//     its result could next change with no new event.
//   - RuleSet.SegmentsFor lists the segments an event type can affect.
//
// # Limits
//
// Compile refuses files over MaxRulesBytes, expressions nested deeper than
// MaxExprDepth and more than MaxTraits traits or MaxSegments segments
// (errors marked ErrLimit), and stops after MaxErrors errors. Within them
// its work is about linear in the file's size: no walk over an expression
// recurses along a chain (a and b and c ...), only into nesting.
//
// # Time
//
// Windows are kept as buckets of a fixed granularity g. A window W at clock
// t covers the buckets whose start s satisfies bucket(t) - W < s <= bucket(t),
// where bucket(t) = floor(t/g)*g. docs/rules.md has the full semantics.
//
// rules does no I/O and knows nothing of Kafka or Pebble. A RuleSet is
// immutable and safe for concurrent use; a State is not.
package rules
