package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/stack/xlat"
)

// NICConfig is the appliance's NIC mode: the translator reads the packets
// routed to the appliance straight off its NICs and sends the translated
// ones out of them, without the kernel forwarding anything.
type NICConfig struct {
	IPv4 string // the NIC facing the IPv4 side
	IPv6 string // the NIC facing the IPv6 side; may be the same as IPv4
	// Queues is the number of AF_PACKET sockets per NIC, joined in one
	// PACKET_FANOUT_HASH group so that the kernel spreads flows over
	// them; each has its own translator and goroutine. 0 means 1.
	Queues int
	// FollowIPv4MTU, FollowIPv6MTU: the engine's Policy.IPv4MTU and
	// IPv6MTU are the NICs' MTUs (the daemon's default in NIC mode), so
	// ServeNIC reloads the engine with the new value when one changes;
	// a packet too big for the NIC is then answered by the engine with
	// Fragmentation Needed or Packet Too Big instead of failing to send.
	FollowIPv4MTU, FollowIPv6MTU bool
}

// ServeNIC runs the translator in NIC mode over the interfaces of c, in the
// network namespace of the calling thread, and returns at once; it stops
// when ctx is cancelled.
//
// Each NIC gets c.Queues AF_PACKET sockets (SOCK_DGRAM: the kernel strips
// and adds the Ethernet header) in one PACKET_FANOUT_HASH group. A socket
// filter passes only IPv4 and IPv6 frames addressed to the NIC itself
// (PACKET_HOST: no broadcast, multicast or other hosts' frames), and
// PACKET_IGNORE_OUTGOING keeps the packets sent on the NIC out. Each socket
// is read by a gVisor fdbased endpoint (PACKET_MMAP ring, one processor:
// the reading goroutine translates) into its own Handler; a packet to one
// of the host's own addresses is left to the kernel, which sees a copy of
// every frame anyway and keeps answering ARP and ND and carrying the
// appliance's own traffic. Kernel forwarding must be off (the daemon does
// that), or the kernel would forward the untranslated packets too.
//
// Translated packets leave by the NIC and next hop that the kernel's
// routing table gives for their destination, to the link address in the
// kernel's neighbour table (see resolver). The pinned gVisor's fdbased
// discards the virtio_net_hdr of PACKET_VNET_HDR on reception, so GRO/GSO
// super-packets and partial checksums cannot pass: ServeNIC turns GRO off
// on its NICs (and back on when it stops); senders on the same host (veth
// peers, a VM's virtio-net) must not hand the NICs TSO packets or partial
// checksums. A real NIC delivers neither.
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
	ctl, err := ethtoolSocket()
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	n.ctl = ctl
	var ifindexes []int
	for _, name := range names {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("stack: NIC %q: %w", name, err)
		}
		p := &nicPort{name: name, ifindex: ifc.Index, mtu: ifc.MTU}
		if p.mtu <= 0 || p.mtu > maxPacket {
			return nil, fmt.Errorf("stack: NIC %s: MTU %d out of range", name, p.mtu)
		}
		// GRO would hand the sockets super-packets whose segment size
		// fdbased cannot pass on (see above); off while we serve.
		if on, err := ethtoolValue(ctl, name, ethtoolGGRO, false); err == nil && on {
			if err := setOffload(ctl, name, ethtoolSGRO, false); err != nil {
				return nil, fmt.Errorf("stack: NIC %s: turning GRO off: %w", name, err)
			}
			p.groWasOn = true
		}
		for q := range queues {
			fd, err := openPacketSocket(ifc.Index, q == 0, p)
			if err != nil {
				return nil, fmt.Errorf("stack: NIC %s queue %d: %w", name, q, err)
			}
			p.fds = append(p.fds, fd)
		}
		n.ports = append(n.ports, p)
		ifindexes = append(ifindexes, ifc.Index)
	}

	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("stack: netlink: %w", err)
	}
	n.nl = h
	n.res = newResolver(netlinkKernel{h}, ifindexes, log)
	n.res.send = newNICWriter(n, 0).sendParked
	n.done = make(chan struct{})
	ifindex4 := n.ports[0].ifindex
	ifindex6 := n.ports[len(n.ports)-1].ifindex
	onMTU := func(ifindex, mtu int) {
		cfg := *eng.Config()
		changed := false
		if c.FollowIPv4MTU && ifindex == ifindex4 && cfg.Policy.IPv4MTU != mtu && mtu >= 68 {
			cfg.Policy.IPv4MTU, changed = mtu, true
		}
		if c.FollowIPv6MTU && ifindex == ifindex6 && cfg.Policy.IPv6MTU != mtu && mtu >= 1280 {
			cfg.Policy.IPv6MTU, changed = mtu, true
		}
		if !changed {
			return
		}
		if err := eng.Reload(&cfg); err != nil {
			log.Warn("NIC MTU changed, engine not updated", "ifindex", ifindex, "mtu", mtu, "err", err)
			return
		}
		log.Info("NIC MTU changed", "ifindex", ifindex, "mtu", mtu)
	}
	if err := watchKernel(h, n.res, &n.local, onMTU, n.done); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	go n.res.run(n.done)

	d := newDatapath(log)
	var readErrors atomic.Uint64
	d.linkStats = func(s *LinkStats) {
		s.NoNextHop += n.noNextHop.Load()
		s.ReadErrors += readErrors.Load()
	}
	// One Handler queue per socket: each socket's endpoint delivers from
	// one goroutine, its hostFilter stamps the queue index in
	// PacketBuffer.Hash, and the Handler writes with that Hash to the
	// socket's own nicWriter.
	var writers nicWriters
	var eps []gvstack.LinkEndpoint
	var filters []*hostFilter
	for _, p := range n.ports {
		for q, fd := range p.fds {
			ep, err := fdbased.New(&fdbased.Options{
				FDs:                  []int{fd},
				MTU:                  uint32(p.mtu),
				PacketDispatchMode:   fdbased.PacketMMap,
				ProcessorsPerChannel: 1, // translate on the reading goroutine: no hand-off per packet
				PreConfigured:        true,
				IsPacketSocket:       []bool{true},
				ClosedFunc: func(e tcpip.Error) {
					if e != nil && !d.stopped.Load() {
						readErrors.Add(1)
						log.Error("NIC socket stopped", "nic", p.name, "queue", q, "err", e)
						d.fail(fmt.Errorf("NIC %s queue %d: reading stopped: %s", p.name, q, e))
					}
				},
			})
			if err != nil {
				return nil, fmt.Errorf("stack: NIC %s queue %d: %w", p.name, q, err)
			}
			writers = append(writers, newNICWriter(n, q))
			filters = append(filters, &hostFilter{local: &n.local, queue: uint32(len(eps))})
			eps = append(eps, ep)
		}
	}
	hd := NewHandler(writers, len(eps), func() Translator { return eng.NewWorker() }, log)
	d.handler = hd
	exited := make([]atomic.Bool, len(eps))
	d.exited = func(i int) bool { return exited[i].Load() }
	for i, ep := range eps {
		filters[i].h = hd
		ep.Attach(filters[i])
	}
	ok = true
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			ep.Wait()
			exited[i].Store(true)
		})
	}
	stopAfter := context.AfterFunc(ctx, func() {
		d.stopped.Store(true)
		for _, ep := range eps {
			ep.Attach(nil) // stops the dispatch loop and waits for it
		}
	})
	go func() {
		wg.Wait()
		stopAfter()
		n.close()
		close(d.done)
	}()
	return d, nil
}

// nicWriters are the sockets' writers, indexed by the Handler queue
// (PacketBuffer.Hash) a packet was translated on: a socket's packets go
// out through its own writer.
type nicWriters []*nicWriter

func (ws nicWriters) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	all := pkts.AsSlice()
	if len(all) == 0 {
		return 0, nil
	}
	// A Handler queue writes its own packets only, so one list has one
	// Hash.
	return ws[all[0].Hash%uint32(len(ws))].WritePackets(pkts)
}

// nicPath is what the sockets of one ServeNIC share.
type nicPath struct {
	log       *slog.Logger
	ports     []*nicPort
	nl        *netlink.Handle
	res       *resolver
	local     localAddrs
	done      chan struct{}
	noNextHop atomic.Uint64
	closeOnce sync.Once
	ctl       int // ethtool socket, in the NICs' namespace; 0: none
}

// nicPort is one NIC: its sockets (one per queue) and MTU.
type nicPort struct {
	name    string
	ifindex int
	mtu     int
	fds     []int
	fanout  int // the PACKET_FANOUT group id the kernel gave the first socket
	// groWasOn: ServeNIC turned GRO off and turns it on again at the end.
	groWasOn bool
}

func (n *nicPath) close() {
	n.closeOnce.Do(func() {
		if n.done != nil {
			close(n.done)
		}
		if n.nl != nil {
			n.nl.Close()
		}
		for _, p := range n.ports {
			for _, fd := range p.fds {
				unix.Close(fd)
			}
			if p.groWasOn {
				if err := setOffload(n.ctl, p.name, ethtoolSGRO, true); err != nil {
					n.log.Warn("turning GRO back on", "nic", p.name, "err", err)
				}
			}
		}
		if n.ctl > 0 {
			unix.Close(n.ctl)
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
	skfAdOff      = 0xfffff000 // SKF_AD_OFF, -0x1000 as the uint32 offset
	skfAdProtocol = 0
	skfAdPktType  = 4
)

// hostIPFilter accepts IPv4 and IPv6 frames sent to this host's link
// address (PACKET_HOST) and nothing else: ARP, ND multicast and broadcast
// stay the kernel's alone.
var hostIPFilter = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: uint32(skfAdOff + skfAdPktType)},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 4, K: unix.PACKET_HOST},
	{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: uint32(skfAdOff + skfAdProtocol)},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: unix.ETH_P_IP},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.ETH_P_IPV6},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0x40000},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0},
}

// openPacketSocket opens one queue's AF_PACKET socket on ifindex: the
// filter and options are in place before it is bound, so it never sees a
// packet it should not, and it joins p's fanout group (creating it when
// first).
func openPacketSocket(ifindex int, first bool, p *nicPort) (int, error) {
	// Protocol 0: receives nothing until bound below.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	prog := unix.SockFprog{Len: uint16(len(hostIPFilter)), Filter: &hostIPFilter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		return fail("socket filter", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING (Linux 4.20 or later)", err)
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if first {
		const arg = (unix.PACKET_FANOUT_HASH | unix.PACKET_FANOUT_FLAG_UNIQUEID) << 16
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, arg); err != nil {
			return fail("PACKET_FANOUT", err)
		}
		id, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
		if err != nil {
			return fail("PACKET_FANOUT id", err)
		}
		p.fanout = id & 0xffff
	} else if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, p.fanout|unix.PACKET_FANOUT_HASH<<16); err != nil {
		return fail("joining PACKET_FANOUT group", err)
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// hostFilter passes a delivered packet to the Handler unless it is
// addressed to the host itself or is IPv6 link-local: those are the
// kernel's, which receives its own copy of the frame.
type hostFilter struct {
	local *localAddrs
	h     *Handler
	queue uint32 // the Handler queue of this filter's socket
}

func (f *hostFilter) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	var hdr [40]byte
	views, skip := pkt.AsViewList()
	n := 0
	for v := views.Front(); v != nil && n < len(hdr); v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		n += copy(hdr[n:], s[skip:])
		skip = 0
	}
	var dst netip.Addr
	switch {
	case n >= 20 && hdr[0]>>4 == 4:
		dst = netip.AddrFrom4([4]byte(hdr[16:20]))
	case n >= 40 && hdr[0]>>4 == 6:
		dst = netip.AddrFrom16([16]byte(hdr[24:40]))
		if dst.IsLinkLocalUnicast() {
			return
		}
	}
	if dst.IsValid() && f.local.has(dst) {
		return
	}
	pkt.Hash = f.queue
	f.h.DeliverNetworkPacket(proto, pkt)
}

func (f *hostFilter) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

// maxIov bounds the views of one packet a nicWriter sends.
const maxIov = 64

// nicWriter is a Handler's output in NIC mode (a gvstack.LinkWriter): it
// sends each packet out of the NIC and to the link address that the
// resolver gives for its destination, with sendmsg on one of that NIC's
// AF_PACKET sockets (the kernel adds the Ethernet header). One per Handler,
// whose lock serializes its calls; it allocates nothing.
type nicWriter struct {
	n     *nicPath
	queue int
	hdr   [40]byte
	iov   [maxIov]unix.Iovec
	parts [maxIov][]byte // the iovecs as slices, for parking
	sll   unix.RawSockaddrLinklayer
	msg   unix.Msghdr
}

func newNICWriter(n *nicPath, queue int) *nicWriter {
	w := &nicWriter{n: n, queue: queue}
	w.msg.Name = (*byte)(unsafe.Pointer(&w.sll))
	w.msg.Namelen = unix.SizeofSockaddrLinklayer
	w.msg.Iov = &w.iov[0]
	return w
}

// WritePackets implements gvstack.LinkWriter.
func (w *nicWriter) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	for i, pkt := range pkts.AsSlice() {
		if err := w.write(pkt); err != nil {
			return i, err
		}
	}
	return pkts.Len(), nil
}

func (w *nicWriter) write(pkt *gvstack.PacketBuffer) tcpip.Error {
	views, skip := pkt.AsViewList()
	niov, nhdr := 0, 0
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		s = s[skip:]
		skip = 0
		if niov == maxIov {
			return &tcpip.ErrMessageTooLong{}
		}
		nhdr += copy(w.hdr[nhdr:], s)
		w.iov[niov].Base = &s[0]
		w.iov[niov].SetLen(len(s))
		niov++
	}
	var dst netip.Addr
	var proto uint16
	switch {
	case nhdr >= 20 && w.hdr[0]>>4 == 4:
		dst, proto = netip.AddrFrom4([4]byte(w.hdr[16:20])), unix.ETH_P_IP
	case nhdr >= 40 && w.hdr[0]>>4 == 6:
		dst, proto = netip.AddrFrom16([16]byte(w.hdr[24:40])), unix.ETH_P_IPV6
	default:
		return &tcpip.ErrMalformedHeader{}
	}
	hop, ok := w.n.res.lookup(dst)
	if !ok {
		for i := range niov {
			w.parts[i] = unsafe.Slice(w.iov[i].Base, w.iov[i].Len)
		}
		parked := w.n.res.park(dst, w.parts[:niov])
		w.n.res.request(dst)
		if parked {
			return nil // sent when the next hop is resolved
		}
		w.n.noNextHop.Add(1)
		return &tcpip.ErrHostUnreachable{}
	}
	return w.send(hop, proto, niov)
}

// sendParked sends a packet the resolver kept until its next hop was
// resolved (the resolver serializes the calls).
func (w *nicWriter) sendParked(hop nextHop, pkt []byte) {
	var proto uint16 = unix.ETH_P_IPV6
	if pkt[0]>>4 == 4 {
		proto = unix.ETH_P_IP
	}
	w.iov[0].Base = &pkt[0]
	w.iov[0].SetLen(len(pkt))
	if err := w.send(hop, proto, 1); err != nil {
		w.n.log.Debug("sending a packet that waited for its next hop", "err", err)
	}
}

// send sends the packet in w.iov[:niov] to hop.
func (w *nicWriter) send(hop nextHop, proto uint16, niov int) tcpip.Error {
	p := w.n.port(hop.ifindex)
	if p == nil {
		w.n.noNextHop.Add(1)
		return &tcpip.ErrHostUnreachable{}
	}
	w.sll = unix.RawSockaddrLinklayer{
		Family:   unix.AF_PACKET,
		Protocol: htons(proto),
		Ifindex:  int32(hop.ifindex),
		Halen:    6,
	}
	copy(w.sll.Addr[:], hop.mac[:])
	w.msg.SetIovlen(niov)
	fd := p.fds[w.queue%len(p.fds)]
	_, _, errno := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&w.msg)), unix.MSG_DONTWAIT)
	if errno != 0 {
		return tcpip.TranslateErrno(errno)
	}
	return nil
}
