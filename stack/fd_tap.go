package stack

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/rawfile"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/stopfd"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// TapConfig is the fd mode on a tap: an inherited descriptor that carries
// one Ethernet frame per read and write (a tap opened with
// IFF_TAP|IFF_NO_PI, as a VM manager hands over a VM's NIC, or a datagram
// socket carrying frames). The translator is a host on that segment.
type TapConfig struct {
	FD  int
	MTU int // the segment's IP MTU: frames carry at most MTU + 14 bytes
	// VnetHdr is the size of the virtio_net_hdr in front of every frame
	// (a tap opened with IFF_VNET_HDR: 10, or 12 with num_buffers), or 0
	// for none; see FDInfo.
	VnetHdr int
	MAC     [6]byte
	// IPv4Gateway, IPv6Gateway: the next hop of every translated packet
	// of the family; invalid: destinations are on the segment (on-link).
	IPv4Gateway, IPv6Gateway netip.Addr
}

// TapMAC is the link address the tap mode uses when none is configured:
// locally administered and unicast (IEEE 802 U/L and I/G bits, RFC 7042
// section 2.1), derived from the translation prefix and the descriptor
// number, so that it stays the same across restarts of one configuration.
// Two translators on one segment with the same prefix need their own
// configured addresses.
func TapMAC(prefix netip.Prefix, fd int) [6]byte {
	h := sha256.New()
	h.Write([]byte("map646 tap mac\x00"))
	b, _ := prefix.MarshalBinary()
	h.Write(b)
	binary.Write(h, binary.BigEndian, uint32(fd))
	var mac [6]byte
	copy(mac[:], h.Sum(nil))
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// ServeTap runs the translator over the tap of c (see TapConfig), from one
// goroutine that reads a frame, answers ARP and Neighbor Discovery
// for the translator's addresses itself (tapNeigh), translates IP in
// place in its frame and writes the result with writev behind an
// Ethernet header to the next hop's link address. Next hops are resolved
// by the resolver of neigh.go over tapNeigh: a packet to an unresolved one
// is parked (or counted in LinkStats.NoNextHop).
//
// The addresses it answers ARP and NS for are the IPv4 addresses of the
// EAM table (the pool the IPv4 side routes to the translator), the
// translator's own IPv4 address (xlat.Policy.IPv4Address), the addresses
// in the RFC 6052 prefix (where the IPv6 side reaches IPv4 clients) and
// its link-local address; never an EAM IPv6 address (the servers' own)
// nor any address in deny_ipv4. They are read from the engine at each
// request, so a reload changes them.
//
// ServeTap makes the descriptor non-blocking but does not own it: close it
// after Wait returns. It returns at once; it stops when ctx is cancelled.
func ServeTap(ctx context.Context, eng *xlat.Engine, c TapConfig, log *slog.Logger) (*Datapath, error) {
	if eng == nil {
		return nil, errors.New("stack: ServeTap needs an engine")
	}
	if c.MTU < 68 || c.MTU > maxPacket-ethHdrLen {
		return nil, fmt.Errorf("stack: tap fd %d: MTU %d out of range", c.FD, c.MTU)
	}
	if err := CheckVnetHdr(c.VnetHdr); err != nil {
		return nil, fmt.Errorf("stack: tap fd %d: %w", c.FD, err)
	}
	if !unicastMAC(c.MAC) {
		return nil, fmt.Errorf("stack: tap fd %d: link address %x is not a unicast address", c.FD, c.MAC)
	}
	if err := unix.SetNonblock(c.FD, true); err != nil {
		return nil, fmt.Errorf("stack: tap fd %d: %w", c.FD, err)
	}
	d := newDatapath(log)
	// A tap opened with IFF_MULTI_QUEUE spreads flows over every queue
	// attached to it, as a tun does: this one must be its only one.
	info, err := ProbeFD(c.FD)
	if err != nil {
		return nil, fmt.Errorf("stack: tap %w", err)
	}
	qc, err := checkAllQueues([]int{c.FD}, []FDInfo{info}, d.log.Warn)
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	d.watchQueues(qc)
	ep := newTapEndpoint(c, func(a netip.Addr) bool { return ownsForNeighbours(eng.Config(), a) }, d.log)
	serveFDEndpoints(ctx, d, fdQueues{ep}, func() Translator { return eng.NewWorker() })
	return d, nil
}

// serveFDEndpoints attaches one Handler to eps, one queue per endpoint
// (each endpoint's one reading goroutine stamps its index in
// PacketBuffer.Hash, and the Handler's writes go back to the endpoint of
// that index), and for a tap runs its resolver. They all stop when ctx is
// cancelled or when one dispatch loop fails (d.Wait returns its error).
func serveFDEndpoints(ctx context.Context, d *Datapath, eps fdQueues, newTranslator func() Translator) {
	for i, ep := range eps {
		ep.index = uint32(i)
	}
	d.linkStats = func(s *LinkStats) {
		for _, ep := range eps {
			ep.addStats(s)
		}
	}
	d.handler = NewHandler(eps, len(eps), newTranslator, d.log)
	exited := make([]atomic.Bool, len(eps))
	d.exited = func(i int) bool { return exited[i].Load() }
	done := make(chan struct{})
	// The resolver and the neighbour upkeep write to the fd (parked
	// packets, solicitations): Wait returns only after they ended, so a
	// caller that closes the fd then cannot have its number, reused,
	// written to.
	var resolving sync.WaitGroup
	for _, ep := range eps {
		if ep.eth {
			resolving.Go(func() { ep.res.run(done) })
			resolving.Go(func() { ep.maintain(done) })
		}
	}
	stopAll := func() {
		for _, ep := range eps {
			ep.Attach(nil)
		}
	}
	for _, ep := range eps {
		ep.Attach(d.handler)
	}
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			ep.Wait()
			exited[i].Store(true)
			if err := ep.err.Load(); err != nil && !d.stopped.Load() {
				d.log.Error("fd endpoint stopped", "fd", ep.fd, "err", *err)
				d.fail(*err)
				go stopAll() // one queue down stops the data path
			}
		})
	}
	go func() {
		wg.Wait()
		close(done)
		resolving.Wait()
		close(d.done)
	}()
	context.AfterFunc(ctx, func() {
		d.stopped.Store(true)
		stopAll()
	})
}

// fdQueues are the endpoints of one data path's descriptors, as the
// Handler's link: a packet goes out through the endpoint of its Hash (the
// queue it was read from), and each queue's frame is its endpoint's.
type fdQueues []*tapEndpoint

var _ frameLink = fdQueues(nil)

// WritePackets implements gvstack.LinkWriter. A Handler queue writes its
// own packets only, so one list has one Hash.
func (qs fdQueues) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	all := pkts.AsSlice()
	if len(all) == 0 {
		return 0, nil
	}
	return qs[all[0].Hash%uint32(len(qs))].WritePackets(pkts)
}

// Queues implements frameLink.
func (qs fdQueues) Queues() int { return len(qs) }

// Frame implements frameLink.
func (qs fdQueues) Frame(q int) *tun.Frame { return qs[q].frame }

// ownsForNeighbours reports whether the translator answers ARP or NS for
// a (see ServeTap): the address is its own or one it translates to, so
// traffic to it must reach it. A client's address is never one of them
// on the IPv4 side (only EAM addresses are), and a server's never on the
// IPv6 side (only the RFC 6052 prefix is).
func ownsForNeighbours(c *xlat.Config, a netip.Addr) bool {
	if c == nil || c.Map == nil || !validNeighbour(a) {
		return false
	}
	for _, p := range c.Policy.DenyIPv4 {
		if p.Contains(a) {
			return false
		}
	}
	if a.Is4() {
		if a == c.Policy.IPv4Address {
			return true
		}
		_, _, ok := c.Map.Table().Lookup4(a.As4())
		return ok
	}
	if a.IsLinkLocalUnicast() {
		return false
	}
	v4, _, o := c.Map.To4(a.As16())
	if o != mapping.ByPrefix {
		return false
	}
	for _, p := range c.Policy.DenyIPv4 {
		if p.Contains(netip.AddrFrom4(v4)) {
			return false
		}
	}
	return true
}

// maxIov bounds the views of one packet the tap writer sends.
const maxIov = 64

// tapEndpoint is a tap descriptor as a gVisor link endpoint for the
// Handler: its dispatch loop reads frames into a tun.Frame (so that the
// Handler translates in place: it is the Handler's frameLink), keeps ARP
// and ND to itself and delivers IP; WritePackets adds the Ethernet header.
//
// gVisor's fdbased endpoint with EthernetHeader is not used: its readv
// dispatcher ends its dispatch loop on the first frame that is shorter
// than an Ethernet header or is addressed to another unicast MAC (a
// bridge floods those), so any host on the segment could stop the
// translator; and its WritePackets allocates per call.
type tapEndpoint struct {
	fd    int
	index uint32 // the Handler queue of this descriptor (PacketBuffer.Hash)
	// eth: the fd carries Ethernet frames (a tap); false: bare IP
	// packets (a tun without headers, a datagram or seqpacket socket),
	// with no link header, no neighbours and no next hops.
	eth bool
	// vnet is the size of the virtio_net_hdr in front of every packet
	// or frame (0: none). Its offsets count from the start of what
	// follows it: the Ethernet header on a tap, which the endpoint
	// moves to and from the IP header's start (the frame's Offload
	// counts from there, as a tun's does).
	vnet  int
	mtu   atomic.Uint32
	mac   [6]byte
	log   *slog.Logger
	frame *tun.Frame
	neigh *tapNeigh
	res   *resolver
	stats neighStats

	noNextHop, readErrors, linkChatter atomic.Uint64
	// parkedErrors counts the parked packets that failed to send: their
	// Write had succeeded, so nothing else counts them.
	parkedErrors                 atomic.Uint64
	shortVnetHdr, invalidVnetHdr atomic.Uint64

	// The reader's virtio_net_hdr, read in front of the frame by one
	// readv (dispatch goroutine only).
	rvnet [maxVnetHdr]byte
	riov  [2]unix.Iovec

	// The transit writer: used by the dispatch goroutine only (the
	// Handler's one queue writes from within DeliverNetworkPacket).
	whdr  [ethHdrLen]byte
	wvnet [maxVnetHdr]byte
	woff  xlat.Offload
	wiov  [maxIov + 2]unix.Iovec // the virtio_net_hdr, the Ethernet header, the views
	wcp   [40]byte
	// pbuf gathers a packet's views for parking (behind its
	// virtio_net_hdr, if the fd has one).
	pbuf [parkSize]byte

	// The control writer: ARP and ND frames and parked packets, from
	// the dispatch goroutine and the resolver's.
	cmu  sync.Mutex
	chdr [ethHdrLen]byte
	ciov [3]unix.Iovec
	// fiov: ARP and ND frames behind an empty virtio_net_hdr (under
	// fmu).
	fmu  sync.Mutex
	fiov [2]unix.Iovec

	mu         sync.Mutex
	dispatcher gvstack.NetworkDispatcher
	stop       *stopfd.StopFD
	// stopping is set while Attach stops the loop: under a flood the
	// descriptor never runs dry, so the loop would never poll the stop
	// eventfd.
	stopping atomic.Bool
	wg       sync.WaitGroup
	err      atomic.Pointer[error]
}

var (
	_ gvstack.LinkEndpoint = (*tapEndpoint)(nil)
	_ frameLink            = (*tapEndpoint)(nil)
)

func newTapEndpoint(c TapConfig, owns func(netip.Addr) bool, log *slog.Logger) *tapEndpoint {
	e := &tapEndpoint{fd: c.FD, eth: true, vnet: c.VnetHdr, mac: c.MAC, log: log, frame: tun.NewFrame()}
	e.mtu.Store(uint32(c.MTU))
	e.neigh = newTapNeigh(c.MAC, c.IPv4Gateway, c.IPv6Gateway, owns, e.sendFrame, &e.stats)
	e.res = newResolver(e.neigh, []int{tapIfindex}, log)
	e.res.send = e.sendParked
	e.neigh.update = e.res.neighbourUpdate
	return e
}

// newRawFDEndpoint returns the endpoint of an fd that carries bare IP
// packets, each behind a virtio_net_hdr of vnet bytes if vnet > 0.
func newRawFDEndpoint(fd, mtu, vnet int, log *slog.Logger) *tapEndpoint {
	e := &tapEndpoint{fd: fd, vnet: vnet, log: log, frame: tun.NewFrame()}
	e.mtu.Store(uint32(mtu))
	return e
}

// maintain re-solicits the next hops in use and expires the neighbours
// that stopped answering, until done is closed.
func (e *tapEndpoint) maintain(done <-chan struct{}) {
	t := time.NewTicker(neighbourRefresh)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			e.neigh.expire()
			e.res.refresh()
		}
	}
}

// addStats adds the endpoint's counters to s: malformed and non-IP frames
// and malformed ARP/ND count as NotIP, frames for others and group frames
// as LinkChatter.
func (e *tapEndpoint) addStats(s *LinkStats) {
	s.NoNextHop += e.noNextHop.Load()
	if e.res != nil {
		// Parked packets whose next hop never answered (their Write
		// had succeeded).
		expired := e.res.expired.Load()
		s.NoNextHop += expired
		s.WriteErrors += expired
	}
	s.WriteErrors += e.parkedErrors.Load()
	s.ReadErrors += e.readErrors.Load()
	s.ShortVnetHdr += e.shortVnetHdr.Load()
	s.InvalidVnetHdr += e.invalidVnetHdr.Load()
	s.NotIP += e.stats.ShortFrames.Load() + e.stats.OtherEtherType.Load() + e.stats.BadNeighbour.Load()
	s.LinkChatter += e.stats.NotForUs.Load() + e.linkChatter.Load()
}

// Queues and Frame make the endpoint a frameLink: the Handler translates
// the IP packet of a frame in place.
func (e *tapEndpoint) Queues() int { return 1 }

// Frame implements frameLink.
func (e *tapEndpoint) Frame(int) *tun.Frame { return e.frame }

// MTU implements gvstack.LinkEndpoint.
func (e *tapEndpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements gvstack.LinkEndpoint.
func (e *tapEndpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements gvstack.LinkEndpoint.
func (*tapEndpoint) MaxHeaderLength() uint16 { return ethHdrLen }

// LinkAddress implements gvstack.LinkEndpoint.
func (e *tapEndpoint) LinkAddress() tcpip.LinkAddress { return tcpip.LinkAddress(e.mac[:]) }

// SetLinkAddress implements gvstack.LinkEndpoint; the address is fixed
// by the configuration.
func (*tapEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements gvstack.LinkEndpoint: the endpoint resolves
// link addresses itself.
func (*tapEndpoint) Capabilities() gvstack.LinkEndpointCapabilities { return 0 }

// ARPHardwareType implements gvstack.LinkEndpoint.
func (*tapEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader implements gvstack.LinkEndpoint: WritePackets adds the
// Ethernet header itself, from the resolved next hop.
func (*tapEndpoint) AddHeader(*gvstack.PacketBuffer) {}

// ParseHeader implements gvstack.LinkEndpoint: delivered packets have
// their Ethernet header removed already.
func (*tapEndpoint) ParseHeader(*gvstack.PacketBuffer) bool { return true }

// SetOnCloseAction implements gvstack.LinkEndpoint.
func (*tapEndpoint) SetOnCloseAction(func()) {}

// Close implements gvstack.LinkEndpoint: it stops the dispatch loop; the
// descriptor stays open.
func (e *tapEndpoint) Close() { e.Attach(nil) }

// Wait implements gvstack.LinkEndpoint.
func (e *tapEndpoint) Wait() { e.wg.Wait() }

// IsAttached implements gvstack.LinkEndpoint.
func (e *tapEndpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil
}

// Attach implements gvstack.LinkEndpoint: it stops a running dispatch
// loop and waits for it, then starts one for d unless d is nil.
func (e *tapEndpoint) Attach(d gvstack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stop != nil {
		e.stopping.Store(true)
		e.stop.Stop()
		e.wg.Wait()
		e.stopping.Store(false)
		unix.Close(e.stop.EFD)
		e.stop = nil
	}
	e.dispatcher = d
	if d == nil {
		return
	}
	sf, err := stopfd.New()
	if err != nil {
		e.err.Store(&err)
		return
	}
	e.stop = &sf
	idle, _ := d.(tun.IdleDispatcher)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if err := e.dispatchLoop(sf.EFD, d, idle); err != nil {
			e.err.Store(&err)
		}
	}()
}

// dispatchLoop reads and handles frames until stopped through efd (nil)
// or the descriptor fails: closed by its peer, or tun.MaxReadErrors
// failed reads in a row.
func (e *tapEndpoint) dispatchLoop(efd int, d gvstack.NetworkDispatcher, idle tun.IdleDispatcher) error {
	buf := e.frame.Bytes()[tun.FramePacket:]
	if e.eth {
		buf = e.frame.Bytes()[tun.FramePacket-ethHdrLen:]
	}
	// With a virtio_net_hdr, one readv puts it in rvnet and the rest
	// where it would be without.
	if e.vnet > 0 {
		e.riov[0] = rawfile.IovecFromBytes(e.rvnet[:e.vnet])
		e.riov[1] = rawfile.IovecFromBytes(buf)
	}
	errs := 0
	datagrams := carriesDatagrams(e.fd)
	for {
		var n uintptr
		var errno unix.Errno
		if e.vnet > 0 {
			n, _, errno = unix.RawSyscall(unix.SYS_READV, uintptr(e.fd), uintptr(unsafe.Pointer(&e.riov[0])), 2)
		} else {
			n, _, errno = unix.RawSyscall(unix.SYS_READ, uintptr(e.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		}
		switch errno {
		case 0:
			if n == 0 {
				// An empty datagram, or the end of a seqpacket
				// socket whose peer closed it (then hung up).
				e.stats.ShortFrames.Add(1)
				pfd := []unix.PollFd{{Fd: int32(e.fd), Events: unix.POLLIN}}
				if _, err := unix.Poll(pfd, 0); err == nil && pfd[0].Revents&unix.POLLHUP != 0 {
					return fmt.Errorf("tap fd %d: closed by its peer", e.fd)
				}
				if !datagrams {
					// Anything else that reads 0 bytes has no more to
					// give, and would read 0 again at once for ever.
					return fmt.Errorf("tap fd %d: end of file (a read of 0 bytes: a stream whose writer shut it, or no packet descriptor)", e.fd)
				}
				if e.stopping.Load() {
					return nil // a flood of empty datagrams never reads EAGAIN
				}
				continue
			}
			errs = 0
			if int(n) < e.vnet {
				e.shortVnetHdr.Add(1)
				continue
			}
			e.deliver(d, buf[:int(n)-e.vnet])
			if e.stopping.Load() {
				return nil
			}
			continue
		case unix.EAGAIN:
			if idle != nil {
				idle.QueueIdle(int(e.index))
			}
			stopped, perr := rawfile.BlockingPollUntilStopped(efd, e.fd, unix.POLLIN)
			if stopped {
				return nil
			}
			if perr != 0 && perr != unix.EINTR {
				return fmt.Errorf("tap fd %d: poll: %w", e.fd, perr)
			}
			continue
		case unix.EINTR:
			continue
		}
		e.readErrors.Add(1)
		if errs++; errs >= tun.MaxReadErrors || errno == unix.EBADF || errno == unix.EBADFD {
			return fmt.Errorf("tap fd %d: read: %w", e.fd, errno)
		}
	}
}

// carriesDatagrams reports whether fd is a socket that keeps message
// boundaries (datagram, seqpacket, raw), on which a read of 0 bytes is an
// empty message; on anything else (a stream socket, a pipe, a file; a tun
// or tap never reads 0 bytes) it is the end of the data.
func carriesDatagrams(fd int) bool {
	t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	return err == nil && (t == unix.SOCK_DGRAM || t == unix.SOCK_SEQPACKET || t == unix.SOCK_RAW)
}

// deliver handles one frame f, read into the frame at
// FramePacket-ethHdrLen (its virtio_net_hdr, if any, in rvnet): IP
// addressed to our MAC goes to d, ARP and ND to tapNeigh, the rest is
// counted.
func (e *tapEndpoint) deliver(d gvstack.NetworkDispatcher, f []byte) {
	if !e.readOffload(f) {
		return
	}
	if !e.eth {
		e.deliverIP(d, f)
		return
	}
	if len(f) < ethHdrLen || len(f) > ethHdrLen+e.maxPacket() {
		e.stats.ShortFrames.Add(1)
		return
	}
	dst, src := [6]byte(f[0:6]), [6]byte(f[6:12])
	toUs := dst == e.mac
	if (!toUs && dst[0]&1 == 0) || !unicastMAC(src) || src == e.mac {
		e.stats.NotForUs.Add(1)
		return
	}
	p := f[ethHdrLen:]
	var proto tcpip.NetworkProtocolNumber
	switch binary.BigEndian.Uint16(f[12:14]) {
	case ethTypeARP:
		e.neigh.handleARP(p, src)
		return
	case ethTypeIP6:
		if isND(p) {
			e.neigh.handleND(p, src)
			return
		}
		if len(p) < header.IPv6MinimumSize || p[0]>>4 != 6 {
			e.stats.ShortFrames.Add(1)
			return
		}
		proto = header.IPv6ProtocolNumber
	case ethTypeIP4:
		if len(p) < header.IPv4MinimumSize || p[0]>>4 != 4 {
			e.stats.ShortFrames.Add(1)
			return
		}
		proto = header.IPv4ProtocolNumber
	default:
		e.stats.OtherEtherType.Add(1)
		return
	}
	if !toUs {
		// Broadcast or multicast IP (MLD, router solicitations, mDNS):
		// the segment's chatter, not traffic routed to the translator.
		e.linkChatter.Add(1)
		return
	}
	e.dispatchIP(d, proto, len(p))
}

// deliverIP hands the bare IP packet p, read into the frame at
// FramePacket, to d.
func (e *tapEndpoint) deliverIP(d gvstack.NetworkDispatcher, p []byte) {
	switch {
	case len(p) > e.maxPacket():
		e.stats.ShortFrames.Add(1)
	case len(p) >= header.IPv4MinimumSize && p[0]>>4 == 4:
		e.dispatchIP(d, header.IPv4ProtocolNumber, len(p))
	case len(p) >= header.IPv6MinimumSize && p[0]>>4 == 6:
		e.dispatchIP(d, header.IPv6ProtocolNumber, len(p))
	default:
		e.stats.OtherEtherType.Add(1)
	}
}

// readOffload decodes the virtio_net_hdr read in front of the packet or
// frame f into the frame's Offload (which the Handler translates with the
// packet), moving a tap's offsets from the Ethernet header to the IP
// header, and checks it as the kernel would and against the packet
// (tun.ValidateOffloadPacket); without a header the Offload says the
// packet is complete. A header that fails is counted, and the packet
// dropped.
func (e *tapEndpoint) readOffload(f []byte) bool {
	off := &e.frame.Offload
	if e.vnet == 0 {
		*off = xlat.Offload{}
		return true
	}
	tun.DecodeVnetHdr(e.rvnet[:], off)
	ip := f
	if e.eth {
		if len(f) < ethHdrLen {
			return true // too short a frame: deliver counts it
		}
		ip = f[ethHdrLen:]
		if off.Flags&xlat.OffloadNeedsCsum != 0 {
			if off.CsumStart < ethHdrLen {
				e.invalidVnetHdr.Add(1)
				return false
			}
			off.CsumStart -= ethHdrLen
		}
		off.HdrLen -= min(off.HdrLen, ethHdrLen)
	}
	if tun.ValidateOffloadPacket(off, ip) != nil {
		e.invalidVnetHdr.Add(1)
		return false
	}
	return true
}

// maxPacket is the largest IP packet the endpoint takes: the MTU, or a
// super-packet's limit for one the virtio_net_hdr says is to be segmented.
func (e *tapEndpoint) maxPacket() int {
	if e.frame.Offload.GSOType != xlat.GSONone {
		return tun.GSOMaxSize
	}
	return int(e.mtu.Load())
}

// dispatchIP delivers the n bytes at FramePacket in the frame, in place.
func (e *tapEndpoint) dispatchIP(d gvstack.NetworkDispatcher, proto tcpip.NetworkProtocolNumber, n int) {
	pkt := e.frame.PacketBuffer(tun.FramePacket, tun.FramePacket+n)
	pkt.NetworkProtocolNumber = proto
	pkt.Hash = e.index
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}

// WritePackets implements gvstack.LinkWriter: each packet goes to the
// link address of its destination's next hop, behind an Ethernet header,
// in one writev; a packet whose next hop is not resolved yet is parked
// and resolution asked for. It is called by the Handler's one queue,
// from the dispatch goroutine.
func (e *tapEndpoint) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	for i, pkt := range pkts.AsSlice() {
		if err := e.writePacket(pkt); err != nil {
			return i, err
		}
	}
	return pkts.Len(), nil
}

func (e *tapEndpoint) writePacket(pkt *gvstack.PacketBuffer) tcpip.Error {
	views, skip := pkt.AsViewList()
	// wiov[0] and wiov[1] are for the virtio_net_hdr and the Ethernet
	// header, the views follow.
	niov, ncp, size := 2, 0, 0
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		s = s[skip:]
		skip = 0
		if niov == len(e.wiov) {
			return &tcpip.ErrMessageTooLong{}
		}
		ncp += copy(e.wcp[ncp:], s)
		e.wiov[niov].Base = &s[0]
		e.wiov[niov].SetLen(len(s))
		niov++
		size += len(s)
	}
	dst, etherType, ok := ipDestination(e.wcp[:ncp])
	if !ok {
		return &tcpip.ErrMalformedHeader{}
	}
	gso := false
	if e.vnet > 0 {
		if err := e.writeOffload(pkt); err != nil {
			return err
		}
		gso = e.woff.GSOType != xlat.GSONone
	}
	if size > int(e.mtu.Load()) && !gso {
		// The engine keeps to the MTUs it is given; a larger packet
		// cannot cross the segment (a super-packet is segmented by the
		// kernel behind the fd, to its gso_size).
		return &tcpip.ErrMessageTooLong{}
	}
	first := 2 // the first iovec written
	if !e.eth {
		if e.vnet > 0 {
			first = 1
			e.wiov[1] = rawfile.IovecFromBytes(e.wvnet[:e.vnet])
		}
		if errno := rawfile.NonBlockingWriteIovec(e.fd, e.wiov[first:niov]); errno != 0 {
			return tcpip.TranslateErrno(errno)
		}
		return nil
	}
	hop, ok := e.res.lookup(dst)
	if !ok {
		// Parking is rare (the first packets to a next hop): gather the
		// views into the endpoint's own buffer, which park copies.
		n := copy(e.pbuf[:], e.wvnet[:e.vnet])
		for i := 2; i < niov && n < len(e.pbuf); i++ {
			n += copy(e.pbuf[n:], unsafe.Slice(e.wiov[i].Base, e.wiov[i].Len))
		}
		keep := e.pbuf[:n]
		if e.vnet+size > parkSize {
			keep = nil // too large to park (pbuf holds its head only): park only looks again
		}
		var parked bool
		if hop, ok, parked = e.res.park(dst, keep); !ok {
			e.res.request(dst)
			if parked {
				return nil // sent when the next hop is resolved
			}
			e.noNextHop.Add(1)
			return &tcpip.ErrHostUnreachable{}
		}
		// Resolved meanwhile: after the packets parked before it.
	}
	copy(e.whdr[0:6], hop.mac[:])
	copy(e.whdr[6:12], e.mac[:])
	binary.BigEndian.PutUint16(e.whdr[12:14], etherType)
	e.wiov[1] = rawfile.IovecFromBytes(e.whdr[:])
	first = 1
	if e.vnet > 0 {
		first = 0
		e.wiov[0] = rawfile.IovecFromBytes(e.wvnet[:e.vnet])
	}
	if errno := rawfile.NonBlockingWriteIovec(e.fd, e.wiov[first:niov]); errno != 0 {
		return tcpip.TranslateErrno(errno)
	}
	return nil
}

// writeOffload encodes the offload metadata of pkt into wvnet: the
// frame's Offload for a packet translated in the frame (the engine has
// made it describe the result), else what pkt's GSOOptions say (an
// engine-made packet). On a tap the offsets are moved to count from the
// Ethernet header. The bytes past VnetHdrLen (num_buffers) stay zero.
func (e *tapEndpoint) writeOffload(pkt *gvstack.PacketBuffer) tcpip.Error {
	if _, _, ok := e.frame.InFrame(pkt); ok {
		e.woff = e.frame.Offload
	} else {
		// hdr_len and the ECN bit are read from the first view: an
		// engine-made packet has one.
		b := unsafe.Slice(e.wiov[2].Base, e.wiov[2].Len)
		if _, err := tun.OffloadFromPacket(pkt, b, &e.woff); err != nil {
			return &tcpip.ErrNotSupported{}
		}
	}
	if e.eth {
		if e.woff.Flags&xlat.OffloadNeedsCsum != 0 {
			e.woff.CsumStart += ethHdrLen
		}
		if e.woff.HdrLen != 0 {
			e.woff.HdrLen += ethHdrLen
		}
	}
	tun.EncodeVnetHdr(e.wvnet[:], &e.woff)
	return nil
}

// ipDestination returns the destination and EtherType of the IP packet
// whose first bytes are h.
func ipDestination(h []byte) (netip.Addr, uint16, bool) {
	switch {
	case len(h) >= header.IPv4MinimumSize && h[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(h[16:20])), ethTypeIP4, true
	case len(h) >= header.IPv6MinimumSize && h[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(h[24:40])), ethTypeIP6, true
	}
	return netip.Addr{}, 0, false
}

// sendParked sends a packet the resolver kept until its next hop was
// resolved (behind its virtio_net_hdr, if the fd has one).
func (e *tapEndpoint) sendParked(hop nextHop, pkt []byte) {
	if len(pkt) < e.vnet {
		return
	}
	vnet, ip := pkt[:e.vnet], pkt[e.vnet:]
	_, etherType, ok := ipDestination(ip)
	if !ok {
		return
	}
	e.cmu.Lock()
	defer e.cmu.Unlock()
	copy(e.chdr[0:6], hop.mac[:])
	copy(e.chdr[6:12], e.mac[:])
	binary.BigEndian.PutUint16(e.chdr[12:14], etherType)
	iov := e.ciov[:0]
	if e.vnet > 0 {
		iov = append(iov, rawfile.IovecFromBytes(vnet))
	}
	iov = append(iov, rawfile.IovecFromBytes(e.chdr[:]), rawfile.IovecFromBytes(ip))
	if errno := rawfile.NonBlockingWriteIovec(e.fd, iov); errno != 0 {
		e.parkedErrors.Add(1)
		e.log.Debug("sending a packet that waited for its next hop", "err", errno)
	}
}

// sendFrame writes one whole frame (ARP and ND), behind an empty
// virtio_net_hdr if the fd has one: the frame is complete.
func (e *tapEndpoint) sendFrame(f []byte) error {
	if e.vnet == 0 {
		if errno := rawfile.NonBlockingWrite(e.fd, f); errno != 0 {
			return errno
		}
		return nil
	}
	e.fmu.Lock()
	defer e.fmu.Unlock()
	e.fiov[0] = rawfile.IovecFromBytes(noOffload[:e.vnet])
	e.fiov[1] = rawfile.IovecFromBytes(f)
	if errno := rawfile.NonBlockingWriteIovec(e.fd, e.fiov[:]); errno != 0 {
		return errno
	}
	return nil
}

// noOffload is the virtio_net_hdr of a complete packet.
var noOffload [maxVnetHdr]byte
