package stack

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/stack/tun"
)

// The receive ring of a NIC-mode socket (PACKET_RX_RING with TPACKET_V2,
// the kernel's Documentation/networking/packet_mmap.rst).
//
// Why a ring: a socket's receive queue is bounded in bytes, and a limit
// that holds a burst of 64 KiB GRO super-packets holds thousands of
// 64-byte packets, so a small-packet flood faster than the translator
// queued over 100 ms in front of everything else (a ping behind it
// included). The ring is bounded in packets: ringFrames frames, one packet
// each; when they are all full the kernel drops the newest packet (the
// socket's tp_drops) instead of queueing it. Reading is a walk over frames
// that the kernel has handed over (no system call per packet); the queue
// waits in the poller only when the frame at its head is still the
// kernel's.
//
// Frames are sized for the NIC's MTU. A larger packet (a GRO or GSO
// super-packet) leaves only its start in the frame, flagged TP_STATUS_COPY,
// and the whole packet, with its virtio_net_hdr, in the socket's receive
// queue (PACKET_COPY_THRESH), where recvmsg reads it in the frame's turn:
// super-packets still cross whole, in order, through the byte-bounded
// queue that suits them.

// ringFrames is the number of frames in each socket's receive ring: the
// most packets that wait for one queue's goroutine. Under a 64-byte flood
// the translator serves a packet in tens of microseconds, so the ring's
// worst queueing delay is a few milliseconds, below the tun's queue of
// 500 packets (docs/datapath.md, "NIC mode").
const ringFrames = 256

// tpacket2HdrLen is TPACKET_ALIGN(sizeof(struct tpacket2_hdr)); the kernel
// puts a struct sockaddr_ll (20 bytes) behind it and aligns the packet's
// network header to 16 bytes behind that, with the virtio_net_hdr (and the
// Ethernet header of a SOCK_RAW socket) in front of it.
const (
	tpacket2HdrLen  = 32
	sockaddrLLLen   = 20
	tpacketAlign    = 16
	ringFrameHeader = (tpacket2HdrLen+sockaddrLLLen+tpacketAlign+tpacketAlign-1)&^(tpacketAlign-1) + tun.VnetHdrLen
)

// The fields of struct tpacket2_hdr that the ring's reader uses.
const (
	tpStatus  = 0
	tpLen     = 4
	tpSnaplen = 8
	tpMac     = 12
)

// nicRing is one socket's mapped receive ring; only the socket's queue
// goroutine reads it.
type nicRing struct {
	mem       []byte // the mapping: frames back to back
	frameSize int
	frames    int
	head      int // the next frame to read
}

// ringFrameSize is the frame size for packets of up to mtu bytes behind an
// Ethernet header: a power of two (so that frames tile the ring's
// page-sized blocks), at least 2 KiB.
func ringFrameSize(mtu int) int {
	need := ringFrameHeader + ethHdrLen + mtu
	size := 2048
	for size < need {
		size <<= 1
	}
	return size
}

// newNICRing sets up and maps a TPACKET_V2 receive ring of at least frames
// frames on fd for packets of up to mtu bytes; PACKET_VNET_HDR must already
// be on (the kernel refuses it once a ring exists). Packets larger than a
// frame go to the socket's receive queue in full (PACKET_COPY_THRESH).
func newNICRing(fd, frames, mtu int) (*nicRing, error) {
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return nil, fmt.Errorf("TPACKET_V2: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_COPY_THRESH, 1); err != nil {
		return nil, fmt.Errorf("PACKET_COPY_THRESH: %w", err)
	}
	fs := ringFrameSize(mtu)
	block := max(fs, os.Getpagesize())
	perBlock := block / fs
	blocks := (max(frames, 1) + perBlock - 1) / perBlock
	req := unix.TpacketReq{Block_size: uint32(block), Block_nr: uint32(blocks), Frame_size: uint32(fs), Frame_nr: uint32(blocks * perBlock)}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, fmt.Errorf("PACKET_RX_RING of %d frames of %d bytes: %w", req.Frame_nr, fs, err)
	}
	mem, err := unix.Mmap(fd, 0, block*blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mapping the receive ring: %w", err)
	}
	return &nicRing{mem: mem, frameSize: fs, frames: int(req.Frame_nr)}, nil
}

// close unmaps the ring; nothing may read it any more.
func (r *nicRing) close() {
	if r.mem != nil {
		unix.Munmap(r.mem)
		r.mem = nil
	}
}

// status is the word the kernel and the reader hand a frame over with.
func (r *nicRing) status(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.mem[i*r.frameSize+tpStatus]))
}

// ready says whether the frame at the head is the reader's.
func (r *nicRing) ready() bool {
	return atomic.LoadUint32(r.status(r.head))&unix.TP_STATUS_USER != 0
}

// What nicRing.next found at the head.
type ringResult int

const (
	ringEmpty   ringResult = iota // the head frame is still the kernel's
	ringPacket                    // a packet, copied out
	ringCopy                      // a packet too large for its frame: it is next in the socket's receive queue
	ringSkipped                   // a frame that held nothing to deliver (counted)
)

// next takes the packet in the head frame, if the kernel has handed it
// over, into p in a tun's framing (virtio_net_hdr, IP packet, offsets from
// the IP header), gives the frame back and moves on. What it cannot
// deliver it counts in stats and skips, as nicConn.readSyscall does.
func (r *nicRing) next(p []byte, stats *tun.Counters) (int, ringResult) {
	st := r.status(r.head)
	s := atomic.LoadUint32(st)
	if s&unix.TP_STATUS_USER == 0 {
		return 0, ringEmpty
	}
	f := r.mem[r.head*r.frameSize : (r.head+1)*r.frameSize]
	defer func() {
		atomic.StoreUint32(st, unix.TP_STATUS_KERNEL)
		if r.head++; r.head == r.frames {
			r.head = 0
		}
	}()
	if s&unix.TP_STATUS_COPY != 0 {
		return 0, ringCopy
	}
	plen := int(binary.NativeEndian.Uint32(f[tpLen:]))
	snap := int(binary.NativeEndian.Uint32(f[tpSnaplen:]))
	mac := int(binary.NativeEndian.Uint16(f[tpMac:]))
	switch {
	case snap < plen:
		stats.ReadErrors.Add(1) // truncated: the receive queue had no room for the whole packet
		return 0, ringSkipped
	case mac < tun.VnetHdrLen || mac+snap > len(f):
		stats.InvalidVnetHdr.Add(1)
		return 0, ringSkipped
	case snap < ethHdrLen:
		stats.ShortVnetHdr.Add(1)
		return 0, ringSkipped
	case tun.VnetHdrLen+snap-ethHdrLen > len(p):
		stats.ReadErrors.Add(1)
		return 0, ringSkipped
	}
	copy(p[:tun.VnetHdrLen], f[mac-tun.VnetHdrLen:mac])
	if !nicFraming(p, f[mac:mac+ethHdrLen], stats) {
		return 0, ringSkipped
	}
	n := copy(p[tun.VnetHdrLen:], f[mac+ethHdrLen:mac+snap])
	return tun.VnetHdrLen + n, ringPacket
}
