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
	// Schema overrides the writer schema for FormatAvro. Default: the
	// embedded schema of Type.
	Schema string
	// Registry is required for FormatConfluent.
	Registry *Registry
	// MaxBytes rejects larger values (too_large). 0: no limit.
	MaxBytes int
}

// Decoder decodes one input topic's values into events. Safe for
// concurrent use.
type Decoder struct {
	opts  DecoderOptions
	avro  *schemas.AvroCodec
	mu    sync.Mutex
	byID  map[uint32]*schemas.AvroCodec
	fails map[uint32]time.Time // registry failures, retried after a pause
}

// NewDecoder returns a Decoder.
func NewDecoder(opts DecoderOptions) (*Decoder, error) {
	d := &Decoder{opts: opts, byID: map[uint32]*schemas.AvroCodec{}, fails: map[uint32]time.Time{}}
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
	case FormatJSON:
	default:
		return nil, fmt.Errorf("connectors: unknown format %q (want avro, confluent or json)", opts.Format)
	}
	return d, nil
}

// Decode decodes value into e. Errors are *schemas.DecodeError.
func (d *Decoder) Decode(value []byte, e *schemas.Event) error {
	if d.opts.MaxBytes > 0 && len(value) > d.opts.MaxBytes {
		return &schemas.DecodeError{Reason: schemas.ReasonTooLarge, Err: fmt.Errorf("%d bytes, limit %d", len(value), d.opts.MaxBytes)}
	}
	switch d.opts.Format {
	case FormatAvro:
		return d.avro.Decode(value, e)
	case FormatJSON:
		if err := schemas.DecodeJSON(value, e); err != nil {
			return err
		}
		if e.Type != d.opts.Type {
			return &schemas.DecodeError{Reason: schemas.ReasonUnknownEventType, Err: fmt.Errorf("a %s event on a %s topic", e.Type, d.opts.Type)}
		}
		return nil
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

func (d *Decoder) codec(id uint32) (*schemas.AvroCodec, error) {
	d.mu.Lock()
	c, ok := d.byID[id]
	failedAt, failed := d.fails[id]
	d.mu.Unlock()
	if ok {
		return c, nil
	}
	if failed && time.Since(failedAt) < 10*time.Second {
		return nil, &schemas.DecodeError{Reason: schemas.ReasonUnknownSchemaID, Err: fmt.Errorf("schema id %d (recently not found)", id)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	text, err := d.opts.Registry.Schema(ctx, id)
	if err != nil {
		d.mu.Lock()
		d.fails[id] = time.Now()
		d.mu.Unlock()
		reason := schemas.ReasonRegistry
		if errors.Is(err, ErrSchemaNotFound) {
			reason = schemas.ReasonUnknownSchemaID
		}
		return nil, &schemas.DecodeError{Reason: reason, Err: err}
	}
	c, err = schemas.NewAvroCodec(d.opts.Type, text)
	if err != nil {
		return nil, &schemas.DecodeError{Reason: schemas.ReasonUnknownSchemaID, Err: fmt.Errorf("schema id %d: %w", id, err)}
	}
	d.mu.Lock()
	d.byID[id] = c
	d.mu.Unlock()
	return c, nil
}
