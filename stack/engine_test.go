package stack

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/stack/xlat"
)

// These tests run the real engine behind a queue worker over a socketpair:
// bytes in with a virtio_net_hdr, bytes out, every packet kind checked
// independently of the engine (gVisor's header package parses, checksums
// are recomputed from scratch).

var (
	cli4 = tcpip.AddrFrom4(netip.MustParseAddr(clientV4).As4())
	srv4 = tcpip.AddrFrom4(netip.MustParseAddr(serverV4).As4())
	cli6 = tcpip.AddrFrom16(netip.MustParseAddr(clientInV6).As16())
	srv6 = tcpip.AddrFrom16(netip.MustParseAddr(serverV6).As16())
)

const (
	ttl        = 61
	tcpHdrLen  = header.TCPMinimumSize
	udpHdrLen  = header.UDPMinimumSize
	icmpHdrLen = 8
)

func payload(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*13) ^ seed
	}
	return p
}

// l4 builds a TCP, UDP or ICMP segment carrying data. For TCP and UDP the
// checksum is complete, or with partial set it is what a kernel hands over
// with NEEDS_CSUM: the folded pseudo-header sum, to be completed over
// csum_start..end.
func l4(proto tcpip.TransportProtocolNumber, src, dst tcpip.Address, data []byte, partial bool) []byte {
	var seg []byte
	var csumAt int
	switch proto {
	case header.TCPProtocolNumber:
		seg = make([]byte, tcpHdrLen+len(data))
		header.TCP(seg).Encode(&header.TCPFields{SrcPort: 40000, DstPort: 80, SeqNum: 1000, AckNum: 2000,
			DataOffset: tcpHdrLen, Flags: header.TCPFlagAck | header.TCPFlagPsh, WindowSize: 512})
		csumAt = header.TCPChecksumOffset
	case header.UDPProtocolNumber:
		seg = make([]byte, udpHdrLen+len(data))
		header.UDP(seg).Encode(&header.UDPFields{SrcPort: 40000, DstPort: 53, Length: uint16(len(seg))})
		csumAt = 6
	case header.ICMPv4ProtocolNumber, header.ICMPv6ProtocolNumber:
		seg = make([]byte, icmpHdrLen+len(data))
		seg[0] = byte(header.ICMPv4Echo)
		if proto == header.ICMPv6ProtocolNumber {
			seg[0] = byte(header.ICMPv6EchoRequest)
		}
		binary.BigEndian.PutUint16(seg[4:], 0x1234) // ident
		binary.BigEndian.PutUint16(seg[6:], 7)      // sequence
		csumAt = 2
	}
	copy(seg[len(seg)-len(data):], data)
	var sum uint16
	if proto != header.ICMPv4ProtocolNumber {
		sum = header.PseudoHeaderChecksum(proto, src, dst, uint16(len(seg)))
	}
	if partial {
		binary.BigEndian.PutUint16(seg[csumAt:], sum)
	} else {
		binary.BigEndian.PutUint16(seg[csumAt:], ^checksum.Checksum(seg, sum))
	}
	return seg
}

func ipv4(proto tcpip.TransportProtocolNumber, src, dst tcpip.Address, seg []byte, flags uint8, fragOff uint16) []byte {
	p := make([]byte, header.IPv4MinimumSize+len(seg))
	ip := header.IPv4(p)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(p)), ID: 0x4242, Flags: flags, FragmentOffset: fragOff,
		TTL: ttl, Protocol: uint8(proto), SrcAddr: src, DstAddr: dst})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(p[header.IPv4MinimumSize:], seg)
	return p
}

func ipv6(proto tcpip.TransportProtocolNumber, src, dst tcpip.Address, seg []byte) []byte {
	p := make([]byte, header.IPv6MinimumSize+len(seg))
	header.IPv6(p).Encode(&header.IPv6Fields{PayloadLength: uint16(len(seg)), TransportProtocol: proto,
		HopLimit: ttl, SrcAddr: src, DstAddr: dst})
	copy(p[header.IPv6MinimumSize:], seg)
	return p
}

// parsed is one output packet taken apart.
type parsed struct {
	v6       bool
	src, dst tcpip.Address
	proto    tcpip.TransportProtocolNumber
	hop      uint8
	seg      []byte // transport header and data (of a fragment: its part)
	frag     header.IPv6Fragment
}

// parse checks the IP header of an output packet and splits it.
func parse(t *testing.T, pkt []byte) parsed {
	t.Helper()
	switch pkt[0] >> 4 {
	case 4:
		ip := header.IPv4(pkt)
		if !ip.IsValid(len(pkt)) || int(ip.TotalLength()) != len(pkt) || !ip.IsChecksumValid() {
			t.Fatalf("bad IPv4 header: % x", pkt[:min(len(pkt), 20)])
		}
		return parsed{src: ip.SourceAddress(), dst: ip.DestinationAddress(), proto: ip.TransportProtocol(),
			hop: ip.TTL(), seg: pkt[ip.HeaderLength():]}
	case 6:
		ip := header.IPv6(pkt)
		if !ip.IsValid(len(pkt)) || int(ip.PayloadLength())+header.IPv6MinimumSize != len(pkt) {
			t.Fatalf("bad IPv6 header: % x", pkt[:min(len(pkt), 40)])
		}
		p := parsed{v6: true, src: ip.SourceAddress(), dst: ip.DestinationAddress(),
			proto: tcpip.TransportProtocolNumber(ip.NextHeader()), hop: ip.HopLimit(), seg: pkt[header.IPv6MinimumSize:]}
		if p.proto == header.IPv6FragmentHeader {
			p.frag = header.IPv6Fragment(p.seg[:header.IPv6FragmentHeaderSize])
			p.proto = tcpip.TransportProtocolNumber(p.frag.NextHeader())
			p.seg = p.seg[header.IPv6FragmentHeaderSize:]
		}
		return p
	}
	t.Fatalf("not an IP packet: % x", pkt[:min(len(pkt), 8)])
	return parsed{}
}

// complete finishes a partial checksum the way the kernel or a NIC does:
// sum from csum_start to the end and store the complement at csum_offset.
func complete(pkt []byte, off xlat.Offload) {
	if off.Flags&xlat.OffloadNeedsCsum == 0 {
		return
	}
	at := int(off.CsumStart) + int(off.CsumOffset)
	binary.BigEndian.PutUint16(pkt[at:], ^checksum.Checksum(pkt[off.CsumStart:], 0))
}

// checksumOK recomputes the transport checksum of a whole segment from
// scratch.
func checksumOK(p parsed, seg []byte) bool {
	var sum uint16
	if p.proto != header.ICMPv4ProtocolNumber {
		sum = header.PseudoHeaderChecksum(p.proto, p.src, p.dst, uint16(len(seg)))
	}
	return checksum.Checksum(seg, sum) == 0xffff
}

// translateCase is one packet kind that the translation tests send through
// a data path with the real engine.
type translateCase struct {
	name      string
	v6in      bool
	proto     tcpip.TransportProtocolNumber
	size      int
	partial   bool
	off       xlat.Offload
	wantProto tcpip.TransportProtocolNumber
	wantGSO   uint8
	wantType  byte // ICMP type after translation
}

// input builds the case's packet and the addresses its translation must
// have. A TCP super-packet with the ECN GSO bit gets CWR in its header, as
// the kernel only sets that bit then (tcp_ecn_send, tcp_gro_complete).
func (tc *translateCase) input() (in []byte, wantSrc, wantDst tcpip.Address) {
	data := payload(tc.size, byte(len(tc.name)))
	if tc.v6in {
		in = ipv6(tc.proto, srv6, cli6, l4(tc.proto, srv6, cli6, data, tc.partial))
		wantSrc, wantDst = srv4, cli4
	} else {
		in = ipv4(tc.proto, cli4, srv4, l4(tc.proto, cli4, srv4, data, tc.partial), header.IPv4FlagDontFragment, 0)
		wantSrc, wantDst = cli6, srv6
	}
	if tc.off.GSOType&xlat.GSOECN != 0 {
		in[int(tc.off.CsumStart)+13] |= byte(header.TCPFlagCwr) // covered by the partial checksum's completion
	}
	return in, wantSrc, wantDst
}

func translateCases() []translateCase {
	const (
		tcp   = header.TCPProtocolNumber
		udp   = header.UDPProtocolNumber
		icmp  = header.ICMPv4ProtocolNumber
		icmp6 = header.ICMPv6ProtocolNumber
	)
	return []translateCase{
		{name: "tcp 4to6", proto: tcp, size: 1000, wantProto: tcp},
		{name: "udp 4to6", proto: udp, size: 1000, wantProto: udp},
		{name: "icmp echo 4to6", proto: icmp, size: 56, wantProto: icmp6, wantType: byte(header.ICMPv6EchoRequest)},
		{name: "tcp 6to4", v6in: true, proto: tcp, size: 1000, wantProto: tcp},
		{name: "udp 6to4", v6in: true, proto: udp, size: 1000, wantProto: udp},
		{name: "icmp echo 6to4", v6in: true, proto: icmp6, size: 56, wantProto: icmp, wantType: byte(header.ICMPv4Echo)},
		{name: "tcp partial checksum 4to6", proto: tcp, size: 1000, partial: true,
			off: xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 20, CsumOffset: 16}, wantProto: tcp},
		{name: "udp partial checksum 6to4", v6in: true, proto: udp, size: 1000, partial: true,
			off: xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 40, CsumOffset: 6}, wantProto: udp},
		{name: "tso4 super-packet", proto: tcp, size: 44 * 1448, partial: true,
			off:       xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv4, HdrLen: 40, GSOSize: 1448, CsumStart: 20, CsumOffset: 16},
			wantProto: tcp, wantGSO: xlat.GSOTCPv6},
		{name: "tso6 super-packet with ECN", v6in: true, proto: tcp, size: 44 * 1440, partial: true,
			off:       xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv6 | xlat.GSOECN, HdrLen: 60, GSOSize: 1440, CsumStart: 40, CsumOffset: 16},
			wantProto: tcp, wantGSO: xlat.GSOTCPv4 | xlat.GSOECN},
		{name: "uso4 super-packet", proto: udp, size: 40 * 1000, partial: true,
			off:       xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOUDPL4, HdrLen: 28, GSOSize: 1000, CsumStart: 20, CsumOffset: 6},
			wantProto: udp, wantGSO: xlat.GSOUDPL4},
		{name: "uso6 super-packet", v6in: true, proto: udp, size: 40 * 1000, partial: true,
			off:       xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOUDPL4, HdrLen: 48, GSOSize: 1000, CsumStart: 40, CsumOffset: 6},
			wantProto: udp, wantGSO: xlat.GSOUDPL4},
	}
}

// queueFunc starts a data path with the real engine over a socketpair (see
// engineQueue).
type queueFunc func(t *testing.T) (*Datapath, *xlat.Engine, func(xlat.Offload, []byte), func() (xlat.Offload, []byte))

func TestEngineTranslatesEveryKind(t *testing.T) {
	for _, tc := range translateCases() {
		t.Run(tc.name, func(t *testing.T) {
			testTranslate(t, engineQueue, tc)
		})
	}
}

// testTranslate sends tc's packet through the data path that queue starts
// and checks the translation, its offload metadata and, after completing a
// partial checksum as the kernel would, the checksum against a full
// recomputation.
func testTranslate(t *testing.T, queue queueFunc, tc translateCase) {
	const udp = header.UDPProtocolNumber
	_, _, send, readFn := queue(t)
	data := payload(tc.size, byte(len(tc.name)))
	in, wantSrc, wantDst := tc.input()
	send(tc.off, in)
	off, out := readFn()
	p := parse(t, out)
	if p.v6 == tc.v6in || p.src != wantSrc || p.dst != wantDst || p.proto != tc.wantProto || p.hop != ttl {
		t.Fatalf("got IPv6=%v %v -> %v proto %d hop %d", p.v6, p.src, p.dst, p.proto, p.hop)
	}
	if tc.off.Flags&xlat.OffloadNeedsCsum != 0 {
		if off.Flags&xlat.OffloadNeedsCsum == 0 || int(off.CsumStart) != len(out)-len(p.seg) || off.CsumOffset != tc.off.CsumOffset {
			t.Errorf("offload %+v does not point at the translated checksum", off)
		}
	}
	if tc.wantGSO != 0 {
		if off.GSOType != tc.wantGSO || off.GSOSize != tc.off.GSOSize {
			t.Errorf("GSO type %#x size %d, want %#x %d", off.GSOType, off.GSOSize, tc.wantGSO, tc.off.GSOSize)
		}
		hdrs := len(out) - len(p.seg) + tcpHdrLen
		if tc.proto == udp {
			hdrs = len(out) - len(p.seg) + udpHdrLen
		}
		if int(off.HdrLen) != hdrs {
			t.Errorf("hdr_len %d, want %d", off.HdrLen, hdrs)
		}
	} else if off.GSOType != xlat.GSONone {
		t.Errorf("GSO type %#x on a plain packet", off.GSOType)
	}
	complete(out, off)
	if !checksumOK(p, p.seg) {
		t.Errorf("transport checksum wrong after completion (offload %+v)", off)
	}
	if !bytes.Equal(p.seg[len(p.seg)-len(data):], data) {
		t.Error("payload changed")
	}
	if tc.wantType != 0 && p.seg[0] != tc.wantType {
		t.Errorf("ICMP type %d, want %d", p.seg[0], tc.wantType)
	}
}

// TestEngineICMPError: the server's Port Unreachable becomes an ICMPv4
// Port Unreachable about the client's IPv4 datagram (RFC 7915 5.2, 5.3).
func TestEngineICMPError(t *testing.T) {
	_, _, send, readFn := engineQueue(t)
	quoted := ipv6(header.UDPProtocolNumber, cli6, srv6, l4(header.UDPProtocolNumber, cli6, srv6, payload(100, 1), false))
	msg := make([]byte, header.ICMPv6MinimumSize+len(quoted))
	ic := header.ICMPv6(msg)
	ic.SetType(header.ICMPv6DstUnreachable)
	ic.SetCode(header.ICMPv6PortUnreachable)
	copy(msg[header.ICMPv6MinimumSize:], quoted)
	ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: srv6, Dst: cli6}))
	send(xlat.Offload{}, ipv6(header.ICMPv6ProtocolNumber, srv6, cli6, msg))

	_, out := readFn()
	p := parse(t, out)
	if p.v6 || p.src != srv4 || p.dst != cli4 || p.proto != header.ICMPv4ProtocolNumber {
		t.Fatalf("got %v -> %v proto %d", p.src, p.dst, p.proto)
	}
	if p.seg[0] != byte(header.ICMPv4DstUnreachable) || p.seg[1] != byte(header.ICMPv4PortUnreachable) {
		t.Errorf("ICMP type %d code %d, want 3/3", p.seg[0], p.seg[1])
	}
	if !checksumOK(p, p.seg) {
		t.Error("ICMPv4 checksum wrong")
	}
	inner := parse(t, p.seg[header.ICMPv4MinimumSize:])
	if inner.src != cli4 || inner.dst != srv4 || inner.proto != header.UDPProtocolNumber {
		t.Errorf("quoted packet %v -> %v proto %d", inner.src, inner.dst, inner.proto)
	}
	if !checksumOK(inner, inner.seg) {
		t.Error("quoted UDP checksum not translated")
	}
}

// TestEngineFragments: a DF=0 IPv4 datagram too large for the lowest IPv6
// MTU leaves as IPv6 fragments the engine emits (RFC 7915 4.1); an IPv4
// fragment becomes an IPv6 fragment.
func TestEngineFragments(t *testing.T) {
	d, _, send, readFn := engineQueue(t)
	data := payload(1472, 9)
	seg := l4(header.UDPProtocolNumber, cli4, srv4, data, false)
	send(xlat.Offload{}, ipv4(header.UDPProtocolNumber, cli4, srv4, seg, 0, 0))
	var reassembled []byte
	var last parsed
	for more := true; more; {
		_, out := readFn()
		if len(out) > 1280 {
			t.Errorf("fragment of %d bytes exceeds the lowest IPv6 MTU", len(out))
		}
		p := parse(t, out)
		if p.frag == nil || p.proto != header.UDPProtocolNumber || p.src != cli6 || p.dst != srv6 {
			t.Fatalf("not a UDP fragment %v -> %v: % x", p.src, p.dst, out[:48])
		}
		if int(p.frag.FragmentOffset())*8 != len(reassembled) {
			t.Fatalf("fragment at %d, have %d bytes", int(p.frag.FragmentOffset())*8, len(reassembled))
		}
		reassembled = append(reassembled, p.seg...)
		more = p.frag.More()
		last = p
	}
	if !checksumOK(last, reassembled) || !bytes.Equal(reassembled[udpHdrLen:], data) {
		t.Error("reassembled datagram differs or has a wrong checksum")
	}

	// The first fragment of an IPv4 datagram: MF set, offset 0. Only the
	// UDP checksum may change (it covers the pseudo-header).
	first := l4(header.UDPProtocolNumber, cli4, srv4, payload(400, 3), false)
	send(xlat.Offload{}, ipv4(header.UDPProtocolNumber, cli4, srv4, first[:208], header.IPv4FlagMoreFragments, 0))
	_, out := readFn()
	p := parse(t, out)
	if p.frag == nil || !p.frag.More() || p.frag.FragmentOffset() != 0 || p.frag.ID() != 0x4242 ||
		len(p.seg) != 208 || !bytes.Equal(p.seg[:6], first[:6]) || !bytes.Equal(p.seg[8:], first[8:208]) {
		t.Errorf("IPv4 first fragment became % x", out[:min(len(out), 56)])
	}
	if s := d.LinkStats(); s.WriteErrors != 0 || s.Reads != 2 {
		t.Errorf("link stats %+v", s)
	}
}

// TestEngineDropsUnmapped: nothing leaves for a destination without an EAM
// entry, and the engine counts the drop.
func TestEngineDropsUnmapped(t *testing.T) {
	_, eng, send, _ := engineQueue(t)
	dst := tcpip.AddrFrom4([4]byte{198, 51, 100, 99})
	send(xlat.Offload{}, ipv4(header.UDPProtocolNumber, cli4, dst, l4(header.UDPProtocolNumber, cli4, dst, payload(10, 0), false), 0, 0))
	waitFor(t, "the drop to be counted", func() bool {
		return eng.Totals().Drops[xlat.Dir46][xlat.ReasonDstUnmapped] == 1
	})
}

// TestServeFDEngine runs the fdbased path with the real engine: a bare
// IPv4 packet in, its IPv6 translation out; a large DF=0 datagram out as
// IPv6 fragments written through Handler.Emit.
func TestServeFDEngine(t *testing.T) {
	conn, peer := seqpacketPair(t)
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	ctx, cancel := context.WithCancel(context.Background())
	d, err := ServeFDQueues(ctx, testEngine(t), []int{fd}, 1500, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		if err := d.Wait(); err != nil {
			t.Error(err)
		}
	}()
	read := func() parsed {
		buf := make([]byte, 70000)
		peer.SetReadDeadline(timeIn(t))
		n, err := peer.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return parse(t, buf[:n])
	}

	data := payload(500, 5)
	peer.Write(ipv4(header.TCPProtocolNumber, cli4, srv4, l4(header.TCPProtocolNumber, cli4, srv4, data, false), header.IPv4FlagDontFragment, 0))
	p := read()
	if !p.v6 || p.src != cli6 || p.dst != srv6 || !checksumOK(p, p.seg) || !bytes.Equal(p.seg[tcpHdrLen:], data) {
		t.Errorf("TCP translated to %v -> %v proto %d", p.src, p.dst, p.proto)
	}

	peer.Write(ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(1472, 6), false), 0, 0))
	n := 0
	for more := true; more; n++ {
		p = read()
		if p.frag == nil {
			t.Fatal("large DF=0 datagram not fragmented")
		}
		more = p.frag.More()
	}
	waitFor(t, "writes to be counted", func() bool { return d.LinkStats().Writes == uint64(1+n) })
	if s := d.LinkStats(); s.Reads != 2 || s.WriteErrors != 0 {
		t.Errorf("link stats %+v", s)
	}
}
