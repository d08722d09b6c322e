package stack

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// Fuzzing the fd mode's reader with what a VM manager or guest may write
// into an inherited tun or tap: any virtio_net_hdr (gso_type, gso_size,
// hdr_len, csum_start, csum_offset, flags, num_buffers) in front of any
// frame (runts, VLAN tags, frames longer than the MTU, ARP and ND, bare IP
// of any length). The data path is driven synchronously, as
// dispatchLoop's readv leaves a read (the header in rvnet, the rest in
// the frame), with the real Handler and engine; what it writes goes to a
// datagram socketpair and is checked as the kernel behind the fd would
// check it.

// fuzzMTU is the fuzzed links' MTU, the engine's IPv4 and IPv6 MTU too, so
// that a super-packet's segments must fit it.
const fuzzMTU = 1500

// fuzzFD is one fd endpoint under fuzzing.
type fuzzFD struct {
	vnet int
	eth  bool
	eng  *xlat.Engine
	ep   *tapEndpoint
	h    *Handler
	peer int
	buf  []byte // where the read puts what follows the virtio_net_hdr
	out  []byte
}

func fuzzEngine(tb testing.TB) *xlat.Engine {
	tb.Helper()
	p, err := mapping.NewPrefix(netip.MustParsePrefix(prefixV6))
	if err != nil {
		tb.Fatal(err)
	}
	tbl, err := mapping.NewTable([]mapping.Entry{
		{IPv4: netip.MustParsePrefix(serverV4 + "/32"), IPv6: netip.MustParsePrefix(serverV6 + "/128")},
		{IPv4: netip.MustParsePrefix("198.51.100.11/32"), IPv6: netip.MustParsePrefix("2001:db8:6::11/128")},
	})
	if err != nil {
		tb.Fatal(err)
	}
	snap, err := mapping.NewSnapshot(p, tbl)
	if err != nil {
		tb.Fatal(err)
	}
	eng, err := xlat.NewEngine(&xlat.Config{Map: snap, Policy: xlat.Policy{
		LowestIPv6MTU:  1280,
		IPv4MTU:        fuzzMTU,
		IPv6MTU:        fuzzMTU,
		ClampMSS:       true,
		ICMPSourcePool: []netip.Prefix{netip.MustParsePrefix(icmpPool6791)},
	}})
	if err != nil {
		tb.Fatal(err)
	}
	return eng
}

func newFuzzFD(tb testing.TB, eng *xlat.Engine, vnet int, eth bool) *fuzzFD {
	tb.Helper()
	fds := dgramPair(tb)
	unix.SetNonblock(fds[0], true)
	unix.SetNonblock(fds[1], true)
	// Room for a whole super-packet in the socket's queue.
	unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
	f := &fuzzFD{vnet: vnet, eth: eth, eng: eng, peer: fds[1], out: make([]byte, 1<<17)}
	log := slog.New(slog.DiscardHandler)
	if eth {
		f.ep = newTapEndpoint(TapConfig{FD: fds[0], MTU: fuzzMTU, VnetHdr: vnet, MAC: tapMAC, IPv4Gateway: gw4, IPv6Gateway: gw6},
			func(a netip.Addr) bool { return ownsForNeighbours(eng.Config(), a) }, log)
		for _, gw := range []netip.Addr{gw4, gw6} {
			f.ep.neigh.soliciting[gw] = monoNow()
			f.ep.neigh.learn(gw, peerMAC)
		}
		// The seeds' destinations both ways, so that a super-packet
		// (too large to park) is not lost to resolution.
		f.ep.res.resolve(netip.MustParseAddr(serverV6))
		f.ep.res.resolve(netip.MustParseAddr(clientV4))
		f.buf = f.ep.frame.Bytes()[tun.FramePacket-ethHdrLen:]
	} else {
		f.ep = newRawFDEndpoint(fds[0], fuzzMTU, vnet, log)
		f.buf = f.ep.frame.Bytes()[tun.FramePacket:]
	}
	f.h = NewHandler(f.ep, 1, func() Translator { return eng.NewWorker() }, log)
	return f
}

// read stands in for one read of data by dispatchLoop: the first vnet
// bytes into rvnet, the rest into the frame (cut to its room, as a read
// would).
func (f *fuzzFD) read(data []byte) {
	n := copy(f.ep.rvnet[:f.vnet], data)
	if n < len(data) {
		n += copy(f.buf, data[n:])
	}
	if n < f.vnet {
		f.ep.shortVnetHdr.Add(1)
		return
	}
	f.ep.deliver(f.h, f.buf[:n-f.vnet])
	if f.eth {
		// What the resolver's goroutine does: resolve what was asked
		// for, sending what was parked for it.
		for {
			select {
			case dst := <-f.ep.res.req:
				f.ep.res.resolve(dst)
				continue
			default:
			}
			break
		}
	}
}

// written returns the next datagram the endpoint wrote, or nil.
func (f *fuzzFD) written(t *testing.T) []byte {
	n, err := unix.Read(f.peer, f.out)
	if err == unix.EAGAIN {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return f.out[:n]
}

// fuzzInput describes an IP packet read with offload metadata: whether
// its transport checksum is valid once a partial one is completed as the
// kernel would.
type fuzzInput struct {
	ip          []byte
	csumValid   bool
	l4, version uint8
}

// inspectInput takes a copy of the IP packet the read carries (before the
// engine translates it in place) and says whether its checksum holds.
func (f *fuzzFD) inspectInput(data []byte) fuzzInput {
	if len(data) < f.vnet {
		return fuzzInput{}
	}
	var off xlat.Offload
	if f.vnet > 0 {
		tun.DecodeVnetHdr(data[:tun.VnetHdrLen], &off)
	}
	p := data[f.vnet:]
	if f.eth {
		if len(p) < ethHdrLen {
			return fuzzInput{}
		}
		p = p[ethHdrLen:]
		if off.Flags&xlat.OffloadNeedsCsum != 0 {
			off.CsumStart -= min(off.CsumStart, ethHdrLen)
		}
	}
	in := fuzzInput{ip: append([]byte(nil), p...)}
	if len(p) == 0 {
		return in
	}
	in.version = p[0] >> 4
	if off.Flags&xlat.OffloadNeedsCsum != 0 {
		at := int(off.CsumStart) + int(off.CsumOffset)
		if at+2 > len(in.ip) {
			return in
		}
		completeChecksum(in.ip, off)
	}
	proto, src, dst, seg, ok := simpleIP(in.ip)
	if !ok {
		return in
	}
	in.l4 = proto
	in.csumValid = transportChecksumOK(proto, src, dst, seg)
	return in
}

// completeChecksum completes the partial checksum of p that off
// describes (VIRTIO_NET_HDR_F_NEEDS_CSUM) as the kernel does
// (skb_checksum_help): a sum that folds to 0 is written as 0xffff, the
// same value in one's complement, since a UDP checksum of 0 means none.
func completeChecksum(p []byte, off xlat.Offload) {
	at := int(off.CsumStart) + int(off.CsumOffset)
	c := ^checksum.Checksum(p[off.CsumStart:], 0)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(p[at:], c)
}

// simpleIP splits an unfragmented IPv4 packet or an IPv6 packet without
// extension headers whose lengths are consistent.
func simpleIP(p []byte) (proto uint8, src, dst tcpip.Address, seg []byte, ok bool) {
	switch {
	case len(p) >= header.IPv4MinimumSize && p[0]>>4 == 4:
		ip := header.IPv4(p)
		hl := int(ip.HeaderLength())
		if hl < header.IPv4MinimumSize || int(ip.TotalLength()) != len(p) || hl > len(p) || ip.More() || ip.FragmentOffset() != 0 {
			return 0, src, dst, nil, false
		}
		return ip.Protocol(), ip.SourceAddress(), ip.DestinationAddress(), p[hl:], true
	case len(p) >= header.IPv6MinimumSize && p[0]>>4 == 6:
		ip := header.IPv6(p)
		if int(ip.PayloadLength())+header.IPv6MinimumSize != len(p) {
			return 0, src, dst, nil, false
		}
		switch ip.NextHeader() {
		case 6, 17, 58:
		default:
			return 0, src, dst, nil, false
		}
		return ip.NextHeader(), ip.SourceAddress(), ip.DestinationAddress(), p[header.IPv6MinimumSize:], true
	}
	return 0, src, dst, nil, false
}

// transportChecksumOK checks a whole TCP, UDP, ICMP or ICMPv6 segment's
// checksum (a UDP checksum of 0 is none, and counts as not valid).
func transportChecksumOK(proto uint8, src, dst tcpip.Address, seg []byte) bool {
	var sum uint16
	switch proto {
	case 6:
		if len(seg) < header.TCPMinimumSize {
			return false
		}
	case 17:
		if len(seg) < header.UDPMinimumSize || binary.BigEndian.Uint16(seg[6:]) == 0 {
			return false
		}
	case 1:
		return len(seg) >= 8 && checksum.Checksum(seg, 0) == 0xffff
	case 58:
		if len(seg) < 8 {
			return false
		}
	default:
		return false
	}
	sum = header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(proto), src, dst, uint16(len(seg)))
	return checksum.Checksum(seg, sum) == 0xffff
}

// checkWritten checks one datagram the endpoint wrote for in: what a
// kernel would accept behind the fd (virtio_net_hdr_to_skb's checks), no
// packet or segment longer than the MTU, consistent IP lengths and a valid
// IPv4 header checksum, and a valid transport checksum whenever the input
// had one.
func (f *fuzzFD) checkWritten(w []byte, in fuzzInput) error {
	if len(w) < f.vnet {
		return fmt.Errorf("%d bytes, shorter than the virtio_net_hdr", len(w))
	}
	var off xlat.Offload
	if f.vnet > 0 {
		tun.DecodeVnetHdr(w, &off)
		for _, b := range w[tun.VnetHdrLen:f.vnet] {
			if b != 0 {
				return fmt.Errorf("num_buffers %x", w[tun.VnetHdrLen:f.vnet])
			}
		}
	}
	p := w[f.vnet:]
	if f.eth {
		if len(p) < ethHdrLen {
			return fmt.Errorf("a runt frame of %d bytes", len(p))
		}
		et := binary.BigEndian.Uint16(p[12:])
		if [6]byte(p[6:12]) != tapMAC {
			return fmt.Errorf("frame from %x", p[6:12])
		}
		if off.Flags&xlat.OffloadNeedsCsum != 0 {
			if off.CsumStart < ethHdrLen {
				return fmt.Errorf("csum_start %d inside the Ethernet header", off.CsumStart)
			}
			off.CsumStart -= ethHdrLen
		}
		if off.HdrLen != 0 {
			if off.HdrLen < ethHdrLen {
				return fmt.Errorf("hdr_len %d inside the Ethernet header", off.HdrLen)
			}
			off.HdrLen -= ethHdrLen
		}
		p = p[ethHdrLen:]
		switch {
		case et == ethTypeARP:
			if off != (xlat.Offload{}) {
				return fmt.Errorf("ARP with offload %+v", off)
			}
			return nil
		case et == ethTypeIP6 && isND(p):
			if off != (xlat.Offload{}) {
				return fmt.Errorf("ND with offload %+v", off)
			}
			return nil
		case et == ethTypeIP4 && (len(p) == 0 || p[0]>>4 != 4), et == ethTypeIP6 && (len(p) == 0 || p[0]>>4 != 6):
			return fmt.Errorf("EtherType %#04x for % x", et, p[:min(len(p), 1)])
		case et != ethTypeIP4 && et != ethTypeIP6:
			return fmt.Errorf("EtherType %#04x", et)
		}
	}
	if err := tun.ValidateOffload(&off, len(p)); err != nil {
		return fmt.Errorf("offload %+v for %d bytes: %v", off, len(p), err)
	}
	var l3 int
	var proto uint8
	switch {
	case len(p) >= header.IPv4MinimumSize && p[0]>>4 == 4:
		ip := header.IPv4(p)
		l3 = int(ip.HeaderLength())
		if l3 < header.IPv4MinimumSize || l3 > len(p) || int(ip.TotalLength()) != len(p) {
			return fmt.Errorf("IPv4 header length %d, total %d, of %d bytes", l3, ip.TotalLength(), len(p))
		}
		if !ip.IsChecksumValid() {
			return fmt.Errorf("IPv4 header checksum")
		}
		proto = ip.Protocol()
	case len(p) >= header.IPv6MinimumSize && p[0]>>4 == 6:
		ip := header.IPv6(p)
		if int(ip.PayloadLength())+header.IPv6MinimumSize != len(p) {
			return fmt.Errorf("IPv6 payload length %d of %d bytes", ip.PayloadLength(), len(p))
		}
		l3, proto = header.IPv6MinimumSize, ip.NextHeader()
	default:
		return fmt.Errorf("not IP: % x", p[:min(len(p), 8)])
	}
	gso := off.GSOType &^ xlat.GSOECN
	if gso == xlat.GSONone {
		if len(p) > fuzzMTU {
			return fmt.Errorf("%d bytes, more than the MTU", len(p))
		}
	} else {
		// What virtio_net_hdr_to_skb checks besides ValidateOffload's
		// checks, and what segmenting to gso_size must give.
		thlen, csumOff := header.TCPMinimumSize, uint16(header.TCPChecksumOffset)
		want := map[uint8]uint8{xlat.GSOTCPv4: 4, xlat.GSOTCPv6: 6}[gso]
		if gso == xlat.GSOUDPL4 {
			thlen, csumOff, want = header.UDPMinimumSize, 6, p[0]>>4
		}
		if want != p[0]>>4 {
			return fmt.Errorf("GSO type %d for IPv%d", off.GSOType, p[0]>>4)
		}
		if wantProto := map[bool]uint8{true: 17, false: 6}[gso == xlat.GSOUDPL4]; proto != wantProto {
			return fmt.Errorf("GSO type %d for protocol %d", off.GSOType, proto)
		}
		if off.CsumOffset != csumOff || int(off.CsumStart) < l3 || int(off.CsumStart)+thlen > len(p) {
			return fmt.Errorf("GSO %d with csum_start %d, csum_offset %d in %d bytes (IP header %d)", off.GSOType, off.CsumStart, off.CsumOffset, len(p), l3)
		}
		seg := int(off.GSOSize)
		if gso == xlat.GSOUDPL4 {
			if len(p)-int(off.CsumStart)-thlen > seg*udpMaxSegments {
				return fmt.Errorf("USO of %d bytes in segments of %d: more than %d", len(p), seg, udpMaxSegments)
			}
			seg += int(off.CsumStart) + thlen
		} else {
			th := int(off.CsumStart)
			seg += th + int(p[th+12]>>4)*4
		}
		if seg > fuzzMTU && len(p) > seg {
			return fmt.Errorf("segments of %d bytes (%+v), more than the MTU", seg, off)
		}
	}
	if off.Flags&xlat.OffloadNeedsCsum != 0 {
		completeChecksum(p, off)
	}
	if pr, src, dst, seg, ok := simpleIP(p); ok && in.csumValid && pr == proto && (pr == 6 || pr == 17) {
		if !transportChecksumOK(pr, src, dst, seg) {
			return fmt.Errorf("transport checksum of a translated packet whose checksum was valid")
		}
	}
	return nil
}

// udpMaxSegments is the kernel's UDP_MAX_SEGMENTS: the most datagrams a
// USO super-packet may carry.
const udpMaxSegments = 128

// fuzzFDSeeds are reads of every kind: complete packets and super-packets
// through each framing, with and without partial checksums.
// ext6Packet puts an 8-byte IPv6 extension header of type nh in front of
// the transport header of the IPv6 packet p (hop-by-hop or destination
// options: one PadN; a Fragment header: an atomic fragment).
func ext6Packet(p []byte, nh byte) []byte {
	e := []byte{p[6], 0, 1, 4, 0, 0, 0, 0} // PadN, 4 bytes
	if nh == 44 {
		e = []byte{p[6], 0, 0, 0, 0, 0, 0, 7} // Fragment: offset 0, M 0, ID 7
	}
	q := append(append(append([]byte(nil), p[:40]...), e...), p[40:]...)
	q[6] = nh
	binary.BigEndian.PutUint16(q[4:], uint16(len(q)-40))
	return q
}

func fuzzFDSeeds() [][]byte {
	tso4 := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv4, HdrLen: 40, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}
	tso6 := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv6, HdrLen: 60, GSOSize: 1428, CsumStart: 40, CsumOffset: 16}
	uso6 := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOUDPL4, HdrLen: 48, GSOSize: 1400, CsumStart: 40, CsumOffset: 6}
	uso4 := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOUDPL4, HdrLen: 28, GSOSize: 1000, CsumStart: 20, CsumOffset: 6}
	uso4NoDF := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOUDPL4, HdrLen: 28, GSOSize: 1472, CsumStart: 20, CsumOffset: 6}
	partial6 := xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 40, CsumOffset: 6}
	valid := xlat.Offload{Flags: xlat.OffloadDataValid}
	v4 := func(proto tcpip.TransportProtocolNumber, n int, partial bool) []byte {
		return ipv4(proto, cli4, srv4, l4(proto, cli4, srv4, payload(n, 3), partial), header.IPv4FlagDontFragment, 0)
	}
	v6 := func(proto tcpip.TransportProtocolNumber, n int, partial bool) []byte {
		return ipv6(proto, srv6, cli6, l4(proto, srv6, cli6, payload(n, 5), partial))
	}
	var seeds [][]byte
	for _, vnet := range []int{0, tun.VnetHdrLen, maxVnetHdr} {
		for _, eth := range []bool{false, true} {
			mode := fuzzMode(vnet, eth)
			add := func(off xlat.Offload, pkt []byte) {
				if vnet == 0 && off != (xlat.Offload{}) {
					return
				}
				seeds = append(seeds, append([]byte{mode}, fuzzFrame(vnet, eth, off, pkt)...))
			}
			add(xlat.Offload{}, v4(header.UDPProtocolNumber, 100, false))
			add(xlat.Offload{}, v6(header.TCPProtocolNumber, 200, false))
			add(xlat.Offload{}, v4(header.ICMPv4ProtocolNumber, 56, false))
			add(valid, v6(header.UDPProtocolNumber, 64, false))
			add(partial6, v6(header.UDPProtocolNumber, 300, true))
			add(tso4, v4(header.TCPProtocolNumber, 10*1448, true))
			add(tso6, v6(header.TCPProtocolNumber, 7*1428+100, true))
			add(uso6, v6(header.UDPProtocolNumber, 5*1400+17, true))
			add(uso4, v4(header.UDPProtocolNumber, 3*1000, true))
			// Behind IPv6 extension headers, which the IPv4 packet leaves out.
			tso6ext, uso6ext := tso6, uso6
			tso6ext.CsumStart, uso6ext.CsumStart = 48, 48
			add(tso6ext, ext6Packet(v6(header.TCPProtocolNumber, 4*1428, true), 0))
			add(uso6ext, ext6Packet(v6(header.UDPProtocolNumber, 3*1400, true), 60))
			// Without DF, datagrams too big for the IPv6 side: cut apart
			// and fragmented.
			add(uso4NoDF, ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(3*1472+100, 3), true), 0, 0))
			// A packet too large for the MTU, without GSO.
			add(xlat.Offload{}, v6(header.UDPProtocolNumber, 2000, false))
			if eth {
				snm := solicitedNode(netip.MustParseAddr(clientInV6)).String()
				ns := ethHeader([6]byte{0x33, 0x33, 0xff, 0, 0, 0}, peerMAC, ethTypeIP6)
				ns = append(ns, ndPacket(header.ICMPv6NeighborSolicit, "fe80::2", snm, clientInV6, 255, 0, otherMAC[:])...)
				na := ethHeader(tapMAC, peerMAC, ethTypeIP6)
				na = append(na, ndPacket(header.ICMPv6NeighborAdvert, "fe80::1", "fe80::5eff:fe10:1", "fe80::1", 255, 0x60, peerMAC[:])...)
				seeds = append(seeds,
					append([]byte{mode}, append(make([]byte, vnet), ns...)...),
					append([]byte{mode}, append(make([]byte, vnet), na...)...),
					append([]byte{mode}, append(make([]byte, vnet), arpPacketFrame()...)...),
					append([]byte{mode}, append(make([]byte, vnet), tapMAC[:5]...)...), // a runt
				)
				vlan := fuzzFrame(vnet, eth, xlat.Offload{}, v4(header.UDPProtocolNumber, 20, false))
				vlan = append(vlan[:vnet+12], append([]byte{0x81, 0x00, 0, 7}, vlan[vnet+12:]...)...)
				seeds = append(seeds, append([]byte{mode}, vlan...))
			}
		}
	}
	return seeds
}

// fuzzFrame is vnetFrame, also for an fd without a virtio_net_hdr.
func fuzzFrame(vnet int, eth bool, off xlat.Offload, pkt []byte) []byte {
	if vnet > 0 {
		return vnetFrame(vnet, eth, off, pkt)
	}
	return vnetFrame(tun.VnetHdrLen, eth, off, pkt)[tun.VnetHdrLen:]
}

// arpPacketFrame is an ARP request for the mapped IPv4 address, broadcast.
func arpPacketFrame() []byte {
	b := ethHeader([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, peerMAC, ethTypeARP)
	return append(b, arpPacket(header.ARPRequest, peerMAC, "203.0.113.14", serverV4, [6]byte{})...)
}

// fuzzMode encodes an fd's framing in the first byte of a fuzz input.
func fuzzMode(vnet int, eth bool) byte {
	m := map[int]byte{0: 0, tun.VnetHdrLen: 1, maxVnetHdr: 2}[vnet]
	if eth {
		m |= 4
	}
	return m
}

// fuzzFDs are the endpoints of every framing, indexed by fuzzMode.
func fuzzFDs(tb testing.TB) map[byte]*fuzzFD {
	eng := fuzzEngine(tb)
	fds := map[byte]*fuzzFD{}
	for _, vnet := range []int{0, tun.VnetHdrLen, maxVnetHdr} {
		for _, eth := range []bool{false, true} {
			fds[fuzzMode(vnet, eth)] = newFuzzFD(tb, eng, vnet, eth)
		}
	}
	return fds
}

// fuzzFDOne reads data (its first byte the framing) and checks what the
// endpoint writes, and that it neither panicked (the Handler counts a
// recovered panic) nor failed a write it should not have made.
func fuzzFDOne(t *testing.T, fds map[byte]*fuzzFD, data []byte) int {
	if len(data) == 0 {
		return 0
	}
	f := fds[data[0]%8]
	if f == nil {
		f = fds[data[0]%3]
	}
	data = data[1:]
	in := f.inspectInput(data)
	before := f.h.Stats()
	counted := f.counted()
	f.read(data)
	f.h.QueueIdle(0) // the engine's counters, as an idle queue publishes them
	written := 0
	for w := f.written(t); w != nil; w = f.written(t) {
		written++
		if err := f.checkWritten(w, in); err != nil {
			t.Fatalf("vnet %d eth %v: written: %v\n in  %x\n out %x", f.vnet, f.eth, err, data, w)
		}
	}
	after := f.h.Stats()
	if after.Panics != before.Panics {
		t.Fatalf("vnet %d eth %v: the translator panicked on %x", f.vnet, f.eth, data)
	}
	if written == 0 && f.counted() == counted && !f.neighbourProtocol(data) {
		t.Fatalf("vnet %d eth %v: %x was lost without a count", f.vnet, f.eth, data)
	}
	return written
}

// neighbourProtocol reports an ARP or ND frame on a tap: requests and
// advertisements about other hosts' addresses are the segment's business,
// absorbed without a count (tapNeigh counts only malformed ones,
// conflicts, answers and learned entries).
func (f *fuzzFD) neighbourProtocol(data []byte) bool {
	if !f.eth || len(data) < f.vnet+ethHdrLen {
		return false
	}
	p := data[f.vnet:]
	switch binary.BigEndian.Uint16(p[12:]) {
	case ethTypeARP:
		return true
	case ethTypeIP6:
		return isND(p[ethHdrLen:])
	}
	return false
}

// counted sums every counter a read may end in besides a write: the
// link's (malformed frames, link chatter, bad headers, write errors), the
// engine's drops by reason and its rate-limited errors, the neighbour
// table's conflicts and learned entries.
func (f *fuzzFD) counted() uint64 {
	var s LinkStats
	f.ep.addStats(&s)
	h := f.h.Stats()
	n := s.NoNextHop + s.ReadErrors + s.ShortVnetHdr + s.InvalidVnetHdr + s.NotIP + s.LinkChatter +
		h.ReadErrors + h.WriteErrors + h.InvalidVnetHdr + h.NotIP + h.Panics + h.LinkChatter
	tot := f.eng.Totals()
	for d := range tot.Drops {
		for _, c := range tot.Drops[d] {
			n += c
		}
	}
	st := &f.ep.stats
	return n + tot.RateLimited + st.Conflicts.Load() + st.Learned.Load() + st.SendErrors.Load()
}

func FuzzFDRead(f *testing.F) {
	for _, s := range fuzzFDSeeds() {
		f.Add(s)
	}
	fds := fuzzFDs(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzFDOne(t, fds, data)
	})
}

// TestFuzzFDSeeds: the fuzz invariants hold on the seeds, and the seeds
// that must come out translated do, so the checks really run.
func TestFuzzFDSeeds(t *testing.T) {
	fds := fuzzFDs(t)
	total := 0
	for _, s := range fuzzFDSeeds() {
		total += fuzzFDOne(t, fds, s)
	}
	if total < 40 {
		t.Errorf("%d packets written for the seeds", total)
	}
}

// TestFDHostileOffloads: offload metadata that passes the range checks
// but lies about the packet, from a guest or VM manager, through every
// framing with a virtio_net_hdr: what is written must still be what the
// kernel accepts, with segments that fit the MTU and valid checksums (or
// nothing, the drop counted).
func TestFDHostileOffloads(t *testing.T) {
	fds := fuzzFDs(t)
	const mss = 1448
	tcp4 := func(n int) []byte {
		return ipv4(header.TCPProtocolNumber, cli4, srv4, l4(header.TCPProtocolNumber, cli4, srv4, payload(n, 9), true), header.IPv4FlagDontFragment, 0)
	}
	tcp6 := func(n int) []byte {
		return ipv6(header.TCPProtocolNumber, srv6, cli6, l4(header.TCPProtocolNumber, srv6, cli6, payload(n, 9), true))
	}
	udp4 := func(n int) []byte {
		return ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(n, 9), true), header.IPv4FlagDontFragment, 0)
	}
	udp6 := func(n int) []byte {
		return ipv6(header.UDPProtocolNumber, srv6, cli6, l4(header.UDPProtocolNumber, srv6, cli6, payload(n, 9), true))
	}
	udp4NoDF := func(n int) []byte {
		return ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(n, 9), true), 0, 0)
	}
	tcp4NoDF := func(n int) []byte {
		return ipv4(header.TCPProtocolNumber, cli4, srv4, l4(header.TCPProtocolNumber, cli4, srv4, payload(n, 9), true), 0, 0)
	}
	tcp4Frag := func(n int) []byte {
		return ipv4(header.TCPProtocolNumber, cli4, srv4, l4(header.TCPProtocolNumber, cli4, srv4, payload(n, 9), true), 0, 100)
	}
	tcp4Doff := func(doff int) []byte {
		p := tcp4(20)
		p[20+12] = byte(doff/4) << 4
		return p[:60]
	}
	const nc = uint8(xlat.OffloadNeedsCsum)
	for _, tc := range []struct {
		name string
		off  xlat.Offload
		pkt  []byte
		drop bool // counted in InvalidVnetHdr, nothing written
		// written: how many packets the read must become (0: any number
		// but none, unless drop).
		written int
	}{
		{"TSO4 csum_offset of UDP", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv4, GSOSize: mss, CsumStart: 20, CsumOffset: 6}, tcp4(5 * mss), true, 0},
		{"TSO4 csum_start in the IP header", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv4, GSOSize: mss, CsumStart: 0, CsumOffset: 16}, tcp4(5 * mss), true, 0},
		{"TSO4 csum_start past the TCP header", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv4, GSOSize: mss, CsumStart: 60, CsumOffset: 16}, tcp4(5 * mss), true, 0},
		{"TSO6 csum_start in the IP header", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv6, GSOSize: mss, CsumStart: 8, CsumOffset: 16}, tcp6(5 * mss), true, 0},
		{"TSO4 gso_size above the MTU", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv4, GSOSize: 9000, CsumStart: 20, CsumOffset: 16}, tcp4(30000), false, 0},
		{"TSO6 gso_size above the MTU", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv6, GSOSize: 9000, CsumStart: 40, CsumOffset: 16}, tcp6(30000), false, 0},
		{"TSO4 on UDP", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv4, GSOSize: mss, CsumStart: 20, CsumOffset: 16}, udp4(5 * mss), true, 0},
		{"TSO6 type on IPv4", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv6, GSOSize: mss, CsumStart: 20, CsumOffset: 16}, tcp4(5 * mss), true, 0},
		{"TSO4 type on IPv6", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv4, GSOSize: mss, CsumStart: 40, CsumOffset: 16}, tcp6(5 * mss), true, 0},
		{"USO on TCP", xlat.Offload{Flags: nc, GSOType: xlat.GSOUDPL4, GSOSize: mss, CsumStart: 20, CsumOffset: 16}, tcp4(5 * mss), true, 0},
		{"USO4 csum_offset of TCP", xlat.Offload{Flags: nc, GSOType: xlat.GSOUDPL4, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}, udp4(5000), true, 0},
		{"USO6 of 1-byte datagrams", xlat.Offload{Flags: nc, GSOType: xlat.GSOUDPL4, GSOSize: 1, CsumStart: 40, CsumOffset: 6}, udp6(5000), true, 0},
		{"USO4 of 1-byte datagrams", xlat.Offload{Flags: nc, GSOType: xlat.GSOUDPL4, GSOSize: 1, CsumStart: 20, CsumOffset: 6}, udp4(5000), true, 0},
		{"USO6 gso_size not dividing, last short", xlat.Offload{Flags: nc, GSOType: xlat.GSOUDPL4, GSOSize: 1400, CsumStart: 40, CsumOffset: 6}, udp6(46*1400 + 3), false, 0},
		{"USO6 of 64 KiB", xlat.Offload{Flags: nc, GSOType: xlat.GSOUDPL4, GSOSize: 1232, CsumStart: 40, CsumOffset: 6}, udp6(65535 - 48), false, 0},
		{"USO4 of 64 KiB", xlat.Offload{Flags: nc, GSOType: xlat.GSOUDPL4, GSOSize: 1252, CsumStart: 20, CsumOffset: 6}, udp4(65535 - 28), false, 0},
		{"USO4 whose datagrams grow past the MTU", xlat.Offload{Flags: nc, GSOType: xlat.GSOUDPL4, GSOSize: 1472, CsumStart: 20, CsumOffset: 6}, udp4(4 * 1472), false, 0},
		{"TSO4 with a fragment offset", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv4, GSOSize: mss, CsumStart: 20, CsumOffset: 16}, tcp4Frag(5 * mss), true, 0},
		{"TSO4 with a TCP header past the end", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv4, GSOSize: mss, CsumStart: 20, CsumOffset: 16}, tcp4Doff(60), true, 0},
		// RFC 7915 section 4: each datagram is cut from the super-packet
		// and leaves as IPv6 fragments, as it would have alone
		// (xlat.splitUSO46), checked like every write: four datagrams
		// in two fragments each, the short last one whole.
		{"USO4 without DF whose datagrams grow past the MTU", xlat.Offload{Flags: nc, GSOType: xlat.GSOUDPL4, GSOSize: 1472, CsumStart: 20, CsumOffset: 6}, udp4NoDF(4*1472 + 100), false, 9},
		{"USO4 without DF, 64 KiB", xlat.Offload{Flags: nc, GSOType: xlat.GSOUDPL4, GSOSize: 1400, CsumStart: 20, CsumOffset: 6}, udp4NoDF(65535 - 28), false, 0},
		{"TSO4 without DF, gso_size of the MTU", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv4, GSOSize: 1460, CsumStart: 20, CsumOffset: 16}, tcp4NoDF(20 * 1460), false, 0},
		{"TSO4 not larger than gso_size", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv4, GSOSize: mss, CsumStart: 20, CsumOffset: 16}, tcp4(100), false, 0},
		{"partial UDP4 checksum at the IP header", xlat.Offload{Flags: nc, CsumStart: 0, CsumOffset: 10}, udp4(200), true, 0},
		{"partial UDP6 checksum in the addresses", xlat.Offload{Flags: nc, CsumStart: 8, CsumOffset: 0}, udp6(200), true, 0},
		{"partial TCP4 csum_offset of UDP", xlat.Offload{Flags: nc, CsumStart: 20, CsumOffset: 6}, tcp4(200), true, 0},
		// RFC 7915 section 5.1: the extension headers are left out of the
		// IPv4 packet; the checksum and segmentation offsets follow the
		// transport header to just behind the IPv4 header.
		{"TSO6 behind a hop-by-hop header", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv6, GSOSize: mss, CsumStart: 48, CsumOffset: 16}, ext6Packet(tcp6(5*mss), 0), false, 0},
		{"TSO6 behind destination options", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv6, GSOSize: mss, CsumStart: 48, CsumOffset: 16}, ext6Packet(tcp6(5*mss), 60), false, 0},
		{"USO6 behind a hop-by-hop header", xlat.Offload{Flags: nc, GSOType: xlat.GSOUDPL4, GSOSize: 1232, CsumStart: 48, CsumOffset: 6}, ext6Packet(udp6(5*1232), 0), false, 0},
		{"partial UDP6 checksum behind a hop-by-hop header", xlat.Offload{Flags: nc, CsumStart: 48, CsumOffset: 6}, ext6Packet(udp6(200), 0), false, 0},
		{"TSO6 csum_start at the hop-by-hop header", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv6, GSOSize: mss, CsumStart: 40, CsumOffset: 16}, ext6Packet(tcp6(5*mss), 0), true, 0},
		{"TSO6 of an atomic fragment", xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv6, GSOSize: mss, CsumStart: 48, CsumOffset: 16}, ext6Packet(tcp6(5*mss), 44), true, 0},
	} {
		for _, vnet := range []int{tun.VnetHdrLen, maxVnetHdr} {
			for _, eth := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/vnet%d/eth%v", tc.name, vnet, eth), func(t *testing.T) {
					f := fds[fuzzMode(vnet, eth)]
					before := f.ep.invalidVnetHdr.Load()
					wbefore := f.h.Stats().WriteErrors
					n := fuzzFDOne(t, fds, append([]byte{fuzzMode(vnet, eth)}, fuzzFrame(vnet, eth, tc.off, tc.pkt)...))
					invalid, werrs := f.ep.invalidVnetHdr.Load()-before, f.h.Stats().WriteErrors-wbefore
					switch {
					case tc.written != 0 && n != tc.written:
						t.Errorf("%d written, want %d", n, tc.written)
					case werrs != 0 || (tc.drop && (n != 0 || invalid != 1)) || (!tc.drop && (n == 0 || invalid != 0)):
						t.Errorf("%d written, %d invalid, %d write errors; want a drop: %v", n, invalid, werrs, tc.drop)
					}
				})
			}
		}
	}
}

// TestFDHostileReadAllocs: dropping hostile reads costs no allocation: a
// virtio_net_hdr the kernel would refuse, one that does not fit its
// packet, a runt, a VLAN-tagged frame, an unknown EtherType, a frame
// longer than the MTU, a truncated IP header, for every framing that can
// carry it.
func TestFDHostileReadAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	fds := fuzzFDs(t)
	const nc = uint8(xlat.OffloadNeedsCsum)
	udp4 := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(100, 2), true), header.IPv4FlagDontFragment, 0)
	big := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(3000, 2), false), 0, 0)
	for _, vnet := range []int{0, tun.VnetHdrLen, maxVnetHdr} {
		for _, eth := range []bool{false, true} {
			f := fds[fuzzMode(vnet, eth)]
			reads := map[string][]byte{
				"longer than the MTU": fuzzFrame(vnet, eth, xlat.Offload{}, big),
				"truncated IP header": fuzzFrame(vnet, eth, xlat.Offload{}, udp4[:12]),
			}
			if vnet > 0 {
				reads["unknown flag"] = fuzzFrame(vnet, eth, xlat.Offload{Flags: 0x10}, udp4)
				reads["checksum in the IP header"] = fuzzFrame(vnet, eth, xlat.Offload{Flags: nc, CsumStart: 0, CsumOffset: 10}, udp4)
				reads["TSO on UDP"] = fuzzFrame(vnet, eth, xlat.Offload{Flags: nc, GSOType: xlat.GSOTCPv4, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}, udp4)
				reads["shorter than the header"] = make([]byte, vnet-1)
			}
			if eth {
				vlan := fuzzFrame(vnet, eth, xlat.Offload{}, udp4)
				reads["VLAN-tagged"] = append(vlan[:vnet+12:vnet+12], append([]byte{0x81, 0x00, 0, 7}, vlan[vnet+12:]...)...)
				other := fuzzFrame(vnet, eth, xlat.Offload{}, udp4)
				other[vnet+12], other[vnet+13] = 0x88, 0xb5
				reads["unknown EtherType"] = other
				reads["runt"] = append(make([]byte, vnet), tapMAC[:5]...)
			}
			for name, data := range reads {
				before := f.counted()
				allocs := testing.AllocsPerRun(50, func() {
					f.read(data)
					for f.written(t) != nil {
						t.Errorf("%s: written", name)
					}
				})
				if allocs != 0 {
					t.Errorf("vnet %d eth %v, %s: %v allocations per read", vnet, eth, name, allocs)
				}
				if f.counted() == before {
					t.Errorf("vnet %d eth %v, %s: dropped without a count", vnet, eth, name)
				}
			}
		}
	}
}
