package xlat

import (
	"github.com/map646/map646/mapping"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// in4 is an IPv4 packet on its way to IPv6 and what the steps of RFC 7915
// section 4 have learnt about it. The fields of the fixed header are read
// through h, which needs no bounds checks, when a step needs them.
type in4 struct {
	p          []byte         // the packet, cut to its Total Length
	h          *[ip4Size]byte // its fixed header (RFC 791 section 3.1)
	ihl        int            // its header length, options included
	l4         []byte         // what follows the header
	src6, dst6 [16]byte       // the addresses of section 4.1
	delta      uint16         // the pseudo-header change from the IPv4 to the IPv6 addresses
}

func (q *in4) ff() uint16   { return be16(q.h[ip4FlagsFO:]) } // Flags and Fragment Offset
func (q *in4) df() bool     { return q.ff()&ip4DF != 0 }
func (q *in4) mf() bool     { return q.ff()&ip4MF != 0 }
func (q *in4) fo() uint16   { return q.ff() & ip4FOMask } // in 8-byte units
func (q *in4) isFrag() bool { return q.ff()&(ip4MF|ip4FOMask) != 0 }
func (q *in4) first() bool  { return q.ff()&ip4FOMask == 0 }
func (q *in4) proto() byte  { return q.h[ip4Proto] }
func (q *in4) src() [4]byte { return [4]byte(q.h[ip4Src:]) }
func (q *in4) dst() [4]byte { return [4]byte(q.h[ip4Dst:]) }

// isErr reports an ICMPv4 error (RFC 792), not a later fragment of one.
func (q *in4) isErr() bool {
	return q.h[ip4Proto] == protoICMPv4 && q.first() && len(q.l4) > 0 && isICMPv4Error(q.l4[0])
}

// hlen6 is the length of the IPv6 header(s) of section 4.1: a Fragment
// header follows the fixed header for an IPv4 fragment.
func (q *in4) hlen6() int {
	if q.isFrag() {
		return ip6Size + frag6Size
	}
	return ip6Size
}

// parse checks the IPv4 header (RFC 791 section 3.1) of p and fills q,
// which starts zero.
func (q *in4) parse(p []byte) Reason {
	if len(p) < ip4Size {
		return ReasonMalformed
	}
	ihl := int(p[0]&0xf) * 4
	tot := int(be16(p[ip4TotalLen:]))
	if ihl < ip4Size || tot < ihl || tot > len(p) {
		return ReasonMalformed
	}
	p = p[:tot]
	q.p, q.h, q.ihl, q.l4 = p, (*[ip4Size]byte)(p), ihl, p[ihl:]
	return ReasonNone
}

// checksumOK verifies the header checksum, options included, as RFC 1812
// section 5.2.2 requires of a router before it forwards a packet: with a
// tun the host kernel has, but in NIC mode nothing else has, and a
// damaged address would reach the wrong server (or be answered with an
// error sent to a damaged source).
//
// A header without options, nearly every packet, is summed as five
// 32-bit words (a ones' complement sum folds the same either way), which
// costs less than the general checksum call.
func (q *in4) checksumOK() bool {
	if q.ihl != ip4Size {
		return checksum.Checksum(q.p[:q.ihl], 0) == 0xffff
	}
	h := q.h
	s := uint64(be32(h[0:4])) + uint64(be32(h[4:8])) + uint64(be32(h[8:12])) + uint64(be32(h[12:16])) + uint64(be32(h[16:20]))
	s = s&0xffffffff + s>>32
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return s == 0xffff
}

// v4to6 is RFC 7915 section 4: IPv4 -> IPv6, one step per section.
func (w *Worker) v4to6(s *state, buf []byte, start, end int, off *Offload, sink Sink, hp hairpinPass) Result {
	r := Result{Dir: Dir46, Verdict: Drop}
	var q in4
	if why := q.parse(buf[start:end]); why != ReasonNone {
		return drop(r, why)
	}
	if !bool(hp) && !q.checksumOK() {
		// The hairpin's intermediate form is the engine's own (its TTL
		// was spent without a checksum update).
		return drop(r, ReasonIPv4Checksum)
	}
	end = start + len(q.p)
	switch why, echo := w.addresses46(s, &q, sink, hp); {
	case echo:
		return w.answerEcho4(s, q.p, q.ihl, sink, r)
	case why != ReasonNone:
		return drop(r, why)
	}
	if s.decTTL && !bool(hp) && q.h[ip4TTL] <= 1 {
		// Section 4.1: as a router, Time Exceeded in Transit.
		if !q.isErr() && q.first() {
			w.emitError4(s, q.p, 11, 0, 0, sink)
		}
		return drop(r, ReasonTTLExceeded)
	}
	gso := off != nil && off.GSOType&^GSOECN != GSONone
	hlen, split := q.hlen6(), false
	if !gso && !q.isErr() && hlen+len(q.l4) > s.fit6 {
		var why Reason
		if hlen, split, why = w.size46(s, &q, sink, hp); why != ReasonNone {
			return drop(r, why)
		}
	}
	if gso {
		// A UDP super-packet without DF whose datagrams, alone, would be
		// fragmented (section 4: larger than lowest-ipv6-mtu, as size46
		// decides for a packet) is cut into them, as is one whose
		// datagrams do not fit the IPv6 next hop at all.
		cut := !q.df() && !bool(hp) && q.proto() == protoUDP && !q.isFrag()
		if cut && (usoTooBig(off, hlen, s.lowest) || usoTooBig(off, hlen, s.mtu6)) {
			return w.splitUSO46(s, buf, start, &q, off, sink)
		}
		if usoTooBig(off, hlen, s.mtu6) {
			return drop(r, w.usoTooBig46(s, &q, hlen, int(off.GSOSize), sink, hp))
		}
	}
	if q.proto() == protoICMPv4 && !q.isFrag() && len(q.l4) >= icmpSize && icmpErrorType46(q.l4[0]) {
		return w.icmpError46(s, buf, start, end, &q, off, sink, hp)
	}
	partial := partialCsum(off)
	nh, l4hdr, udpCompute, cls, why := s.transport46(&q, partial)
	if r.Proto = cls; why != ReasonNone {
		return drop(r, why)
	}
	ns := start + q.ihl - hlen
	if ns < 0 {
		return drop(r, ReasonHeadroom)
	}
	// The old IPv4 header is overwritten: what is needed from it is read
	// first. With a tun, the host kernel decremented the TTL on the way in;
	// with DecrementTTL the translator does (a hairpin's hop was counted
	// on its way in).
	tos, ttl, id, df := s.tos46.apply(q.h[ip4TOS]), q.h[ip4TTL], be16(q.h[ip4ID:]), q.df()
	if s.decTTL && !bool(hp) {
		ttl--
	}
	putIPv6(buf[ns:ns+hlen], tos, ttl, nh, len(q.l4), &q.src6, &q.dst6, fragment{q.fo(), q.mf(), uint32(id)})
	if udpCompute {
		// RFC 7915 section 4.5: IPv6 requires the UDP checksum IPv4 left out.
		put16(q.l4[udpChecksum:], pseudo6(&q.src6, &q.dst6, uint32(len(q.l4)), protoUDP))
		complete(q.l4, udpChecksum, true)
	}
	if off != nil {
		// Section 4: a DF=0 packet larger than lowest-ipv6-mtu is
		// fragmented (size46); a TCP super-packet's segments, each such a
		// packet, are cut to fit instead, the same bytes on the wire
		// without fragments. A hairpin's DF is the engine's own.
		mtu := s.mtu6
		if !df && !bool(hp) {
			mtu = s.fit6
		}
		moveOffload(off, hlen-q.ihl, hlen, l4hdr, mtu, GSOTCPv4, GSOTCPv6)
	}
	r.Start, r.End, r.Verdict = ns, end, Forward
	if split {
		return w.fragment6(s, buf[ns:end], off, sink, r)
	}
	return r
}

// addresses46 is RFC 7915 section 4.1's address rules with RFC 7757's
// mappings: illegal and denied addresses, the translator's own addresses
// (echo says an Echo Request to one is to be answered), an EAM destination, a source that
// only the prefix expresses, and the source route options the section
// refuses.
func (w *Worker) addresses46(s *state, q *in4, sink Sink, hp hairpinPass) (why Reason, echo bool) {
	src, dst := q.src(), q.dst()
	if illegal4(src) && !q.isErr() {
		// Sections 4.1 and 4.3: the illegal-source check does not apply to
		// ICMPv4 errors, which routers in any space may send.
		return ReasonSrcIllegal, false
	}
	if illegal4(dst) {
		return ReasonDstIllegal, false
	}
	if len(s.deny) > 0 && (s.denied(src) || s.denied(dst)) {
		return ReasonDenied, false
	}
	if s4 := src; s.special && s.maybe4(s4, dst) {
		if q.isErr() {
			// The translator's host reports its own forwarding failures
			// (Time Exceeded, Fragmentation Needed) from its own addresses.
			s4 = dst
		}
		if why := s.check4(s4, dst); why != ReasonNone {
			return why, why == ReasonOwnAddress && s.isOwn4(dst) && echoRequest4(q.proto(), q.isFrag(), q.l4)
		}
	}
	// RFC 7755 / RFC 7757: an IPv4 destination is a server's public address
	// and must have an EAM entry. A destination that only the RFC 6052
	// prefix could express would be routed straight back to the translator.
	var dsrc, ddst uint16
	var dstOrigin, srcOrigin mapping.Origin
	q.dst6, ddst, dstOrigin = s.m.To6(dst)
	if dstOrigin != mapping.ByEAM {
		return ReasonDstUnmapped, false
	}
	if hp {
		q.src6, dsrc, srcOrigin = s.hairpinTo6(src, hp)
	} else { // what hairpinTo6 does then, without its call
		q.src6, dsrc, srcOrigin = s.m.To6(src)
	}
	switch srcOrigin {
	case mapping.NotTranslatable:
		if !q.isErr() || bool(hp) || !s.pfx.Valid() {
			return ReasonSrcUnmapped, false
		}
		if illegal4(src) {
			// A router's error comes from a unicast address it can
			// own: this, loopback, multicast, reserved or link-local
			// space is forged, and the error address must not lend
			// it the translator's name.
			return ReasonSrcIllegal, false
		}
		// An ICMPv4 error from a router the prefix cannot express (with
		// the well-known prefix, RFC 6052 section 3.1: shared or private
		// space, carrier-grade NAT routers among them) comes from the
		// translator's own error address, as RFC 6791 does for the other
		// direction: dropped, a Fragmentation Needed would black-hole the
		// server's path MTU discovery. Its checksum is made afresh
		// (icmpError46); the delta is kept right all the same.
		q.src6, dsrc = s.errSrc6, mapping.Delta(src, s.errSrc6)
	case mapping.ByPrefix:
		if noRouter4(src) {
			// Only an ICMPv4 error gets here with such a source (illegal4
			// refused the others): forged, as without a prefix for it.
			return ReasonSrcIllegal, false
		}
	case mapping.ByEAM:
		// A mapped public IPv4 address belongs to a server behind this
		// translator: from the IPv4 side it can only be forged, and would
		// reach another server from that server's real IPv6 address.
		return ReasonSpoofed, false
	}
	if len(s.own6) > 0 && (s.isOwn6(&q.src6) || s.isOwn6(&q.dst6)) {
		return ReasonOwnAddress, false
	}
	q.delta = csumAdd(dsrc, ddst)
	if q.ihl > ip4Size && sourceRouted(q.p[ip4Size:q.ihl]) {
		if !q.isErr() && q.first() {
			w.emitError4(s, q.p, 3, 5, 0, sink)
		}
		return ReasonSourceRoute, false
	}
	return ReasonNone, false
}

// size46 is, for a packet larger than s.fit6, the length of its IPv6
// header(s) (hlen6) and whether it is to be fragmented (section 4: a DF=0
// packet whose IPv6 form exceeds lowest-ipv6-mtu). A DF packet the IPv6
// next hop cannot take is refused with Fragmentation Needed (section 4.1,
// RFC 1191), but not in a hairpin: that IPv4 packet is the engine's own
// intermediate form, and an error about it would make a second packet
// out of one. Errors and super-packets never come here.
func (w *Worker) size46(s *state, q *in4, sink Sink, hp hairpinPass) (hlen int, split bool, why Reason) {
	hlen = q.hlen6()
	switch len6 := hlen + len(q.l4); {
	case q.df() && s.mtu6 > 0 && len6 > s.mtu6:
		if q.first() && !bool(hp) {
			w.emitError4(s, q.p, 3, 4, uint32(s.mtu6-(hlen-q.ihl)), sink)
		}
		return hlen, false, ReasonTooBig
	case !q.df() && len6 > s.fit6:
		// fit6 = min(lowest-ipv6-mtu, the IPv6 next hop's MTU): the next
		// hop's may be the smaller when learned from a NIC.
		return ip6Size + frag6Size, true, ReasonNone
	}
	return hlen, false, ReasonNone
}

// usoTooBig46 refuses a UDP super-packet whose datagrams of gso payload
// bytes do not fit the IPv6 next hop, as size46 would each datagram sent
// alone: with DF, one Fragmentation Needed (section 4.1, RFC 1191)
// quoting the first datagram (firstDatagram), not one per datagram; but
// not in a hairpin (see size46). Without DF each datagram would be
// fragmented (section 4): v4to6 hands such a super-packet to splitUSO46
// instead; what still comes here without DF (a hairpin's intermediate
// form, USO metadata on a fragment or on another protocol) is dropped
// without an error.
func (w *Worker) usoTooBig46(s *state, q *in4, hlen, gso int, sink Sink, hp hairpinPass) Reason {
	if q.df() && q.first() && !bool(hp) && q.proto() == protoUDP && len(q.l4) >= udpSize {
		d, l, u, c := firstDatagram(q.p, ip4TotalLen, 0, q.ihl, ip4Checksum, gso)
		w.emitError4(s, d, 3, 4, uint32(s.mtu6-(hlen-q.ihl)), sink)
		restoreDatagram(q.p, ip4TotalLen, q.ihl, ip4Checksum, l, u, c)
	}
	return ReasonTooBig
}

// transport46 is RFC 7915 section 4.5 (TCP, UDP, other protocols) and the
// Echo part of section 4.2: it fixes the upper-layer header in place and
// returns the IPv6 Next Header, the transport header length (for offload)
// and whether a zero UDP checksum is to be computed once the addresses
// are written, and the packet's class for the counters.
func (s *state) transport46(q *in4, partial bool) (nh byte, l4hdr int, udpCompute bool, cls Proto, why Reason) {
	nh, cls = q.proto(), ProtoOther
	switch nh {
	case protoTCP:
		if l4hdr, why = s.fixTCP(q.l4, q.first(), q.delta, partial); why != ReasonNone {
			return nh, 0, false, ProtoTCP, why
		}
		cls = ProtoTCP
	case protoUDP:
		noCsum, why := fixUDP(q.l4, q.first(), q.delta, partial)
		if l4hdr, cls = udpSize, ProtoUDP; why != ReasonNone {
			return nh, 0, false, cls, why
		}
		if noCsum {
			// Section 4.5: IPv6 requires a UDP checksum.
			switch {
			case q.isFrag():
				return nh, 0, false, cls, ReasonUDPZeroFragment
			case s.cfg.Policy.UDPZeroChecksum == UDPZeroDrop:
				return nh, 0, false, cls, ReasonUDPZeroChecksum
			}
			udpCompute = true
		}
	case protoDCCP, protoUDPLite:
		if why = fixPseudo(nh, q.l4, q.first(), q.delta, partial); why != ReasonNone {
			return nh, 0, false, cls, why
		}
	case protoICMPv4:
		ps := pseudo6(&q.src6, &q.dst6, uint32(len(q.l4)), protoICMPv6)
		return protoICMPv6, 0, false, ProtoICMP, translateEcho(q.l4, q.isFrag(), true, ps, partial)
	case protoICMPv6:
		return nh, 0, false, cls, ReasonICMPProto
	case protoIGMP:
		// Section 4.2: IGMP messages are single-hop and SHOULD be
		// silently dropped.
		return nh, 0, false, cls, ReasonIGMP
	case protoHopByHop, protoRouting, protoFragment, protoDestOpts:
		// Copied into Next Header these would announce an extension
		// header that is not there.
		return nh, 0, false, cls, ReasonProtoExtHeader
	}
	// Other protocols pass unchanged (section 4.5), DCCP and UDP-Lite
	// with their checksum moved.
	if !q.first() {
		cls = ProtoFragment
	}
	return nh, l4hdr, udpCompute, cls, ReasonNone
}
