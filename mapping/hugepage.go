package mapping

import "unsafe"

// hugePage is the size of an x86-64 (and arm64 with 4 KiB base pages)
// transparent huge page: one TLB entry maps 2 MiB instead of 4 KiB.
const hugePage = 2 << 20

// hugeMin is the size from which the table's arrays go on huge pages:
// below it a table's slots fit the TLB's reach anyway.
const hugeMin = 4 << 20

// useHugePages lets benchmarks build a table on base pages, to measure
// what huge pages change.
var useHugePages = true

// largeSlice returns a zeroed []T of length n. From hugeMin bytes on it
// starts on a 2 MiB boundary and the kernel is asked to back it with huge
// pages (see adviseHuge): at a million entries every lookup touches a
// random slot of arrays of tens of MiB, and with 4 KiB pages each such
// access also misses the TLB and walks the page tables. The memory is an
// ordinary Go allocation, so the garbage collector frees it when the last
// snapshot holding the table is gone: no unmapping, no lifetime to prove
// after a reload. T must hold no pointers (the memory is allocated as
// bytes, which the collector does not scan).
func largeSlice[T any](n int) []T {
	var zero T
	size := uintptr(n) * unsafe.Sizeof(zero)
	if size < hugeMin {
		return make([]T, n)
	}
	// Round up to whole huge pages (the tail of the last one is never
	// read) and leave room to move the start to a boundary; the skipped
	// head is never touched, so it takes no memory.
	span := (size + hugePage - 1) &^ (hugePage - 1)
	buf := make([]byte, span+hugePage)
	base := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	off := (hugePage - base%hugePage) % hugePage
	region := buf[off : off+span]
	if useHugePages {
		adviseHuge(region)
	}
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(region))), n)
}
