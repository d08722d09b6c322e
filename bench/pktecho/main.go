// Command pktecho is the floor of NIC mode (map646's AF_PACKET data path,
// stack/nic*.go): it forwards the IPv6 frames that arrive on one NIC out of
// the other unchanged but for the Ethernet addresses, through AF_PACKET
// sockets read and written as map646 reads and writes them, with no
// translation and nothing else. Whatever TCP rate it reaches against the
// kernel's own forwarding bounds what any translator on packet sockets can
// reach on the same links.
//
// Each NIC gets one SOCK_RAW socket with PACKET_VNET_HDR and a TPACKET_V2
// receive ring of 2 KiB frames with PACKET_COPY_THRESH, as map646 opens
// them: a packet that fits its frame is read from the ring without a system
// call, a larger one (a GRO super-packet) is left whole in the receive
// queue, flagged TP_STATUS_COPY, and read with recvmsg. The frame's
// virtio_net_hdr counts its offsets from the Ethernet header on both the
// receive and the send side, so it goes back out as it came: the kernel
// segments and completes the super-packet on the way out. One OS thread
// serves both sockets and waits in ppoll when both rings are empty.
//
// Two ways to send, chosen by -txring:
//
//   - off (map646's way): small packets are copied into a batch and leave in
//     one sendmmsg when the rings are empty or 32 wait; a super-packet is
//     read into a buffer and sent with its own sendmsg, which copies it into
//     a new skb (packet_snd).
//   - on: a TPACKET_V2 transmit ring (PACKET_TX_RING) of frames that hold a
//     64 KiB packet. A super-packet is read with recvmsg straight into the
//     next transmit frame, a small packet copied there from its receive
//     frame, and the frames leave with one send(2) per batch (tpacket_snd),
//     which builds the skb on the ring's pages instead of copying
//     (tpacket_fill_skb). With a transmit ring every send of the socket
//     goes through it.
//
// The netns harness (bench/netns, setups pkt-echo and pkt-echo-txring)
// turns the router namespace's kernel forwarding off and runs it on the
// router's two veths, with the peers' link addresses, which the topology
// fixes. It is a measuring instrument, not part of the product: it lives
// outside the product packages and the map646 binary.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	vnetHdrLen = 10 // struct virtio_net_hdr, as map646's sockets carry it
	ethHdrLen  = 14
	// rxFrames, rxFrameSize: map646's receive ring (stack/nic_ring.go:
	// ringFrames, ringFrameSize for an MTU up to 1500+).
	rxFrames    = 256
	rxFrameSize = 2048
	// txFrameSize holds a 64 KiB IP packet behind its virtio_net_hdr and
	// Ethernet header at txData; a whole number of pages, so that one
	// frame is one block.
	txFrameSize = 17 * 4096
	// txData is where tpacket_snd reads a frame's data without
	// PACKET_TX_HAS_OFF: TPACKET2_HDRLEN - sizeof(struct sockaddr_ll).
	txData = 32
	// batchLen is the most packets sent with one sendmmsg or send.
	batchLen = 32
	// slot is the largest small packet a send batch copies.
	slot = 2048
	// bufSize holds a super-packet: virtio_net_hdr, Ethernet header and a
	// 64 KiB IP packet.
	bufSize = vnetHdrLen + ethHdrLen + 65535
)

// The fields of struct tpacket2_hdr used here.
const (
	tpStatus  = 0
	tpLen     = 4
	tpSnaplen = 8
	tpMac     = 12
)

// stats counts what one direction forwarded.
type stats struct {
	packets, bytes, supers, sendErrs, txBusy atomic.Uint64
}

// port is one NIC's socket, its rings and its send batch.
type port struct {
	name   string
	fd     int
	mac    [6]byte // the NIC's own
	peer   [6]byte // the link address frames sent out of it go to
	mem    []byte  // receive ring, then transmit ring
	rxHead int
	tx     []byte // the transmit ring (nil: sendmsg)
	txHead int
	txFrms int
	queued int // frames marked SEND_REQUEST since the last send
	// sendmmsg batch (no transmit ring)
	msgs [batchLen]mmsghdr
	iov  [batchLen]unix.Iovec
	data []byte
	n    int
	sll  unix.RawSockaddrLinklayer
}

type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

func main() {
	a := flag.String("a", "", "first NIC")
	aPeer := flag.String("a-peer", "", "link address of the first NIC's next hop")
	b := flag.String("b", "", "second NIC")
	bPeer := flag.String("b-peer", "", "link address of the second NIC's next hop")
	txRing := flag.Bool("txring", false, "send through a PACKET_TX_RING instead of sendmsg/sendmmsg")
	txFrames := flag.Int("txframes", 64, "transmit ring frames (of 68 KiB) per socket, with -txring")
	flag.Parse()
	if *a == "" || *b == "" || *aPeer == "" || *bPeer == "" || *txFrames < 1 {
		fmt.Fprintln(os.Stderr, "pktecho: want -a IF -a-peer MAC -b IF -b-peer MAC [-txring [-txframes N]]")
		os.Exit(2)
	}
	frames := 0
	if *txRing {
		frames = *txFrames
	}
	pa, err := open(*a, *aPeer, frames)
	if err == nil {
		var pb *port
		if pb, err = open(*b, *bPeer, frames); err == nil {
			run(pa, pb, *txRing)
		}
	}
	fmt.Fprintf(os.Stderr, "pktecho: %v\n", err)
	os.Exit(1)
}

// open opens NIC name's socket with its receive ring and, with txFrames
// above 0, a transmit ring.
func open(name, peer string, txFrames int) (_ *port, err error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	hw, err := net.ParseMAC(peer)
	if err != nil || len(hw) != 6 || len(ifc.HardwareAddr) != 6 {
		return nil, fmt.Errorf("%s: link addresses %v, %q: %v", name, ifc.HardwareAddr, peer, err)
	}
	p := &port{name: name, mac: [6]byte(ifc.HardwareAddr), peer: [6]byte(hw)}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	p.fd = fd
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	// PACKET_HOST frames only: the peer's frames to this NIC, not what
	// the host sends or broadcasts.
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0xfffff000 + 4}, // SKF_AD_PKTTYPE
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.PACKET_HOST},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0x40000},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	steps := []struct {
		what string
		err  error
	}{
		{"filter", unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)},
		{"PACKET_IGNORE_OUTGOING", unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)},
		{"PACKET_VNET_HDR", unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1)},
		{"SO_RCVBUFFORCE", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)},
		{"SO_SNDBUFFORCE", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)},
		{"TPACKET_V2", unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2)},
		{"PACKET_COPY_THRESH", unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_COPY_THRESH, 1)},
	}
	for _, s := range steps {
		if s.err != nil {
			return nil, fmt.Errorf("%s: %s: %w", name, s.what, s.err)
		}
	}
	rx := unix.TpacketReq{Block_size: 4096, Block_nr: rxFrames / 2, Frame_size: rxFrameSize, Frame_nr: rxFrames}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &rx); err != nil {
		return nil, fmt.Errorf("%s: PACKET_RX_RING: %w", name, err)
	}
	size := rxFrames * rxFrameSize
	if txFrames > 0 {
		tx := unix.TpacketReq{Block_size: txFrameSize, Block_nr: uint32(txFrames), Frame_size: txFrameSize, Frame_nr: uint32(txFrames)}
		if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &tx); err != nil {
			return nil, fmt.Errorf("%s: PACKET_TX_RING: %w", name, err)
		}
		size += txFrames * txFrameSize
	}
	if p.mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", name, err)
	}
	if txFrames > 0 {
		p.tx, p.txFrms = p.mem[rxFrames*rxFrameSize:], txFrames
	}
	// IPv6 only: the harness forwards native IPv6 through it.
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifc.Index}); err != nil {
		return nil, fmt.Errorf("%s: bind: %w", name, err)
	}
	p.sll = unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Protocol: htons(unix.ETH_P_IPV6), Ifindex: int32(ifc.Index)}
	p.data = make([]byte, batchLen*slot)
	for i := range p.msgs {
		m := &p.msgs[i].hdr
		m.Name = (*byte)(unsafe.Pointer(&p.sll))
		m.Namelen = unix.SizeofSockaddrLinklayer
		m.Iov = &p.iov[i]
		m.SetIovlen(1)
		p.iov[i].Base = &p.data[i*slot]
	}
	return p, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func status(mem []byte, off int) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off+tpStatus])) }

// run forwards between a and b until SIGTERM, then prints the counts and
// exits.
func run(a, b *port, txRing bool) {
	var st [2]stats // a to b, b to a
	var stop atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-sig
		stop.Store(true)
	}()
	mode := "sendmsg/sendmmsg"
	if txRing {
		mode = "PACKET_TX_RING"
	}
	fmt.Fprintf(os.Stderr, "pktecho: %s <-> %s, %s\n", a.name, b.name, mode)
	forward(a, b, &st, &stop)
	for i, d := range []string{a.name + " -> " + b.name, b.name + " -> " + a.name} {
		s := &st[i]
		fmt.Fprintf(os.Stderr, "pktecho: %s: %d packets, %d bytes, %d super-packets, %d send errors, %d with no transmit frame\n",
			d, s.packets.Load(), s.bytes.Load(), s.supers.Load(), s.sendErrs.Load(), s.txBusy.Load())
	}
	os.Exit(0)
}

// idleWait bounds a wait for packets, so that forward sees stop.
var idleWait = unix.NsecToTimespec(int64(100 * time.Millisecond))

// forward moves packets between a and b on the calling goroutine's locked
// thread, counting them in st (a to b, b to a), until stop is set.
func forward(a, b *port, st *[2]stats, stop *atomic.Bool) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, bufSize)
	pfds := []unix.PollFd{{Fd: int32(a.fd), Events: unix.POLLIN}, {Fd: int32(b.fd), Events: unix.POLLIN}}
	for !stop.Load() {
		moved := false
		// Up to a batch from each side in turn, so that neither starves.
		for k := 0; k < batchLen; k++ {
			x := a.take(b, buf, &st[0])
			y := b.take(a, buf, &st[1])
			if !x && !y {
				break
			}
			moved = true
		}
		if moved {
			continue
		}
		a.flush(&st[1])
		b.flush(&st[0])
		wait := idleWait
		unix.Ppoll(pfds, &wait, nil)
	}
	a.flush(&st[1])
	b.flush(&st[0])
}

// close unmaps p's rings and closes its socket.
func (p *port) close() {
	if p.mem != nil {
		unix.Munmap(p.mem)
	}
	unix.Close(p.fd)
}

// take forwards the packet at the head of p's receive ring out of o, if
// the kernel has handed one over.
func (p *port) take(o *port, buf []byte, s *stats) bool {
	off := p.rxHead * rxFrameSize
	st := status(p.mem, off)
	v := atomic.LoadUint32(st)
	if v&unix.TP_STATUS_USER == 0 {
		return false
	}
	if v&unix.TP_STATUS_COPY != 0 {
		o.super(p.fd, buf, s)
	} else {
		f := p.mem[off : off+rxFrameSize]
		snap := int(binary.NativeEndian.Uint32(f[tpSnaplen:]))
		mac := int(binary.NativeEndian.Uint16(f[tpMac:]))
		if mac >= vnetHdrLen && mac+snap <= len(f) && snap >= ethHdrLen && snap+vnetHdrLen <= slot {
			o.small(f[mac-vnetHdrLen:mac+snap], s)
		}
	}
	atomic.StoreUint32(st, unix.TP_STATUS_KERNEL)
	if p.rxHead++; p.rxHead == rxFrames {
		p.rxHead = 0
	}
	return true
}

// small sends pkt (virtio_net_hdr, Ethernet frame) out of p, batched.
func (p *port) small(pkt []byte, s *stats) {
	s.packets.Add(1)
	s.bytes.Add(uint64(len(pkt) - vnetHdrLen - ethHdrLen))
	if p.tx != nil {
		f, ok := p.txFrame(s)
		if !ok {
			return
		}
		n := copy(f[txData:], pkt)
		p.relink(f[txData+vnetHdrLen:])
		p.submit(f, n, s)
		return
	}
	i := p.n
	n := copy(p.data[i*slot:], pkt)
	p.relink(p.data[i*slot+vnetHdrLen:])
	p.iov[i].SetLen(n)
	if p.n++; p.n == batchLen {
		p.flush(s)
	}
}

// super reads the super-packet waiting in from's receive queue and sends
// it out of p: into a transmit frame, or into buf and with sendmsg.
func (p *port) super(from int, buf []byte, s *stats) {
	dst := buf
	var f []byte
	if p.tx != nil {
		var ok bool
		if f, ok = p.txFrame(s); !ok {
			dst = buf // read it all the same, and drop it
		} else {
			dst = f[txData:]
		}
	} else {
		p.flush(s) // the batch's packets go first
	}
	// Raw system calls: unix.Recvfrom and unix.Sendto would allocate a
	// sockaddr per packet.
	r, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(from), uintptr(unsafe.Pointer(&dst[0])), uintptr(len(dst)), unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
	n := int(r)
	if errno != 0 || n > len(dst) || n < vnetHdrLen+ethHdrLen {
		return
	}
	s.packets.Add(1)
	s.supers.Add(1)
	s.bytes.Add(uint64(n - vnetHdrLen - ethHdrLen))
	p.relink(dst[vnetHdrLen:])
	if p.tx != nil {
		if f != nil {
			p.submit(f, n, s)
		}
		return
	}
	if _, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(p.fd), uintptr(unsafe.Pointer(&dst[0])), uintptr(n), unix.MSG_DONTWAIT,
		uintptr(unsafe.Pointer(&p.sll)), unix.SizeofSockaddrLinklayer); errno != 0 {
		s.sendErrs.Add(1)
	}
}

// relink gives the Ethernet frame eth the addresses of p's link.
func (p *port) relink(eth []byte) {
	copy(eth[0:6], p.peer[:])
	copy(eth[6:12], p.mac[:])
}

// txFrame returns the transmit frame at the head if the kernel has given
// it back; if it still holds it (an skb not yet freed), the queued frames
// are sent and the packet is dropped.
func (p *port) txFrame(s *stats) ([]byte, bool) {
	off := p.txHead * txFrameSize
	if atomic.LoadUint32(status(p.tx, off)) == unix.TP_STATUS_WRONG_FORMAT {
		// The kernel refused the frame's packet (and stopped there):
		// count it and take the frame back.
		s.sendErrs.Add(1)
		atomic.StoreUint32(status(p.tx, off), unix.TP_STATUS_AVAILABLE)
	}
	if atomic.LoadUint32(status(p.tx, off)) != unix.TP_STATUS_AVAILABLE {
		p.flush(s)
		if atomic.LoadUint32(status(p.tx, off)) != unix.TP_STATUS_AVAILABLE {
			s.txBusy.Add(1)
			return nil, false
		}
	}
	return p.tx[off : off+txFrameSize], true
}

// submit hands transmit frame f, holding n bytes at txData, to the
// kernel; it leaves with the next flush.
func (p *port) submit(f []byte, n int, s *stats) {
	binary.NativeEndian.PutUint32(f[tpLen:], uint32(n))
	atomic.StoreUint32(status(f, 0), unix.TP_STATUS_SEND_REQUEST)
	if p.txHead++; p.txHead == p.txFrms {
		p.txHead = 0
	}
	if p.queued++; p.queued == batchLen {
		p.flush(s)
	}
}

// flush sends what waits: the sendmmsg batch, or the transmit frames
// marked SEND_REQUEST (one send(2), which tpacket_snd serves).
func (p *port) flush(s *stats) {
	if p.tx != nil {
		if p.queued > 0 {
			p.queued = 0
			if _, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(p.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0); errno != 0 && errno != unix.EAGAIN {
				s.sendErrs.Add(1)
			}
		}
		return
	}
	for sent := 0; sent < p.n; {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(p.fd), uintptr(unsafe.Pointer(&p.msgs[sent])), uintptr(p.n-sent), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == unix.EINTR:
		case errno != 0 || r == 0:
			s.sendErrs.Add(1)
			sent++
		default:
			sent += int(r)
		}
	}
	p.n = 0
}
