package tun

import (
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Waiting for packets without the runtime poller.
//
// A queue whose Conn is a non-blocking descriptor (a tun queue, a socket)
// is read and written by raw system calls on its dispatch goroutine's own
// thread, which never parks in the runtime poller: a packet that arrives
// after an idle gap then costs one wake-up (the kernel waking this thread)
// instead of two (the poller's thread, then a hand-off of the goroutine to
// a thread with a P). When a read finds the queue empty, the loop
//
//  1. tells the dispatcher (QueueIdle: it publishes batched counters);
//  2. waits up to rawWait in ppoll(2) by RawSyscall, on the queue and the
//     attachment's wake eventfd: no entersyscall, so the thread keeps its
//     P and runs on at once when the next packet arrives, with no
//     exitsyscall, no scheduler hand-off and no wake-up of the runtime's
//     sysmon thread. The runtime's preemption requests (a signal: EINTR),
//     sysmon's after every 10 ms of waiting, a garbage collector's
//     stop-the-world and its scan of the goroutine's stack, are honoured
//     at the preemption point that starts each ppoll (RawPoll's rawPpoll:
//     it yields the P, or parks for the scan), and then it waits on for
//     the time left, so nothing waits for it. The daemon gives the runtime
//     one P per tun queue beyond one per CPU, so that queues in this wait
//     do not take the Ps the rest of the program runs on. Every warmEvery
//     of this wait, a WarmDispatcher rehearses a packet (WarmQueue), which
//     keeps the path warm for the next one;
//  3. then blocks in ppoll through the ordinary syscall path
//     (entersyscall), so that a queue idle for longer than rawWait costs
//     nothing: no preemptions every 10 ms.
//
// Stop (Attach, Close) writes the wake eventfd; Device.Close does too
// before it closes the descriptors. A Conn closed by anyone else is noticed
// when the bounded wait (foreignWait) ends.
//
// The descriptor is used only inside syscall.RawConn.Control, which holds
// a reference on it: it cannot be closed and reused under the loop.

// rawWait is how long an empty queue waits in a raw ppoll, keeping its P,
// before the blocking wait: longer than the gap between the packets of
// sparse traffic (one probe or keepalive a second), whose every packet
// would otherwise pay the blocking wait's wake-up (docs/datapath.md,
// "Latency levers"); short enough that an idle translator soon stops
// being preempted every 10 ms. Tests change it.
var rawWait = 2 * time.Second

// warmEvery is how often a queue in its raw wait has a WarmDispatcher
// rehearse a packet: the translator's code and data were measured to go
// cold (in this virtual machine, on a shared host) between packets more
// than 2-5 ms apart, and the first packet after such a gap spent 4-5x the
// user time of one that followed another closely (docs/datapath.md). A
// rehearsal costs a timer wake-up and a few µs of CPU per period, and only
// during the raw wait (rawWait after the last packet). Tests change it.
var warmEvery = time.Millisecond

// foreignRawWait replaces rawWait for a Conn that is not a Queue of a
// Device (tests' socketpairs; NIC mode's packet sockets are not read here
// but wait in stack's nicConn, with RawPoll): the daemon adds Ps for tun
// queues and NIC sockets only, and such a Conn's closing is noticed only
// when its waits end.
var foreignRawWait = time.Millisecond

// foreignWait bounds one blocking wait on a Conn that is not a Queue of a
// Device: nothing wakes the loop when such a Conn is closed.
var foreignWait = 100 * time.Millisecond

// rawIO is a queue's raw descriptor access and the state its callbacks
// share; only the queue's dispatch goroutine uses it.
type rawIO struct {
	rc syscall.RawConn
	// waitFn and writeFn are the Control callbacks (q.waitRead,
	// q.writeFd), made once so that no call allocates.
	waitFn  func(fd uintptr)
	writeFn func(fd uintptr)
	// bounded: a blocking wait ends after foreignWait (else only a packet
	// or a wake-up ends it).
	bounded     bool
	foreignWait unix.Timespec
	rawWait     unix.Timespec // of the wait that keeps the P (rawWait)
	// rawLeft and tmo are the timeouts handed to ppoll(2), which writes
	// the time left back into them (Linux ppoll; zero after a wait that
	// timed out). Each wait for a packet starts from fresh copies of
	// rawWait and foreignWait (a reused one made every wait after the
	// first timeout a zero-length poll); a raw wait that a signal
	// interrupted goes on for the time left in rawLeft.
	rawLeft unix.Timespec
	tmo     unix.Timespec
	// slice is the part of the raw wait that ends in a rehearsal (warmEvery,
	// when the queue has a WarmDispatcher and more than that is left).
	slice unix.Timespec

	pfds  [2]unix.PollFd // the queue, the wake eventfd
	n     int
	err   error
	woken bool // the wait ended without a packet: look at stopping
	// idled: the dispatcher was told the queue is idle in this wait for
	// a packet; waited: its raw wait began (rawLeft is what is left of
	// it).
	idled, waited bool

	wb   []byte
	wn   int
	werr unix.Errno
}

// newRawIO returns raw access to c's descriptor if c has one and it is
// non-blocking (a blocking one would hold the thread's P in a raw read),
// else nil. bounded: nothing but the wait timeout notices c being closed.
func newRawIO(c Conn, bounded bool) *rawIO {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	nonblock := false
	if err := rc.Control(func(fd uintptr) {
		fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		nonblock = err == nil && fl&unix.O_NONBLOCK != 0
	}); err != nil || !nonblock {
		return nil
	}
	raw := rawWait
	if bounded {
		raw = foreignRawWait
	}
	return &rawIO{rc: rc, bounded: bounded,
		rawWait: unix.NsecToTimespec(int64(raw)), foreignWait: unix.NsecToTimespec(int64(foreignWait))}
}

// errWoken: the wait ended without a packet (a stop, a Device closing, or
// the bounded wait of a foreign Conn): the loop checks why.
type wokenError struct{}

func (wokenError) Error() string { return "queue woken" }

var errWoken error = wokenError{}

// rawRead reads one packet into the frame at q.readAt, waiting for one
// as the package comment describes.
func (q *queue) rawRead(wakeFd int) (int, error) {
	r := q.rio
	r.n, r.err, r.woken = 0, nil, false
	r.pfds[1] = unix.PollFd{Fd: int32(wakeFd), Events: unix.POLLIN}
	if err := r.rc.Control(r.waitFn); err != nil {
		return 0, errStopped // closed
	}
	if r.woken {
		return 0, errWoken
	}
	if r.n == 0 && r.err == nil {
		return 0, errEOF // a socket peer went away; a tun never reads 0
	}
	return r.n, r.err
}

// waitRead is the Control callback of rawRead.
func (q *queue) waitRead(fd uintptr) {
	r := q.rio
	buf := q.frame.buf[q.readAt:]
	r.idled, r.waited = false, false
	for {
		n, _, errno := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		switch errno {
		case 0:
			r.n = int(n)
			return
		case unix.EINTR:
			continue
		case unix.EAGAIN:
		default:
			r.err = errno
			return
		}
		if !q.waitReadable(fd) {
			return
		}
	}
}

// waitReadable waits, as the package comment describes, until fd (the
// queue's descriptor, which a read found empty) is readable or in error,
// and reports true; or until the wait ends otherwise (r.woken: a wake-up
// or the bounded wait's end; r.err: ppoll failed), and reports false. The
// caller clears r.idled and r.waited when it starts waiting for a packet:
// the dispatcher is told once that the queue is idle, and a wait that a
// spurious wake-up ends goes on with the raw wait's time left. The
// io_uring loop's raw phase waits here too (through waitRead).
func (q *queue) waitReadable(fd uintptr) bool {
	r := q.rio
	if !r.idled {
		q.idle()
		r.idled = true
	}
	for {
		r.pfds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		r.pfds[1].Revents = 0
		if !r.waited {
			r.waited = true
			r.rawLeft = r.rawWait
		}
		if r.rawLeft != (unix.Timespec{}) {
			// Preemption requests yield the P and wait on for the
			// time left (RawPoll). With a WarmDispatcher the wait is cut
			// into slices of warmEvery, a rehearsal after each.
			tmo, sliced := &r.rawLeft, false
			if q.warm != nil && warmEvery > 0 && r.rawLeft.Nano() > int64(warmEvery) {
				r.slice = unix.NsecToTimespec(int64(warmEvery))
				tmo, sliced = &r.slice, true
			}
			ready := RawPoll(&r.pfds, tmo)
			if sliced {
				// ppoll left what remains of the slice in r.slice.
				r.rawLeft = unix.NsecToTimespec(r.rawLeft.Nano() - int64(warmEvery) + r.slice.Nano())
			}
			if ready {
				return true
			}
			if sliced && r.slice == (unix.Timespec{}) && r.pfds[1].Revents == 0 {
				// The slice ran out with raw wait left: rehearse, so
				// that the next packet finds the path warm, and wait on.
				q.warm()
				continue
			}
			// Timed out (rawLeft is zero now), woken, or failed: the
			// blocking wait below tells which.
			r.rawLeft = unix.Timespec{}
			r.pfds[1].Revents = 0
		}
		var tmo *unix.Timespec // nil: until a packet or a wake-up
		if r.bounded {
			r.tmo = r.foreignWait
			tmo = &r.tmo
		}
		ready, err := unix.Ppoll(r.pfds[:], tmo, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			r.err = err
			return false
		case ready == 0 || r.pfds[1].Revents != 0:
			r.woken = true
			return false
		}
		// The queue is readable, or in error (a deleted tun, a closed
		// peer): the next read says which.
		return true
	}
}

// rawWrite writes b (a packet with its virtio_net_hdr) by one write(2) on
// the calling thread, without entersyscall: a tun write never blocks. A
// Conn that is full (a socket) is written through its own Write instead,
// which waits.
func (q *queue) rawWrite(b []byte) (int, error) {
	r := q.rio
	r.wb, r.wn, r.werr = b, 0, 0
	err := r.rc.Control(r.writeFn)
	r.wb = nil
	switch {
	case err != nil:
		return 0, os.ErrClosed
	case r.werr == unix.EAGAIN:
		return q.conn.Write(b)
	case r.werr != 0:
		return r.wn, r.werr
	}
	return r.wn, nil
}

// writeFd is the Control callback of rawWrite.
func (q *queue) writeFd(fd uintptr) {
	r := q.rio
	for {
		n, _, errno := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.wb[0])), uintptr(len(r.wb)))
		if errno == unix.EINTR {
			continue
		}
		r.wn, r.werr = int(n), errno
		return
	}
}

// lockThread: each raw queue's dispatch goroutine keeps its own thread.
var lockThread = true

// runQueue runs fn on a thread of its own if the queue does raw I/O.
func (q *queue) runQueue(fn func()) {
	if q.rio != nil && lockThread {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	fn()
}
