package stack

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/stack/tun"
)

// Batched sending in NIC mode: a queue's translated packets wait in its
// nicBatch and leave together in one sendmmsg(2) when the queue's ring is
// empty (before it waits for more), when the batch is full, or before a
// packet that must go another way. Under load that is one system call per
// batchLen packets instead of one each; a lone packet (a ping) leaves as
// soon as its queue has nothing more to read, so it waits for nothing.
//
// The endpoint reuses its frame for the next packet as soon as Write
// returns, so a batched packet is copied into the batch's own slot; a
// packet larger than a slot (a GSO super-packet) is sent at once with
// sendmsg, after the batch, keeping the queue's order.

const (
	batchLen  = 32   // packets per sendmmsg
	batchSlot = 2048 // the largest IP packet a batch copies
)

// mmsghdr is struct mmsghdr: a msghdr and the length sent.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// nicBatch is one queue's packets waiting to be sent. Write and Read of
// the queue's nicConn use it, both from the queue's dispatch goroutine
// (the Handler writes a packet on the queue that read it); the lock only
// keeps a stray caller from corrupting it.
type nicBatch struct {
	mu   sync.Mutex
	fd   int // the socket the waiting packets leave by
	n    int // packets waiting
	msgs [batchLen]mmsghdr
	iov  [batchLen][3]unix.Iovec
	vnet [batchLen][tun.VnetHdrLen]byte
	eth  [batchLen][ethHdrLen]byte
	sll  [batchLen]unix.RawSockaddrLinklayer
	data []byte // batchLen slots of batchSlot bytes
}

func newNICBatch() *nicBatch {
	b := &nicBatch{data: make([]byte, batchLen*batchSlot)}
	for i := range b.msgs {
		m := &b.msgs[i].hdr
		m.Name = (*byte)(unsafe.Pointer(&b.sll[i]))
		m.Namelen = unix.SizeofSockaddrLinklayer
		m.Iov = &b.iov[i][0]
		m.SetIovlen(len(b.iov[i]))
		b.iov[i][0].Base = &b.vnet[i][0]
		b.iov[i][0].SetLen(tun.VnetHdrLen)
		b.iov[i][1].Base = &b.eth[i][0]
		b.iov[i][1].SetLen(ethHdrLen)
		b.iov[i][2].Base = &b.data[i*batchSlot]
	}
	return b
}

// add queues pkt (virtio_net_hdr and IP packet) for hop through fd, the
// socket of p, or reports false if it is too large for a slot (the caller
// flushes and sends it itself).
func (b *nicBatch) add(fd int, hop nextHop, p *nicPort, pkt []byte, errs func()) bool {
	ip := pkt[tun.VnetHdrLen:]
	if len(ip) > batchSlot {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n > 0 && b.fd != fd {
		b.flushLocked(errs)
	}
	i := b.n
	linkHeaders(hop, p, pkt, &b.vnet[i], &b.eth[i], &b.sll[i])
	copy(b.data[i*batchSlot:], ip)
	b.iov[i][2].SetLen(len(ip))
	b.fd = fd
	if b.n++; b.n == batchLen {
		b.flushLocked(errs)
	}
	return true
}

// flush sends the waiting packets; errs is called for each one the kernel
// refused.
func (b *nicBatch) flush(errs func()) {
	b.mu.Lock()
	b.flushLocked(errs)
	b.mu.Unlock()
}

func (b *nicBatch) flushLocked(errs func()) {
	retried := false
	for sent := 0; sent < b.n; {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(b.fd), uintptr(unsafe.Pointer(&b.msgs[sent])), uintptr(b.n-sent), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == unix.EINTR:
		case errno == unix.ENETDOWN && !retried:
			retried = true // maybe the socket's stale error (see sendmsg)
		case errno != 0 || r == 0:
			errs() // the packet at sent is lost (as a failed sendmsg's is)
			sent++
		default:
			sent += int(r)
		}
	}
	b.n = 0
}
