package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/schemas"
)

// testChanges are segment changes of several customers, so of several
// partitions, with traits of every kind; want is how segd prints them,
// in change-time order.
func testChanges(t *testing.T) ([]schemas.SegmentChange, string) {
	t.Helper()
	at := func(s string) int64 {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixMilli()
	}
	num := func(name string, v float64) schemas.TraitValue {
		return schemas.TraitValue{Name: name, Value: schemas.Number(v)}
	}
	spend := 0.0
	for _, a := range []float64{64.01, 183.58} {
		spend += a // 247.59000000000003, as the engine's sums give it
	}
	if fmt.Sprint(spend) != "247.59000000000003" {
		t.Fatalf("spend is %v: the test would not show the rounding", spend)
	}
	a, b := 0.1, 0.2
	ratio := a + b // 0.30000000000000004
	changes := []schemas.SegmentChange{
		{ID: "a1", CustomerID: "c0001226", SegmentID: "vip", Kind: schemas.Enter, Seq: 1, Time: at("2026-11-09T12:26:53.529Z"), Cause: schemas.CauseEvent, CauseEventID: "g1-5417",
			Traits: []schemas.TraitValue{num("orders_30d", 10), num("spend_90d", spend)}},
		{ID: "b1", CustomerID: "c0002271", SegmentID: "cart_abandoner", Kind: schemas.Enter, Seq: 1, Time: at("2026-11-08T16:00:00Z"), Cause: schemas.CauseTimer,
			Traits: []schemas.TraitValue{num("cart_views_2h", 2), num("orders_2h", 0)}},
		{ID: "c1", CustomerID: "c0003631", SegmentID: "new_customer", Kind: schemas.Exit, Seq: 2, Time: at("2026-11-15T19:48:41.594Z"), Cause: schemas.CauseTimer,
			Traits: []schemas.TraitValue{num("first_order_at", float64(at("2026-11-08T19:48:41.593Z")))}},
		{ID: "d1", CustomerID: "c0004410", SegmentID: "shoes_fan", Kind: schemas.Enter, Seq: 1, Time: at("2026-11-10T08:00:00Z"), Cause: schemas.CauseRuleChange,
			Traits: []schemas.TraitValue{{Name: "consent", Value: schemas.Bool(true)}, {Name: "favorite_category_30d", Value: schemas.String("shoes")}, {Name: "last_order_at", Value: schemas.Value{}}, num("ratio", ratio)}},
		{ID: "a2", CustomerID: "c0001226", SegmentID: "vip", Kind: schemas.Exit, Seq: 2, Time: at("2026-11-20T00:00:00Z"), Cause: schemas.CauseDeletion},
	}
	// Traits in name order, as the engine and the JSON encoding give them.
	want := `2026-11-08T16:00:00Z ENTER cart_abandoner  c0002271  (timer) cart_views_2h=2 orders_2h=0
2026-11-09T12:26:53.529Z ENTER vip             c0001226  (event g1-5417) orders_30d=10 spend_90d=247.59
2026-11-10T08:00:00Z ENTER shoes_fan       c0004410  (rule_change) consent=true favorite_category_30d="shoes" last_order_at=null ratio=0.3
2026-11-15T19:48:41.594Z EXIT  new_customer    c0003631  (timer) first_order_at=2026-11-08T19:48:41.593Z
2026-11-20T00:00:00Z EXIT  vip             c0001226  (deletion)
`
	return changes, want
}

// TestChangesCommand: `segd changes` reads an Avro changes topic of
// several partitions and prints each change as a line of text, merged in
// change-time order, with amounts as the input wrote them (247.59, not
// 247.59000000000003); a JSON topic and a JSON-lines file (replay
// --output) print the same lines.
func TestChangesCommand(t *testing.T) {
	changes, want := testChanges(t)
	// Each partition's changes in time order, as the engine publishes
	// them, but partition after partition: printing partitions one after
	// the other, or in the order records arrive, would not give want.
	sort.SliceStable(changes, func(i, j int) bool {
		pi, pj := connectors.PartitionFor([]byte(changes[i].CustomerID), 3), connectors.PartitionFor([]byte(changes[j].CustomerID), 3)
		if pi != pj {
			return pi > pj
		}
		return changes[i].Time < changes[j].Time
	})
	if fileOrder(changes, want) == want {
		t.Fatal("the changes are in time order already: the test would not show the merge")
	}
	broker, err := connectors.StartEmbeddedBroker(0, 3, "segment.changes", "changes.json")
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	addr := broker.Addrs()[0]
	prod, err := connectors.NewProducer([]string{addr}, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var avro, js []connectors.Message
	var file []byte
	partitions := map[int]bool{}
	for i := range changes {
		c := &changes[i]
		v, err := schemas.AppendSegmentChangeAvro(nil, c)
		if err != nil {
			t.Fatal(err)
		}
		avro = append(avro, connectors.Message{Topic: "segment.changes", Key: []byte(c.CustomerID), Value: v})
		j, err := schemas.AppendSegmentChangeJSON(nil, c)
		if err != nil {
			t.Fatal(err)
		}
		js = append(js, connectors.Message{Topic: "changes.json", Key: []byte(c.CustomerID), Value: j})
		file = append(append(file, j...), '\n')
		partitions[connectors.PartitionFor([]byte(c.CustomerID), 3)] = true
	}
	if len(partitions) < 2 {
		t.Fatalf("the changes land on %d partition(s): the test would not show the merge", len(partitions))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := prod.Write(ctx, append(avro, js...)...); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "changes.jsonl")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	wantFile := fileOrder(changes, want)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"changes", "--brokers", addr, "--exit-at-end"}, want},
		{[]string{"changes", "--brokers", addr, "--topic", "changes.json", "--format", "json", "--follow=false"}, want},
		{[]string{"changes", "--file", path}, wantFile},
	} {
		out, errs, code := runBinary(t, tc.args...)
		if code != 0 || out != tc.want {
			t.Errorf("segd %s: exit %d, stderr %q\ngot:\n%s\nwant:\n%s", strings.Join(tc.args, " "), code, errs, out, tc.want)
		}
	}
	// The wrong format is an error that says so, not garbage.
	_, errs, code := runBinary(t, "changes", "--brokers", addr, "--topic", "changes.json", "--exit-at-end")
	if code != 1 || !strings.Contains(errs, "is --format right?") {
		t.Errorf("json topic read as avro: exit %d, %q", code, errs)
	}
}

// fileOrder returns the lines of want in the order of changes (a file is
// printed in its own order).
func fileOrder(changes []schemas.SegmentChange, want string) string {
	lines := strings.SplitAfter(want, "\n")
	var out strings.Builder
	for _, c := range changes {
		for _, l := range lines {
			if strings.HasPrefix(l, schemas.FormatTime(c.Time)+" ") {
				out.WriteString(l)
			}
		}
	}
	return out.String()
}

func TestFormatNumber(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{247.59000000000003, "247.59"},
		{0.30000000000000004, "0.3"},
		{10, "10"},
		{-3.5, "-3.5"},
		{0, "0"},
		{1234567.891, "1234567.891"},
		{12345678.900000002, "12345678.9"},
		{0.000125, "0.000125"},
		{1e-9, "1e-09"},
		{1e22, "1e+22"},
		{123456789012345678, "123456789012000000"},
	} {
		if got := formatNumber(tc.in); got != tc.want {
			t.Errorf("formatNumber(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
