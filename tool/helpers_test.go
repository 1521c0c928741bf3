package tool

import "github.com/segd/segd/internal/eventtest"

// The rules and event builders the package's tests share.
const testRules = eventtest.Rules

var ts = eventtest.Time
