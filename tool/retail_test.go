package tool

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

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

// independentRetail computes the three segments at the end of the data in
// plain Go over the CSV, sharing no code with segd: invoice-level
// purchases (amount = sum of quantity x price, rounded to cents), daily
// buckets, and the window rule bucket(t) - W < bucket(e) <= bucket(t).
func independentRetail(t *testing.T, path string) map[string]map[string]bool {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	r := csv.NewReader(gz)
	r.Read() // header
	type invoice struct {
		customer string
		t        int64
		amount   float64
	}
	invoices := map[string]*invoice{}
	var end int64
	for {
		rec, err := r.Read()
		if err != nil {
			break
		}
		if rec[6] == "" {
			continue
		}
		ts, _ := time.Parse("2006-01-02 15:04:05", rec[4])
		q, _ := strconv.ParseFloat(rec[3], 64)
		p, _ := strconv.ParseFloat(rec[5], 64)
		inv := invoices[rec[0]]
		if inv == nil {
			c, _ := strconv.ParseFloat(rec[6], 64)
			inv = &invoice{customer: strconv.Itoa(int(c)), t: ts.UnixMilli()}
			invoices[rec[0]] = inv
		}
		inv.amount += q * p
		end = max(end, ts.UnixMilli())
	}
	const day = 86400_000
	bucketEnd := end / day * day
	spend, orders, last := map[string]float64{}, map[string]int{}, map[string]int64{}
	for _, inv := range invoices {
		b := inv.t / day * day
		if bucketEnd-90*day < b && b <= bucketEnd {
			spend[inv.customer] += math.Round(inv.amount*100) / 100
		}
		if bucketEnd-30*day < b && b <= bucketEnd {
			orders[inv.customer]++
		}
		last[inv.customer] = max(last[inv.customer], inv.t)
	}
	want := map[string]map[string]bool{"big_spender_90d": {}, "frequent_30d": {}, "lapsed_60d": {}}
	for c, l := range last {
		want["big_spender_90d"][c] = spend[c] > 1000
		want["frequent_30d"][c] = orders[c] >= 3
		want["lapsed_60d"][c] = end-l > 60*day
	}
	return want
}

// TestReplayOnlineRetail replays the real UCI Online Retail data (541,909
// invoice lines, 4,372 customers) straight from the CSV and checks the final
// members of a window-count, a window-sum and a recency segment against the
// independent computation above.
func TestReplayOnlineRetail(t *testing.T) {
	path, err := retail.Locate()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rulesPath, []byte(retailRules), 0o644)
	var out bytes.Buffer
	sum, err := Replay(context.Background(), ReplayOptions{RulesFile: rulesPath, StateDir: filepath.Join(dir, "state"), Retail: path, Partitions: 4, Output: &out})
	if err != nil {
		t.Fatal(err)
	}
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
	want := independentRetail(t, path)
	if len(want["lapsed_60d"]) != 4372 {
		t.Fatalf("independent computation saw %d customers", len(want["lapsed_60d"]))
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
	t.Logf("%d events replayed in %s", sum.Events, sum.Elapsed)
}
