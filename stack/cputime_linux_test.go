package stack

import (
	"syscall"
	"time"
)

// threadCPU is the CPU time of the calling OS thread. On a shared machine
// wall-clock ns/op include time spent descheduled; benchmarks report this
// as cpu-ns/op beside it.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
