package engine

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segd/segd/connectors"
	"github.com/segd/segd/schemas"
)

// TestRulesChangedWhileStoppedAreApplied: a rollout with a new rules file
// (a segment removed, one's rule tightened, one added) re-evaluates the
// stored customers when the partition starts, exactly like a live reload,
// with no new input: before, members of the removed segment and of the
// tightened one stayed members for good.
func TestRulesChangedWhileStoppedAreApplied(t *testing.T) {
	_, brokers := startTestBroker(t)
	cfg, rulesPath := jsonTestConfig(t, brokers)
	cfg.Rules.WatchInterval = -1
	cfg.Kafka.Assignment = "all"
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	prod, err := connectors.NewProducer(brokers, connectors.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	at := time.Date(2024, 1, 1, 10, 0, 0, 0, time.UTC)
	body := fmt.Sprintf(`{"type":"purchase","event_id":"o1","customer_id":"alice","ts":%q,"amount":1500}`, at.Format(time.RFC3339))
	if err := prod.Write(context.Background(), connectors.Message{Topic: DefaultPurchasesTopic, Key: []byte("alice"), Value: []byte(body), Time: at}); err != nil {
		t.Fatal(err)
	}
	changes := func(want int) []string {
		t.Helper()
		var out []string
		for _, m := range readTopic(t, brokers, DefaultChangesTopic, want, 30*time.Second) {
			var c schemas.SegmentChange
			if err := schemas.DecodeSegmentChangeAvro(m.Value, &c); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s %s %s", c.Kind, c.SegmentID, strings.ToLower(c.Cause.String())))
		}
		sort.Strings(out)
		return out
	}
	eng, stop := runStoppable(t, cfg)
	waitFor(t, 30*time.Second, "the purchase applied", func() bool { return eng.Progress().Events == 1 })
	if got := strings.Join(changes(2), ", "); got != "ENTER buyer event, ENTER vip event" {
		t.Fatalf("first run: %s", got)
	}
	stop()

	// While stopped: vip removed, buyer needs 2 orders, big added.
	changed := strings.Replace(testRules, `    when: "orders_30d >= 1"`, `    when: "orders_30d >= 2"`, 1)
	changed = strings.Replace(changed, "  vip:\n    when: \"spend_90d >= 1000\"\n", "  big:\n    when: \"spend_90d >= 1000\"\n", 1)
	if changed == testRules || !strings.Contains(changed, "big:") || strings.Contains(changed, "vip:") {
		t.Fatal("the rules edit did not apply")
	}
	if err := os.WriteFile(rulesPath, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	eng, stop = runStoppable(t, cfg)
	defer stop()
	got := strings.Join(changes(5), ", ")
	want := "ENTER big rule_change, ENTER buyer event, ENTER vip event, EXIT buyer rule_change, EXIT vip rule_change"
	if got != want {
		t.Fatalf("after restarting with new rules:\n got %s\nwant %s", got, want)
	}
	for seg, n := range map[string]int64{"vip": 0, "buyer": 0, "big": 1} {
		if c, err := eng.st.CountMembers(seg); err != nil || c != n {
			t.Errorf("members of %s: %d (%v), want %d", seg, c, err, n)
		}
	}
}
