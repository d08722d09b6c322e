package main

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The -uring variant: one io_uring per queue, one io_uring_enter(2) per
// packet instead of a read(2) and a write(2). Each packet's write is
// submitted linked (IOSQE_IO_LINK) to the read of the next packet into the
// same buffer, so the read starts only once the write has taken the bytes;
// the write reports only a failure (IOSQE_CQE_SKIP_SUCCESS). This is the
// call pattern of map646's queue loop (stack/tun/uringio_linux.go) with one
// slot instead of sixteen: a packet's order is never in question. The
// layouts are the kernel's include/uapi/linux/io_uring.h.

const (
	opRead  = 22 // IORING_OP_READ
	opWrite = 23 // IORING_OP_WRITE

	sqeLink        = 1 << 2 // IOSQE_IO_LINK
	sqeSkipSuccess = 1 << 6 // IOSQE_CQE_SKIP_SUCCESS

	setupSingleIssuer = 1 << 12 // IORING_SETUP_SINGLE_ISSUER
	setupDeferTaskrun = 1 << 13 // IORING_SETUP_DEFER_TASKRUN

	featSingleMmap = 1 << 0  // IORING_FEAT_SINGLE_MMAP
	featCqeSkip    = 1 << 11 // IORING_FEAT_CQE_SKIP

	enterGetevents = 1 << 0 // IORING_ENTER_GETEVENTS

	offSqes = 0x10000000 // IORING_OFF_SQES

	udRead, udWrite = 1, 2 // user data: which operation completed
)

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// sqe is struct io_uring_sqe (64 bytes).
type sqe struct {
	opcode, flags         uint8
	ioprio                uint16
	fd                    int32
	off, addr             uint64
	len, rwFlags          uint32
	userData              uint64
	bufIndex, personality uint16
	spliceFdIn            int32
	addr3, _              uint64
}

// cqe is struct io_uring_cqe (16 bytes).
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// ring is one mapped io_uring, used by one thread.
type ring struct {
	fd           int
	mem, sqeMem  []byte
	sqTail       *uint32
	sqHead       *uint32
	sqMask       uint32
	sqArray      []uint32
	sqes         []sqe
	cqHead       *uint32
	cqTail       *uint32
	cqMask       uint32
	cqes         []cqe
	tail, queued uint32
}

func newRing() (*ring, error) {
	p := params{flags: setupSingleIssuer | setupDeferTaskrun}
	fd, _, errno := unix.RawSyscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &ring{fd: int(fd)}
	if need := uint32(featSingleMmap | featCqeSkip); p.features&need != need {
		unix.Close(r.fd)
		return nil, errors.New("io_uring without SINGLE_MMAP and CQE_SKIP (Linux < 5.17)")
	}
	size := max(int(p.sqOff.array)+int(p.sqEntries)*4, int(p.cqOff.cqes)+int(p.cqEntries)*int(unsafe.Sizeof(cqe{})))
	var err error
	if r.mem, err = unix.Mmap(r.fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		unix.Close(r.fd)
		return nil, err
	}
	if r.sqeMem, err = unix.Mmap(r.fd, offSqes, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		unix.Munmap(r.mem)
		unix.Close(r.fd)
		return nil, err
	}
	base := unsafe.Pointer(&r.mem[0])
	r.sqHead = (*uint32)(unsafe.Add(base, p.sqOff.head))
	r.sqTail = (*uint32)(unsafe.Add(base, p.sqOff.tail))
	r.sqMask = *(*uint32)(unsafe.Add(base, p.sqOff.ringMask))
	r.sqArray = unsafe.Slice((*uint32)(unsafe.Add(base, p.sqOff.array)), p.sqEntries)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqHead = (*uint32)(unsafe.Add(base, p.cqOff.head))
	r.cqTail = (*uint32)(unsafe.Add(base, p.cqOff.tail))
	r.cqMask = *(*uint32)(unsafe.Add(base, p.cqOff.ringMask))
	r.cqes = unsafe.Slice((*cqe)(unsafe.Add(base, p.cqOff.cqes)), p.cqEntries)
	r.tail = *r.sqTail
	return r, nil
}

// prep queues a read or write of b on fd.
func (r *ring) prep(op, flags uint8, fd int, b []byte, userData uint64) {
	i := r.tail & r.sqMask
	r.sqes[i] = sqe{opcode: op, flags: flags, fd: int32(fd), off: ^uint64(0),
		addr: uint64(uintptr(unsafe.Pointer(&b[0]))), len: uint32(len(b)), userData: userData}
	r.sqArray[i] = i
	r.tail++
	r.queued++
}

// submitAndWait submits what is queued and waits for one completion. The
// thread sleeps in the kernel (entersyscall), as a blocking read would.
func (r *ring) submitAndWait() error {
	atomic.StoreUint32(r.sqTail, r.tail)
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(r.queued), 1, enterGetevents, 0, 0)
	r.queued = r.tail - atomic.LoadUint32(r.sqHead)
	if errno != 0 && errno != unix.EINTR && errno != unix.EBUSY {
		return fmt.Errorf("io_uring_enter: %w", errno)
	}
	return nil
}

// next takes the oldest completion, if there is one.
func (r *ring) next() (cqe, bool) {
	h := *r.cqHead
	if atomic.LoadUint32(r.cqTail) == h {
		return cqe{}, false
	}
	c := r.cqes[h&r.cqMask]
	atomic.StoreUint32(r.cqHead, h+1)
	return c, true
}

// echoURing is echo through an io_uring: each packet read is written back
// by the same io_uring_enter that starts the next read.
func echoURing(fd int, s *queueStats, buf []byte) error {
	r, err := newRing()
	if err != nil {
		return err
	}
	r.prep(opRead, 0, fd, buf, udRead)
	for {
		if err := r.submitAndWait(); err != nil {
			return err
		}
		for {
			c, ok := r.next()
			if !ok {
				break
			}
			switch {
			case c.userData == udWrite: // only a failed write completes
				s.writeErrs.Add(1)
			case c.res == -int32(syscall.ECANCELED):
				// The read after a failed write: start it again.
				r.prep(opRead, 0, fd, buf, udRead)
			case c.res < 0 && (c.res == -int32(syscall.EINTR) || c.res == -int32(syscall.EAGAIN)):
				r.prep(opRead, 0, fd, buf, udRead)
			case c.res < 0:
				return fmt.Errorf("read fd %d: %w", fd, syscall.Errno(-c.res))
			case c.res == 0: // nothing to hand back
				r.prep(opRead, 0, fd, buf, udRead)
			default:
				n := int(c.res)
				s.packets.Add(1)
				s.bytes.Add(uint64(n))
				r.prep(opWrite, sqeLink|sqeSkipSuccess, fd, buf[:n], udWrite)
				r.prep(opRead, 0, fd, buf, udRead)
			}
		}
	}
}
