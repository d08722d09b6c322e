package mapping

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

// threadCPU is the CPU time the calling OS thread has used.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	const rusageThread = 1 // RUSAGE_THREAD
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuLoop runs body under b.Loop and reports, besides the wall-clock
// ns/op, the CPU time per op of the benchmarking thread: on a machine
// shared with other jobs the wall clock counts time spent descheduled,
// the thread's CPU time does not.
func cpuLoop(b *testing.B, body func(i int)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	start := threadCPU()
	i := 0
	for b.Loop() {
		body(i)
		i++
	}
	if i > 0 {
		b.ReportMetric(float64(threadCPU()-start)/float64(i), "cpu-ns/op")
	}
}

// cpuLoopPer is cpuLoop for a body that does per units of work (a batch
// of lookups): it reports ns/UNIT and cpu-ns/UNIT besides the per-op
// figures.
func cpuLoopPer(b *testing.B, per int, unit string, body func(i int)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	start, startWall := threadCPU(), time.Now()
	i := 0
	for b.Loop() {
		body(i)
		i++
	}
	if i > 0 {
		n := float64(i * per)
		b.ReportMetric(float64(time.Since(startWall))/n, "ns/"+unit)
		b.ReportMetric(float64(threadCPU()-start)/n, "cpu-ns/"+unit)
	}
}
