package connectors

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/segd/segd/schemas"
)

// The registry client tells an authoritative "not found" (404 with error
// code 40403) from everything else, which is transient: 5xx, a 404 that is
// not the registry's (a wrong URL), a timeout, a refused connection, a
// malformed answer.
func TestRegistryErrorClassification(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch strings.TrimPrefix(r.URL.Path, "/schemas/ids/") {
		case "1":
			w.Write([]byte(`{"schema":"\"string\""}`))
		case "2":
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error_code":40403,"message":"Schema 2 not found"}`))
		case "3":
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`<html>no such page</html>`))
		case "4":
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"error_code":50001,"message":"store error"}`))
		case "5":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "6":
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
		case "7":
			w.Write([]byte(`not json at all`))
		case "8":
			w.Write([]byte(`{"schema":""}`))
		case "9":
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	reg := NewRegistry(srv.URL, RegistryOptions{Timeout: 200 * time.Millisecond})
	// A port nothing listens on: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedURL := "http://" + l.Addr().String()
	l.Close()
	refused := NewRegistry(refusedURL, RegistryOptions{})

	for _, tc := range []struct {
		name     string
		reg      *Registry
		id       uint32
		notFound bool
		ok       bool
	}{
		{"200", reg, 1, false, true},
		{"404 40403", reg, 2, true, false},
		{"404 not the registry's", reg, 3, false, false},
		{"500", reg, 4, false, false},
		{"503", reg, 5, false, false},
		{"timeout", reg, 6, false, false},
		{"garbage", reg, 7, false, false},
		{"no schema", reg, 8, false, false},
		{"401", reg, 9, false, false},
		{"connection refused", refused, 1, false, false},
	} {
		_, err := tc.reg.Schema(context.Background(), tc.id)
		switch {
		case tc.ok:
			if err != nil {
				t.Errorf("%s: got %v, want a schema", tc.name, err)
			}
		case tc.notFound:
			if !errors.Is(err, ErrSchemaNotFound) || errors.Is(err, ErrTransient) {
				t.Errorf("%s: got %v, want ErrSchemaNotFound and not ErrTransient", tc.name, err)
			}
		default:
			if !errors.Is(err, ErrTransient) || errors.Is(err, ErrSchemaNotFound) {
				t.Errorf("%s: got %v, want ErrTransient and not ErrSchemaNotFound", tc.name, err)
			}
		}
	}
}

// A registry hiccup is never remembered: the decoder reports it as
// transient (reason registry_unavailable, ErrTransient), asks again on the
// next record and decodes it once the registry answers. Only an
// authoritative not-found is remembered (one request for many records).
func TestDecoderDoesNotCacheTransientFailures(t *testing.T) {
	var fail atomic.Bool
	var hits7, hits8 atomic.Int32
	fail.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/schemas/ids/7":
			hits7.Add(1)
			if fail.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			json.NewEncoder(w).Encode(map[string]string{"schema": schemas.SchemaText(schemas.EventBrowse)})
		default:
			hits8.Add(1)
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error_code":40403,"message":"not found"}`))
		}
	}))
	defer srv.Close()
	dec, err := NewDecoder(DecoderOptions{Type: schemas.EventBrowse, Format: FormatConfluent, Registry: NewRegistry(srv.URL, RegistryOptions{})})
	if err != nil {
		t.Fatal(err)
	}
	codec, _ := schemas.NewAvroCodec(schemas.EventBrowse, schemas.SchemaText(schemas.EventBrowse))
	ev := schemas.Event{Type: schemas.EventBrowse, EventID: "e", CustomerID: "c", Time: 1700000000000, Page: "cart"}
	rec7, _ := codec.AppendEncode(schemas.AppendConfluentHeader(nil, 7), &ev)
	rec8, _ := codec.AppendEncode(schemas.AppendConfluentHeader(nil, 8), &ev)

	for i := 0; i < 3; i++ {
		var de *schemas.DecodeError
		err := dec.Decode(rec7, &schemas.Event{})
		if !errors.Is(err, ErrTransient) || !errors.As(err, &de) || de.Reason != schemas.ReasonRegistry {
			t.Fatalf("attempt %d while the registry fails: got %v, want a transient registry_unavailable error", i, err)
		}
	}
	if n := hits7.Load(); n != 3 {
		t.Fatalf("registry asked %d times for id 7 in 3 failing attempts, want 3 (no negative caching)", n)
	}
	fail.Store(false)
	var e schemas.Event
	if err := dec.Decode(rec7, &e); err != nil || e.Page != "cart" {
		t.Fatalf("once the registry answers: got %+v, %v", e, err)
	}

	for i := 0; i < 3; i++ {
		var de *schemas.DecodeError
		err := dec.Decode(rec8, &schemas.Event{})
		if errors.Is(err, ErrTransient) || !errors.As(err, &de) || de.Reason != schemas.ReasonUnknownSchemaID {
			t.Fatalf("unknown id: got %v, want a permanent unknown_schema_id error", err)
		}
	}
	if n := hits8.Load(); n != 1 {
		t.Fatalf("registry asked %d times for the unknown id, want 1 (remembered)", n)
	}
}

// purchaseReader is segd's purchase schema with a non-zero default for
// currency, so that a resolved default can be told from a zero value.
func purchaseReader(t *testing.T) string {
	t.Helper()
	s := schemas.SchemaText(schemas.EventPurchase)
	r := strings.Replace(s, `{"name": "currency", "type": "string", "default": ""`, `{"name": "currency", "type": "string", "default": "EUR"`, 1)
	if r == s {
		t.Fatal("purchase.avsc changed: the currency field was not found")
	}
	return r
}

// withoutFields returns schema with the named top-level fields removed.
func withoutFields(t *testing.T, schema string, names ...string) string {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal([]byte(schema), &s); err != nil {
		t.Fatal(err)
	}
	var kept []any
	for _, f := range s["fields"].([]any) {
		drop := false
		for _, n := range names {
			drop = drop || f.(map[string]any)["name"] == n
		}
		if !drop {
			kept = append(kept, f)
		}
	}
	s["fields"] = kept
	b, _ := json.Marshal(s)
	return string(b)
}

// Avro schema resolution through the registry: a writer schema that lacks
// a reader field gets the reader's default; one that added a field is read
// without it; one that lacks a reader field without a default is rejected
// for good with reason incompatible_schema.
func TestConfluentDecoderResolvesWriterSchemas(t *testing.T) {
	reader := purchaseReader(t)
	older := withoutFields(t, reader, "currency", "quantity")
	var newer map[string]any
	json.Unmarshal([]byte(reader), &newer)
	newer["fields"] = append(newer["fields"].([]any), map[string]any{"name": "coupon", "type": "string", "default": ""})
	newerText, _ := json.Marshal(newer)
	noAmount := withoutFields(t, reader, "amount")
	byID := map[string]string{"1": older, "2": string(newerText), "3": noAmount}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := byID[strings.TrimPrefix(r.URL.Path, "/schemas/ids/")]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error_code":40403}`))
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"schema": s})
	}))
	defer srv.Close()
	dec, err := NewDecoder(DecoderOptions{Type: schemas.EventPurchase, Format: FormatConfluent, Schema: reader, Registry: NewRegistry(srv.URL, RegistryOptions{})})
	if err != nil {
		t.Fatal(err)
	}
	encode := func(id uint32, schema string, rec map[string]any) []byte {
		c, err := goavro.NewCodec(schema)
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.BinaryFromNative(schemas.AppendConfluentHeader(nil, id), rec)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	base := func() map[string]any {
		return map[string]any{"event_id": "e1", "customer_id": "c1", "ts": time.UnixMilli(1700000000000), "channel": "web",
			"order_id": "o1", "amount": 12.5, "categories": []any{"shoes"}, "product_ids": []any{}}
	}

	var e schemas.Event
	if err := dec.Decode(encode(1, older, base()), &e); err != nil {
		t.Fatal(err)
	}
	if e.Currency != "EUR" || e.Quantity != 0 || e.Amount != 12.5 || e.OrderID != "o1" {
		t.Errorf("older writer: got currency %q quantity %d amount %g order %q, want EUR 0 12.5 o1", e.Currency, e.Quantity, e.Amount, e.OrderID)
	}

	rec := base()
	rec["currency"], rec["quantity"], rec["coupon"] = "GBP", int64(3), "X"
	if err := dec.Decode(encode(2, string(newerText), rec), &e); err != nil {
		t.Fatal(err)
	}
	if e.Currency != "GBP" || e.Quantity != 3 {
		t.Errorf("newer writer: got currency %q quantity %d, want GBP 3", e.Currency, e.Quantity)
	}

	rec = base()
	delete(rec, "amount")
	rec["currency"], rec["quantity"] = "GBP", int64(1)
	var de *schemas.DecodeError
	err = dec.Decode(encode(3, noAmount, rec), &e)
	if !errors.As(err, &de) || de.Reason != schemas.ReasonIncompatibleSchema || !strings.Contains(err.Error(), "amount") || errors.Is(err, ErrTransient) {
		t.Errorf("writer without amount: got %v, want a permanent incompatible_schema error naming amount", err)
	}
}
