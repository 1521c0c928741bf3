package connectors

import (
	"bytes"
	"errors"

	"github.com/segmentio/kafka-go"
)

// WriteErrorClass says what a producer should do with a record Kafka did
// not accept.
type WriteErrorClass int

const (
	// WriteRetriable: a transient failure (a broker down, a leader
	// election, a timeout); retry with backoff.
	WriteRetriable WriteErrorClass = iota + 1
	// WriteUnknownTopic: the topic does not exist. A topic created a
	// moment ago answers this briefly, so retry, but only for a bounded
	// time.
	WriteUnknownTopic
	// WritePermanent: the record will never be accepted as it is (too
	// large, not authorized, an invalid topic or record); retrying would
	// wedge everything queued behind it.
	WritePermanent
)

func (c WriteErrorClass) String() string {
	switch c {
	case WriteRetriable:
		return "retriable"
	case WriteUnknownTopic:
		return "unknown_topic"
	case WritePermanent:
		return "permanent"
	}
	return "unknown"
}

// ClassifyWriteError classifies one record's write error (from
// RecordErrors). kafka-go calls an unknown topic temporary; segd bounds
// how long it believes that.
func ClassifyWriteError(err error) WriteErrorClass {
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		return WritePermanent
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		switch ke {
		case kafka.UnknownTopicOrPartition:
			return WriteUnknownTopic
		case kafka.MessageSizeTooLarge, kafka.RecordListTooLarge, kafka.InvalidTopic,
			kafka.TopicAuthorizationFailed, kafka.ClusterAuthorizationFailed,
			kafka.PolicyViolation, kafka.InvalidRecord:
			return WritePermanent
		}
	}
	return WriteRetriable
}

// ErrNotSent marks a record a write did not try: kafka-go refuses a whole
// write when one record is over its batch size, before sending any.
var ErrNotSent = errors.New("connectors: not sent (another record of the write was refused first)")

// RecordErrors splits the error of Producer.Write(msgs) into one error
// per record, nil for the records Kafka acknowledged. An error that is not
// per record (a dial failure, a cancelled context) applies to every one.
func RecordErrors(err error, msgs []Message) []error {
	out := make([]error, len(msgs))
	if err == nil {
		return out
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) && len(we) == len(msgs) {
		copy(out, we)
		return out
	}
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		for i := range out {
			out[i] = ErrNotSent
		}
		for i := range msgs {
			m := &msgs[i]
			if m.Topic == tooLarge.Message.Topic && bytes.Equal(m.Key, tooLarge.Message.Key) && len(m.Value) == len(tooLarge.Message.Value) && bytes.Equal(m.Value, tooLarge.Message.Value) {
				out[i] = err
				return out
			}
		}
	}
	for i := range out {
		out[i] = err
	}
	return out
}
