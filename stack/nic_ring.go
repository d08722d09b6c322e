package stack

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"time"
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
	// taken counts the frames the reader has taken, for watchRings.
	taken atomic.Uint64
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
	r.taken.Add(1)
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

// ringPrefetch is the most ring frames a queue announces to its
// Handler's PrefetchBatch at once: a batch of the size the tun's io_uring
// queues read, whose table lines stay in cache until translated.
const ringPrefetch = 16

// peek stores in pkts the IP packets (behind their Ethernet headers, in
// the ring's memory) of the frames from the head on that the kernel has
// handed over, up to len(pkts), and returns how many (k) and over how many
// frames; it stops at the first frame still the kernel's and skips the
// frames next would not deliver from the ring (a packet left in the
// receive queue, a malformed frame). It only reads: the frames stay the
// reader's until next takes them.
func (r *nicRing) peek(pkts [][]byte) (k, frames int) {
	for j := r.head; frames < r.frames && k < len(pkts); frames++ {
		s := atomic.LoadUint32(r.status(j))
		if s&unix.TP_STATUS_USER == 0 {
			break
		}
		f := r.mem[j*r.frameSize : (j+1)*r.frameSize]
		if j++; j == r.frames {
			j = 0
		}
		plen := int(binary.NativeEndian.Uint32(f[tpLen:]))
		snap := int(binary.NativeEndian.Uint32(f[tpSnaplen:]))
		mac := int(binary.NativeEndian.Uint16(f[tpMac:]))
		if s&unix.TP_STATUS_COPY != 0 || snap < plen || mac < tun.VnetHdrLen || mac+snap > len(f) || snap < ethHdrLen {
			continue
		}
		pkts[k] = f[mac+ethHdrLen : mac+snap]
		k++
	}
	return k, frames
}

// empty says whether every frame is the kernel's; it may run beside the
// reader (it only loads the status words).
func (r *nicRing) empty() bool {
	for i := range r.frames {
		if atomic.LoadUint32(r.status(i)) != unix.TP_STATUS_KERNEL {
			return false
		}
	}
	return true
}

// A stalled ring. With a ring and PACKET_VNET_HDR, a packet whose
// virtio_net_hdr the kernel cannot make (a GSO super-packet that is
// neither TCP nor UDP: SCTP or ESP segmentation offload from a sender on
// the same host) is dropped by tpacket_rcv after it has claimed the head
// frame, whose claim is then never released: from then on the kernel
// drops every packet for that socket and hands over no frame, and the
// queue, which only sees an empty ring, would wait for ever while its
// traffic is lost. watchRings makes that a failure of the data path (as a
// deleted NIC is), so that the daemon reports it and its supervisor
// restarts it with new sockets.

// ringWatchEvery is how often watchRings looks at the sockets.
const ringWatchEvery = time.Second

// watchRings looks at the rings of conns every interval until done is
// closed, and sends an error to fail when one has stalled: the kernel
// counted drops for its socket (drops reads and clears the count of
// PACKET_STATISTICS) while its queue took no frame since the last look
// and every frame is the kernel's. A ring that drops because it is full
// has frames to take, so a busy or overloaded queue never looks stalled.
func watchRings(conns []*nicConn, drops func(*nicConn) (uint32, error), every time.Duration, done <-chan struct{}, fail chan<- error) {
	last := make([]uint64, len(conns))
	for i, c := range conns {
		last[i] = c.ring.taken.Load()
		drops(c) // from here on
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		for i, c := range conns {
			taken := c.ring.taken.Load()
			d, err := drops(c)
			if err == nil && d > 0 && taken == last[i] && c.ring.empty() {
				select {
				case fail <- fmt.Errorf("NIC %s queue %d: the kernel dropped %d packets and handed over no receive ring frame (a super-packet the virtio_net_hdr cannot describe stalls the ring)", c.port.name, c.queue, d):
				default:
				}
			}
			last[i] = taken
		}
	}
}

// socketDrops is watchRings' drops in ServeNIC: the socket's
// PACKET_STATISTICS drop count, which reading clears.
func socketDrops(c *nicConn) (uint32, error) {
	var drops uint32
	var serr error
	err := c.raw.Control(func(fd uintptr) {
		var st *unix.TpacketStats
		st, serr = unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if serr == nil {
			drops = st.Drops
		}
	})
	if err != nil {
		return 0, err
	}
	return drops, serr
}
