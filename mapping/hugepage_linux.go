package mapping

import "golang.org/x/sys/unix"

// adviseHuge asks for transparent huge pages over b, which starts and
// ends on huge page boundaries and holds only zeros (it is part of a new
// allocation). MADV_DONTNEED first drops any 4 KiB pages a previous owner
// of the memory faulted in (a table freed by a reload, say; the runtime
// may also have zeroed reused memory already): a private anonymous range
// reads as zeros after it, which b holds anyway, and the next touch then
// faults in a whole huge page where the kernel has one. MADV_HUGEPAGE is
// what THP mode "madvise" (Debian's default) waits for; a kernel without
// THP (CONFIG_TRANSPARENT_HUGEPAGE unset, as in the image's gokrazy
// kernel) refuses it with EINVAL and the table keeps 4 KiB pages, which
// is correct, only slower.
func adviseHuge(b []byte) {
	if unix.Madvise(b, unix.MADV_DONTNEED) != nil {
		return
	}
	unix.Madvise(b, unix.MADV_HUGEPAGE)
}
