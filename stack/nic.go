package stack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// NICConfig is the appliance's NIC mode: the translator reads the packets
// routed to the appliance straight off its NICs and sends the translated
// ones out of them, without the kernel forwarding anything.
type NICConfig struct {
	IPv4 string // the NIC facing the IPv4 side
	IPv6 string // the NIC facing the IPv6 side; may be the same as IPv4
	// Queues is the number of AF_PACKET sockets per NIC, joined in one
	// PACKET_FANOUT group so that the kernel spreads flows over them.
	// With two NICs, one goroutine (and translator) reads the sockets of
	// the same index of both; with one, each socket has its own. 0
	// means 1.
	Queues int
	// SteerPrefix is the translator's RFC 6052 prefix. When set (and
	// there are several queues) the fanout groups choose a socket with
	// the tun's steering program (tun.LoadSteeringProgram) instead of the
	// kernel's flow hash: a packet and its translated reply, read from
	// the two NICs, come to sockets of the same index, and so to the
	// goroutine that translated the packet.
	SteerPrefix netip.Prefix
	// FollowIPv4MTU, FollowIPv6MTU: where the engine's configuration
	// leaves Policy.IPv4MTU or IPv6MTU unset (0), it is the IPv4 or IPv6
	// NIC's MTU, now and whenever that changes, in every configuration
	// the engine is given (Engine.SetLinkPolicy: a reload keeps it); a
	// packet too big for the NIC is then answered by the engine with
	// Fragmentation Needed or Packet Too Big (RFC 7915 sections 4 and 5)
	// instead of failing to send. A configured MTU stays as configured.
	FollowIPv4MTU, FollowIPv6MTU bool
}

// ServeNIC runs the translator in NIC mode over the interfaces of c, in the
// network namespace of the calling thread, and returns at once; it stops
// when ctx is cancelled, and fails (Wait returns the error) when a NIC is
// deleted, a socket's reads keep failing, or the kernel stops filling a
// socket's receive ring (watchRings).
//
// Each NIC gets c.Queues AF_PACKET sockets in one PACKET_FANOUT group
// (PACKET_FANOUT_EBPF with c.SteerPrefix's steering program, else
// PACKET_FANOUT_HASH). With two NICs the sockets of index i of both are
// read by one goroutine (nicConn.pair): the request that goroutine
// translated out of one NIC has its reply steered to its other socket, so
// the reply finds the thread that is already running (or waiting raw)
// instead of waking a second one. A socket
// filter passes only IPv4 and IPv6 frames addressed to the NIC itself
// (PACKET_HOST: no broadcast, multicast or other hosts' frames), once the
// socket is in its group (openPacketSocket), and
// PACKET_IGNORE_OUTGOING with PACKET_FANOUT_FLAG_IGNORE_OUTGOING keeps the
// packets sent on the NIC out.
//
// The sockets carry a virtio_net_hdr in front of every packet
// (PACKET_VNET_HDR), the same framing as a tun opened with IFF_VNET_HDR,
// so they are the queues of a tun.Endpoint (one per index: one socket, or
// the paired sockets of both NICs, see nicConn):
// a queue's goroutine reads a packet into its frame from the socket's
// receive ring (nic_ring.go: bounded in packets, read without a system
// call per packet), the Handler translates it in place and the endpoint
// writes it back through the same queue, whose Write queues it in a batch
// for the next hop (nic_batch.go: one sendmmsg per batch). GRO and GSO super-packets
// and partial checksums (a veth peer's or a VM's transmit offloads) thus
// cross the translator whole, as they do through the tun: the kernel
// segments and completes them on the way out (RFC 7915 section 5.1.1
// leaves segment sizes to the path; the engine fits them to the next
// hop's MTU). ServeNIC leaves the NICs' GRO as it is.
//
// With two NICs, each carries one family: a packet of the other is
// dropped and counted as LinkStats.WrongSide (nicConn.wrongSide).
//
// A packet to one of the host's own addresses, or IPv6 link-local, is left
// to the kernel (hostFilter), which sees a copy of every frame anyway and
// keeps answering ARP and ND and carrying the appliance's own traffic.
// Kernel forwarding must be off (the daemon does that), or the kernel
// would forward the untranslated packets too.
//
// Translated packets leave by the NIC and next hop that the kernel's
// routing table gives for their destination, to the link address in the
// kernel's neighbour table (see resolver).
func ServeNIC(ctx context.Context, eng *xlat.Engine, c NICConfig, log *slog.Logger) (*Datapath, error) {
	if eng == nil {
		return nil, errors.New("stack: ServeNIC needs an engine")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	queues := c.Queues
	if queues <= 0 {
		queues = 1
	}
	names := []string{c.IPv4}
	if c.IPv6 != c.IPv4 {
		names = append(names, c.IPv6)
	}
	n := &nicPath{log: log}
	ok := false
	defer func() {
		if !ok {
			n.close()
		}
	}()
	var ifindexes []int
	var conns []tun.Conn
	mtu := 0
	prog := -1 // the fanout groups' steering program
	if c.SteerPrefix.IsValid() && queues > 1 {
		fd, err := tun.LoadSteeringProgram(c.SteerPrefix)
		if err != nil {
			log.Warn("NIC queues: no steering program, the kernel's flow hash spreads the packets (a reply may wake another queue)", "err", err)
		} else {
			prog = fd
			defer unix.Close(prog) // the fanout groups hold their own reference
		}
	}
	for _, name := range names {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("stack: NIC %q: %w", name, err)
		}
		p := &nicPort{name: name, ifindex: ifc.Index, mtu: ifc.MTU}
		if len(ifc.HardwareAddr) != 6 {
			return nil, fmt.Errorf("stack: NIC %s: not Ethernet (link address %v)", name, ifc.HardwareAddr)
		}
		p.mac = [6]byte(ifc.HardwareAddr)
		if p.mtu <= 0 || p.mtu > maxPacket {
			return nil, fmt.Errorf("stack: NIC %s: MTU %d out of range", name, p.mtu)
		}
		n.ports = append(n.ports, p)
		for q := range queues {
			fd, ring, err := openPacketSocket(ifc.Index, q == 0, p, ringFrames, prog, nil)
			if err != nil {
				return nil, fmt.Errorf("stack: NIC %s queue %d: %w", name, q, err)
			}
			p.fds = append(p.fds, fd)
			p.rings = append(p.rings, ring)
			p.files = append(p.files, os.NewFile(uintptr(fd), fmt.Sprintf("AF_PACKET %s/%d", name, q)))
			c, err := newNICConn(n, p.files[q], q)
			if err != nil {
				return nil, fmt.Errorf("stack: NIC %s queue %d: %w", name, q, err)
			}
			c.useRing(ring)
			c.port = p
			n.ringConns = append(n.ringConns, c)
			conns = append(conns, c)
		}
		ifindexes = append(ifindexes, ifc.Index)
		mtu = max(mtu, p.mtu)
	}
	if len(n.ports) == 2 {
		n.ports[0].family, n.ports[1].family = 4, 6
		// One goroutine per index reads both NICs' sockets.
		conns = conns[:queues]
		for q := range queues {
			if err := n.ringConns[q].pair(n.ringConns[queues+q]); err != nil {
				return nil, fmt.Errorf("stack: NIC queue %d: %w", q, err)
			}
		}
	}

	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("stack: netlink: %w", err)
	}
	n.nl = h
	n.res = newResolver(netlinkKernel{h}, ifindexes, log)
	n.res.send = n.sendParked
	n.done = make(chan struct{})
	gone := make(chan error, 1)
	ifindex4 := n.ports[0].ifindex
	ifindex6 := n.ports[len(n.ports)-1].ifindex
	// The NICs' MTUs as the kernel last reported them (IPv4 side, IPv6
	// side) are the link's, not a configuration's: the engine applies
	// follow to every configuration it is given, so that a reload (which
	// knows nothing of them) keeps them, and a change here keeps the
	// reload's mappings (Engine.SetLinkPolicy serialises the two).
	var linkMTU [2]atomic.Int64
	linkMTU[0].Store(int64(n.ports[0].mtu))
	linkMTU[1].Store(int64(n.ports[len(n.ports)-1].mtu))
	follow := func(p *xlat.Policy) {
		if c.FollowIPv4MTU && p.IPv4MTU == 0 {
			p.IPv4MTU = int(linkMTU[0].Load())
		}
		if c.FollowIPv6MTU && p.IPv6MTU == 0 {
			p.IPv6MTU = int(linkMTU[1].Load())
		}
	}
	if c.FollowIPv4MTU || c.FollowIPv6MTU {
		if err := eng.SetLinkPolicy(follow); err != nil {
			return nil, fmt.Errorf("stack: the NICs' MTUs: %w", err)
		}
	}
	onLink := func(ifindex, mtu int, deleted bool) {
		if deleted {
			if p := n.port(ifindex); p != nil {
				select {
				case gone <- fmt.Errorf("NIC %s was deleted", p.name):
				default:
				}
			}
			return
		}
		changed := false
		for side, s := range []struct {
			follow   bool
			ifindex  int
			min      int
			protocol string
		}{{c.FollowIPv4MTU, ifindex4, 68, "IPv4"}, {c.FollowIPv6MTU, ifindex6, 1280, "IPv6"}} {
			switch {
			case !s.follow || ifindex != s.ifindex || linkMTU[side].Load() == int64(mtu):
			case mtu < s.min || mtu > 65535:
				// RFC 791, RFC 8200 section 5: no such link for the
				// protocol; the engine keeps the MTU it had.
				log.Warn("NIC MTU out of range for its protocol; the translator keeps the last one", "ifindex", ifindex, "mtu", mtu,
					"protocol", s.protocol, "kept", linkMTU[side].Load())
			default:
				linkMTU[side].Store(int64(mtu))
				changed = true
			}
		}
		if !changed {
			return
		}
		if err := eng.SetLinkPolicy(follow); err != nil {
			log.Warn("NIC MTU changed, engine not updated", "ifindex", ifindex, "mtu", mtu, "err", err)
			return
		}
		log.Info("NIC MTU changed", "ifindex", ifindex, "mtu", mtu)
	}
	if n.kernelWatch, err = watchKernel(h, n.res, &n.local, onLink, n.done); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	n.resolving = make(chan struct{})
	go func() {
		defer close(n.resolving)
		n.res.run(n.done)
	}()
	n.watching = make(chan struct{})
	go func() {
		defer close(n.watching)
		watchRings(n.ringConns, socketDrops, ringWatchEvery, n.done, gone)
	}()

	// The endpoint's queues are the sockets, NIC by NIC; its Handler
	// has a translator per socket. Offloads: every kind the kernel's
	// virtio_net_hdr_from_skb reports on receive.
	ep := tun.NewEndpointConns(conns, mtu, tun.OffloadTSO4|tun.OffloadTSO6|tun.OffloadUSO4|tun.OffloadUSO6)
	d, err := serveLinkHooks(ctx, func() Translator { return eng.NewWorker() }, ep, log, linkHooks{
		dispatcher: func(hd *Handler) gvstack.NetworkDispatcher {
			for i, c := range conns {
				c.(*nicConn).idle = func() { hd.QueueIdle(i) }
				c.(*nicConn).prefetch = func(pkts [][]byte) { hd.PrefetchBatch(i, pkts) }
			}
			return &hostFilter{local: &n.local, h: hd}
		},
		stats: func(s *LinkStats) {
			expired := n.res.expired.Load()
			s.NoNextHop += n.noNextHop.Load() + expired
			s.WriteErrors += n.parkedErrors.Load() + expired
			for _, c := range n.ringConns {
				c.stats.AddTo(s)
			}
		},
		fail:    gone,
		stopped: n.close,
	})
	if err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

// NIC mode's frames have an Ethernet header of ethHdrLen (arp.go) with no
// VLAN tag: the kernel has taken a tag off before the sockets see the
// frame, or the filter has not passed it.

// nicConn is one AF_PACKET socket as a queue of a tun.Endpoint, with the
// framing of a tun opened with IFF_VNET_HDR: a virtio_net_hdr, then the IP
// packet. The socket itself (SOCK_RAW: the kernel accepts PACKET_VNET_HDR
// on no other kind) has the Ethernet header between the two, and its
// virtio_net_hdr counts checksum start and header length from the
// Ethernet header: Read takes the Ethernet header out of the way with a
// scattered recvmsg (no copy) and moves the offsets; Write (nicPath.write)
// does the opposite towards the destination's next hop, through the
// socket of the same index on that hop's NIC.
type nicConn struct {
	n     *nicPath
	file  *os.File
	fd    int      // file's descriptor
	queue int      // the socket's index among its NIC's sockets
	port  *nicPort // its NIC (nil in tests that need none)
	// other is the other NIC's socket of the same index, which this
	// queue's goroutine reads too (pair; nil: none), waitFile the
	// descriptor the queue waits on (the socket, or an epoll instance
	// holding both sockets) and waitRaw its RawConn; otherFirst says
	// which socket Read looks at first (the one it did not serve last,
	// so that neither direction starves the other).
	other      *nicConn
	waitFile   *os.File
	waitRaw    syscall.RawConn
	otherFirst bool
	// ring is the socket's receive ring (nil: Read uses recvmsg alone,
	// as for a socket that stands in for one in tests), batch the
	// translated packets waiting to be sent (nil with no ring: Write
	// sends each at once).
	ring     *nicRing
	batch    *nicBatch
	writeErr func() // counts a packet of the batch that failed to send
	// deadline is the read deadline in Unix nanoseconds (0: none):
	// reading the ring needs no system call, so Read checks it itself
	// (the endpoint stops its loop with a deadline in the past).
	deadline atomic.Int64

	// Read's state, kept here so that reading allocates nothing; only
	// the queue's dispatch goroutine reads.
	raw     syscall.RawConn
	readFn  func(fd uintptr) bool
	spinFn  func(fd uintptr) // waits up to nicRawWait, keeping the P
	blockFn func(fd uintptr) // waits, handing the P on (blockWait)
	// wake is an eventfd in the raw wait's poll set: a read deadline
	// that has passed (the endpoint stopping the queue) writes it, so
	// that a queue in the raw wait stops at once; a cleared deadline
	// (the next attachment) drains it.
	wake int
	// pfds and rawLeft are the raw wait's poll set (the socket, wake)
	// and the time left of the current wait for a packet; blockLeft is
	// the blocking wait's timeout.
	pfds      [2]unix.PollFd
	rawLeft   unix.Timespec
	blockLeft unix.Timespec
	// once: readSyscall makes one recvmsg (the packet a ring frame
	// flagged TP_STATUS_COPY left in the receive queue) and never waits.
	once bool
	// idle is the Handler's QueueIdle for this queue, called when the
	// socket is found empty: the endpoint knows that of a tun's queues
	// only, and would otherwise publish the engine's counts of a queue's
	// last packet only when the next one arrives.
	idle func()
	// prefetch is the Handler's PrefetchBatch for this queue (nil: none),
	// given the packets waiting in the ring from its head before the
	// first of them is read; ahead counts the frames of that run not
	// taken yet, and pending holds the packets (in the ring's memory).
	prefetch func(pkts [][]byte)
	ahead    int
	pending  [ringPrefetch][]byte
	iov      [3]unix.Iovec
	msg      unix.Msghdr
	eth      [ethHdrLen]byte
	p        []byte // what Read reads into
	rn       int
	rerr     error

	// stats counts the frames Read skipped (InvalidVnetHdr, ReadErrors,
	// ShortVnetHdr, NotIP).
	stats tun.Counters
}

var _ tun.Conn = (*nicConn)(nil)

func newNICConn(n *nicPath, file *os.File, queue int) (*nicConn, error) {
	raw, err := file.SyscallConn()
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("wake eventfd: %w", err)
	}
	c := &nicConn{n: n, file: file, fd: -1, queue: queue, raw: raw, waitFile: file, waitRaw: raw, idle: func() {}, wake: wake}
	raw.Control(func(fd uintptr) { c.fd = int(fd) })
	c.readFn = c.readSyscall
	c.spinFn = c.rawWait
	c.blockFn = c.blockWait
	c.writeErr = func() { c.stats.WriteErrors.Add(1) }
	c.msg.Iov = &c.iov[0]
	c.msg.SetIovlen(len(c.iov))
	c.iov[1].Base = &c.eth[0]
	c.iov[1].SetLen(ethHdrLen)
	return c, nil
}

// pair makes c's reader read o's socket (the other NIC's of the same
// index) too; o is read by nobody else. The two wait together in an epoll
// instance, which the raw and the blocking wait poll (a socket with a
// packet makes it readable).
func (c *nicConn) pair(o *nicConn) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	for _, s := range []*nicConn{c, o} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(s.fd)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
			unix.Close(ep)
			return fmt.Errorf("epoll: %w", err)
		}
	}
	// Blocking, so os.NewFile keeps it out of the runtime poller, as the
	// sockets are (openPacketSocket).
	f := os.NewFile(uintptr(ep), fmt.Sprintf("epoll of NIC queue %d", c.queue))
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	c.other, c.waitFile, c.waitRaw = o, f, raw
	return nil
}

// ready says whether a socket of c's queue has a packet at its ring's head.
func (c *nicConn) ready() bool {
	return c.ring.ready() || c.other != nil && c.other.ring.ready()
}

// useRing makes c read through ring and send in batches.
func (c *nicConn) useRing(ring *nicRing) {
	c.ring = ring
	c.batch = newNICBatch()
	c.ahead = 0 // nothing of this ring announced yet
}

// SetReadDeadline sets the deadline of Read's waits. One that has passed
// (how the endpoint stops the queue) also ends a wait at once, through
// the wake eventfd; no deadline (how the endpoint starts the queue again)
// drains the eventfd, so that raw waits last again.
func (c *nicConn) SetReadDeadline(t time.Time) error {
	var d int64
	if !t.IsZero() {
		d = max(t.UnixNano(), 1)
	}
	c.deadline.Store(d)
	switch {
	case d == 0:
		c.drainWake()
	case !t.After(time.Now()):
		one := [8]byte{1}
		unix.Write(c.wake, one[:])
	}
	if c.ring != nil {
		return nil // Read's waits watch the deadline and the eventfd
	}
	return c.file.SetReadDeadline(t) // recv waits in the runtime poller
}

// drainWake makes the wake eventfd unreadable again.
func (c *nicConn) drainWake() {
	var b [8]byte
	unix.Read(c.wake, b[:])
}

// closeWake closes the wake eventfd, and the epoll instance of a paired
// queue, when nothing reads c any more.
func (c *nicConn) closeWake() {
	if c.wake >= 0 {
		unix.Close(c.wake)
		c.wake = -1
	}
	if c.waitFile != nil && c.waitFile != c.file {
		c.waitFile.Close()
		c.waitFile = nil
	}
}

// Read reads one packet into p: its virtio_net_hdr at p[:tun.VnetHdrLen]
// and the IP packet behind it. It takes the packet from the head frame of
// the socket's ring, or of the other NIC's socket's (pair), whichever has
// one, taking turns; or from the receive queue when the frame says the
// packet is there. While the rings are empty it waits for up to nicRawWait
// keeping its P (rawWait), then in a ppoll that hands the P on (blockWait).
func (c *nicConn) Read(p []byte) (int, error) {
	if len(p) <= tun.VnetHdrLen {
		return 0, unix.EINVAL
	}
	if c.ring == nil {
		for {
			n, err := c.recv(p)
			if err != nil || !c.wrongSide(p[:n]) {
				return n, err
			}
		}
	}
	c.rawLeft = unix.NsecToTimespec(int64(nicRawWait)) // a fresh wait for this packet
	for {
		if d := c.deadline.Load(); d != 0 {
			now := time.Now().UnixNano()
			if now >= d {
				c.batch.flush(c.writeErr)
				return 0, os.ErrDeadlineExceeded
			}
			// The raw wait ends by the deadline: no system call
			// notices it otherwise.
			if left := d - now; left < c.rawLeft.Nano() {
				c.rawLeft = unix.NsecToTimespec(left)
			}
		}
		first, second := c, c.other
		if c.otherFirst && second != nil {
			first, second = second, first
		}
		from := first
		n, r, err := c.take(first, p)
		if r == ringEmpty && second != nil {
			from = second
			n, r, err = c.take(second, p)
		}
		if r != ringEmpty {
			c.otherFirst = from == c
		}
		if (r == ringPacket || r == ringCopy && err == nil && n > 0) && from.wrongSide(p[:n]) {
			continue
		}
		switch r {
		case ringPacket:
			return n, nil
		case ringCopy:
			if err != nil || n > 0 {
				return n, err
			}
		case ringEmpty:
			// What the queue translated leaves before it waits.
			c.batch.flush(c.writeErr)
			c.idle()
			fn := c.blockFn
			if c.rawLeft != (unix.Timespec{}) {
				fn = c.spinFn
			}
			// Then look again: a packet, a wake-up, an error taken,
			// or the end of a wait.
			if c.waitRaw.Control(fn) != nil {
				return 0, os.ErrClosed
			}
		}
	}
}

// wrongSide reports whether b (virtio_net_hdr and IP packet), read from
// c's NIC, is of the other family than that NIC's side carries: RFC 7915
// translates IPv6 from the IPv6 side and IPv4 from the IPv4 side. Taken,
// IPv6 from a server's address sent over the IPv4 link by a neighbour
// there would leave as IPv4 from the server's public address, and IPv4
// sent over the IPv6 link from any source would reach the servers as
// that source's translation. Such a packet is counted in WrongSide unless
// it is the host's own (to one of its addresses, or IPv6 link-local),
// which the kernel takes from its copy of the frame as hostFilter leaves
// it to. With one NIC for both families the side cannot be told.
func (c *nicConn) wrongSide(b []byte) bool {
	if c.port == nil || c.port.family == 0 || len(b) <= tun.VnetHdrLen {
		return false
	}
	if v := b[tun.VnetHdrLen] >> 4; v == c.port.family || v != 4 && v != 6 {
		return false // the engine counts what is neither
	}
	if dst, ok := destination(b[tun.VnetHdrLen:]); !ok || !(dst.Is6() && dst.IsLinkLocalUnicast() || c.n.local.has(dst)) {
		c.stats.WrongSide.Add(1)
	}
	return true
}

// take takes the packet at the head of s's ring (s is c or the socket
// paired with it) into p, as Read delivers it: from the frame (ringPacket),
// from s's receive queue (ringCopy: n is 0 when that packet was counted
// and skipped), nothing (ringEmpty), or a frame counted and skipped. On
// the first frame of a run it announces the run to c's PrefetchBatch.
func (c *nicConn) take(s *nicConn, p []byte) (int, ringResult, error) {
	if s.ahead == 0 && c.prefetch != nil {
		// The packets waiting from the head on: their translations'
		// table lookups warm together (a run of one gains nothing).
		if k, frames := s.ring.peek(s.pending[:]); k > 1 {
			c.prefetch(s.pending[:k])
			s.ahead = frames
		}
	}
	n, r := s.ring.next(p, &s.stats)
	if r != ringEmpty && s.ahead > 0 {
		s.ahead--
	}
	if r != ringCopy {
		return n, r, nil
	}
	s.once = true
	n, err := s.recv(p)
	s.once = false
	return n, r, err
}

// nicRawWait is how long a queue that finds its ring empty waits for the
// next packet in a ppoll(2) that keeps its thread's P (tun.RawPoll, the
// tun queues' wait) before it parks in the runtime poller: longer than the
// gap between the packets of sparse traffic (one probe or keepalive a
// second), whose every packet would otherwise pay the blocking wait's
// hand-off of the P and its return through the scheduler instead of one
// wake-up (the kernel waking this thread) (docs/datapath.md, "Latency
// levers"); short enough that an idle translator soon stops being
// preempted every 10 ms.
// Preemption requests yield the P and the wait goes on for the time left,
// so the garbage collector never waits for it; the daemon gives the
// runtime one P per queue beyond one per CPU, so that queues in this wait
// do not take the Ps the rest of the program runs on. A read deadline
// ends it (SetReadDeadline). Tests change it.
var nicRawWait = 2 * time.Second

// rawWait is the Control callback of Read's wait that keeps the P: it
// waits for fd (the socket: its ring; or a pair's epoll instance) or the
// wake eventfd for the time left in c.rawLeft, and leaves c.rawLeft zero
// when the wait is over (timed out, the socket in error, or ppoll failed:
// the blocking wait follows), not zero when it should go on if the ring is
// still empty (a packet, a spurious wake-up, a wake-up without a deadline
// that has passed).
func (c *nicConn) rawWait(fd uintptr) {
	c.pfds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	c.pfds[1] = unix.PollFd{Fd: int32(c.wake), Events: unix.POLLIN}
	if tun.RawPoll(&c.pfds, &c.rawLeft) {
		if c.tookError(fd) {
			// ppoll would report it at once for the rest of the
			// wait: the blocking wait follows.
			c.rawLeft = unix.Timespec{}
		}
		return
	}
	if c.pfds[1].Revents == 0 {
		c.rawLeft = unix.Timespec{} // timed out or failed
		return
	}
	c.woken()
}

// nicBlockWait bounds a blocking wait: a queue idle for longer looks at
// its ring and deadline again (a deadline in the future is watched by no
// system call).
const nicBlockWait = time.Second

// blockWait is the Control callback of Read's wait after the raw wait: a
// ppoll of fd and the wake eventfd through the ordinary system call path,
// which hands the P on (entersyscall), so that an idle queue costs
// nothing, for up to nicBlockWait or until the read deadline. The sockets
// and a pair's epoll instance are kept out of the runtime poller
// (openPacketSocket, pair), as the tun's queues are: registered there,
// every packet that arrived while the queue waited raw or was busy also
// woke the thread blocked in the runtime's epoll_wait, which found nothing
// to run (docs/datapath.md, "Wake-ups the runtime poller added").
func (c *nicConn) blockWait(fd uintptr) {
	c.pfds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	c.pfds[1] = unix.PollFd{Fd: int32(c.wake), Events: unix.POLLIN}
	tmo := int64(nicBlockWait)
	if d := c.deadline.Load(); d != 0 {
		tmo = max(min(tmo, d-time.Now().UnixNano()), 0)
	}
	c.blockLeft = unix.NsecToTimespec(tmo)
	r, _, errno := unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&c.pfds[0])), 2, uintptr(unsafe.Pointer(&c.blockLeft)), 0, 0, 0)
	switch {
	case errno != 0 || r == 0: // interrupted, timed out: Read looks again
	case c.pfds[1].Revents != 0:
		c.woken()
	default:
		c.tookError(fd)
	}
}

// tookError takes the sockets' pending errors (SO_ERROR) when the wait on
// fd ended for an error rather than a packet, and reports whether it did:
// the NIC went down (the kernel sets ENETDOWN on its sockets) or was
// deleted, and ppoll would report it at once for as long as it stays
// (sendmsg's retry need not take it). A socket reports it as POLLERR
// without POLLIN; the epoll instance of a pair is readable for a socket's
// error as for a packet, so there it is a wake-up with both rings empty.
func (c *nicConn) tookError(fd uintptr) bool {
	switch {
	case c.pfds[0].Revents == 0:
		return false // the eventfd
	case c.other == nil && c.pfds[0].Revents&unix.POLLIN == 0:
		unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		return true
	case c.other != nil && !c.ready():
		unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		unix.GetsockoptInt(c.other.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		return true
	}
	return false
}

// woken handles a wake-up by the eventfd: by a deadline that has passed
// (Read returns), or by one that was cleared since (drain: the wait goes
// on).
func (c *nicConn) woken() {
	if d := c.deadline.Load(); d == 0 || time.Now().UnixNano() < d {
		c.drainWake()
	}
}

// pollError is what Read returns when the runtime poller ends a wait with
// err: the deadline's passing as it is (the endpoint is stopping the
// queue), anything else as the socket being closed.
func pollError(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return os.ErrClosed
}

// recv reads one packet into p with recvmsg (readSyscall).
func (c *nicConn) recv(p []byte) (int, error) {
	c.p = p
	c.iov[0].Base = &p[0]
	c.iov[0].SetLen(tun.VnetHdrLen)
	c.iov[2].Base = &p[tun.VnetHdrLen]
	c.iov[2].SetLen(len(p) - tun.VnetHdrLen)
	c.rn, c.rerr = 0, nil
	err := c.raw.Read(c.readFn)
	c.p = nil
	if err != nil {
		return 0, pollError(err)
	}
	return c.rn, c.rerr
}

// readSyscall is Read's RawConn callback: recvmsg until it has a packet to
// deliver; on EAGAIN it tells the Handler the queue is idle and lets the
// poller wait. What it cannot deliver it counts and skips, so that no
// sender can make the endpoint see a run of failed reads (which would stop
// the queue): super-packets of a kind virtio_net_hdr has no form for
// (recvmsg fails with EINVAL; GRO makes them of IP-in-IP or GRE flows),
// frames larger than any IP packet, and frames that are not IPv4 or IPv6
// (the filter passes by the kernel's protocol; a VLAN frame could slip by).
//
// In once mode it makes a single recvmsg and never waits: the ring handed
// over a frame saying that its packet is in the receive queue, and one
// that is not there (or cannot be delivered) is counted and skipped.
func (c *nicConn) readSyscall(fd uintptr) bool {
	p := c.p
	for {
		c.msg.Flags = 0
		r, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&c.msg)), unix.MSG_DONTWAIT)
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if c.once {
				c.stats.ReadErrors.Add(1)
				return true
			}
			c.idle()
			return false
		case unix.EINVAL:
			c.stats.InvalidVnetHdr.Add(1)
			if c.once {
				return true
			}
			continue
		default:
			c.rerr = errno
			return true
		}
		n := int(r)
		switch {
		case c.msg.Flags&unix.MSG_TRUNC != 0:
			c.stats.ReadErrors.Add(1)
		case n < tun.VnetHdrLen+ethHdrLen:
			c.stats.ShortVnetHdr.Add(1)
		case nicFraming(p, c.eth[:], &c.stats):
			c.rn = n - ethHdrLen
			return true
		}
		if c.once {
			return true // what the one recvmsg found was counted
		}
	}
}

// nicFraming checks that eth, the Ethernet header of the packet behind the
// virtio_net_hdr at the start of p, is of an IPv4 or IPv6 packet, and moves
// the header's offsets, which count from the Ethernet header, to count
// from the IP header as a tun's do. What it refuses it counts in stats.
func nicFraming(p, eth []byte, stats *tun.Counters) bool {
	if et := binary.BigEndian.Uint16(eth[12:]); et != unix.ETH_P_IP && et != unix.ETH_P_IPV6 {
		stats.NotIP.Add(1)
		return false
	}
	if p[0]&xlat.OffloadNeedsCsum != 0 {
		cs := binary.LittleEndian.Uint16(p[6:])
		if cs < ethHdrLen {
			stats.InvalidVnetHdr.Add(1)
			return false
		}
		binary.LittleEndian.PutUint16(p[6:], cs-ethHdrLen) // csum_start
	}
	hl := binary.LittleEndian.Uint16(p[2:])
	binary.LittleEndian.PutUint16(p[2:], hl-min(hl, ethHdrLen)) // hdr_len
	return true
}

func (c *nicConn) Write(b []byte) (int, error) {
	if err := c.n.write(c, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// nicPath is what the sockets of one ServeNIC share.
type nicPath struct {
	log       *slog.Logger
	ports     []*nicPort
	nl        *netlink.Handle
	res       *resolver
	local     localAddrs
	done      chan struct{}
	resolving chan struct{} // closed when the resolver's goroutine has returned
	ringConns []*nicConn    // the sockets' queues, for watchRings
	watching  chan struct{} // closed when watchRings has returned
	noNextHop atomic.Uint64
	// parkedErrors counts the parked packets that failed to send (their
	// queue's Write had succeeded: they were counted as written).
	parkedErrors atomic.Uint64
	// kernelWatch is closed when watchKernel's goroutine, which sends
	// parked packets (resolver.neighbourUpdate), has returned.
	kernelWatch <-chan struct{}
	closeOnce   sync.Once
}

// nicPort is one NIC: its sockets (one per queue) and MTU.
type nicPort struct {
	name    string
	ifindex int
	mtu     int
	mac     [6]byte    // its link address, the source of what it sends
	fds     []int      // the sockets, for sending
	rings   []*nicRing // their receive rings
	files   []*os.File // the same sockets, which own them and are read
	fanout  int        // the PACKET_FANOUT group id the kernel gave the first socket
	// family is the IP version this NIC's side carries (4 or 6), 0 when
	// one NIC carries both: a packet of the other version is not
	// translated (nicConn.wrongSide).
	family byte
	// fanoutFlags: the group's PACKET_FANOUT_FLAG_* besides UNIQUEID,
	// which the sockets that join it must give too.
	fanoutFlags int
}

// close stops the resolver and closes the sockets (after the endpoint's
// dispatch loops have stopped: nothing sends on them any more).
func (n *nicPath) close() {
	n.closeOnce.Do(func() {
		if n.done != nil {
			close(n.done)
		}
		if n.resolving != nil {
			<-n.resolving // it may be sending a parked packet
		}
		if n.kernelWatch != nil {
			<-n.kernelWatch // so may it (a neighbour event)
		}
		if n.watching != nil {
			<-n.watching // it reads the rings, which close unmaps
		}
		if n.nl != nil {
			n.nl.Close()
		}
		for _, p := range n.ports {
			for i, fd := range p.fds {
				if i < len(p.files) {
					p.files[i].Close()
				} else {
					unix.Close(fd)
				}
			}
			for _, r := range p.rings {
				r.close()
			}
		}
		for _, c := range n.ringConns {
			c.closeWake()
		}
	})
}

// port returns the NIC with interface index ifindex, or nil.
func (n *nicPath) port(ifindex int) *nicPort {
	for _, p := range n.ports {
		if p.ifindex == ifindex {
			return p
		}
	}
	return nil
}

// Classic BPF (Documentation/networking/filter.rst) ancillary loads.
const (
	skfAdOff            = 0xfffff000 // SKF_AD_OFF, -0x1000 as the uint32 offset
	skfAdProtocol       = 0
	skfAdPktType        = 4
	skfAdVLANTag        = 44
	skfAdVLANTagPresent = 48
)

// hostIPFilter accepts IPv4 and IPv6 frames sent to this host's link
// address (PACKET_HOST) and nothing else: ARP, ND multicast and broadcast
// stay the kernel's alone, and so do frames of a VLAN, which the kernel
// untags into the packet's metadata before packet sockets see them
// (skb_vlan_untag): they are the VLAN interface's, not the untagged
// link's, and translated they would leave the VLAN. A priority-tagged
// frame (VLAN ID 0, IEEE 802.1Q) is the untagged link's, as the kernel
// takes it.
var hostIPFilter = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: uint32(skfAdOff + skfAdPktType)},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 9, K: unix.PACKET_HOST},
	{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: uint32(skfAdOff + skfAdProtocol)},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: unix.ETH_P_IP},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 6, K: unix.ETH_P_IPV6},
	{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: uint32(skfAdOff + skfAdVLANTagPresent)},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 3, Jf: 0, K: 0},
	{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: uint32(skfAdOff + skfAdVLANTag)},
	{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: 0xfff},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: 0},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0x40000},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0},
}

// socketBuffer is the receive buffer asked of each socket. With the ring
// it holds only the packets too large for a ring frame (TP_STATUS_COPY):
// room for a burst of GRO super-packets, where the kernel's default holds
// about three; small packets wait in the ring, bounded in number.
const socketBuffer = 4 << 20

// openPacketSocket opens one queue's AF_PACKET socket on
// ifindex and joins it to p's fanout group (creating it when first: a
// PACKET_FANOUT_EBPF group with the program steer, or with steer -1 a
// PACKET_FANOUT_HASH one). bound, when not nil, runs between the bind and
// the join (tests send frames there).
//
// The kernel lets only a bound socket join a group, and refuses to bind it
// again once it has joined (packet(7), PACKET_FANOUT; fanout_add and
// packet_do_bind in net/packet/af_packet.c), so between the bind and the
// join the socket receives on its own hook: a frame arriving then was
// queued on it and also, through the group, on the socket the group
// steered it to, and the translator read it twice. So the socket is bound
// with a filter that accepts nothing (dropAllFilter), and the filter that
// passes the frames to translate (hostIPFilter) replaces it only once the
// socket is in the group. A frame that the group steers to the socket
// before that is lost, as is any frame that arrives before the translator
// has started.
func openPacketSocket(ifindex int, first bool, p *nicPort, frames, steer int, bound func()) (_ int, _ *nicRing, err error) {
	// Protocol 0: receives nothing until bound below.
	// Blocking, so that os.NewFile keeps it out of the runtime poller
	// (nicConn.blockWait); every read and send passes MSG_DONTWAIT.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	var ring *nicRing
	fail := func(what string, err error) (int, *nicRing, error) {
		if ring != nil {
			ring.close()
		}
		unix.Close(fd)
		return -1, nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := attachFilter(fd, dropAllFilter); err != nil {
		return fail("socket filter", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING (Linux 4.20 or later)", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fail("PACKET_VNET_HDR", err)
	}
	// FORCE passes net.core.rmem_max (we have CAP_NET_ADMIN: NIC mode
	// needs it); without it the kernel's default stays.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer); err != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBuffer)
	}
	// The send buffer holds what was sent until the NIC's driver frees
	// it after transmission; sends do not wait (MSG_DONTWAIT), so a full
	// one fails with EAGAIN and loses the packet. The default holds about
	// three GSO super-packets, which a virtio NIC under a slow hypervisor
	// kept (EAGAIN on 4to6 TCP in the QEMU traffic test).
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer); err != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
	}
	// The ring before the bind: a packet queued without it would be
	// read in the place of the next super-packet the ring defers to the
	// receive queue.
	if ring, err = newNICRing(fd, frames, p.mtu); err != nil {
		return fail("receive ring", err)
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if bound != nil {
		bound()
	}
	mode := unix.PACKET_FANOUT_HASH
	if steer >= 0 {
		mode = unix.PACKET_FANOUT_EBPF
	}
	if first {
		// A fanout group has its own hook in the kernel, which the
		// sockets' PACKET_IGNORE_OUTGOING does not reach: without
		// PACKET_FANOUT_FLAG_IGNORE_OUTGOING every frame sent on the
		// NIC (the translator's own) is cloned for the group and run
		// through its steering and the socket filter, which then drops
		// it. A kernel that does not know the flag refuses it (EINVAL):
		// the group goes without.
		p.fanoutFlags = unix.PACKET_FANOUT_FLAG_IGNORE_OUTGOING
		arg := (mode | unix.PACKET_FANOUT_FLAG_UNIQUEID | p.fanoutFlags) << 16
		err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, arg)
		if err == unix.EINVAL {
			p.fanoutFlags = 0
			err = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, (mode|unix.PACKET_FANOUT_FLAG_UNIQUEID)<<16)
		}
		if err != nil {
			return fail("PACKET_FANOUT", err)
		}
		// The program is the group's; the kernel takes its return
		// value modulo the number of sockets (fanout_demux_bpf).
		if steer >= 0 {
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT_DATA, steer); err != nil {
				return fail("PACKET_FANOUT_DATA (the steering program)", err)
			}
		}
		id, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
		if err != nil {
			return fail("PACKET_FANOUT id", err)
		}
		p.fanout = id & 0xffff
	} else if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, p.fanout|(mode|p.fanoutFlags)<<16); err != nil {
		return fail("joining PACKET_FANOUT group", err)
	}
	if err := attachFilter(fd, hostIPFilter); err != nil {
		return fail("socket filter", err)
	}
	return fd, ring, nil
}

// dropAllFilter accepts no frame: a NIC socket's filter until it is in its
// fanout group (openPacketSocket).
var dropAllFilter = []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}

// attachFilter makes filter fd's socket filter, replacing the one it had.
func attachFilter(fd int, filter []unix.SockFilter) error {
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// hostFilter is the dispatcher of the NIC sockets' endpoint: it passes a
// delivered packet to the Handler unless it is addressed to the host
// itself or is IPv6 link-local: those are the kernel's, which receives its
// own copy of the frame. It delivers the endpoint's frames as they are
// (the Handler translates them in place) and passes the endpoint's idle
// notices on.
type hostFilter struct {
	local *localAddrs
	h     *Handler
}

var (
	_ tun.FrameDispatcher = (*hostFilter)(nil)
	_ tun.IdleDispatcher  = (*hostFilter)(nil)
	_ tun.BatchDispatcher = (*hostFilter)(nil)
)

func (f *hostFilter) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	var hdr [40]byte
	n := tun.CopyHead(hdr[:], pkt)
	if dst, ok := destination(hdr[:n]); ok && (dst.Is6() && dst.IsLinkLocalUnicast() || f.local.has(dst)) {
		return
	}
	f.h.DeliverNetworkPacket(proto, pkt)
}

func (f *hostFilter) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

// TakesFrames implements tun.FrameDispatcher: the filter keeps nothing,
// and the Handler says whether it takes e's frames.
func (f *hostFilter) TakesFrames(e *tun.Endpoint) bool { return f.h.TakesFrames(e) }

// QueueIdle implements tun.IdleDispatcher.
func (f *hostFilter) QueueIdle(q int) { f.h.QueueIdle(q) }

// PrefetchBatch implements tun.BatchDispatcher: packets the filter keeps
// from the Handler cost a needless prefetch, nothing more.
func (f *hostFilter) PrefetchBatch(q int, pkts [][]byte) { f.h.PrefetchBatch(q, pkts) }

// destination returns the destination address of the IPv4 or IPv6 packet
// that starts ip (at least its fixed header).
func destination(ip []byte) (netip.Addr, bool) {
	switch {
	case len(ip) >= 20 && ip[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(ip[16:20])), true
	case len(ip) >= 40 && ip[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(ip[24:40])), true
	}
	return netip.Addr{}, false
}

// errNoNextHop: a packet whose destination has no route through the
// translator's NICs or no link address (counted in LinkStats.NoNextHop).
var errNoNextHop = errors.New("no next hop")

// write sends b, a virtio_net_hdr and the IP packet behind it, out of the
// NIC and to the link address that the resolver gives for its destination,
// through that NIC's socket of c's queue number, in c's batch if c has
// one. A packet whose next hop is not resolved yet is parked (sent when it
// is) if there is room. It is called by the endpoint's queues,
// concurrently, and allocates nothing.
func (n *nicPath) write(c *nicConn, b []byte) error {
	if len(b) < tun.VnetHdrLen {
		return unix.EINVAL
	}
	dst, ok := destination(b[tun.VnetHdrLen:])
	if !ok {
		return unix.EINVAL
	}
	hop, ok := n.res.lookup(dst)
	if !ok {
		var parked bool
		if hop, ok, parked = n.res.park(dst, b); !ok {
			n.res.request(dst)
			if parked {
				return nil // sent when the next hop is resolved
			}
			n.noNextHop.Add(1)
			return errNoNextHop
		}
		// Resolved meanwhile: after the packets parked before it.
	}
	if c.batch != nil && len(b) > tun.VnetHdrLen {
		if p := n.port(hop.ifindex); p != nil {
			if c.batch.add(p.fds[c.queue%len(p.fds)], hop, p, b, c.writeErr) {
				return nil
			}
			c.batch.flush(c.writeErr) // the batch's packets go first
		}
	}
	return n.send(hop, c.queue, b)
}

// sendParked sends a packet (with its virtio_net_hdr) that the resolver
// kept until its next hop was resolved, from the resolver's goroutine,
// after the packets waiting in the queues' batches: a flow whose next
// hop's neighbour entry was lost and found again had its older packets
// batched by its queue before the loss and its newer ones parked after
// it, and sent at once the parked ones overtook the batched ones (RFC 7915
// translators do not reorder; TCP reads it as a loss). The batch's lock,
// which the queue takes for every packet it adds anyway, makes the flush
// safe from here; the queue cannot add a newer packet to that hop
// meanwhile, as it waits on the park lock (resolver.publish) or finds the
// hop unresolved and parks. A failed send counts as a write error.
func (n *nicPath) sendParked(hop nextHop, b []byte) {
	for _, c := range n.ringConns {
		c.batch.flush(c.writeErr)
	}
	if err := n.send(hop, 0, b); err != nil {
		if err != errNoNextHop { // counted as that
			n.parkedErrors.Add(1)
		}
		n.log.Debug("sending a packet that waited for its next hop", "err", err)
	}
}

// send sends b (virtio_net_hdr and IP packet) to hop with sendmsg on
// hop's NIC's socket number queue, with an Ethernet header from the NIC to
// the hop between the two and the virtio_net_hdr's offsets moved past it;
// the kernel segments and completes the packet as the header says.
func (n *nicPath) send(hop nextHop, queue int, b []byte) error {
	p := n.port(hop.ifindex)
	if p == nil {
		n.noNextHop.Add(1)
		return errNoNextHop
	}
	if len(b) <= tun.VnetHdrLen {
		return unix.EINVAL
	}
	var vnet [tun.VnetHdrLen]byte
	var eth [ethHdrLen]byte
	var sll unix.RawSockaddrLinklayer
	linkHeaders(hop, p, b, &vnet, &eth, &sll)
	var iov [3]unix.Iovec
	iov[0].Base, iov[1].Base, iov[2].Base = &vnet[0], &eth[0], &b[tun.VnetHdrLen]
	iov[0].SetLen(tun.VnetHdrLen)
	iov[1].SetLen(ethHdrLen)
	iov[2].SetLen(len(b) - tun.VnetHdrLen)
	msg := unix.Msghdr{Name: (*byte)(unsafe.Pointer(&sll)), Namelen: unix.SizeofSockaddrLinklayer, Iov: &iov[0]}
	msg.SetIovlen(len(iov))
	if errno := sendmsg(p.fds[queue%len(p.fds)], &msg); errno != 0 {
		return errno
	}
	return nil
}

// sendmsg sends msg on the AF_PACKET socket fd without blocking, and sends
// it again if the first try fails with ENETDOWN: the kernel gives a socket
// a pending ENETDOWN (sk_err) when it is bound to a NIC that is down or
// when its NIC goes down, and the next send returns that error once,
// consuming it, instead of sending. An appliance boots with its NICs down
// and opens its sockets before its interface blocks bring them up, so
// without the second try the first packet each socket sent was lost. If
// the NIC is really down, the second try fails too. (nicBatch.flush does
// the same for sendmmsg.)
func sendmsg(fd int, msg *unix.Msghdr) unix.Errno {
	_, _, errno := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(msg)), unix.MSG_DONTWAIT)
	if errno == unix.ENETDOWN {
		_, _, errno = unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(msg)), unix.MSG_DONTWAIT)
	}
	return errno
}

// linkHeaders makes what goes out in front of b's IP packet to hop through
// NIC p: b's virtio_net_hdr with its offsets moved past the Ethernet
// header, the Ethernet header from p to the hop, and the link-layer
// address that sendmsg takes.
func linkHeaders(hop nextHop, p *nicPort, b []byte, vnet *[tun.VnetHdrLen]byte, eth *[ethHdrLen]byte, sll *unix.RawSockaddrLinklayer) {
	var proto uint16 = unix.ETH_P_IPV6
	if b[tun.VnetHdrLen]>>4 == 4 {
		proto = unix.ETH_P_IP
	}
	copy(vnet[:], b)
	if vnet[0]&xlat.OffloadNeedsCsum != 0 {
		binary.LittleEndian.PutUint16(vnet[6:], binary.LittleEndian.Uint16(vnet[6:])+ethHdrLen)
	}
	if hl := binary.LittleEndian.Uint16(vnet[2:]); hl != 0 {
		binary.LittleEndian.PutUint16(vnet[2:], hl+ethHdrLen)
	}
	copy(eth[0:6], hop.mac[:])
	copy(eth[6:12], p.mac[:])
	binary.BigEndian.PutUint16(eth[12:], proto)
	*sll = unix.RawSockaddrLinklayer{
		Family:   unix.AF_PACKET,
		Protocol: htons(proto),
		Ifindex:  int32(hop.ifindex),
	}
}
