package segment

import (
	"github.com/segd/segd/rules"
	"github.com/segd/segd/state"
)

// DefaultConsentAttribute is the profile attribute consent.attribute names
// by default.
const DefaultConsentAttribute = "consent_marketing"

// OpenStore opens the state store at dir holding segd's customer records,
// each decoded for the rule set ruleSet returns at the time (a reload
// switches it). opt.Decode is set here; the rest of opt is the caller's.
func OpenStore(dir string, ruleSet func() *rules.RuleSet, opt state.Options) (*state.Store, error) {
	// The decoder reads segment lists from the store it decodes for; it
	// runs only once Open has returned it.
	var lists SegmentLists
	opt.Decode = func(_ string, data []byte) (state.Record, error) {
		return DecodeCustomer(ruleSet(), lists, data)
	}
	st, err := state.Open(dir, opt)
	if err == nil {
		lists = NewSegmentLists(st)
	}
	return st, err
}

// Defaults segd's config starts from, which a file replay (which has no
// config) uses as they are.
const (
	DefaultChangesTopic    = "segment.changes"
	DefaultDeadLetterTopic = "segd.deadletter"
	// DefaultMaxAttributes and DefaultMaxAttributeBytes bound a customer's
	// profile attributes (input.max_attributes, input.max_attribute_bytes).
	DefaultMaxAttributes     = 256
	DefaultMaxAttributeBytes = 64 << 10
)
