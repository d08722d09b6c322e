package tun

import (
	"errors"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A minimal io_uring (io_uring_setup(2), io_uring_enter(2)) for one
// queue's dispatch loop: reads and writes on one registered descriptor and
// a poll of the wake eventfd, submitted and reaped by the one goroutine
// that owns the ring, on its locked thread. Only what the loop uses is
// here; the layouts are the kernel's include/uapi/linux/io_uring.h.

const (
	uringOpPollAdd = 6
	uringOpCancel  = 14
	uringOpRead    = 22
	uringOpWrite   = 23

	uringSqeFixedFile   = 1 << 0 // IOSQE_FIXED_FILE
	uringSqeLink        = 1 << 2 // IOSQE_IO_LINK: the next entry starts when this one succeeded
	uringSqeSkipSuccess = 1 << 6 // IOSQE_CQE_SKIP_SUCCESS: a completion only if it failed

	uringCancelAll = 1 << 0 // IORING_ASYNC_CANCEL_ALL
	uringCancelAny = 1 << 2 // IORING_ASYNC_CANCEL_ANY

	uringSetupCoopTaskrun  = 1 << 8
	uringSetupSingleIssuer = 1 << 12
	uringSetupDeferTaskrun = 1 << 13

	uringFeatSingleMmap = 1 << 0
	uringFeatExtArg     = 1 << 8
	uringFeatCqeSkip    = 1 << 11

	uringEnterGetevents = 1 << 0
	uringEnterExtArg    = 1 << 3

	uringRegisterFiles   = 2
	uringUnregisterFiles = 3

	uringOffSqRing = 0
	uringOffCqRing = 0x8000000
	uringOffSqes   = 0x10000000
)

type uringSqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type uringCqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  uringSqringOffsets
	cqOff                                                                  uringCqringOffsets
}

// uringSqe is struct io_uring_sqe (64 bytes).
type uringSqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32 // rw_flags, poll32_events, cancel_flags
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	_           uint64
}

// uringCqe is struct io_uring_cqe (16 bytes).
type uringCqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// uringGeteventsArg is struct io_uring_getevents_arg: the timeout of a
// wait (IORING_ENTER_EXT_ARG).
type uringGeteventsArg struct {
	sigmask   uint64
	sigmaskSz uint32
	minWait   uint32
	ts        uint64
}

// ring is one io_uring, mapped. Its head and tail words are shared with
// the kernel: the ones the kernel writes are read atomically, the ones it
// reads are written atomically.
type ring struct {
	fd      int
	sqMem   []byte
	cqMem   []byte // == sqMem with IORING_FEAT_SINGLE_MMAP
	sqeMem  []byte
	sqHead  *uint32
	sqTail  *uint32
	sqMask  uint32
	sqArray []uint32
	sqes    []uringSqe
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	cqes    []uringCqe

	tail    uint32 // our SQ tail: entries up to it are queued, not yet submitted
	pending uint32 // entries queued since the last enter

	arg uringGeteventsArg
	ts  unix.Timespec
}

// errNoURing: the kernel has no usable io_uring (none, disabled by
// kernel.io_uring_disabled, or without what the loop needs).
var errNoURing = errors.New("io_uring unavailable")

// uringSetup creates a ring of entries submission slots. Tests replace it
// to check the fallback to the raw loop.
var uringSetup = newRing

// newRing creates a ring with at least entries submission slots whose
// completions run only when its owner enters it (DEFER_TASKRUN, Linux 6.1)
// or at least without interrupting it (COOP_TASKRUN, 5.19), registers fd
// as its fixed file 0, and maps its memory.
func newRing(entries uint32, fd int) (*ring, error) {
	var p uringParams
	var rfd uintptr
	var errno syscall.Errno
	for _, flags := range []uint32{uringSetupSingleIssuer | uringSetupDeferTaskrun, uringSetupCoopTaskrun, 0} {
		p = uringParams{flags: flags}
		rfd, _, errno = unix.RawSyscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
		if errno != unix.EINVAL {
			break
		}
	}
	if errno != 0 {
		return nil, errors.Join(errNoURing, errno)
	}
	r := &ring{fd: int(rfd)}
	if need := uint32(uringFeatSingleMmap | uringFeatExtArg | uringFeatCqeSkip); p.features&need != need {
		r.close()
		return nil, errNoURing // older than Linux 5.17
	}
	if err := r.mmap(&p); err != nil {
		r.close()
		return nil, errors.Join(errNoURing, err)
	}
	files := [1]int32{int32(fd)}
	if _, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), uringRegisterFiles, uintptr(unsafe.Pointer(&files[0])), 1, 0, 0); errno != 0 {
		r.close()
		return nil, errors.Join(errNoURing, errno)
	}
	r.tail = *r.sqTail
	return r, nil
}

func (r *ring) mmap(p *uringParams) error {
	sqLen := int(p.sqOff.array) + int(p.sqEntries)*4
	cqLen := int(p.cqOff.cqes) + int(p.cqEntries)*int(unsafe.Sizeof(uringCqe{}))
	var err error
	r.sqMem, err = unix.Mmap(r.fd, uringOffSqRing, max(sqLen, cqLen), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return err
	}
	r.cqMem = r.sqMem
	r.sqeMem, err = unix.Mmap(r.fd, uringOffSqes, int(p.sqEntries)*int(unsafe.Sizeof(uringSqe{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return err
	}
	sq, cq := unsafe.Pointer(&r.sqMem[0]), unsafe.Pointer(&r.cqMem[0])
	r.sqHead = (*uint32)(unsafe.Add(sq, p.sqOff.head))
	r.sqTail = (*uint32)(unsafe.Add(sq, p.sqOff.tail))
	r.sqMask = *(*uint32)(unsafe.Add(sq, p.sqOff.ringMask))
	r.sqArray = unsafe.Slice((*uint32)(unsafe.Add(sq, p.sqOff.array)), p.sqEntries)
	r.sqes = unsafe.Slice((*uringSqe)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqHead = (*uint32)(unsafe.Add(cq, p.cqOff.head))
	r.cqTail = (*uint32)(unsafe.Add(cq, p.cqOff.tail))
	r.cqMask = *(*uint32)(unsafe.Add(cq, p.cqOff.ringMask))
	r.cqes = unsafe.Slice((*uringCqe)(unsafe.Add(cq, p.cqOff.cqes)), p.cqEntries)
	return nil
}

// close unmaps and closes the ring. Everything in flight must have
// completed (drained): the kernel would otherwise still write into the
// buffers of reads after close returns. The registered file is let go
// first, at once: a ring is torn down asynchronously, and a tun whose
// last reference it held would outlive its Device's Close.
func (r *ring) close() {
	unix.RawSyscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), uringUnregisterFiles, 0, 0, 0, 0)
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
	}
	if r.sqMem != nil {
		unix.Munmap(r.sqMem)
	}
	unix.Close(r.fd)
}

// sqe returns the next free submission entry, cleared. The caller's
// bookkeeping (no more operations in flight than slots) guarantees there
// is one.
func (r *ring) sqe() *uringSqe {
	i := r.tail & r.sqMask
	s := &r.sqes[i]
	*s = uringSqe{}
	r.sqArray[i] = i
	r.tail++
	r.pending++
	return s
}

// prepRW queues a read or write of b on the registered file, with the
// entry flags (IOSQE_*) and read/write flags (RWF_*) given.
func (r *ring) prepRW(op, flags uint8, rwFlags uint32, b []byte, userData uint64) {
	s := r.sqe()
	s.opcode, s.flags, s.fd, s.opFlags = op, uringSqeFixedFile|flags, 0, rwFlags
	s.addr, s.len, s.off = uint64(uintptr(unsafe.Pointer(&b[0]))), uint32(len(b)), ^uint64(0) // the file's position: a tun has none
	s.userData = userData
}

// prepPoll queues a one-shot poll for fd being readable.
func (r *ring) prepPoll(fd int, userData uint64) {
	s := r.sqe()
	s.opcode, s.fd, s.opFlags, s.userData = uringOpPollAdd, int32(fd), unix.POLLIN, userData
}

// prepCancelAll queues the cancellation of every operation in flight.
func (r *ring) prepCancelAll(userData uint64) {
	s := r.sqe()
	s.opcode, s.fd, s.opFlags, s.userData = uringOpCancel, -1, uringCancelAll|uringCancelAny, userData
}

// ready is the number of completions waiting.
func (r *ring) ready() uint32 {
	return atomic.LoadUint32(r.cqTail) - *r.cqHead
}

// cqe is the i-th waiting completion.
func (r *ring) cqe(i uint32) *uringCqe {
	return &r.cqes[(*r.cqHead+i)&r.cqMask]
}

// consume hands n reaped completions back to the kernel.
func (r *ring) consume(n uint32) { atomic.StoreUint32(r.cqHead, *r.cqHead+n) }

// enter submits what is queued and, if wait, waits until a completion is
// there, for at most timeout (nil: no bound). raw makes the call without
// entersyscall: the thread keeps its P (only for a short, bounded wait).
// The error is the call's (EINTR, ETIME, EBUSY...), after which the
// caller looks at the completion queue anyway.
func (r *ring) enter(wait bool, timeout *unix.Timespec, raw bool) unix.Errno {
	atomic.StoreUint32(r.sqTail, r.tail)
	submit := r.pending
	// GETEVENTS even without waiting: with DEFER_TASKRUN it is what
	// runs the completions that are due.
	var minComplete, argp, argsz uintptr
	flags := uintptr(uringEnterGetevents)
	if wait {
		minComplete = 1
	}
	if wait && timeout != nil {
		r.ts = *timeout
		r.arg = uringGeteventsArg{ts: uint64(uintptr(unsafe.Pointer(&r.ts)))}
		flags |= uringEnterExtArg
		argp, argsz = uintptr(unsafe.Pointer(&r.arg)), unsafe.Sizeof(r.arg)
	}
	var errno syscall.Errno
	if raw {
		_, _, errno = unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(submit), minComplete, flags, argp, argsz)
	} else {
		_, _, errno = unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(submit), minComplete, flags, argp, argsz)
	}
	// What the kernel did not take (it stops at EBUSY, a full completion
	// queue) stays queued for the next enter.
	r.pending = r.tail - atomic.LoadUint32(r.sqHead)
	return errno
}

// space is the number of submission entries free.
func (r *ring) space() uint32 { return uint32(len(r.sqes)) - (r.tail - atomic.LoadUint32(r.sqHead)) }
