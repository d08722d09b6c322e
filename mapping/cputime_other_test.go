//go:build !linux

package mapping

import "testing"

// cpuLoop runs body under b.Loop (CPU time is measured on Linux only).
func cpuLoop(b *testing.B, body func(i int)) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		body(i)
		i++
	}
}
