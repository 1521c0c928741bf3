// Package examples carries the example files that the segd binary needs at
// run time, so `segd demo` works from any directory.
package examples

import _ "embed"

// Rules is examples/rules.yaml: the demo's segments.
//
//go:embed rules.yaml
var Rules []byte
