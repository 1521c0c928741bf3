package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/schemas"
)

const mergeRules = `version: 1
traits:
  orders_30d: count(purchase) over 30d
  spend_90d: sum(purchase.amount) over 90d
  first_order_at: first(purchase.ts)
  last_order_at: last(purchase.ts)
  views_7d: count(browse) over 7d
  categories_90d: distinct_count(purchase.categories) over 90d
  top_page_7d: most_frequent(browse.page) over 7d
segments:
  buyer: { when: "orders_30d >= 1" }
  repeat: { when: "orders_30d >= 3" }
  big: { when: "spend_90d >= 1000" }
  browser: { when: "views_7d >= 2" }
  multi: { when: "categories_90d >= 2" }
  french: { when: "profile.country == \"France\"" }
`

// TestIdentityMergeAcrossPartitions: an anonymous visitor and a known
// customer on different partitions; after an alias event the known
// customer's traits, profile and segments equal those of a run in which
// every event carried the known id from the start, the anonymous id is
// gone and EXITed with cause MERGE, and later events keep counting.
func TestIdentityMergeAcrossPartitions(t *testing.T) {
	const partitions = 2
	anon, known := "", ""
	for i := 0; anon == "" || known == ""; i++ {
		id := fmt.Sprintf("visitor-%d", i)
		switch connectors.PartitionFor([]byte(id), partitions) {
		case 0:
			if anon == "" {
				anon = id
			}
		case 1:
			if known == "" {
				known = "known-" + id
				if connectors.PartitionFor([]byte(known), partitions) != 1 {
					known = ""
				}
			}
		}
	}
	merged := topicSet{"m.purchases", "m.browses", "m.engagements", "m.profiles", "m.changes", "m.deadletter"}
	ref := topicSet{"r.purchases", "r.browses", "r.engagements", "r.profiles", "r.changes", "r.deadletter"}
	broker, err := connectors.StartEmbeddedBroker(0, partitions, append(merged[:], ref[:]...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	brokers := broker.Addrs()
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	day := func(d int) int64 {
		return time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli() + int64(d)*86400_000
	}
	type ev struct {
		topic int
		who   string // "anon" or "known"
		at    int64
		body  string // JSON without type, ids and ts
		typ   string
	}
	history := []ev{
		{1, "anon", day(0), `"page":"product","category":"shoes"`, "browse"},
		{1, "anon", day(1), `"page":"cart"`, "browse"},
		{0, "anon", day(1) + 1000, `"amount":700,"categories":["shoes"]`, "purchase"},
		{3, "anon", day(1) + 2000, `"attributes":{"country":"France"}`, "profile"},
		{0, "known", day(2), `"amount":450,"categories":["books"]`, "purchase"},
		{1, "known", day(3), `"page":"product"`, "browse"},
		{0, "anon", day(4), `"amount":20,"categories":["toys"]`, "purchase"},
	}
	after := ev{0, "known", day(6), `"amount":15,"categories":["books"]`, "purchase"}
	aliasAt := day(5)
	rulesPath := filepath.Join(t.TempDir(), "rules.yaml")
	os.WriteFile(rulesPath, []byte(mergeRules), 0o644)

	send := func(ts topicSet, e ev, id string, n int) {
		t.Helper()
		body := fmt.Sprintf(`{"type":%q,"event_id":"e%d","customer_id":%q,"ts":%d,%s}`, e.typ, n, id, e.at, e.body)
		if err := prod.Write(context.Background(), connectors.Message{Topic: ts[e.topic], Key: []byte(id), Value: []byte(body), Time: time.UnixMilli(e.at)}); err != nil {
			t.Fatal(err)
		}
	}
	for i, e := range history {
		id := known
		if e.who == "anon" {
			id = anon
		}
		send(merged, e, id, i)
		send(ref, e, known, i) // the reference knows who it is from the start
	}
	alias := fmt.Sprintf(`{"type":"profile","event_id":"alias-1","customer_id":%q,"ts":%d,"alias_of":%q}`, anon, aliasAt, known)
	if err := prod.Write(context.Background(), connectors.Message{Topic: merged[3], Key: []byte(anon), Value: []byte(alias), Time: time.UnixMilli(aliasAt)}); err != nil {
		t.Fatal(err)
	}

	run := func(name string, ts topicSet) *Engine {
		cfg := topicSetConfig(t, brokers, ts, name, rulesPath)
		for _, in := range []*InputTopic{&cfg.Kafka.Topics.Purchases, &cfg.Kafka.Topics.Browses, &cfg.Kafka.Topics.Engagements, &cfg.Kafka.Topics.Profiles} {
			in.Format = "json"
		}
		cfg.Commit.Interval = 10 * time.Millisecond
		return startTopicSetEngine(t, cfg)
	}
	mergedEng := run("merged", merged)
	refEng := run("ref", ref)
	// The merge record crosses partitions through the merges topic.
	waitFor(t, 20*time.Second, "the merge applied", func() bool {
		return customerMap(t, mergedEng, known)["profile"] != nil && len(customerMap(t, mergedEng, known)["profile"].(map[string]any)) > 0
	})
	send(merged, after, known, 100)
	send(ref, after, known, 100)
	waitFor(t, 20*time.Second, "both runs to apply the last event", func() bool {
		a, b := customerMap(t, mergedEng, known), customerMap(t, refEng, known)
		return a["traits"] != nil && b["traits"] != nil && a["traits"].(map[string]any)["last_order_at"] == schemas.FormatTime(after.at) &&
			b["traits"].(map[string]any)["last_order_at"] == schemas.FormatTime(after.at)
	})
	a, b := customerMap(t, mergedEng, known), customerMap(t, refEng, known)
	if !reflect.DeepEqual(a["traits"], b["traits"]) {
		t.Errorf("traits after the merge:\n%v\nwith one id from the start:\n%v", a["traits"], b["traits"])
	}
	if !reflect.DeepEqual(a["profile"], b["profile"]) {
		t.Errorf("profile after the merge %v, with one id %v", a["profile"], b["profile"])
	}
	if sa, sb := segmentIDs(a), segmentIDs(b); !reflect.DeepEqual(sa, sb) || len(sa) < 4 {
		t.Errorf("segments after the merge %v, with one id %v", sa, sb)
	}
	if got := customerMap(t, mergedEng, anon); got != nil {
		t.Errorf("the anonymous id is still there: %v", got)
	}
	// The anonymous id left its segments with cause MERGE.
	waitFor(t, 10*time.Second, "the anonymous id's EXITs", func() bool {
		var exits int
		for _, m := range readAll(t, brokers, merged[4], partitions, 0, 2*time.Second) {
			var c schemas.SegmentChange
			if schemas.DecodeSegmentChangeAvro(m.Value, &c) == nil && c.CustomerID == anon && c.Kind == schemas.Exit && c.Cause == schemas.CauseMerge && c.CauseEventID == "alias-1" {
				exits++
			}
		}
		return exits >= 3 // buyer, big, browser at least
	})
}
