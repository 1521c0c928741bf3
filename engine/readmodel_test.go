package engine

import (
	"sort"
	"testing"

	"github.com/segd/segd/schemas"
)

// customerMap is eng.Customer(id) as plain values, keyed as the API
// answers them: "segments" ([]any of {"id", "entered_at"}), "traits" and
// "profile" (name to string, float64, bool or nil; time traits as
// RFC 3339 text) and "clock". Nil when the engine does not hold id.
func customerMap(t *testing.T, eng *Engine, id string) map[string]any {
	t.Helper()
	c, ok, err := eng.Customer(id)
	if err != nil {
		t.Fatalf("customer %s: %v", id, err)
	}
	if !ok {
		return nil
	}
	plain := func(v schemas.Value) any {
		switch v.Kind {
		case schemas.KindString:
			return v.Str
		case schemas.KindNumber:
			return v.Num
		case schemas.KindBool:
			return v.Bool
		}
		return nil
	}
	segs := []any{}
	for _, m := range c.Segments {
		segs = append(segs, map[string]any{"id": m.Segment, "entered_at": schemas.FormatTime(m.EnteredAt)})
	}
	traits := map[string]any{}
	for _, tv := range c.Traits {
		if tv.Time {
			traits[tv.Name] = schemas.FormatTime(int64(tv.Value.Num))
		} else {
			traits[tv.Name] = plain(tv.Value)
		}
	}
	profile := map[string]any{}
	for _, a := range c.Profile {
		profile[a.Name] = plain(a.Value)
	}
	return map[string]any{"customer_id": c.ID, "partition": c.Partition, "clock": schemas.FormatTime(c.Clock), "segments": segs, "traits": traits, "profile": profile}
}

// customerTraits returns a customer's traits (customerMap); the test
// fails if the engine does not hold them.
func customerTraits(t *testing.T, eng *Engine, id string) map[string]any {
	t.Helper()
	c := customerMap(t, eng, id)
	if c == nil {
		t.Fatalf("customer %s is unknown", id)
	}
	return c["traits"].(map[string]any)
}

func segmentIDs(c map[string]any) []string {
	var ids []string
	segs, _ := c["segments"].([]any)
	for _, s := range segs {
		ids = append(ids, s.(map[string]any)["id"].(string))
	}
	sort.Strings(ids)
	return ids
}
