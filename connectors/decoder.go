package connectors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segd/segd/schemas"
)

// Format is an input topic's value encoding.
type Format string

// Input formats.
const (
	FormatAvro      Format = "avro"      // Avro binary with the schema in schemas/
	FormatConfluent Format = "confluent" // magic byte + schema id + Avro; schema from the registry
	FormatJSON      Format = "json"      // schemas.DecodeJSON
)

// DecoderOptions configure a Decoder.
type DecoderOptions struct {
	Type   schemas.EventType
	Format Format
	// Schema, for FormatAvro, overrides the writer schema; for
	// FormatConfluent, it overrides the reader schema the registry's
	// writer schemas are resolved to. Default: the embedded schema of Type.
	Schema string
	// Registry is required for FormatConfluent.
	Registry *Registry
}

// Decoder decodes one input topic's values into events. Safe for
// concurrent use.
type Decoder struct {
	opts   DecoderOptions
	reader string // FormatConfluent: the reader schema
	avro   *schemas.AvroCodec
	mu     sync.Mutex
	byID   map[uint32]*schemas.AvroCodec
	// bad holds the schema ids that fail for good: not found (for
	// notFoundTTL) or not resolvable. Never a transient failure.
	bad map[uint32]badID
}

// badID is why a schema id fails, and until when that is believed.
type badID struct {
	err   *schemas.DecodeError
	until time.Time
}

const (
	// notFoundTTL: a schema id the registry said it does not know is
	// not asked about again for this long (a flood of records with a
	// bogus id costs one request per id per 10 s).
	notFoundTTL = 10 * time.Second
	// unresolvableTTL: a writer schema is immutable per id, so one that
	// does not resolve never will; kept long, but bounded like the rest.
	unresolvableTTL = time.Hour
	// maxBadIDs bounds the failed ids remembered.
	maxBadIDs = 1024
	// fetchTimeout bounds one schema fetch, whatever the Registry's own
	// timeout.
	fetchTimeout = 10 * time.Second
)

// NewDecoder returns a Decoder.
func NewDecoder(opts DecoderOptions) (*Decoder, error) {
	d := &Decoder{opts: opts, byID: map[uint32]*schemas.AvroCodec{}, bad: map[uint32]badID{}}
	switch opts.Format {
	case FormatAvro:
		schema := opts.Schema
		if schema == "" {
			schema = schemas.SchemaText(opts.Type)
		}
		c, err := schemas.NewAvroCodec(opts.Type, schema)
		if err != nil {
			return nil, err
		}
		d.avro = c
	case FormatConfluent:
		if opts.Registry == nil {
			return nil, errors.New("connectors: the confluent format needs a schema registry")
		}
		d.reader = opts.Schema
		if d.reader == "" {
			d.reader = schemas.SchemaText(opts.Type)
		}
		// The reader must resolve to itself: this checks it is a record
		// schema with valid defaults before any record arrives.
		if _, err := schemas.NewResolvingCodec(opts.Type, d.reader, d.reader); err != nil {
			return nil, err
		}
	case FormatJSON:
	default:
		return nil, fmt.Errorf("connectors: unknown format %q (want avro, confluent or json)", opts.Format)
	}
	return d, nil
}

// Decode decodes value into e. Errors are *schemas.DecodeError. One that
// is also ErrTransient (errors.Is) says nothing about the record: the
// schema registry could not answer; decoding the same value again later
// may succeed. The record's size and the event type a JSON value names
// are the caller's to check (segment.Decode does, for every format).
func (d *Decoder) Decode(value []byte, e *schemas.Event) error {
	switch d.opts.Format {
	case FormatAvro:
		return d.avro.Decode(value, e)
	case FormatJSON:
		return schemas.DecodeJSON(value, e)
	}
	id, payload, err := schemas.SplitConfluent(value)
	if err != nil {
		return err
	}
	c, err := d.codec(id)
	if err != nil {
		return err
	}
	return c.Decode(payload, e)
}

// codec returns the codec of writer schema id, resolved to the reader.
func (d *Decoder) codec(id uint32) (*schemas.AvroCodec, error) {
	now := time.Now()
	d.mu.Lock()
	c, ok := d.byID[id]
	b, isBad := d.bad[id]
	d.mu.Unlock()
	if ok {
		return c, nil
	}
	if isBad && now.Before(b.until) {
		return nil, b.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	text, err := d.opts.Registry.Schema(ctx, id)
	switch {
	case errors.Is(err, ErrSchemaNotFound):
		return nil, d.remember(id, now.Add(notFoundTTL), schemas.ReasonUnknownSchemaID, err)
	case err != nil:
		// Transient (ErrTransient marks it): never remembered, the next
		// record asks again.
		return nil, &schemas.DecodeError{Reason: schemas.ReasonRegistry, Err: err}
	}
	c, err = schemas.NewResolvingCodec(d.opts.Type, text, d.reader)
	if err != nil {
		reason := schemas.ReasonUnknownSchemaID // not an Avro schema segd can compile
		if errors.Is(err, schemas.ErrSchemaMismatch) {
			reason = schemas.ReasonIncompatibleSchema
		}
		return nil, d.remember(id, now.Add(unresolvableTTL), reason, fmt.Errorf("schema id %d: %w", id, err))
	}
	d.mu.Lock()
	d.byID[id] = c
	delete(d.bad, id)
	d.mu.Unlock()
	return c, nil
}

// remember records that id fails for good until until, bounded by
// maxBadIDs (expired entries go first, then any), and returns the error.
func (d *Decoder) remember(id uint32, until time.Time, reason schemas.Reason, err error) *schemas.DecodeError {
	de := &schemas.DecodeError{Reason: reason, Err: err}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.bad) >= maxBadIDs {
		for k, v := range d.bad {
			if now.After(v.until) {
				delete(d.bad, k)
			}
		}
		for k := range d.bad {
			if len(d.bad) < maxBadIDs {
				break
			}
			delete(d.bad, k)
		}
	}
	d.bad[id] = badID{err: de, until: until}
	return de
}
