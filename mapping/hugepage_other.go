//go:build !linux

package mapping

// adviseHuge does nothing where madvise(MADV_HUGEPAGE) does not exist;
// the memory keeps the system's base pages.
func adviseHuge([]byte) {}
