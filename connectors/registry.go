package connectors

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// ErrSchemaNotFound is returned for a schema id the registry says it does
// not know: HTTP 404 with the Confluent error code 40403. It is permanent.
var ErrSchemaNotFound = errors.New("connectors: schema id not found in the registry")

// ErrTransient marks an error that says nothing about the record, only that
// a service could not answer now: the registry down, refusing connections,
// timing out, answering 5xx or anything but a schema or an authoritative
// not-found. The same call may succeed later; callers retry, and never
// cache it. Test with errors.Is.
var ErrTransient = errors.New("connectors: transient error")

// transient marks err with ErrTransient, keeping it for errors.Is/As.
func transient(err error) error { return transientError{err} }

type transientError struct{ err error }

func (e transientError) Error() string        { return e.err.Error() }
func (e transientError) Unwrap() error        { return e.err }
func (e transientError) Is(target error) bool { return target == ErrTransient }

// errorCodeSchemaNotFound is the Confluent API's error code for an unknown
// schema id.
const errorCodeSchemaNotFound = 40403

// RegistryOptions configure a Registry client.
type RegistryOptions struct {
	// Timeout bounds one HTTP request. Default 10s.
	Timeout time.Duration
	// Client overrides the HTTP client.
	Client *http.Client
}

// Registry is a client of a Confluent-compatible schema registry. Schemas
// are immutable per id, so they are cached forever. Safe for concurrent use.
type Registry struct {
	base   string
	client *http.Client
	mu     sync.Mutex
	byID   map[uint32]string
}

// NewRegistry returns a client for the registry at url.
func NewRegistry(url string, opts RegistryOptions) *Registry {
	c := opts.Client
	if c == nil {
		if opts.Timeout == 0 {
			opts.Timeout = 10 * time.Second
		}
		c = &http.Client{Timeout: opts.Timeout}
	}
	return &Registry{base: strings.TrimRight(url, "/"), client: c, byID: map[uint32]string{}}
}

// Schema returns the schema text of id. A 404 answer with error code 40403
// is ErrSchemaNotFound; every other failure (transport, timeout, another
// status, a 404 without that code such as a wrong URL, a malformed answer)
// is marked ErrTransient.
func (r *Registry) Schema(ctx context.Context, id uint32) (string, error) {
	r.mu.Lock()
	s, ok := r.byID[id]
	r.mu.Unlock()
	if ok {
		return s, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/schemas/ids/%d", r.base, id), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/vnd.schemaregistry.v1+json, application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return "", transient(fmt.Errorf("registry get schema %d: %w", id, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return "", transient(fmt.Errorf("registry get schema %d: read answer: %w", id, err))
	}
	if resp.StatusCode == http.StatusNotFound {
		var e struct {
			Code int `json:"error_code"`
		}
		if json.Unmarshal(body, &e) == nil && e.Code == errorCodeSchemaNotFound {
			return "", fmt.Errorf("%w: %d", ErrSchemaNotFound, id)
		}
	}
	if resp.StatusCode != http.StatusOK {
		return "", transient(fmt.Errorf("registry get schema %d: HTTP %d: %s", id, resp.StatusCode, truncate(bytes.TrimSpace(body), 200)))
	}
	var out struct {
		Schema string `json:"schema"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Schema == "" {
		return "", transient(fmt.Errorf("registry get schema %d: bad response %q", id, truncate(body, 200)))
	}
	r.mu.Lock()
	r.byID[id] = out.Schema
	r.mu.Unlock()
	return out.Schema, nil
}

// Register registers schema under subject and returns its id.
func (r *Registry) Register(ctx context.Context, subject, schema string) (uint32, error) {
	body, _ := json.Marshal(map[string]string{"schema": schema})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("%s/subjects/%s/versions", r.base, subject), bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("registry register %s: %w", subject, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("registry register %s: HTTP %d: %s", subject, resp.StatusCode, bytes.TrimSpace(rb))
	}
	var out struct {
		ID uint32 `json:"id"`
	}
	if err := json.Unmarshal(rb, &out); err != nil {
		return 0, fmt.Errorf("registry register %s: bad response %q", subject, truncate(rb, 200))
	}
	r.mu.Lock()
	r.byID[out.ID] = schema
	r.mu.Unlock()
	return out.ID, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
