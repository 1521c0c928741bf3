package segment

import "github.com/segd/segd/internal/eventtest"

// The rules and event builders the package's tests share.
const testRules = eventtest.Rules

var (
	ts       = eventtest.Time
	fmtTime  = eventtest.FormatTime
	purchase = eventtest.Purchase
	profile  = eventtest.Profile
)
