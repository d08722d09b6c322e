package xlat

import (
	"github.com/map646/map646/mapping"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// Protocol numbers the engine looks at.
const (
	protoHopByHop = 0
	protoICMPv4   = 1
	protoIGMP     = 2
	protoTCP      = 6
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoICMPv6   = 58
	protoDestOpts = 60

	// maxExtHeaders bounds the IPv6 extension header walk.
	maxExtHeaders = 8
	// dfThreshold: RFC 7915 section 5.1 (Flags, as updated by RFC 8021's
	// removal of atomic fragments): a translated IPv4 packet of at most
	// 1260 bytes gets DF clear, a larger one DF set.
	dfThreshold = 1260
)

// hairpinPass marks the second (4->6) half of an RFC 7757 section 4.2
// hairpin: the hairpinning server's IPv4 address is expressed in the RFC
// 6052 prefix rather than through its EAM entry, so that the other server's
// reply crosses the translator again. That is the outer source of a plain
// packet, and also the inner destination of an ICMP error.
type hairpinPass bool

// hairpinTo6 translates the address that names the hairpinning server:
// in the second half of a hairpin it is written in the RFC 6052 prefix
// (see hairpinPass); otherwise EAM first, then the prefix.
// The origin is ByPrefix for the hairpinning server, whatever its EAM
// entry says.
func (s *state) hairpinTo6(a [4]byte, hp hairpinPass) (v6 [16]byte, delta uint16, o mapping.Origin) {
	if hp {
		if !s.pfx.Valid() {
			return v6, 0, mapping.NotTranslatable
		}
		v6, delta = s.pfx.Embed(a)
		return v6, delta, mapping.ByPrefix
	}
	return s.m.To6(a)
}

// Process translates the IPv4 or IPv6 packet at buf[start:end] in place.
// start must be at least Headroom. off may be nil (no offload metadata);
// when it is not, it is translated together with the packet.
//
// The result is buf[Start:End] (Verdict Forward), or everything went to
// sink (Consumed: IPv6 fragments of a large DF=0 IPv4 packet, an ICMP
// error whose translation did not fit buf), or nothing (Drop, with Reason;
// a translator-originated ICMP error may have gone to sink).
func (w *Worker) Process(buf []byte, start, end int, off *Offload, sink Sink) Result {
	s := w.eng.st.Load()
	var r Result
	switch {
	case start < 0 || end > len(buf) || start >= end:
		r = Result{Verdict: Drop, Reason: ReasonMalformed}
	case buf[start]>>4 == 4:
		r = w.v4to6(s, buf, start, end, off, sink, false)
	case buf[start]>>4 == 6:
		r = w.v6to4(s, buf, start, end, off, sink)
	default:
		r = Result{Verdict: Drop, Reason: ReasonVersion}
	}
	if r.Verdict == Drop {
		inc(&w.C.Drops[r.Dir][r.Reason], 1)
	} else {
		// Translated packets are tallied locally and published in batches:
		// an atomic store per counter per packet cost more than the
		// translation itself.
		w.pend[r.Dir][r.Proto]++
		w.pendBytes[r.Dir] += uint64(end - start)
		if w.pendN++; w.pendN >= flushEvery {
			w.Flush()
		}
	}
	return r
}

func drop(r Result, why Reason) Result {
	r.Verdict = Drop
	r.Reason = why
	return r
}

// illegal4 reports addresses RFC 7915 section 4.1 / RFC 1812 forbid as
// sources and that a unicast translator cannot use as destinations: this
// network (0/8), loopback (127/8), link-local (169.254/16, RFC 3927: a
// cloud's metadata service lives there), multicast (224/4), class E and
// the limited broadcast (240/4).
func illegal4(a [4]byte) bool {
	return a[0] == 0 || a[0] == 127 || a[0] >= 224 || (a[0] == 169 && a[1] == 254)
}

// illegal6 reports the IPv6 unspecified and loopback addresses, multicast
// (ff00::/8) and link-local unicast (fe80::/10): RFC 7915 section 5.1
// ("illegal source address ... silently drop") and RFC 4291 scopes that
// cannot leave the link.
func illegal6(a [16]byte) bool {
	if a[0] == 0xff || (a[0] == 0xfe && a[1]&0xc0 == 0x80) {
		return true
	}
	for i := 0; i < 15; i++ {
		if a[i] != 0 {
			return false
		}
	}
	return a[15] <= 1
}

// sourceRouted reports an unexpired Loose or Strict Source Route option
// (RFC 791): RFC 7915 section 4.1 says such packets must not be
// translated and an ICMPv4 "source route failed" (3/5) returned.
func sourceRouted(opts []byte) bool {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0: // end of options
			return false
		case 1: // no operation
			i++
			continue
		}
		if i+1 >= len(opts) {
			return false
		}
		l := int(opts[i+1])
		if l < 2 || i+l > len(opts) {
			return false
		}
		if (opts[i] == 0x83 || opts[i] == 0x89) && l >= 3 && int(opts[i+2]) <= l {
			return true
		}
		i += l
	}
	return false
}

// isICMPv4Error reports the ICMPv4 error types (RFC 792, RFC 1812 4.3.2.1).
func isICMPv4Error(t byte) bool { return t == 3 || t == 4 || t == 5 || t == 11 || t == 12 }

// tcpHeaderLen is the TCP header length from the data offset (RFC 9293
// section 3.1), or 0 if the segment is too short to hold it.
func tcpHeaderLen(l4 []byte) int {
	if len(l4) < 20 {
		return 0
	}
	n := int(l4[12]>>4) * 4
	if n < 20 || n > len(l4) {
		return 0
	}
	return n
}

func (w *Worker) nextID() uint16 {
	w.ipID++
	return uint16(w.ipID)
}

// v4to6 is RFC 7915 section 4: IPv4 -> IPv6.
func (w *Worker) v4to6(s *state, buf []byte, start, end int, off *Offload, sink Sink, hp hairpinPass) Result {
	r := Result{Dir: Dir46, Verdict: Drop}
	p := buf[start:end]
	if len(p) < 20 {
		return drop(r, ReasonMalformed)
	}
	ihl := int(p[0]&0xf) * 4
	tot := int(be16(p[2:]))
	if ihl < 20 || tot < ihl || tot > len(p) {
		return drop(r, ReasonMalformed)
	}
	end = start + tot
	p = p[:tot]
	fragField := be16(p[6:])
	df := fragField&0x4000 != 0
	mf := fragField&0x2000 != 0
	fo := fragField & 0x1fff
	isFrag := mf || fo != 0
	first := fo == 0
	proto := p[9]
	src4, dst4 := [4]byte(p[12:16]), [4]byte(p[16:20])
	l4 := p[ihl:]
	isErr := proto == protoICMPv4 && first && len(l4) > 0 && isICMPv4Error(l4[0])
	if illegal4(src4) && !isErr {
		// RFC 7915 sections 4.1 and 4.3: the illegal-source check does not
		// apply to ICMPv4 errors, which routers in any space may send.
		return drop(r, ReasonSrcIllegal)
	}
	if illegal4(dst4) {
		return drop(r, ReasonDstIllegal)
	}
	if len(s.deny) > 0 && (s.denied(src4) || s.denied(dst4)) {
		return drop(r, ReasonDenied)
	}
	if s4 := src4; s.special && s.maybe4(s4, dst4) {
		if isErr {
			// The translator's host reports its own forwarding failures
			// (Time Exceeded, Fragmentation Needed) from its own addresses.
			s4 = dst4
		}
		if why := s.check4(s4, dst4); why != ReasonNone {
			if why == ReasonOwnAddress && s.isOwn4(dst4) && echoRequest4(proto, isFrag, l4) {
				return w.answerEcho4(s, p, ihl, sink, r)
			}
			return drop(r, why)
		}
	}
	// RFC 7755 / RFC 7757: an IPv4 destination is a server's public address
	// and must have an EAM entry. A destination that only the RFC 6052
	// prefix could express would be routed straight back to the translator.
	dst6, ddst, o := s.m.To6(dst4)
	if o != mapping.ByEAM {
		return drop(r, ReasonDstUnmapped)
	}
	src6, dsrc, os := s.hairpinTo6(src4, hp)
	switch os {
	case mapping.NotTranslatable:
		return drop(r, ReasonSrcUnmapped)
	case mapping.ByEAM:
		// A mapped public IPv4 address belongs to a server behind this
		// translator: from the IPv4 side it can only be forged, and would
		// reach another server from that server's real IPv6 address.
		return drop(r, ReasonSpoofed)
	}
	if len(s.own6) > 0 && (s.isOwn6(&src6) || s.isOwn6(&dst6)) {
		return drop(r, ReasonOwnAddress)
	}
	if ihl > 20 && sourceRouted(p[20:ihl]) {
		if !isErr && first {
			w.emitError4(s, p, 3, 5, 0, sink)
		}
		return drop(r, ReasonSourceRoute)
	}

	if s.decTTL && !bool(hp) && p[8] <= 1 {
		// RFC 7915 section 4.1: as a router, Time Exceeded in Transit.
		if !isErr && first {
			w.emitError4(s, p, 11, 0, 0, sink)
		}
		return drop(r, ReasonTTLExceeded)
	}
	gso := off != nil && off.GSOType&^GSOECN != GSONone
	hlen := 40
	if isFrag {
		hlen = 48
	}
	fragment := false
	if len6 := hlen + len(l4); !gso && !isErr {
		if df {
			if s.mtu6 > 0 && len6 > s.mtu6 {
				// RFC 7915 section 4.1 / RFC 1191: the IPv6 form cannot
				// cross the IPv6 next hop.
				// Not in a hairpin: the IPv4 packet is the engine's own
				// intermediate form, and an error about it would make a
				// second packet out of one.
				if !isErr && first && !bool(hp) {
					w.emitError4(s, p, 3, 4, uint32(s.mtu6-(hlen-ihl)), sink)
				}
				return drop(r, ReasonTooBig)
			}
		} else if len6 > s.lowest {
			// RFC 7915 section 4 (lowest-ipv6-mtu): fragment DF=0 packets
			// so that every IPv6 fragment fits.
			fragment = true
			hlen = 48
		}
	}
	partial := off != nil && off.Flags&OffloadNeedsCsum != 0
	nh := proto
	l4hdr := 0
	udpCompute := false
	switch proto {
	case protoTCP:
		r.Proto = ProtoTCP
		if first {
			if l4hdr = tcpHeaderLen(l4); l4hdr == 0 {
				return drop(r, ReasonMalformed)
			}
			// RFC 7915 section 4.5: the pseudo-header changed; the
			// payload did not.
			adjust(l4[16:18], csumAdd(dsrc, ddst), partial, false)
			clampMSS(l4, l4hdr, s.maxMSS(), partial)
		}
	case protoUDP:
		r.Proto = ProtoUDP
		l4hdr = 8
		if first {
			if len(l4) < 8 {
				return drop(r, ReasonMalformed)
			}
			if be16(l4[6:]) == 0 && !partial {
				// RFC 7915 section 4.5: IPv6 requires a UDP checksum.
				switch {
				case isFrag:
					return drop(r, ReasonUDPZeroFragment)
				case s.cfg.Policy.UDPZeroChecksum == UDPZeroDrop:
					return drop(r, ReasonUDPZeroChecksum)
				}
				udpCompute = true
			} else {
				adjust(l4[6:8], csumAdd(dsrc, ddst), partial, true)
			}
		}
	case protoICMPv4:
		r.Proto = ProtoICMP
		if isFrag {
			return drop(r, ReasonICMPFragmented)
		}
		if len(l4) < 8 {
			return drop(r, ReasonMalformed)
		}
		nh = protoICMPv6
		switch t := l4[0]; t {
		case 8, 0: // RFC 7915 section 4.2: Echo Request/Reply -> 128/129
			nt := byte(128)
			if t == 0 {
				nt = 129
			}
			ps := pseudo6(&src6, &dst6, uint32(len(l4)), protoICMPv6)
			if partial {
				adjust(l4[2:4], ps, true, false)
			} else {
				adjust(l4[2:4], csumAdd(ps, csumSub(uint16(nt)<<8, uint16(t)<<8)), false, false)
			}
			l4[0] = nt
		case 3, 11, 12:
			return w.icmpError46(s, buf, start, end, ihl, &src6, &dst6, off, sink, hp)
		default:
			// Timestamp, Information, Address Mask, Router Advertisement/
			// Solicitation, Redirect, Source Quench and unknown types.
			return drop(r, ReasonICMPType)
		}
	case protoICMPv6:
		return drop(r, ReasonICMPProto)
	case protoIGMP:
		// RFC 7915 section 4.2: IGMP messages are single-hop and SHOULD
		// be silently dropped.
		return drop(r, ReasonIGMP)
	case protoHopByHop, protoRouting, protoFragment, protoDestOpts:
		// Copied into Next Header these would announce an extension
		// header that is not there.
		return drop(r, ReasonProtoExtHeader)
	default:
		// RFC 7915 section 4.5: other protocols pass unchanged.
	}
	if !first {
		r.Proto = ProtoFragment
	}

	ns := start + ihl - hlen
	if ns < 0 {
		return drop(r, ReasonHeadroom)
	}
	tos, ttl, id := p[1], p[8], be16(p[4:])
	// RFC 7915 section 4.1: the IPv6 header. The old IPv4 header is
	// overwritten; everything needed from it is in locals.
	h := buf[ns : ns+hlen]
	h[0] = 0x60 | tos>>4
	h[1] = tos << 4 // flow label 0
	h[2], h[3] = 0, 0
	put16(h[4:], uint16(hlen-40+len(l4)))
	if s.decTTL && !bool(hp) { // a hairpin's hop was counted on its way in
		ttl--
	}
	h[7] = ttl // with a tun, the host kernel decremented it on the way in
	copy(h[8:24], src6[:])
	copy(h[24:40], dst6[:])
	if hlen == 48 {
		h[6] = protoFragment
		h[40], h[41] = nh, 0
		m := uint16(0)
		if mf {
			m = 1
		}
		put16(h[42:], fo<<3|m)
		put32(h[44:], uint32(id))
	} else {
		h[6] = nh
	}
	if udpCompute {
		l4[6], l4[7] = 0, 0
		c := ^checksum.Checksum(l4, pseudo6(&src6, &dst6, uint32(len(l4)), protoUDP))
		if c == 0 {
			c = 0xffff
		}
		put16(l4[6:], c)
	}
	if off != nil {
		grow := hlen - ihl
		if off.Flags&OffloadNeedsCsum != 0 || off.CsumStart != 0 {
			off.CsumStart = uint16(int(off.CsumStart) + grow)
		}
		if gso {
			if off.GSOType&^GSOECN == GSOTCPv4 {
				off.GSOType = GSOTCPv6 | off.GSOType&GSOECN
			}
			off.HdrLen = uint16(hlen + l4hdr)
			if s.mtu6 > 0 && l4hdr > 0 && int(off.GSOSize)+hlen+l4hdr > s.mtu6 {
				off.GSOSize = uint16(s.mtu6 - hlen - l4hdr)
			}
		}
	}
	r.Start, r.End, r.Verdict = ns, end, Forward
	if fragment {
		return w.fragment6(s, buf[ns:end], off, sink, r)
	}
	return r
}

// v6to4 is RFC 7915 section 5: IPv6 -> IPv4.
func (w *Worker) v6to4(s *state, buf []byte, start, end int, off *Offload, sink Sink) Result {
	r := Result{Dir: Dir64, Verdict: Drop}
	p := buf[start:end]
	if len(p) < 40 {
		return drop(r, ReasonMalformed)
	}
	pl := int(be16(p[4:]))
	if 40+pl > len(p) || pl == 0 {
		return drop(r, ReasonMalformed)
	}
	end = start + 40 + pl
	p = p[:40+pl]
	src6, dst6 := [16]byte(p[8:24]), [16]byte(p[24:40])
	if illegal6(src6) {
		return drop(r, ReasonSrcIllegal)
	}
	if illegal6(dst6) {
		return drop(r, ReasonDstIllegal)
	}
	x, why := walkExt(p)
	if why != ReasonNone {
		if why == ReasonSegmentsLeft && errorAllowed6(p) {
			// RFC 7915 section 5.1: Parameter Problem, code 0, pointing
			// at the Segments Left field.
			w.emitError6(s, p, 4, 0, uint32(x.slAt), sink)
		}
		return drop(r, why)
	}
	l4 := p[x.off:]
	if int(x.fo)*8+len(l4) > 65535-20 {
		return drop(r, ReasonMalformed) // would reassemble beyond the IPv4 maximum
	}
	first := x.fragAt < 0 || x.fo == 0
	isFrag := x.fragAt >= 0 && (x.fo != 0 || x.m)
	isErr := x.nh == protoICMPv6 && first && len(l4) > 0 && l4[0] < 128

	dst4, ddst, od := s.m.To4(dst6)
	if od == mapping.NotTranslatable {
		return drop(r, ReasonDstUnmapped)
	}
	if illegal4(dst4) { // e.g. prefix::224.0.0.1, prefix::127.0.0.1
		return drop(r, ReasonDstIllegal)
	}
	hairpin := false
	if od == mapping.ByPrefix {
		if _, _, eam := s.m.Table().Lookup4(dst4); eam {
			// RFC 7757 section 4.2: the destination is another server's
			// public address expressed in the prefix.
			switch {
			case s.cfg.Policy.Hairpin == HairpinOff:
				return drop(r, ReasonHairpinOff)
			case s.cfg.Policy.Hairpin == HairpinSimple && isErr:
				return drop(r, ReasonHairpinError)
			}
			hairpin = true
		}
	}
	src4, dsrc, os := s.m.To4(src6)
	if os == mapping.NotTranslatable && !isErr {
		return drop(r, ReasonSrcUnmapped)
	}
	if os != mapping.NotTranslatable && illegal4(src4) {
		return drop(r, ReasonSrcIllegal)
	}
	if os == mapping.ByPrefix {
		// Only the translator writes sources inside the prefix (IPv4
		// clients, and the hairpinning server in the second half of a
		// hairpin). One arriving from the IPv6 side is forged, or our own
		// output coming back: it would leave with any IPv4 source it
		// likes, a mapped server's included.
		return drop(r, ReasonSpoofed)
	}
	if len(s.deny) > 0 && ((os != mapping.NotTranslatable && s.denied(src4)) || s.denied(dst4)) {
		return drop(r, ReasonDenied)
	}
	if s.special {
		// An error may come from the translator's host itself (the
		// kernel's Packet Too Big for a packet it could not forward).
		if len(s.own6) > 0 && ((!isErr && s.isOwn6(&src6)) || s.isOwn6(&dst6)) {
			return drop(r, ReasonOwnAddress)
		}
		s4 := src4
		if os == mapping.NotTranslatable {
			s4 = dst4 // an error from an IPv6 router: its IPv4 source is ours to choose
		}
		if s.maybe4(s4, dst4) {
			if why := s.check4(s4, dst4); why != ReasonNone {
				if why == ReasonOwnAddress && os == mapping.ByEAM && od == mapping.ByPrefix && s.isOwn4(dst4) &&
					!s.isOwn4(src4) && !s.isBcast4(src4) && x.nh == protoICMPv6 && x.fragAt < 0 &&
					len(l4) >= 8 && l4[0] == 128 && l4[1] == 0 {
					return w.answerEcho6(s, p, x, sink, r)
				}
				return drop(r, why)
			}
		}
	}
	if hairpin && (p[7] <= 1 || s.decTTL && p[7] <= 2) {
		// The hairpin is a hop like any other (RFC 8200 section 3): a
		// packet that has none left is answered with Time Exceeded
		// rather than sent round again. (hairpin spends the hop; with
		// DecrementTTL the translator's own hop comes first.)
		return w.hopLimitExceeded(s, p, r, !isErr && first, sink)
	}

	if s.decTTL && p[7] <= 1 {
		// RFC 7915 section 5.1: as a router, Hop Limit Exceeded.
		if !isErr && first {
			w.emitError6(s, p, 3, 0, 0, sink)
		}
		return drop(r, ReasonTTLExceeded)
	}
	gso := off != nil && off.GSOType&^GSOECN != GSONone
	tot4 := 20 + len(l4)
	df := x.fragAt < 0 && tot4 > dfThreshold
	if df && !gso && !isErr && !hairpin && s.mtu4 > 0 && tot4 > s.mtu4 {
		// The IPv4 next hop cannot take it and DF is set: RFC 7915
		// section 5.1 / RFC 8201 Packet Too Big, MTU in IPv6 terms. (A
		// hairpinned packet never meets the IPv4 next hop.)
		if !isErr && first {
			w.emitError6(s, p, 2, 0, uint32(s.mtu4+20), sink)
		}
		return drop(r, ReasonTooBig)
	}
	partial := off != nil && off.Flags&OffloadNeedsCsum != 0
	neg := ^csumAdd(dsrc, ddst) // moves a sum from the IPv6 to the IPv4 addresses
	proto := x.nh
	l4hdr := 0
	switch x.nh {
	case protoTCP:
		r.Proto = ProtoTCP
		if first {
			if l4hdr = tcpHeaderLen(l4); l4hdr == 0 {
				return drop(r, ReasonMalformed)
			}
			adjust(l4[16:18], neg, partial, false)
			clampMSS(l4, l4hdr, s.maxMSS(), partial)
		}
	case protoUDP:
		r.Proto = ProtoUDP
		l4hdr = 8
		if first {
			if len(l4) < 8 {
				return drop(r, ReasonMalformed)
			}
			if be16(l4[6:]) != 0 || partial {
				adjust(l4[6:8], neg, partial, true)
			}
		}
	case protoICMPv6:
		r.Proto = ProtoICMP
		if isFrag {
			return drop(r, ReasonICMPFragmented)
		}
		if len(l4) < 8 {
			return drop(r, ReasonMalformed)
		}
		proto = protoICMPv4
		switch t := l4[0]; {
		case t == 128 || t == 129: // RFC 7915 section 5.2: Echo -> 8/0
			nt := byte(8)
			if t == 129 {
				nt = 0
			}
			ps := pseudo6(&src6, &dst6, uint32(len(l4)), protoICMPv6)
			if partial {
				adjust(l4[2:4], ^ps, true, false)
			} else {
				adjust(l4[2:4], csumAdd(^ps, csumSub(uint16(nt)<<8, uint16(t)<<8)), false, false)
			}
			l4[0] = nt
		case t < 128:
			if os == mapping.NotTranslatable {
				// RFC 6791: an IPv6 router without an IPv4 address.
				a, ok := s.poolAddr(hash6(&src6, &dst6))
				switch {
				case ok:
					src4 = a
				case s.hasIPv4Addr:
					// Without a pool, the translator's own address, so
					// that Packet Too Big is not lost (PMTUD black hole).
					src4 = s.ipv4Addr
				default:
					return drop(r, ReasonPoolEmpty)
				}
			}
			rr := w.icmpError64(s, buf, start, end, x, src4, dst4, off, sink)
			if hairpin && rr.Verdict == Forward {
				return w.hairpin(s, buf, rr, off, sink)
			}
			return rr
		default:
			// MLD, Neighbor Discovery and unknown informational types.
			return drop(r, ReasonICMPType)
		}
	case protoICMPv4:
		return drop(r, ReasonICMPProto)
	}
	if !first {
		r.Proto = ProtoFragment
	}
	ns := start + x.off - 20
	tc, hlim := p[0]<<4|p[1]>>4, p[7]
	// RFC 7915 section 5.1: the IPv4 header, written over the end of the
	// IPv6 header and its extension headers.
	h := buf[ns : ns+20]
	h[0] = 0x45
	h[1] = tc
	put16(h[2:], uint16(tot4))
	if x.fragAt >= 0 {
		// RFC 7915 section 5.1.1: low 16 bits of the Identification,
		// offset and MF copied, DF clear.
		put16(h[4:], uint16(x.id))
		m := uint16(0)
		if x.m {
			m = 0x2000
		}
		put16(h[6:], x.fo|m)
	} else {
		put16(h[4:], w.nextID())
		if df {
			put16(h[6:], 0x4000)
		} else {
			put16(h[6:], 0)
		}
	}
	if s.decTTL {
		hlim--
	}
	h[8] = hlim
	h[9] = proto
	copy(h[12:16], src4[:])
	copy(h[16:20], dst4[:])
	ipv4HeaderChecksum(h)
	if off != nil {
		shrink := x.off - 20
		if off.Flags&OffloadNeedsCsum != 0 || off.CsumStart != 0 {
			off.CsumStart = uint16(int(off.CsumStart) - shrink)
		}
		if gso {
			if off.GSOType&^GSOECN == GSOTCPv6 {
				off.GSOType = GSOTCPv4 | off.GSOType&GSOECN
			}
			off.HdrLen = uint16(20 + l4hdr)
			if s.mtu4 > 0 && l4hdr > 0 && int(off.GSOSize)+20+l4hdr > s.mtu4 {
				off.GSOSize = uint16(s.mtu4 - 20 - l4hdr)
			}
		}
	}
	r.Start, r.End, r.Verdict = ns, end, Forward
	if hairpin {
		return w.hairpin(s, buf, r, off, sink)
	}
	return r
}

// hairpin is the second half of RFC 7757 section 4.2: the packet just
// translated to IPv4 is addressed to another EAM server, so it goes
// straight back to IPv6 instead of leaving for the IPv4 network.
func (w *Worker) hairpin(s *state, buf []byte, r Result, off *Offload, sink Sink) Result {
	// The turn costs a hop (RFC 8200 section 3; v6to4 has refused a
	// packet with none to spare): the TTL of the intermediate IPv4 form,
	// which becomes the hop limit again. Its header checksum is not read.
	buf[r.Start+8]--
	rr := w.v4to6(s, buf, r.Start, r.End, off, sink, true)
	rr.Dir = Dir64
	if rr.Verdict != Drop {
		inc(&w.C.Hairpinned, 1)
	}
	return rr
}

// hopLimitExceeded drops the IPv6 packet p, which was to be hairpinned
// with no hop to spare, with RFC 4443 section 3.3 Time Exceeded (code 0)
// back to its source when errorOK (not about an error or a non-first
// fragment).
func (w *Worker) hopLimitExceeded(s *state, p []byte, r Result, errorOK bool, sink Sink) Result {
	if errorOK {
		w.emitError6(s, p, 3, 0, 0, sink)
	}
	return drop(r, ReasonHopLimit)
}

// ext is what walkExt learnt about an IPv6 extension header chain.
type ext struct {
	nh     uint8 // the upper-layer protocol (or the fragment's next header)
	off    int   // offset of the upper-layer header from the IPv6 header
	fragAt int   // offset of the Fragment header, -1 without one
	fo     uint16
	m      bool
	id     uint32
	slAt   int // offset of a non-zero Segments Left field
}

// walkExt skips the extension headers RFC 7915 section 5.1 says to skip:
// Hop-by-Hop Options, Destination Options, a Routing header whose Segments
// Left is 0, and the Fragment header (section 5.1.1), whose fields it
// records. Anything else is the upper layer.
func walkExt(p []byte) (x ext, why Reason) {
	x.nh, x.off, x.fragAt = p[6], 40, -1
	for i := 0; ; i++ {
		if i == maxExtHeaders {
			return x, ReasonExtHeaders
		}
		switch x.nh {
		case protoHopByHop, protoDestOpts, protoRouting:
			if x.off+8 > len(p) {
				return x, ReasonExtHeaders
			}
			if x.fragAt >= 0 && x.m {
				// RFC 7915 section 5.1.1: this header is part of the
				// fragmentable part; stripping it from the first fragment
				// alone would shift the data against the offsets of the
				// others.
				return x, ReasonExtAfterFragment
			}
			if x.nh == protoRouting && p[x.off+3] != 0 {
				x.slAt = x.off + 3
				return x, ReasonSegmentsLeft
			}
			x.nh, x.off = p[x.off], x.off+(int(p[x.off+1])+1)*8
			if x.off > len(p) {
				return x, ReasonExtHeaders
			}
			continue
		case protoFragment:
			if x.fragAt >= 0 || x.off+8 > len(p) {
				return x, ReasonExtHeaders
			}
			x.fragAt = x.off
			f := p[x.off:]
			x.nh = f[0]
			x.fo = be16(f[2:]) >> 3
			x.m = f[3]&1 != 0
			x.id = be32(f[4:])
			x.off += 8
			if x.fo != 0 {
				return x, ReasonNone // the rest is data
			}
			continue
		}
		return x, ReasonNone
	}
}

// errorAllowed6 reports whether the translator may answer the IPv6 packet
// p with an ICMPv6 error of its own: not about an ICMPv6 error, nor about
// a non-first fragment (RFC 4443 section 2.4 (e)), nor when its headers
// cannot be followed far enough to tell.
func errorAllowed6(p []byte) bool {
	x, why := walkExtInner(p)
	switch {
	case why != ReasonNone:
		return false
	case x.fragAt >= 0 && x.fo != 0:
		return false
	case x.nh == protoICMPv6:
		return x.off < len(p) && p[x.off] >= 128
	}
	return true
}

// hash6 mixes two IPv6 addresses (FNV-1a) for RFC 6791 source selection.
func hash6(a, b *[16]byte) uint32 {
	h := uint32(2166136261)
	for _, c := range a {
		h = (h ^ uint32(c)) * 16777619
	}
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}

// maxMSS is the largest TCP MSS whose segments fit both the IPv4 and the
// IPv6 next hop (0: neither MTU known).
func (s *state) maxMSS() int {
	m := 0
	if s.mtu4 > 0 {
		m = s.mtu4 - 40
	}
	if s.mtu6 > 0 && (m == 0 || s.mtu6-60 < m) {
		m = s.mtu6 - 60
	}
	return m
}

// clampMSS lowers the MSS option of a SYN to max and updates a full
// checksum (a partial one does not cover the options).
func clampMSS(tcp []byte, doff, max int, partial bool) {
	if max <= 0 || tcp[13]&0x02 == 0 {
		return
	}
	for i := 20; i < doff; {
		switch tcp[i] {
		case 0:
			return
		case 1:
			i++
			continue
		}
		if i+1 >= doff {
			return
		}
		l := int(tcp[i+1])
		if l < 2 || i+l > doff {
			return
		}
		if tcp[i] == 2 && l == 4 {
			if old := be16(tcp[i+2:]); int(old) > max {
				// The option may sit at an odd offset: sum the aligned
				// words around it before and after.
				a, b := (i+2)&^1, (i+5)&^1
				before := checksum.Checksum(tcp[a:b], 0)
				put16(tcp[i+2:], uint16(max))
				if !partial {
					adjust(tcp[16:18], csumSub(checksum.Checksum(tcp[a:b], 0), before), false, false)
				}
			}
			return
		}
		i += l
	}
}
