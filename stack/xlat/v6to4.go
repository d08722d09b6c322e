package xlat

import "github.com/map646/map646/mapping"

// in6 is an IPv6 packet on its way to IPv4 and what the steps of RFC 7915
// section 5 have learnt about it.
type in6 struct {
	p          []byte // the packet, cut to its Payload Length
	x          ext
	l4         []byte
	isErr      bool // an ICMPv6 error (RFC 4443), not a later fragment of one
	src6, dst6 [16]byte
	src4, dst4 [4]byte
	srcOrigin  mapping.Origin
	dstOrigin  mapping.Origin
	delta      uint16 // moves a sum from the IPv6 to the IPv4 addresses
	hairpin    bool   // RFC 7757 section 4.2: back to IPv6 once translated
}

func (q *in6) first() bool  { return q.x.fragAt < 0 || q.x.fo == 0 }
func (q *in6) isFrag() bool { return q.x.fragAt >= 0 && (q.x.fo != 0 || q.x.m) }

// v6to4 is RFC 7915 section 5: IPv6 -> IPv4, one step per section.
func (w *Worker) v6to4(s *state, buf []byte, start, end int, off *Offload, sink Sink) Result {
	r := Result{Dir: Dir64, Verdict: Drop}
	var q in6
	if why := parse6(&q, buf[start:end]); why != ReasonNone {
		if why == ReasonSegmentsLeft {
			return w.segmentsLeft(s, &q, sink, r)
		}
		return drop(r, why)
	}
	end = start + len(q.p)
	if len(s.own6) > 0 && s.isOwn6(&q.dst6) {
		return w.toOwn6(s, &q, sink, r)
	}
	if why := s.addresses64(&q); why != ReasonNone {
		if why == ReasonSrcUnmapped && s.echoToOwn4(&q) {
			return w.answerEcho6(s, q.p, q.x, sink, r)
		}
		return drop(r, why)
	}
	if s.special {
		switch why, echo := s.own64(&q); {
		case echo:
			return w.answerEcho6(s, q.p, q.x, sink, r)
		case why != ReasonNone:
			return drop(r, why)
		}
	}
	if q.hairpin || s.decTTL { // the only packets hops64 may refuse
		if why := w.hops64(s, &q, sink); why != ReasonNone {
			return drop(r, why)
		}
	}
	if gso := off != nil && off.GSOType&^GSOECN != GSONone; s.mtu4 > 0 && ip4Size+len(q.l4) > s.mtu4 && !gso {
		if why := w.size64(s, &q, sink); why != ReasonNone {
			return drop(r, why)
		}
	}
	if !q.hairpin && usoTooBig(off, ip4Size, s.mtu4) {
		if why := w.usoTooBig64(s, &q, int(off.GSOSize), sink); why != ReasonNone {
			return drop(r, why)
		}
	}
	if q.x.nh == protoICMPv6 && !q.isFrag() && len(q.l4) >= icmpSize && q.l4[0] < 128 {
		return w.error64(s, buf, start, end, &q, off, sink)
	}
	partial := partialCsum(off)
	proto, l4hdr, cls, why := s.transport64(&q, partial)
	if r.Proto = cls; why != ReasonNone {
		return drop(r, why)
	}
	ns := start + q.x.off - ip4Size
	tot4 := ip4Size + len(q.l4)
	// Section 5.1: the IPv4 header, written over the end of the IPv6
	// header and its extension headers.
	id := uint16(0)
	if q.x.fragAt < 0 {
		id = w.nextID()
	}
	id, flagsFO := q.x.ipv4Frag(dfLength64(tot4, l4hdr, s.mtu4, off), id)
	putIPv4(buf[ns:ns+ip4Size], s.tos64.apply(trafficClass(q.p)), s.hopLimit64(q.p), proto, tot4, id, flagsFO, &q.src4, &q.dst4)
	if off != nil {
		moveOffload(off, ip4Size-q.x.off, ip4Size, l4hdr, segMTU(s.mtu4, ip4Size+l4hdr), GSOTCPv6, GSOTCPv4)
	}
	r.Start, r.End, r.Verdict = ns, end, Forward
	if q.hairpin {
		return w.hairpin(s, buf, r, off, sink)
	}
	return r
}

// parse6 checks the IPv6 header (RFC 8200 section 3) of p, follows its
// extension headers as RFC 7915 section 5.1 says and fills q; a Routing
// header with Segments Left is ReasonSegmentsLeft, with q.x.slAt set
// (segmentsLeft answers it).
func parse6(q *in6, p []byte) Reason {
	if len(p) < ip6Size {
		return ReasonMalformed
	}
	pl := int(be16(p[ip6PayloadLen:]))
	if ip6Size+pl > len(p) || pl == 0 {
		return ReasonMalformed
	}
	p = p[:ip6Size+pl]
	q.p, q.src6, q.dst6 = p, [16]byte(p[ip6Src:ip6Dst]), [16]byte(p[ip6Dst:ip6Size])
	if illegal6(q.src6) {
		return ReasonSrcIllegal
	}
	if illegal6(q.dst6) {
		return ReasonDstIllegal
	}
	x, why := walkExt(p, false)
	if why != ReasonNone {
		q.x = x
		return why
	}
	q.x, q.l4 = x, p[x.off:]
	if int(x.fo)*8+len(q.l4) > 65535-ip4Size {
		return ReasonMalformed // would reassemble beyond the IPv4 maximum
	}
	q.isErr = x.nh == protoICMPv6 && q.first() && len(q.l4) > 0 && q.l4[0] < 128
	return ReasonNone
}

// segmentsLeft refuses a packet still on its source route (section 5.1:
// a Routing header with Segments Left not 0) with Parameter Problem, code
// 0, pointing at that field, but only when its addresses are ones the
// translator would translate: a packet to an own address, or one its
// address rules refuse (a forged or unmapped source, a destination
// outside the prefix and the mappings), is dropped for that reason
// without an error, as the 4->6 direction checks addresses before source
// routes. An error to a forged source would be a reflection. What follows
// the Routing header is not known, so the packet counts as no ICMPv6
// error here; errorAllowed6 then looks behind it.
func (w *Worker) segmentsLeft(s *state, q *in6, sink Sink, r Result) Result {
	if len(s.own6) > 0 && s.isOwn6(&q.dst6) {
		return drop(r, ReasonOwnAddress)
	}
	why := s.addresses64(q)
	if why == ReasonNone && s.special {
		why, _ = s.own64(q)
	}
	if why != ReasonNone {
		return drop(r, why)
	}
	if errorAllowed6(q.p) {
		w.emitError6(s, q.p, 4, 0, uint32(q.x.slAt), sink)
	}
	return drop(r, ReasonSegmentsLeft)
}

// addresses64 is RFC 7915 section 5.1's address rules with RFC 7757's
// mappings: the destination through the EAM table or the RFC 6052 prefix
// (another server's public address in the prefix is a hairpin, section
// 4.2), the source through the EAM table only (an ICMPv6 error may come
// from a router without one, RFC 6791), and the deny list.
func (s *state) addresses64(q *in6) Reason {
	var dsrc, ddst uint16
	q.dst4, ddst, q.dstOrigin = s.m.To4(q.dst6)
	if q.dstOrigin == mapping.NotTranslatable {
		return ReasonDstUnmapped
	}
	if illegal4(q.dst4) { // e.g. prefix::224.0.0.1, prefix::127.0.0.1
		return ReasonDstIllegal
	}
	if q.dstOrigin == mapping.ByPrefix {
		if _, _, eam := s.m.Table().Lookup4(q.dst4); eam {
			switch {
			case s.cfg.Policy.Hairpin == HairpinOff:
				return ReasonHairpinOff
			case s.cfg.Policy.Hairpin == HairpinSimple && q.isErr:
				return ReasonHairpinError
			}
			q.hairpin = true
		}
	}
	q.src4, dsrc, q.srcOrigin = s.m.To4(q.src6)
	untranslatable := q.srcOrigin == mapping.NotTranslatable
	switch {
	case untranslatable && !q.isErr:
		return ReasonSrcUnmapped
	case !untranslatable && illegal4(q.src4):
		return ReasonSrcIllegal
	case q.srcOrigin == mapping.ByPrefix:
		// Only the translator writes sources inside the prefix (IPv4
		// clients, and the hairpinning server in the second half of a
		// hairpin). One arriving from the IPv6 side is forged, or our own
		// output coming back: it would leave with any IPv4 source it
		// likes, a mapped server's included.
		return ReasonSpoofed
	case len(s.deny) > 0 && ((!untranslatable && s.denied(q.src4)) || s.denied(q.dst4)):
		return ReasonDenied
	}
	q.delta = ^csumAdd(dsrc, ddst)
	return ReasonNone
}

// own64 refuses packets to or from the translator's own addresses and
// directed broadcast addresses (s.special: there are some), but for
// errors from its host (the kernel's Packet Too Big for a packet it could
// not forward); echo says the packet is an Echo Request from a server to
// an own IPv4 address in the prefix, to be answered.
func (s *state) own64(q *in6) (why Reason, echo bool) {
	if len(s.own6) > 0 && !q.isErr && s.isOwn6(&q.src6) { // to own6: see toOwn6
		return ReasonOwnAddress, false
	}
	s4 := q.src4
	if q.srcOrigin == mapping.NotTranslatable {
		s4 = q.dst4 // an error from an IPv6 router: its IPv4 source is ours to choose
	}
	if !s.maybe4(s4, q.dst4) {
		return ReasonNone, false
	}
	why = s.check4(s4, q.dst4)
	return why, why == ReasonOwnAddress && q.srcOrigin == mapping.ByEAM && q.dstOrigin == mapping.ByPrefix &&
		s.isOwn4(q.dst4) && !s.isOwn4(q.src4) && !s.isBcast4(q.src4) && q.x.nh == protoICMPv6 &&
		q.x.fragAt < 0 && len(q.l4) >= icmpSize && q.l4[0] == 128 && q.l4[1] == 0
}

// size64 refuses a packet larger than the IPv4 next hop's MTU once it
// carries DF (section 5.1: unfragmented and over dfThreshold) with Packet
// Too Big (section 5.1, RFC 8201), the MTU in IPv6 terms (ptbMTU). Errors and
// hairpinned packets (which never meet the IPv4 next hop) pass, and
// super-packets never come here.
func (w *Worker) size64(s *state, q *in6, sink Sink) Reason {
	if q.x.fragAt >= 0 || dfFlag(ip4Size+len(q.l4)) == 0 || q.isErr || q.hairpin {
		return ReasonNone
	}
	// Unfragmented and no error: RFC 4443 section 2.4 (e) allows an error.
	w.emitError6(s, q.p, 2, 0, s.ptbMTU(), sink)
	return ReasonTooBig
}

// ptbMTU is the MTU of the translator's own Packet Too Big (section 5.1):
// the IPv4 next hop's MTU in IPv6 terms, but never below the IPv6
// minimum of 1280, since RFC 8201 section 4 has a host discard a smaller
// one (a PMTUD black hole). A host at 1280 sends packets of at most 1260
// bytes once translated, which leave without DF (section 5.1, RFC 8021)
// for what lies on the IPv4 side to fragment: the host's kernel in host
// and fd modes; in NIC mode nothing does (docs/rfc-compliance.md).
func (s *state) ptbMTU() uint32 {
	return uint32(max(s.mtu4+ip4Size, 1280))
}

// transport64 is RFC 7915 section 5.5 (TCP, UDP, other protocols) and the
// Echo part of section 5.2: it fixes the upper-layer header in place and
// returns the IPv4 Protocol and the transport header length (for
// offload), and the packet's class for the counters.
func (s *state) transport64(q *in6, partial bool) (proto byte, l4hdr int, cls Proto, why Reason) {
	proto, cls = q.x.nh, ProtoOther
	switch proto {
	case protoTCP:
		if l4hdr, why = s.fixTCP(q.l4, q.first(), q.delta, partial); why != ReasonNone {
			return proto, 0, ProtoTCP, why
		}
		cls = ProtoTCP
	case protoUDP:
		// A datagram without a checksum keeps none (IPv4 allows it).
		if _, why = fixUDP(q.l4, q.first(), q.delta, partial); why != ReasonNone {
			return proto, 0, ProtoUDP, why
		}
		l4hdr, cls = udpSize, ProtoUDP
	case protoDCCP, protoUDPLite:
		if why = fixPseudo(proto, q.l4, q.first(), q.delta, partial); why != ReasonNone {
			return proto, 0, cls, why
		}
	case protoICMPv6:
		ps := ^pseudo6(&q.src6, &q.dst6, uint32(len(q.l4)), protoICMPv6)
		return protoICMPv4, 0, ProtoICMP, translateEcho(q.l4, q.isFrag(), false, ps, partial)
	case protoICMPv4:
		return proto, 0, cls, ReasonICMPProto
	}
	if !q.first() {
		cls = ProtoFragment
	}
	return proto, l4hdr, cls, ReasonNone
}

// error64 translates an ICMPv6 error (section 5.2) from the source RFC
// 6791 prescribes when the router that sent it has no IPv4 address, and
// hairpins it when it is addressed to another server (RFC 7757 section
// 4.2, intrinsic mode).
func (w *Worker) error64(s *state, buf []byte, start, end int, q *in6, off *Offload, sink Sink) Result {
	if q.srcOrigin == mapping.NotTranslatable {
		a, ok := s.poolAddr(hash6(&q.src6, &q.dst6))
		switch {
		case ok:
			q.src4 = a
		case s.hasIPv4Addr:
			// Without a pool, the translator's own address, so that
			// Packet Too Big is not lost (PMTUD black hole).
			q.src4 = s.ipv4Addr
		default:
			return drop(Result{Dir: Dir64, Verdict: Drop, Proto: ProtoICMP}, ReasonPoolEmpty)
		}
	}
	r := w.icmpError64(s, buf, start, end, q, off, sink)
	if q.hairpin && r.Verdict == Forward {
		return w.hairpin(s, buf, r, off, sink)
	}
	return r
}

// dfLength64 is the IPv4 length that section 5.1's DF rule weighs for a
// packet of tot4 bytes once translated: its own, or for a super-packet
// that of each packet the kernel cuts it into, which all copy the flag
// from its header. A UDP super-packet (USO) is cut into datagrams of
// gso_size payload bytes; a TCP one (TSO) into segments of gso_size
// payload bytes after the transport header, gso_size as moveOffload
// leaves it (at most the IPv4 MTU), so that segments of at most
// dfThreshold bytes, such as those of an IPv6 sender at the 1280-byte
// minimum MTU, leave without DF as each would have alone. A last, shorter
// segment or datagram gets the flag of the others.
func dfLength64(tot4, l4hdr, mtu4 int, off *Offload) int {
	if off == nil {
		return tot4
	}
	switch off.GSOType &^ GSOECN {
	case GSOUDPL4:
		return ip4Size + udpSize + int(off.GSOSize)
	case GSOTCPv6:
		seg := ip4Size + l4hdr + int(off.GSOSize)
		if mtu4 > 0 && l4hdr >= tcpMinSize {
			seg = min(seg, segMTU(mtu4, ip4Size+l4hdr)) // moveOffload's clamp
		}
		return min(seg, tot4)
	}
	return tot4
}

// usoTooBig64 refuses a UDP super-packet whose datagrams of gso payload
// bytes do not fit the IPv4 next hop, as size64 would each datagram sent
// alone: one Packet Too Big (section 5.1, RFC 8201) quoting the first
// datagram (firstDatagram) when its IPv4 form carries DF. Without DF the
// super-packet passes, its IPv4 header without DF (see v6to4), and the
// IPv4 next hop fragments each datagram as it would have alone.
func (w *Worker) usoTooBig64(s *state, q *in6, gso int, sink Sink) Reason {
	if q.x.fragAt >= 0 || dfFlag(ip4Size+udpSize+gso) == 0 {
		return ReasonNone
	}
	if q.x.nh == protoUDP && len(q.l4) >= udpSize { // not metadata the kernel would refuse
		d, l, u, c := firstDatagram(q.p, ip6PayloadLen, ip6Size, q.x.off, -1, gso)
		w.emitError6(s, d, 2, 0, s.ptbMTU(), sink)
		restoreDatagram(q.p, ip6PayloadLen, q.x.off, -1, l, u, c)
	}
	return ReasonTooBig
}

// ipv4Frag is section 5.1's Identification and Flags: copied from the
// Fragment header with DF clear (section 5.1.1), else id and DF above
// dfThreshold.
func (x *ext) ipv4Frag(total int, id uint16) (uint16, uint16) {
	if x.fragAt < 0 {
		return id, dfFlag(total)
	}
	m := uint16(0)
	if x.m {
		m = ip4MF
	}
	return uint16(x.id), x.fo | m
}

// hairpin is the second half of RFC 7757 section 4.2: the packet just
// translated to IPv4 is addressed to another EAM server, so it goes
// straight back to IPv6 instead of leaving for the IPv4 network.
func (w *Worker) hairpin(s *state, buf []byte, r Result, off *Offload, sink Sink) Result {
	// The turn costs a hop (RFC 8200 section 3; v6to4 has refused a
	// packet with none to spare): the TTL of the intermediate IPv4 form,
	// which becomes the hop limit again. Its header checksum is not read.
	buf[r.Start+ip4TTL]--
	rr := w.v4to6(s, buf, r.Start, r.End, off, sink, true)
	rr.Dir = Dir64
	if rr.Verdict != Drop {
		inc(&w.C.Hairpinned, 1)
	}
	return rr
}

// hops64 refuses a packet with no hop to spare, with RFC 4443 section 3.3
// Time Exceeded (code 0) back to its source unless it is an error or a
// later fragment. The hairpin is a hop like any other (RFC 8200 section
// 3): a packet that has none left for it is not sent round again
// (ReasonHopLimit; hairpin spends the hop, and with DecrementTTL the
// translator's own hop comes first). With DecrementTTL the translator is
// the router of RFC 7915 section 5.1 (ReasonTTLExceeded).
func (w *Worker) hops64(s *state, q *in6, sink Sink) Reason {
	hl, why := q.p[ip6HopLimit], ReasonNone
	switch {
	case q.hairpin && (hl <= 1 || s.decTTL && hl <= 2):
		why = ReasonHopLimit
	case s.decTTL && hl <= 1:
		why = ReasonTTLExceeded
	default:
		return ReasonNone
	}
	if !q.isErr && q.first() {
		w.emitError6(s, q.p, 3, 0, 0, sink)
	}
	return why
}

// hopLimit64 is the TTL of the IPv4 form of the IPv6 packet p: its hop
// limit, less the translator's hop with DecrementTTL (with a tun the host
// kernel counts it). hops64 has refused a packet with none to spare.
func (s *state) hopLimit64(p []byte) byte {
	if s.decTTL {
		return p[ip6HopLimit] - 1
	}
	return p[ip6HopLimit]
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
// records. Anything else is the upper layer. A quoted packet (section 5.3)
// may still have been on its source route: its Routing headers are
// skipped whatever their Segments Left, and its headers after a Fragment
// header are not refused (they are only read).
func walkExt(p []byte, quoted bool) (x ext, why Reason) {
	x.nh, x.off, x.fragAt = p[ip6NextHeader], ip6Size, -1
	for range maxExtHeaders {
		switch x.nh {
		case protoHopByHop, protoDestOpts, protoRouting:
			if x.off+8 > len(p) {
				return x, ReasonExtHeaders
			}
			if !quoted && x.fragAt >= 0 && x.m {
				// Section 5.1.1: this header is part of the fragmentable
				// part; stripping it from the first fragment alone would
				// shift the data against the offsets of the others.
				return x, ReasonExtAfterFragment
			}
			if !quoted && x.nh == protoRouting && p[x.off+3] != 0 {
				x.slAt = x.off + 3
				return x, ReasonSegmentsLeft
			}
			x.nh, x.off = p[x.off], x.off+(int(p[x.off+1])+1)*8
			if x.off > len(p) {
				return x, ReasonExtHeaders
			}
		case protoFragment:
			if x.fragAt >= 0 || x.off+frag6Size > len(p) {
				return x, ReasonExtHeaders
			}
			x.fragAt = x.off
			f := p[x.off:]
			x.nh, x.fo, x.m, x.id = f[0], be16(f[2:])>>3, f[3]&1 != 0, be32(f[4:])
			x.off += frag6Size
			if x.fo != 0 {
				return x, ReasonNone // the rest is data
			}
		default:
			return x, ReasonNone
		}
	}
	return x, ReasonExtHeaders
}

// errorAllowed6 reports whether the translator may answer the IPv6 packet
// p with an ICMPv6 error of its own: not about an ICMPv6 error, nor about
// a non-first fragment (RFC 4443 section 2.4 (e)), nor when its headers
// cannot be followed far enough to tell.
func errorAllowed6(p []byte) bool {
	x, why := walkExt(p, true)
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
