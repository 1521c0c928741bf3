// Package schemas holds segd's wire formats: the Avro schemas (.avsc) of the
// input events and of the SegmentChange output, the Go types they decode into
// (Event, SegmentChange), and the codecs between them (Avro binary, Avro in the
// Confluent wire format, JSON).
//
// schemas is the one package every other segd package may import; it imports
// nothing of segd's own.
package schemas
