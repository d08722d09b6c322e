//go:build !linux

package mapping

import (
	"testing"
	"time"
)

// cpuLoop runs body under b.Loop (CPU time is measured on Linux only).
func cpuLoop(b *testing.B, body func(i int)) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		body(i)
		i++
	}
}

// cpuLoopPer is cpuLoop for a body that does per units of work, reported
// as ns/UNIT.
func cpuLoopPer(b *testing.B, per int, unit string, body func(i int)) {
	b.ReportAllocs()
	start := time.Now()
	i := 0
	for b.Loop() {
		body(i)
		i++
	}
	if i > 0 {
		b.ReportMetric(float64(time.Since(start))/float64(i*per), "ns/"+unit)
	}
}

// tableHugeMiB is 0 where huge pages are not measured.
func tableHugeMiB(testing.TB, *Table) float64 { return 0 }
