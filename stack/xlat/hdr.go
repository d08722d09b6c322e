package xlat

import (
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Field offsets of the headers the engine reads and writes: IPv4 (RFC 791
// section 3.1), IPv6 (RFC 8200 section 3), its Fragment header (RFC 8200
// section 4.5), TCP (RFC 9293 section 3.1), UDP (RFC 768) and the first
// word of every ICMP message (RFC 792, RFC 4443 section 2.1). gVisor's
// header package exports the sizes but keeps most offsets private.
const (
	ip4TOS      = 1
	ip4TotalLen = 2
	ip4ID       = 4
	ip4FlagsFO  = 6
	ip4TTL      = 8
	ip4Proto    = 9
	ip4Checksum = 10
	ip4Src      = 12
	ip4Dst      = 16
	ip4Size     = header.IPv4MinimumSize

	ip4DF     = 0x4000 // Don't Fragment, in the Flags and Fragment Offset word
	ip4MF     = 0x2000 // More Fragments
	ip4FOMask = 0x1fff // Fragment Offset, in 8-byte units

	ip6PayloadLen = header.IPv6PayloadLenOffset
	ip6NextHeader = header.IPv6NextHeaderOffset
	ip6HopLimit   = 7
	ip6Src        = 8
	ip6Dst        = 24
	ip6Size       = header.IPv6FixedHeaderSize
	frag6Size     = header.IPv6FragmentHeaderSize

	tcpChecksum = 16
	tcpMinSize  = header.TCPMinimumSize
	udpLen      = 4
	udpChecksum = 6
	udpSize     = header.UDPMinimumSize
	// pseudoCsumAt is where DCCP (RFC 4340 section 5.1) and UDP-Lite
	// (RFC 3828 section 3.1) keep their checksum, which covers the
	// pseudo-header as TCP's does.
	pseudoCsumAt = 6

	icmpChecksum = 2
	icmpSize     = header.ICMPv4MinimumSize // the same 8 bytes in ICMPv6
)

// fragment holds the fields RFC 7915 sections 4.1 and 5.1.1 carry between
// the IPv4 header and an IPv6 Fragment header.
type fragment struct {
	offset uint16 // in 8-byte units
	more   bool
	id     uint32
}

// putIPv6 writes the IPv6 header of RFC 7915 section 4.1 (outer packets)
// and section 4.3 (packets quoted in ICMP errors) at h: 40 bytes, or 48
// with a Fragment header carrying f. tos is the IPv4 Type of Service,
// copied into the Traffic Class (flow label 0); ulen is the length of
// what follows the header(s); nh is the upper-layer protocol.
func putIPv6(h []byte, tos, hlim, nh byte, ulen int, src, dst *[16]byte, f fragment) {
	// Whole words and arrays: one bounds check, few stores.
	fixed := (*[ip6Size]byte)(h)
	put32(fixed[:], 6<<28|uint32(tos)<<20)
	put16(fixed[ip6PayloadLen:], uint16(len(h)-ip6Size+ulen))
	fixed[ip6HopLimit] = hlim
	*(*[16]byte)(fixed[ip6Src:]) = *src
	*(*[16]byte)(fixed[ip6Dst:]) = *dst
	if len(h) == ip6Size {
		fixed[ip6NextHeader] = nh
		return
	}
	fixed[ip6NextHeader] = protoFragment
	fh := h[ip6Size:]
	fh[0], fh[1] = nh, 0
	m := uint16(0)
	if f.more {
		m = 1
	}
	put16(fh[2:], f.offset<<3|m)
	put32(fh[4:], f.id)
}

// putIPv4 writes the 20-byte IPv4 header of RFC 7915 section 5.1 (outer
// packets) and section 5.3 (quoted packets) at h, checksum included.
// flagsFO is the Flags and Fragment Offset word.
func putIPv4(h []byte, tos, ttl, proto byte, total int, id, flagsFO uint16, src, dst *[4]byte) {
	// Whole words and arrays: one bounds check, few stores.
	fixed := (*[ip4Size]byte)(h)
	put32(fixed[:], 0x45<<24|uint32(tos)<<16|uint32(total)&0xffff)
	put32(fixed[ip4ID:], uint32(id)<<16|uint32(flagsFO))
	put32(fixed[ip4TTL:], uint32(ttl)<<24|uint32(proto)<<16) // checksum 0
	*(*[4]byte)(fixed[ip4Src:]) = *src
	*(*[4]byte)(fixed[ip4Dst:]) = *dst
	put16(fixed[ip4Checksum:], ^checksum.Checksum(fixed[:], 0))
}

// trafficClass is the IPv6 Traffic Class of the header p (RFC 8200
// section 3), which RFC 7915 section 5.1 copies into the Type of Service.
func trafficClass(p []byte) byte { return p[0]<<4 | p[1]>>4 }

// dfFlag is RFC 7915 section 5.1's Flags for an unfragmented packet, as
// updated by RFC 8021: DF set only on packets larger than dfThreshold.
func dfFlag(total int) uint16 {
	if total > dfThreshold {
		return ip4DF
	}
	return 0
}

// fixL4 is RFC 7915 sections 4.5 and 5.5 for the TCP or UDP header at l4,
// or as much of it as an ICMP error quotes: the pseudo-header moved by d,
// the payload did not. A UDP checksum of zero (none) stays zero unless it
// is partial.
func fixL4(proto byte, l4 []byte, d uint16, partial bool) {
	switch proto {
	case protoTCP:
		if len(l4) >= tcpChecksum+2 {
			adjust(l4[tcpChecksum:tcpChecksum+2], d, partial, false)
		}
	case protoUDP:
		if len(l4) >= udpSize && (partial || be16(l4[udpChecksum:]) != 0) {
			adjust(l4[udpChecksum:udpChecksum+2], d, partial, true)
		}
	case protoDCCP, protoUDPLite:
		if len(l4) >= pseudoCsumAt+2 {
			adjust(l4[pseudoCsumAt:pseudoCsumAt+2], d, partial, proto == protoUDPLite)
		}
	}
}

// fixPseudo is sections 4.5 and 5.5 for the transports whose support the
// RFC makes optional but whose checksum, like TCP's, covers the
// pseudo-header: DCCP (RFC 4340 section 9.1) and UDP-Lite (RFC 3828
// section 3.2, which sends a computed 0 as 0xffff, as UDP does). Left
// alone, their checksum would fail at every receiver. A later fragment
// has no header to fix.
func fixPseudo(proto byte, l4 []byte, first bool, delta uint16, partial bool) Reason {
	if !first {
		return ReasonNone
	}
	if len(l4) < pseudoCsumAt+2 {
		return ReasonMalformed
	}
	adjust(l4[pseudoCsumAt:pseudoCsumAt+2], delta, partial, proto == protoUDPLite)
	return ReasonNone
}

// fixUDP and fixTCP are sections 4.5 and 5.5 for the UDP or TCP header
// of an outer packet, alike in both directions: the checksum follows the
// pseudo-header (delta); a later fragment has no header to fix.
//
// fixUDP reports noCsum for the first fragment of a datagram without a
// checksum (zero, and not partial), which it leaves alone.
func fixUDP(l4 []byte, first bool, delta uint16, partial bool) (noCsum bool, why Reason) {
	switch {
	case !first:
		return false, ReasonNone
	case len(l4) < udpSize:
		return false, ReasonMalformed
	case !partial && be16(l4[udpChecksum:]) == 0:
		return true, ReasonNone
	}
	adjust(l4[udpChecksum:udpChecksum+2], delta, partial, true)
	return false, ReasonNone
}

// fixTCP also clamps a SYN's MSS to what both next hops carry, and
// returns the TCP header length (for offload).
func (s *state) fixTCP(l4 []byte, first bool, delta uint16, partial bool) (l4hdr int, why Reason) {
	if !first {
		return 0, ReasonNone
	}
	if l4hdr = tcpHeaderLen(l4); l4hdr == 0 {
		return 0, ReasonMalformed
	}
	adjust(l4[tcpChecksum:tcpChecksum+2], delta, partial, false)
	clampMSS(l4, l4hdr, s.maxMSS(), partial)
	return l4hdr, ReasonNone
}

// echoType is RFC 7915 sections 4.2 (to6) and 5.2: the type of an Echo
// Request or Reply (ICMPv4 8 and 0, ICMPv6 128 and 129) in the other
// family; ok false for every other type.
func echoType(t byte, to6 bool) (nt byte, ok bool) {
	req, reply := byte(header.ICMPv4Echo), byte(header.ICMPv4EchoReply)
	nreq, nreply := byte(header.ICMPv6EchoRequest), byte(header.ICMPv6EchoReply)
	if !to6 {
		req, reply, nreq, nreply = nreq, nreply, req, reply
	}
	switch t {
	case req:
		return nreq, true
	case reply:
		return nreply, true
	}
	return 0, false
}

// translateEcho is sections 4.2 and 5.2 for an informational message l4:
// Echo Request and Reply change type and checksum (ps as for fixEcho),
// every other type is dropped (ICMPv4 Timestamp, Information, Address
// Mask, Router Advertisement and Solicitation, Redirect, Source Quench;
// ICMPv6 MLD, Neighbor Discovery; unknown types), and so is a fragmented
// message: its ICMPv6 checksum covers a pseudo-header of its whole length.
func translateEcho(l4 []byte, isFrag, to6 bool, ps uint16, partial bool) Reason {
	if isFrag {
		return ReasonICMPFragmented
	}
	if len(l4) < icmpSize {
		return ReasonMalformed
	}
	nt, ok := echoType(l4[0], to6)
	if !ok {
		return ReasonICMPType
	}
	fixEcho(l4, nt, ps, partial)
	return ReasonNone
}

// fixEcho rewrites the type of the Echo message at icmp to nt (RFC 7915
// sections 4.2 and 5.2) and moves its checksum by ps, the ICMPv6
// pseudo-header sum (4->6) or its complement (6->4), since only ICMPv6
// sums one. A partial checksum (virtio NEEDS_CSUM) holds the
// pseudo-header sum alone, so the type change does not enter it.
func fixEcho(icmp []byte, nt byte, ps uint16, partial bool) {
	f := icmp[icmpChecksum : icmpChecksum+2]
	if partial {
		adjust(f, ps, true, false)
	} else {
		adjust(f, csumAdd(ps, csumSub(uint16(nt)<<8, uint16(icmp[0])<<8)), false, false)
	}
	icmp[0] = nt
}

// moveOffload rewrites the virtio offload metadata of a packet whose IP
// header grew by grow bytes (negative: shrank) to hdr bytes: the checksum
// start moves, a TCP segmentation type changes family from to to, and a
// TCP segment size shrinks so that a segment of hdr+l4hdr header bytes
// fits the next hop's mtu (0: unknown): a byte stream may be cut
// anywhere. A UDP (USO) segment is one datagram whose boundaries are the
// application's: its size never changes (see usoTooBig).
func moveOffload(off *Offload, grow, hdr, l4hdr, mtu int, from, to uint8) {
	if off.Flags&OffloadNeedsCsum != 0 || off.CsumStart != 0 {
		off.CsumStart = uint16(int(off.CsumStart) + grow)
	}
	if off.GSOType&^GSOECN == GSONone {
		return
	}
	if off.GSOType&^GSOECN == from {
		off.GSOType = to | off.GSOType&GSOECN
	}
	off.HdrLen = uint16(hdr + l4hdr)
	// Only a TCP header is tcpMinSize bytes or more (a UDP header is
	// udpSize): this test keeps moveOffload within the inlining budget.
	if mtu > 0 && l4hdr >= tcpMinSize && int(off.GSOSize)+hdr+l4hdr > mtu {
		off.GSOSize = uint16(mtu - hdr - l4hdr)
	}
}

// segMTU is mtu (0: unknown) as moveOffload is to shrink TCP segments
// to, behind hdrs bytes of IP and TCP headers: at least the headers and
// one byte. Where the headers alone fill the MTU (an IPv4 MTU of 68 to
// 80 bytes and a TCP header with options) segments then carry one byte
// each, which the next hop fragments, rather than a size that wrapped
// round below zero (a segment the link drops, or a gso_size of 0 that
// the kernel refuses).
func segMTU(mtu, hdrs int) int {
	if mtu > 0 && mtu <= hdrs {
		return hdrs + 1
	}
	return mtu
}

// usoTooBig reports whether off describes a UDP super-packet (USO,
// GSOUDPL4) whose datagrams, each hdr+8+GSOSize bytes once translated,
// exceed the next hop's mtu (0: unknown). Shrinking gso_size as for TCP
// would re-cut the payload into other datagrams and corrupt every
// application message, so such a super-packet is refused as its datagrams
// would be one by one.
func usoTooBig(off *Offload, hdr, mtu int) bool {
	return off != nil && off.GSOType&^GSOECN == GSOUDPL4 && mtu > 0 && hdr+udpSize+int(off.GSOSize) > mtu
}

// firstDatagram rewrites the length fields of the USO super-packet p, its
// network header's at lenAt (whose value counts the bytes from counted
// on) and its UDP header's at udp, to those of its first datagram of
// gso UDP payload bytes, and returns p cut to that datagram with the old
// values. An ICMP error quoting the super-packet then reads as one about
// that datagram (RFC 792, RFC 4443 section 3.2): the sender's Path MTU
// Discovery sees the length it sent, not the sum of all. The IPv4 header
// checksum at csum4 (negative: IPv6, none) follows the Total Length.
func firstDatagram(p []byte, lenAt, counted, udp, csum4, gso int) (dgram []byte, oldLen, oldUDP, oldCsum uint16) {
	n := min(udp+udpSize+gso, len(p))
	oldLen, oldUDP = be16(p[lenAt:]), be16(p[udp+udpLen:])
	put16(p[lenAt:], uint16(n-counted))
	put16(p[udp+udpLen:], uint16(n-udp))
	if csum4 >= 0 {
		oldCsum = be16(p[csum4:])
		adjust(p[csum4:csum4+2], csumSub(uint16(n-counted), oldLen), false, false)
	}
	return p[:n], oldLen, oldUDP, oldCsum
}

// restoreDatagram undoes firstDatagram.
func restoreDatagram(p []byte, lenAt, udp, csum4 int, oldLen, oldUDP, oldCsum uint16) {
	put16(p[lenAt:], oldLen)
	put16(p[udp+udpLen:], oldUDP)
	if csum4 >= 0 {
		put16(p[csum4:], oldCsum)
	}
}
