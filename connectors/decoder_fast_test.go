package connectors

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/segd/segd/schemas"
)

// The avro and confluent decoders read with the decoder compiled from the
// writer schema (no map per record), and fall back to goavro for a
// writer schema it does not take, with the same event.
func TestDecoderUsesCompiledCodecs(t *testing.T) {
	avro, err := NewDecoder(DecoderOptions{Type: schemas.EventPurchase, Format: FormatAvro})
	if err != nil {
		t.Fatal(err)
	}
	if !avro.avro.Compiled() {
		t.Error("avro format: segd's purchase schema is not compiled")
	}

	reader := purchaseReader(t)
	older := withoutFields(t, reader, "currency", "quantity")
	var odd map[string]any
	json.Unmarshal([]byte(reader), &odd)
	for _, f := range odd["fields"].([]any) {
		if fm := f.(map[string]any); fm["name"] == "channel" {
			fm["type"] = []any{"null", "string", "int"} // only goavro's path takes it
			fm["default"] = nil
		}
	}
	oddText, _ := json.Marshal(odd)
	byID := map[string]string{"1": older, "2": string(oddText)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"schema": byID[strings.TrimPrefix(r.URL.Path, "/schemas/ids/")]})
	}))
	defer srv.Close()
	dec, err := NewDecoder(DecoderOptions{Type: schemas.EventPurchase, Format: FormatConfluent, Schema: reader, Registry: NewRegistry(srv.URL, RegistryOptions{})})
	if err != nil {
		t.Fatal(err)
	}
	rec := func(channel any) map[string]any {
		return map[string]any{"event_id": "e1", "customer_id": "c1", "ts": time.UnixMilli(1700000000000), "channel": channel,
			"order_id": "o1", "amount": 12.5, "currency": "GBP", "quantity": int64(2), "categories": []any{"shoes"}, "product_ids": []any{}}
	}
	for _, tc := range []struct {
		id       uint32
		channel  any
		compiled bool
	}{{1, "web", true}, {2, goavro.Union("string", "web"), false}} {
		c, err := goavro.NewCodec(byID[string(rune('0'+tc.id))])
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.BinaryFromNative(schemas.AppendConfluentHeader(nil, tc.id), rec(tc.channel))
		if err != nil {
			t.Fatal(err)
		}
		var e schemas.Event
		if err := dec.Decode(b, &e); err != nil {
			t.Fatalf("schema %d: %v", tc.id, err)
		}
		if e.Channel != "web" || e.Amount != 12.5 || e.OrderID != "o1" {
			t.Errorf("schema %d: got %+v", tc.id, e)
		}
		if got := dec.byID[tc.id].Compiled(); got != tc.compiled {
			t.Errorf("schema %d: compiled %v, want %v", tc.id, got, tc.compiled)
		}
		if tc.compiled {
			// event_id, customer_id, order_id and the category are the
			// strings the event keeps; nothing else allocates.
			if n := testing.AllocsPerRun(100, func() { dec.Decode(b, &e) }); n > 4 {
				t.Errorf("schema %d: %v allocations per record, want <= 4", tc.id, n)
			}
		}
	}
}
