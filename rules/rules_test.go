package rules

import (
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/schemas"
)

const shopRules = `version: 2
traits:
  orders_30d: count(purchase) over 30d
  spend_90d: sum(purchase.amount) over 90d
  last_order_at: last(purchase.ts)
  first_order_at: first(purchase.ts)
  email_clicks_14d: count(engagement where channel == "email" and action == "click") over 14d
  shoe_views_7d: count(browse where category == "shoes") over 7d
  categories_90d: distinct_count(purchase.categories) over 90d
  top_category: most_frequent(browse.category) over 30d
  avg_order: avg(purchase.amount)
  max_order_90d: max(purchase.amount) over 90d
segments:
  vip:
    description: big spenders
    when: "spend_90d >= 1000 and orders_30d >= 2"
  lapsed: { when: "last_order_at is not null and since(last_order_at) > 60d" }
  shoe_browsers: { when: "shoe_views_7d >= 1 and orders_30d == 0" }
  uk: { when: "profile.country == \"United Kingdom\"" }
`

func mustCompile(t testing.TB, src string) *RuleSet {
	t.Helper()
	rs, err := Compile("shop.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func at(s string) int64 {
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return tm.UnixMilli()
}

func TestSmoke(t *testing.T) {
	rs := mustCompile(t, shopRules)
	s := rs.NewState()
	e := &schemas.Event{Type: schemas.EventPurchase, CustomerID: "a", Time: at("2024-01-01T10:00:00Z"), Amount: 700, Categories: []string{"shoes", "bags"}}
	rs.Apply(s, e, e.Time)
	e2 := &schemas.Event{Type: schemas.EventPurchase, CustomerID: "a", Time: at("2024-01-02T10:00:00Z"), Amount: 400, Categories: []string{"shoes"}}
	rs.Apply(s, e2, e2.Time)
	vip, _ := rs.SegmentIndex("vip")
	if !rs.Eval(vip, s, e2.Time) {
		t.Fatal("not vip")
	}
	next, ok := rs.NextChange(vip, s, e2.Time)
	if !ok || next != at("2024-01-31T00:00:00Z") {
		t.Fatalf("next %v %v", time.UnixMilli(next).UTC(), ok)
	}
	if rs.Eval(vip, s, next) || !rs.Eval(vip, s, next-1) {
		t.Fatal("vip did not flip at next")
	}
	enc := s.AppendBinary(nil)
	s2 := rs.NewState()
	if err := rs.DecodeState(enc, s2); err != nil {
		t.Fatal(err)
	}
	for i := range rs.Traits() {
		a, b := rs.TraitValue(i, s, e2.Time), rs.TraitValue(i, s2, e2.Time)
		if a != b {
			t.Errorf("trait %s: %v after round trip, want %v", rs.Traits()[i].Name, b, a)
		}
	}
	t.Logf("encoded %d bytes", len(enc))
	if got := strings.Join(func() []string {
		var out []string
		for _, i := range rs.SegmentsFor(schemas.EventPurchase) {
			out = append(out, rs.Segments()[i].ID)
		}
		return out
	}(), ","); got != "vip,lapsed,shoe_browsers" {
		t.Fatalf("segments for purchase: %s", got)
	}
}
