package tun

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RawPoll is the wait that keeps the P (step 2 of the raw loop described
// in rawio_linux.go), shared by the tun's queues and NIC mode's packet
// sockets (stack/nic.go): it waits in ppoll(2), called by RawSyscall (no
// entersyscall: the thread keeps its P and runs on at once when the
// descriptor becomes ready, with no exitsyscall and no scheduler hand-off),
// until pfds[0] (the queue) is readable or in error, pfds[1] (a wake
// eventfd) is readable, or the time in *left runs out. ppoll writes the
// time left back into *left (zero after a timeout). A preemption request
// (a signal: EINTR; sysmon sends one after every 10 ms of waiting, a
// garbage collection's stop-the-world too) makes it yield the P
// (Gosched) and wait on for the time left, so that the runtime never waits
// for it and the wait keeps its length.
//
// It reports true when the queue is ready and the eventfd is not; false
// when the time ran out (*left is zero), the eventfd was written
// (pfds[1].Revents is not zero), or ppoll failed. The caller sets the
// queue's descriptor and events in pfds[0] and the eventfd in pfds[1];
// RawPoll clears their Revents before each wait.
func RawPoll(pfds *[2]unix.PollFd, left *unix.Timespec) bool {
	for {
		pfds[0].Revents, pfds[1].Revents = 0, 0
		ready, _, errno := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pfds[0])), 2, uintptr(unsafe.Pointer(left)), 0, 0, 0)
		switch {
		case errno == unix.EINTR:
			runtime.Gosched()
			continue
		case errno == 0 && ready > 0 && pfds[1].Revents == 0:
			return true
		}
		return false
	}
}
