package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// jsonSeeds returns every JSON document the repository's tests and test
// data hold (Go string literals and lines of testdata files that look
// like an object), for the differential fuzz target.
func jsonSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	var seeds [][]byte
	seen := map[string]bool{}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			seeds = append(seeds, []byte(s))
		}
	}
	for _, e := range sampleEvents() {
		add(string(AppendJSON(nil, &e)))
	}
	raw := regexp.MustCompile("`[^`]*`")
	quoted := regexp.MustCompile(`"(?:[^"\\\n]|\\.)*"`)
	filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if d != nil && d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != ".." {
				return filepath.SkipDir
			}
			return nil
		}
		test := strings.HasSuffix(path, "_test.go")
		data := strings.HasSuffix(path, ".jsonl") || strings.HasSuffix(path, ".json")
		if !test && !data {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		if data {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, `"type"`) {
					add(line)
				}
			}
			return nil
		}
		for _, m := range raw.FindAllString(string(b), -1) {
			if s := m[1 : len(m)-1]; strings.Contains(s, `{"`) {
				add(s)
			}
		}
		for _, m := range quoted.FindAllString(string(b), -1) {
			if s, err := strconv.Unquote(m); err == nil && strings.Contains(s, `{"`) {
				add(s)
			}
		}
		return nil
	})
	// Fragments with format verbs (head + "..."): complete the common ones.
	for _, s := range append([]string(nil), func() []string {
		var out []string
		for k := range seen {
			out = append(out, k)
		}
		return out
	}()...) {
		if strings.Contains(s, "%s") {
			add(strings.ReplaceAll(s, "%s", "1"))
			add(strings.ReplaceAll(s, "%s", "1e400"))
		}
		if strings.HasSuffix(s, ",") {
			add(s + `"delete":true}`)
		}
	}
	return seeds
}

// decodeBoth decodes data with the reference and the new decoder (into a
// fresh event and into one holding a previous event) and fails if they
// differ in event or error. The reference reads maps in random order, so
// where it is not deterministic (several unknown fields, an attribute
// given as an object of several members) a difference is tried again.
func decodeBoth(t *testing.T, data []byte) {
	t.Helper()
	var got Event
	gotErr := DecodeJSON(data, &got)
	var diff string
	for try := 0; try < 200; try++ {
		var want Event
		wantErr := decodeJSONReference(data, &want)
		if diff = compareDecode(&got, gotErr, &want, wantErr); diff == "" {
			break
		}
	}
	if diff != "" {
		t.Fatalf("%q: %s", data, diff)
	}
	// Reuse: an event that held a profile with attributes and a
	// purchase's lists.
	reused := Event{Categories: []string{"x", "y"}, ProductIDs: []string{"z"}, Attributes: []Attribute{{"a", Number(1)}, {"b", Value{}}}, Delete: true, AliasOf: "q"}
	if err := DecodeJSON(data, &reused); (err == nil) != (gotErr == nil) || err == nil && !reflect.DeepEqual(norm(reused), norm(got)) {
		t.Fatalf("%q: decoding into a used event gives %+v %v, into a fresh one %+v %v", data, reused, err, got, gotErr)
	}
}

// compareDecode returns "" if the new decoder's result equals the
// reference's: the same event, or errors of the same reason and text;
// for syntax errors (json_decode from encoding/json) the same reason.
func compareDecode(got *Event, gotErr error, want *Event, wantErr error) string {
	switch {
	case gotErr == nil && wantErr == nil:
		if !reflect.DeepEqual(*got, *want) {
			return "event differs:\n got " + sprintf("%+v", *got) + "\nwant " + sprintf("%+v", *want)
		}
		return ""
	case gotErr == nil || wantErr == nil:
		return sprintf("got %+v %v, want %+v %v", *got, gotErr, *want, wantErr)
	}
	var g, w *DecodeError
	if !errors.As(gotErr, &g) || !errors.As(wantErr, &w) {
		return sprintf("error without a reason: got %v, want %v", gotErr, wantErr)
	}
	if g.Reason != w.Reason {
		return sprintf("got %v, want %v", gotErr, wantErr)
	}
	if isSyntaxError(w.Err) {
		var se *jsonSyntaxError
		if errors.As(g.Err, &se) || g.Err == io.EOF || g.Err == io.ErrUnexpectedEOF || strings.HasPrefix(g.Err.Error(), "json: cannot unmarshal") {
			return ""
		}
		return sprintf("got %v, want a syntax error like %v", gotErr, wantErr)
	}
	if gotErr.Error() != wantErr.Error() {
		return sprintf("got %v, want %v", gotErr, wantErr)
	}
	return ""
}

func isSyntaxError(err error) bool {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	return errors.As(err, &se) || errors.As(err, &te) || err == io.EOF || err == io.ErrUnexpectedEOF
}

// The new decoder gives what the reference gives for every JSON document
// in the repository's tests.
func TestDecodeJSONMatchesReference(t *testing.T) {
	seeds := jsonSeeds(t)
	if len(seeds) < 50 {
		t.Fatalf("only %d seeds found", len(seeds))
	}
	for _, s := range seeds {
		decodeBoth(t, s)
	}
	for _, s := range []string{
		``, ` `, `null`, ` null `, `null x`, `[]`, `"x"`, `1`, `true`, `{`, `{"type"`, `{"type":`, `{"type":"browse"`,
		`{"type":"browse",}`, `{"type":"browse"} x`, `{"type":"browse"}}`, `{"type":"browse"}{}`, `{}`,
		`{"type":{"b":1,"a":"<&>"}}`, `{"type":[1,2.50,"x"]}`, `{"type":1.0e5}`, `{"type":true}`, `{"type":"\u0062rowse"}`,
		`{"typ\u0065":"browse","event_id":"e","customer_id":"c","ts":1700000000000}`,
		`{"type":"browse","event_id":"\ud83d\ude00 \ud800 \udc00x \ud800\u0041 \u00e9 \/\b\f\n\r\t\"\\","customer_id":"c\xff\xfe","ts":1700000000000}`,
		`{"type":"browse","event_id":{"string":"e"},"customer_id":{"string":"c","x":1},"ts":1700000000000}`,
		`{"type":"browse","event_id":{},"customer_id":"c","ts":1700000000000}`,
		`{"type":"browse","event_id":{"string":5},"customer_id":"c","ts":"bad"}`,
		`{"type":"browse","event_id":5,"customer_id":"c","ts":true}`,
		`{"type":"browse","event_id":5,"customer_id":"c","ts":{}}`,
		`{"type":"browse","event_id":5,"customer_id":"c","ts":[]}`,
		`{"type":"browse","event_id":5,"customer_id":"c","ts":null}`,
		`{"type":"browse","event_id":"e","customer_id":"c","ts":"2024-01-01T00:00:00+02:00"}`,
		`{"type":"browse","event_id":"e","customer_id":"c","ts":1.7e12}`,
		`{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"amount":"1"}`,
		`{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"amount":{"double":1}}`,
		`{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"quantity":1.9}`,
		`{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"quantity":-1.9e0}`,
		`{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"quantity":-9223372036854775809}`,
		`{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"quantity":true}`,
		`{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"amount":1e-400,"quantity":-0}`,
		`{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"categories":["a",1],"product_ids":"x"}`,
		`{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"categories":{},"product_ids":[null]}`,
		`{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"categories":[],"product_ids":[[],{}]}`,
		`{"type":"purchase","event_id":"e","customer_id":"c","ts":1700000000000,"channel":"web","currency":"EUR","channel":"app"}`,
		`{"type":"profile","event_id":"e","customer_id":"c","ts":1700000000000,"attributes":{"b":1,"a":"x","b":null,"c":{"string":"y"},"d":{},"e":true}}`,
		`{"type":"profile","event_id":"e","customer_id":"c","ts":1700000000000,"attributes":{"b":[1],"a":{"x":{}}}}`,
		`{"type":"profile","event_id":"e","customer_id":"c","ts":1700000000000,"attributes":{"z":1e400,"a":[1]}}`,
		`{"type":"profile","event_id":"e","customer_id":"c","ts":1700000000000,"attributes":{"a":1e400,"b":[1]}}`,
		`{"type":"profile","event_id":"e","customer_id":"c","ts":1700000000000,"delete":{"boolean":true}}`,
		`{"type":"profile","event_id":"e","customer_id":"c","ts":1700000000000,"delete":{"boolean":null}}`,
		`{"type":"profile","event_id":5,"customer_id":"c","ts":1700000000000,"delete":"x"}`,
		`{"type":"profile","event_id":5,"customer_id":"c","ts":1700000000000,"alias_of":{"string":"a"}}`,
		`{"type":"profile","event_id":5,"customer_id":"c","ts":1700000000000,"attributes":7}`,
		`{"type":"profile","event_id":"e","customer_id":"c","ts":1700000000000,"alias_of":1,"attributes":7}`,
		`{"type":"browse","amount":1,"x":2}`, `{"type":"browse","amount":1}`, `{"x":1}`,
		`{"type":"browse","a":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`,
		`{"type":"browse","a":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
		`{"type":"profile","event_id":"e","customer_id":"c","ts":1700000000000,"delete":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`,
		`{"type":"profile","event_id":"e","customer_id":"c","ts":1700000000000,"delete":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`,
		"{\"type\":\"browse\",\"event_id\":\"a\tb\"}", `{"type":"browse","event_id":"\x"}`, `{"type":"browse","event_id":"\u12"}`,
		`{"type":"browse","ts":01}`, `{"type":"browse","ts":1.}`, `{"type":"browse","ts":-}`, `{"type":"browse","ts":1e}`, `{"type":"browse","ts":tru}`,
	} {
		decodeBoth(t, []byte(s))
	}
}

func FuzzDecodeJSONDifferential(f *testing.F) {
	for _, s := range jsonSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// A decoder that hangs must crash the worker, so that the fuzzer
		// keeps the input.
		timer := time.AfterFunc(10*time.Second, func() { panic(fmt.Sprintf("decoding %q takes over 10 s", data)) })
		defer timer.Stop()
		decodeBoth(t, data)
	})
}

// In steady state DecodeJSON allocates only the strings it keeps.
func TestDecodeJSONAllocations(t *testing.T) {
	for _, tc := range []struct {
		json string
		max  float64
	}{
		// channel and page are shared constants; event_id, customer_id,
		// product_id, category and session_id are copies.
		{`{"type":"browse","event_id":"b-0001","customer_id":"cust-42","ts":"2024-03-01T12:30:00.001Z","channel":"app","product_id":"p-9","category":"toys","page":"product","session_id":"s-1"}`, 5},
		{`{"type":"purchase","event_id":"p-0001","customer_id":"cust-42","ts":1709296200000,"channel":"web","order_id":"o1","amount":12.5,"currency":"GBP","quantity":2,"categories":["shoes","bags"],"product_ids":["a","b"]}`, 7},
		{`{"type":"engagement","event_id":"g-1","customer_id":"cust-42","ts":1709296200000,"channel":"email","action":"click","campaign_id":"spring"}`, 3},
	} {
		var e Event
		data := []byte(tc.json)
		if err := DecodeJSON(data, &e); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(100, func() { DecodeJSON(data, &e) }); n > tc.max {
			t.Errorf("%s: %v allocations, want <= %v", tc.json, n, tc.max)
		}
	}
}

func BenchmarkDecodeJSON(b *testing.B) {
	inputs := []struct{ name, json string }{
		{"browse", `{"type":"browse","event_id":"b-000123","customer_id":"cust-000042","ts":"2024-03-01T12:30:00.001Z","channel":"app","product_id":"p-991","category":"toys","page":"product","session_id":"s-17"}`},
		{"purchase", `{"type":"purchase","event_id":"p-000123","customer_id":"cust-000042","ts":1709296200000,"channel":"web","order_id":"o-551","amount":12.5,"currency":"GBP","quantity":2,"categories":["shoes","bags"],"product_ids":["a-1","b-2"]}`},
		{"profile", `{"type":"profile","event_id":"f-000123","customer_id":"cust-000042","ts":1709296200000,"attributes":{"country":"France","birth_year":1980,"consent_marketing":false,"tier":null}}`},
	}
	for _, in := range inputs {
		data := []byte(in.json)
		for _, dec := range []struct {
			name string
			fn   func([]byte, *Event) error
		}{{"old", decodeJSONReference}, {"new", DecodeJSON}} {
			b.Run(in.name+"/"+dec.name, func(b *testing.B) {
				var e Event
				b.ReportAllocs()
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					if err := dec.fn(data, &e); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
