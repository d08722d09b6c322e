package tun

import (
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
// garbage collection's stop-the-world and its scan of this goroutine's
// stack too) is honoured at rawPpoll's prologue before the wait goes on
// for the time left, so that the runtime never waits for it and the wait
// keeps its length.
//
// It reports true when the queue is ready and the eventfd is not; false
// when the time ran out (*left is zero), the eventfd was written
// (pfds[1].Revents is not zero), or ppoll failed. The caller sets the
// queue's descriptor and events in pfds[0] and the eventfd in pfds[1];
// RawPoll clears their Revents before each wait.
func RawPoll(pfds *[2]unix.PollFd, left *unix.Timespec) bool {
	for {
		ready, errno := rawPpoll(pfds, left)
		switch {
		case errno == unix.EINTR:
			continue // rawPpoll's prologue is the preemption point
		case errno == 0 && ready > 0 && pfds[1].Revents == 0:
			return true
		}
		return false
	}
}

// rawPpoll is one ppoll(2) of RawPoll's, in a function of its own so that
// every wait, the first and each one after an EINTR, starts with a
// synchronous preemption point: the stack-bound check of a function's
// prologue, through which the runtime stops a goroutine it has flagged
// (runtime/preempt.go; the signal that ended the last wait was sent after
// the flags were set, so the check sees them). There the goroutine yields
// its P for sysmon and a stop-the-world (gopreempt_m, what Gosched does),
// and parks (preemptPark) for the garbage collector's scan of its stack
// (suspendG), which a Gosched cannot do: a Gosched after EINTR cleared
// the flags when the goroutine ran again (execute), and suspendG then
// set them anew without a second signal whenever its last one was less
// than 5 µs old, so a goroutine back in ppoll within 5 µs held the
// collection's mark phase until sysmon's next preemption, which went the
// same way, for up to the whole raw wait (TestRawWaitOutlastsPreemption).
// noinline: inlined, it would have no prologue of its own. Not a leaf (it
// calls RawSyscall6), so the compiler keeps the check (a leaf with a small
// frame gets none).
//
//go:noinline
func rawPpoll(pfds *[2]unix.PollFd, left *unix.Timespec) (ready uintptr, errno unix.Errno) {
	pfds[0].Revents, pfds[1].Revents = 0, 0
	ready, _, errno = unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pfds[0])), 2, uintptr(unsafe.Pointer(left)), 0, 0, 0)
	return ready, errno
}
