// Package demo holds the configuration that `map646 run --demo-config`
// uses, so the demo (demo/run.sh) needs no file besides the binary.
package demo

import _ "embed"

// Config is demo.hcl: one mapping, 198.51.100.10 <-> 2001:db8:6::10, and
// the prefix 2001:db8:64::/96.
//
//go:embed demo.hcl
var Config []byte
