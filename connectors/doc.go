// Package connectors is segd's only door to Kafka: it reads input
// partitions, writes records with acks=all, checks and creates topics,
// talks to a Confluent-compatible schema registry, decodes input values, and
// can start an in-process Kafka-protocol broker for the demo and tests.
//
// It imports kafka-go (and franz-go's kfake for the embedded broker) so
// that no other segd package does; it returns its own types (Message).
package connectors
