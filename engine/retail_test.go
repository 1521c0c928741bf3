package engine

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/segd/segd/internal/retail"
	"github.com/segd/segd/schemas"
)

const retailRules = `version: 1
traits:
  spend_90d: sum(purchase.amount) over 90d
  orders_30d: count(purchase) over 30d
  last_order_at: last(purchase.ts)
segments:
  big_spender_90d: { when: "spend_90d > 1000" }
  frequent_30d: { when: "orders_30d >= 3" }
  lapsed_60d: { when: "last_order_at is not null and since(last_order_at) > 60d" }
`

// TestReplayOnlineRetail replays the real UCI Online Retail purchases and
// checks the final members of every segment against an independent
// computation from the raw events with the documented window rule.
func TestReplayOnlineRetail(t *testing.T) {
	path, err := retail.Locate()
	if err != nil {
		t.Fatal(err)
	}
	r, err := retail.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	input := filepath.Join(dir, "retail.jsonl")
	var buf bytes.Buffer
	type purchase struct {
		t      int64
		amount float64
	}
	byCustomer := map[string][]purchase{}
	var e schemas.Event
	var last int64
	for {
		ok, err := r.Next(&e)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		buf.Write(schemas.AppendJSON(nil, &e))
		buf.WriteByte('\n')
		last = max(last, e.Time)
		if e.Type == schemas.EventPurchase {
			byCustomer[e.CustomerID] = append(byCustomer[e.CustomerID], purchase{e.Time, e.Amount})
		}
	}
	r.Close()
	os.WriteFile(input, buf.Bytes(), 0o644)
	rulesPath := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rulesPath, []byte(retailRules), 0o644)

	var out bytes.Buffer
	sum, err := Replay(context.Background(), ReplayOptions{RulesFile: rulesPath, StateDir: filepath.Join(dir, "state"), Inputs: []string{input}, Partitions: 4, Output: &out})
	if err != nil {
		t.Fatal(err)
	}
	// Final membership from the change stream.
	got := map[string]map[string]bool{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var c schemas.SegmentChange
		if err := schemas.DecodeSegmentChangeJSON(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		if got[c.SegmentID] == nil {
			got[c.SegmentID] = map[string]bool{}
		}
		got[c.SegmentID][c.CustomerID] = c.Kind == schemas.Enter
	}
	// Independent computation at the input's last event time.
	const day = 86400_000
	bucket := func(t int64) int64 { return t / day * day }
	want := map[string]map[string]bool{"big_spender_90d": {}, "frequent_30d": {}, "lapsed_60d": {}}
	for cust, ps := range byCustomer {
		spend, orders := 0.0, 0
		lastOrder := int64(0)
		for _, p := range ps {
			if b := bucket(p.t); bucket(last)-90*day < b && b <= bucket(last) {
				spend += p.amount
			}
			if b := bucket(p.t); bucket(last)-30*day < b && b <= bucket(last) {
				orders++
			}
			lastOrder = max(lastOrder, p.t)
		}
		want["big_spender_90d"][cust] = spend > 1000
		want["frequent_30d"][cust] = orders >= 3
		want["lapsed_60d"][cust] = last-lastOrder > 60*day
	}
	for seg, members := range want {
		var n int64
		for cust, in := range members {
			if in {
				n++
			}
			if got[seg][cust] != in {
				t.Errorf("%s: customer %s in=%v, independent computation says %v", seg, cust, got[seg][cust], in)
			}
		}
		if sum.Sizes[seg] != n {
			t.Errorf("%s: store counts %d members, independent computation %d", seg, sum.Sizes[seg], n)
		}
		t.Logf("%-16s %5d members, %5d ENTER, %5d EXIT", seg, n, sum.Enters[seg], sum.Exits[seg])
	}
	ids := make([]string, 0, len(byCustomer))
	for id := range byCustomer {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) != 4372 {
		t.Fatalf("%d customers", len(ids))
	}
}
