package xlat

import (
	"github.com/map646/map646/mapping"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// ICMP errors are rare, so their translation may sum the whole message:
// it is built in the worker's scratch buffer (the quoted packet grows or
// shrinks in the middle of the message) and copied back into buf.

// maxICMPv6Error is RFC 4443 section 2.4 (c): an ICMPv6 error must not
// exceed the minimum IPv6 MTU (RFC 7915 section 4.3 truncates the quote).
const maxICMPv6Error = 1280

// maxICMPv4Error is RFC 1812 section 4.3.2.3: an ICMPv4 error quotes as
// much of the packet as fits in 576 bytes, its own and translated ones
// alike (RFC 7915 section 5.3 truncates the quote). A legitimate ICMPv6
// error is at most 1280 bytes (RFC 4443 section 2.4 (c)), but nothing
// stops a sender from making one of 64 KB; translated whole, it would
// leave the translator's IPv4 address at that size.
const maxICMPv4Error = 576

// rfc4884Min is the least "original datagram" length when an RFC 4884
// extension structure follows.
const rfc4884Min = 128

// plateau is the greatest of the configured MTU plateaus (RFC 1191
// section 7, sorted in descending order) less than the quoted Total
// Length (RFC 7915 section 4.2, Type 3 Code 4), else 68, the least MTU
// of IPv4 (RFC 791).
func (s *state) plateau(total int) int {
	for _, p := range s.plateaus {
		if p < total {
			return p
		}
	}
	return 68
}

// icmpMap is one entry of an ICMP error translation table: the type and
// code on the other side, and how the second word of the header is made.
type icmpMap struct {
	ok        bool // false: no counterpart, the error is silently dropped
	typ, code byte
	rfc4884   bool   // the type carries an RFC 4884 length
	rest      uint32 // a fixed second word
	pointer   bool   // Parameter Problem: the second word is the pointer, mapped
	mtu       bool   // Packet Too Big / Fragmentation Needed: the second word is the MTU
	// copyCode: every code of the type is translated unchanged (Time
	// Exceeded, "The Code is unchanged"); the entry is at code 0.
	copyCode bool
}

// icmpTable is indexed by type and code; both directions fit.
type icmpTable [13][16]icmpMap

// unreach6 and unreach4 are the Destination Unreachable entries, which
// carry an RFC 4884 length in both families.
func unreach6(code byte) icmpMap { return icmpMap{ok: true, typ: 1, code: code, rfc4884: true} }
func unreach4(code byte) icmpMap { return icmpMap{ok: true, typ: 3, code: code, rfc4884: true} }

// icmpErrors46 is RFC 7915 section 4.2 for ICMPv4 error messages.
var icmpErrors46 = icmpTable{
	3: { // Destination Unreachable
		0: unreach6(0), 1: unreach6(0), 5: unreach6(0), 6: unreach6(0), // net/host unreachable, source route failed
		7: unreach6(0), 8: unreach6(0), 11: unreach6(0), 12: unreach6(0),
		9: unreach6(1), 10: unreach6(1), 13: unreach6(1), 15: unreach6(1), // administratively prohibited
		3: unreach6(4),                          // port unreachable
		2: {ok: true, typ: 4, code: 1, rest: 6}, // protocol unreachable -> Parameter Problem, Next Header
		4: {ok: true, typ: 2, mtu: true},        // fragmentation needed -> Packet Too Big
		// 14 (host precedence violation) has no counterpart.
	},
	11: {0: {ok: true, typ: 3, rfc4884: true, copyCode: true}}, // Time Exceeded
	12: { // Parameter Problem: pointer, bad length
		0: {ok: true, typ: 4, pointer: true},
		2: {ok: true, typ: 4, pointer: true},
	},
}

// icmpErrors64 is RFC 7915 section 5.2 for ICMPv6 error messages.
var icmpErrors64 = icmpTable{
	1: { // Destination Unreachable
		0: unreach4(1), 2: unreach4(1), 3: unreach4(1), // no route, beyond scope, address unreachable -> host unreachable
		1: unreach4(10), // administratively prohibited
		4: unreach4(3),  // port unreachable
	},
	2: {0: {ok: true, typ: 3, code: 4, mtu: true}},             // Packet Too Big -> Fragmentation Needed
	3: {0: {ok: true, typ: 11, rfc4884: true, copyCode: true}}, // Time Exceeded
	4: { // Parameter Problem
		0: {ok: true, typ: 12, pointer: true},
		1: {ok: true, typ: 3, code: 2}, // unrecognized Next Header -> protocol unreachable
	},
}

// pointers46 is RFC 7915 section 4.2 Figure 3: an ICMPv4 Parameter
// Problem pointer as an ICMPv6 one (-1: Identification, Flags, Offset,
// Checksum and options have no counterpart).
var pointers46 = [...]int8{
	0, 1, // Version/IHL, Type Of Service
	4, 4, // Total Length -> Payload Length
	-1, -1, -1, -1,
	7, 6, // Time to Live -> Hop Limit, Protocol -> Next Header
	-1, -1,
	8, 8, 8, 8, // Source Address
	24, 24, 24, 24, // Destination Address
}

// pointers64 is RFC 7915 section 5.2 Figure 6: an ICMPv6 Parameter
// Problem pointer as an ICMPv4 one (-1: the Flow Label has none).
var pointers64 = [...]int8{
	0, 1, // Version/Traffic Class
	-1, -1,
	2, 2, // Payload Length -> Total Length
	9, 8, // Next Header -> Protocol, Hop Limit -> Time to Live
	12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, // Source Address
	16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, // Destination Address
}

// lookup maps an error's type and code through t; a Parameter Problem's
// pointer ptr goes through pointers and is placed in the second word
// shifted left by shift bits. ok false: the error has no counterpart.
func (t *icmpTable) lookup(typ, code byte, ptr uint32, pointers []int8, shift uint) (m icmpMap, ok bool) {
	if int(typ) >= len(t) {
		return m, false
	}
	if m = t[typ][0]; m.copyCode {
		m.code = code
		return m, m.ok
	}
	if int(code) >= len(t[typ]) {
		return icmpMap{}, false
	}
	m = t[typ][code]
	if m.pointer {
		if ptr >= uint32(len(pointers)) || pointers[ptr] < 0 {
			return m, false
		}
		m.rest = uint32(pointers[ptr]) << shift
	}
	return m, m.ok
}

// icmpErrorType46 reports the ICMPv4 error types RFC 7915 section 4.2
// translates; the others (Source Quench, Redirect) are dropped.
func icmpErrorType46(t byte) bool { return t == 3 || t == 11 || t == 12 }

// icmpError46 translates an ICMPv4 error: RFC 7915 section 4.2 for the
// type and code, section 4.3 for the quoted packet, RFC 4884 for its
// extensions.
func (w *Worker) icmpError46(s *state, buf []byte, start, end int, q *in4, off *Offload, sink Sink, hp hairpinPass) Result {
	r := Result{Dir: Dir46, Verdict: Drop, Proto: ProtoICMP}
	icmp := q.l4
	if !partialCsum(off) && checksum.Checksum(icmp, 0) != 0xffff {
		// The translation recomputes the checksum; check the old one first
		// so that damage in transit is not laundered.
		return drop(r, ReasonICMPChecksum)
	}
	m, ok := icmpErrors46.lookup(icmp[0], icmp[1], uint32(icmp[4]), pointers46[:], 0)
	if !ok {
		return drop(r, ReasonICMPType)
	}
	const at = ip6Size + icmpSize // where the quoted packet starts in out
	if len(icmp) >= icmpSize+ip4Size && [4]byte(icmp[icmpSize+ip4Src:]) != q.dst() {
		// RFC 7915 section 4.3: the quote is a packet the error's
		// destination sent; any other would have the translator relay
		// chosen bytes to a third party.
		return drop(r, ReasonICMPInner)
	}
	out := w.scratch
	n, extn, why := s.quote46(out[at:], icmp, hp)
	if why != ReasonNone {
		return drop(r, why)
	}
	n += at
	lenField := 0
	if extn != nil && m.rfc4884 {
		n, lenField = appendExtension(out, at, n, extn, 8, maxICMPv6Error)
	}
	n = min(n, maxICMPv6Error)
	if m.mtu {
		m.rest = s.mtu46(icmp)
	}
	ic := out[ip6Size:at]
	ic[0], ic[1], ic[2], ic[3] = m.typ, m.code, 0, 0
	put32(ic[4:], m.rest)
	if lenField > 0 {
		ic[4] = byte(lenField)
	}
	hlim := q.p[ip4TTL]
	if s.decTTL && !bool(hp) {
		// An error is forwarded like any packet (its expiry was checked);
		// a hairpin's hop was counted on its way in, as v4to6 does.
		hlim--
	}
	putIPv6(out[:ip6Size], s.tos46.apply(q.p[ip4TOS]), hlim, protoICMPv6, n-ip6Size, &q.src6, &q.dst6, fragment{})
	put16(ic[icmpChecksum:], ^checksum.Checksum(out[ip6Size:n], pseudo6(&q.src6, &q.dst6, uint32(n-ip6Size), protoICMPv6)))
	return w.place(buf, start, end, out[:n], r, off, sink)
}

// quote46 is RFC 7915 section 4.3: the IPv4 packet quoted by the ICMPv4
// error icmp, translated into out as far as it was quoted: an IPv6 header
// (with a Fragment header for a fragment) whose destination is written as
// in a hairpin's second half when hp, and the upper layer with the fix-ups
// of an outer packet. It returns the bytes written and the RFC 4884
// extension structure that followed the quote (section 4.1 of RFC 4884).
func (s *state) quote46(out, icmp []byte, hp hairpinPass) (n int, extn []byte, why Reason) {
	inner := icmp[icmpSize:]
	if len(inner) < ip4Size || inner[0]>>4 != 4 {
		return 0, nil, ReasonICMPInner
	}
	ihl := int(inner[0]&0xf) * 4
	tot := int(be16(inner[ip4TotalLen:]))
	if ihl < ip4Size || ihl > len(inner) || tot < ihl {
		return 0, nil, ReasonICMPInner
	}
	quote := inner
	if l := int(icmp[5]) * 4; l != 0 && l >= ihl && l <= len(inner) {
		// The zero padding to a 32-bit boundary is not part of the
		// packet: it is redone for the ICMPv6 form (RFC 4884 4.5).
		quote, extn = inner[:min(l, tot)], inner[l:]
	}
	src6, dsrc, o := s.m.To6([4]byte(inner[ip4Src:]))
	if o == mapping.NotTranslatable {
		return 0, nil, ReasonICMPInner
	}
	dst6, ddst, o := s.hairpinTo6([4]byte(inner[ip4Dst:]), hp)
	if o == mapping.NotTranslatable {
		return 0, nil, ReasonICMPInner
	}
	ff, proto, l4 := be16(inner[ip4FlagsFO:]), inner[ip4Proto], quote[ihl:]
	first := ff&ip4FOMask == 0
	switch {
	case proto == protoICMPv4 && first && len(l4) > 0 && isICMPv4Error(l4[0]):
		return 0, nil, ReasonICMPNested
	case proto == protoICMPv6:
		return 0, nil, ReasonICMPInner
	}
	hlen, nh := ip6Size, proto
	if ff&(ip4MF|ip4FOMask) != 0 {
		hlen += frag6Size
	}
	if proto == protoICMPv4 {
		nh = protoICMPv6
	}
	ul := out[hlen : hlen+len(l4)]
	copy(ul, l4)
	if first {
		fixL4(proto, ul, csumAdd(dsrc, ddst), false)
		if proto == protoICMPv4 && len(ul) >= 4 {
			if nt, ok := echoType(ul[0], true); ok {
				fixEcho(ul, nt, pseudo6(&src6, &dst6, uint32(tot-ihl), protoICMPv6), false)
			}
		}
	}
	f := fragment{offset: ff & ip4FOMask, more: ff&ip4MF != 0, id: uint32(be16(inner[ip4ID:]))}
	putIPv6(out[:hlen], inner[ip4TOS], inner[ip4TTL], nh, tot-ihl, &src6, &dst6, f) // TTL unchanged inside an error
	return hlen + len(l4), extn, ReasonNone
}

// mtu46 is the MTU of RFC 7915 section 4.2's Packet Too Big:
// min(MTU+20, IPv6 next hop, IPv4 next hop + 20), a plateau when the
// router said 0, never below 1280.
func (s *state) mtu46(icmp []byte) uint32 {
	m := int(be16(icmp[6:8]))
	if m == 0 {
		m = s.plateau(int(be16(icmp[icmpSize+ip4TotalLen:])))
	}
	m += ip6Size - ip4Size
	if s.mtu6 > 0 && m > s.mtu6 {
		m = s.mtu6
	}
	if s.mtu4 > 0 && m > s.mtu4+ip6Size-ip4Size {
		m = s.mtu4 + ip6Size - ip4Size
	}
	return uint32(max(m, 1280))
}

// appendExtension is RFC 4884 section 4.5: the original datagram at
// out[at:n] is zero-padded to a multiple of unit bytes (8 in ICMPv6, 4 in
// ICMPv4) and at least 128, and the extension structure follows. The
// original datagram is cut (to a multiple of unit, still at least 128)
// for the whole to fit limit, which also keeps the one-octet length
// attribute (section 4.1) from wrapping: limit/unit is below 256 for both
// callers. It returns the message's new end and its length field (in
// units), or n and 0 (the extension left out) when even 128 bytes of
// original datagram and the extension would exceed limit.
func appendExtension(out []byte, at, n int, extn []byte, unit, limit int) (int, int) {
	pad := max((n-at+unit-1)&^(unit-1), rfc4884Min)
	if room := (limit - at - len(extn)) &^ (unit - 1); pad > room {
		if room < rfc4884Min {
			return n, 0
		}
		pad, n = room, min(n, at+room)
	}
	clear(out[n : at+pad])
	copy(out[at+pad:], extn)
	return at + pad + len(extn), pad / unit
}

// icmpError64 translates an ICMPv6 error: RFC 7915 section 5.2 for the
// type and code, section 5.3 for the quoted packet, RFC 4884 for its
// extensions.
func (w *Worker) icmpError64(s *state, buf []byte, start, end int, q *in6, off *Offload, sink Sink) Result {
	r := Result{Dir: Dir64, Verdict: Drop, Proto: ProtoICMP}
	icmp := q.l4
	if !partialCsum(off) && checksum.Checksum(icmp, pseudo6(&q.src6, &q.dst6, uint32(len(icmp)), protoICMPv6)) != 0xffff {
		return drop(r, ReasonICMPChecksum)
	}
	code := icmp[1]
	if icmp[0] == 2 {
		code = 0 // RFC 4443 section 3.2: Packet Too Big's code is ignored by the receiver
	}
	m, ok := icmpErrors64.lookup(icmp[0], code, be32(icmp[4:]), pointers64[:], 24)
	if !ok {
		return drop(r, ReasonICMPType)
	}
	const at = ip4Size + icmpSize // where the quoted packet starts in out
	if len(icmp) >= icmpSize+ip6Size && [16]byte(icmp[icmpSize+ip6Src:]) != q.dst6 {
		// RFC 7915 section 5.3: the quote is a packet the error's
		// destination sent. An IPv6 host without a mapping may send
		// errors (RFC 6791); quoting another's packet, it would have the
		// translator relay chosen bytes from its own address to anyone.
		return drop(r, ReasonICMPInner)
	}
	out := w.scratch
	n, extn, fragmented, why := s.quote64(out[at:], icmp, m.rfc4884)
	if why != ReasonNone {
		return drop(r, why)
	}
	n += at
	lenField := 0
	if extn != nil {
		n, lenField = appendExtension(out, at, n, extn, 4, maxICMPv4Error)
	}
	n = min(n, maxICMPv4Error)
	if m.mtu {
		m.rest = s.mtu64(icmp, fragmented)
	}
	ic := out[ip4Size:at]
	ic[0], ic[1], ic[2], ic[3] = m.typ, m.code, 0, 0
	put32(ic[4:], m.rest)
	if lenField > 0 {
		ic[5] = byte(lenField)
	}
	put16(ic[icmpChecksum:], ^checksum.Checksum(out[ip4Size:n], 0))
	// An error is forwarded like any packet (its expiry was checked).
	putIPv4(out[:ip4Size], s.tos64.apply(trafficClass(q.p)), s.hopLimit64(q.p), protoICMPv4, n, w.nextID(), dfFlag(n), &q.src4, &q.dst4)
	return w.place(buf, start, end, out[:n], r, off, sink)
}

// quote64 is RFC 7915 section 5.3: the IPv6 packet quoted by the ICMPv6
// error icmp, translated into out as far as it was quoted: an IPv4 header
// without its extension headers (a packet still on its source route is
// translated to its final destination as written) and the upper layer
// with the fix-ups of an outer packet. It returns the bytes written, the
// RFC 4884 extension structure that followed the quote when the type
// carries a length (rfc4884), and whether the quote had a Fragment header.
func (s *state) quote64(out, icmp []byte, rfc4884 bool) (n int, extn []byte, fragmented bool, why Reason) {
	inner := icmp[icmpSize:]
	if len(inner) < ip6Size || inner[0]>>4 != 6 {
		return 0, nil, false, ReasonICMPInner
	}
	quote := inner
	if l := int(icmp[4]) * 8; rfc4884 && l != 0 && l >= ip6Size && l <= len(inner) {
		// The zero padding to a 64-bit boundary is not part of the
		// packet: carried over, it would make the ICMPv4 length a word
		// too long. It is redone to 32 bits (RFC 4884 4.5).
		quote, extn = inner[:min(l, ip6Size+int(be16(inner[ip6PayloadLen:])))], inner[l:]
	}
	x, why := walkExt(quote, false)
	if why == ReasonSegmentsLeft {
		x, why = walkExt(quote, true)
	}
	if why != ReasonNone {
		return 0, nil, false, ReasonICMPInner
	}
	src6, dst6 := [16]byte(inner[ip6Src:ip6Dst]), [16]byte(inner[ip6Dst:ip6Size])
	src4, dsrc, o := s.m.To4(src6)
	if o == mapping.NotTranslatable {
		return 0, nil, false, ReasonICMPInner
	}
	dst4, ddst, o := s.m.To4(dst6)
	if o == mapping.NotTranslatable {
		return 0, nil, false, ReasonICMPInner
	}
	first, l4 := x.fragAt < 0 || x.fo == 0, quote[x.off:]
	ulen := int(be16(inner[ip6PayloadLen:])) - (x.off - ip6Size)
	switch {
	case x.nh == protoICMPv6 && first && len(l4) > 0 && l4[0] < 128:
		return 0, nil, false, ReasonICMPNested
	case x.nh == protoICMPv4 || ulen < 0:
		return 0, nil, false, ReasonICMPInner
	}
	proto := x.nh
	if proto == protoICMPv6 {
		proto = protoICMPv4
	}
	ul := out[ip4Size : ip4Size+len(l4)]
	copy(ul, l4)
	if first {
		fixL4(x.nh, ul, ^csumAdd(dsrc, ddst), false)
		if x.nh == protoICMPv6 && len(ul) >= 4 {
			if nt, ok := echoType(ul[0], false); ok {
				fixEcho(ul, nt, ^pseudo6(&src6, &dst6, uint32(ulen), protoICMPv6), false)
			}
		}
	}
	id, flagsFO := x.ipv4Frag(ip4Size+ulen, 0)
	// The hop limit is unchanged inside an error.
	putIPv4(out[:ip4Size], trafficClass(inner), inner[ip6HopLimit], proto, ip4Size+ulen, id, flagsFO, &src4, &dst4)
	return ip4Size + len(l4), extn, x.fragAt >= 0, ReasonNone
}

// mtu64 is the MTU of RFC 7915 section 5.2's Fragmentation Needed:
// min(MTU-20, IPv4 next hop, IPv6 next hop - 20), 8 less when the packet
// in error had a Fragment header.
func (s *state) mtu64(icmp []byte, fragmented bool) uint32 {
	m := int(min(be32(icmp[4:8]), 65535+28)) - (ip6Size - ip4Size)
	if fragmented {
		m -= frag6Size
	}
	if s.mtu4 > 0 && m > s.mtu4 {
		m = s.mtu4
	}
	if s.mtu6 > 0 && m > s.mtu6-(ip6Size-ip4Size) {
		m = s.mtu6 - (ip6Size - ip4Size)
	}
	return uint32(max(68, min(m, 65535)))
}

// place copies a translated ICMP error from the scratch buffer into buf,
// ending where the input ended if that leaves it within the Headroom in
// front of start, else starting where it started; failing both it goes
// to the sink.
func (w *Worker) place(buf []byte, start, end int, out []byte, r Result, off *Offload, sink Sink) Result {
	if off != nil {
		*off = Offload{} // the checksums are complete; nothing to segment
	}
	n := len(out)
	ns := end - n
	if ns < max(start-Headroom, 0) {
		// In front of the Headroom lies the link's own header room (the
		// virtio_net_hdr of a tun frame), which the error must leave free
		// as any packet does.
		ns = start
		if ns+n > len(buf) {
			if sink == nil {
				return drop(r, ReasonNoSink)
			}
			w.emit(out, sink)
			r.Verdict = Consumed
			return r
		}
	}
	copy(buf[ns:], out)
	r.Start, r.End, r.Verdict = ns, ns+n, Forward
	return r
}

// partialCsum reports a packet whose checksum the sender left to offload.
func partialCsum(off *Offload) bool { return off != nil && off.Flags&OffloadNeedsCsum != 0 }
