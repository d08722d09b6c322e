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

// rfc4884Min is the least "original datagram" length when an RFC 4884
// extension structure follows.
const rfc4884Min = 128

// mtuPlateaus are the RFC 1191 section 7 plateaus, used when an IPv4
// router reports Fragmentation Needed with an MTU of 0.
var mtuPlateaus = [...]int{65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68}

// plateau is the greatest plateau less than the quoted Total Length
// (RFC 7915 section 4.2, Type 3 Code 4).
func plateau(total int) int {
	for _, p := range mtuPlateaus {
		if p < total {
			return p
		}
	}
	return 68
}

// pointer46 is RFC 7915 section 4.2 Figure 3: an ICMPv4 Parameter Problem
// pointer as an ICMPv6 one.
func pointer46(p byte) (uint32, bool) {
	switch {
	case p == 0 || p == 1: // Version/IHL, Type Of Service
		return uint32(p), true
	case p == 2 || p == 3: // Total Length -> Payload Length
		return 4, true
	case p == 8: // Time to Live -> Hop Limit
		return 7, true
	case p == 9: // Protocol -> Next Header
		return 6, true
	case p >= 12 && p <= 15: // Source Address
		return 8, true
	case p >= 16 && p <= 19: // Destination Address
		return 24, true
	}
	return 0, false // Identification, Flags, Offset, Checksum, options: no counterpart
}

// pointer64 is RFC 7915 section 5.2 Figure 6: an ICMPv6 Parameter Problem
// pointer as an ICMPv4 one.
func pointer64(p uint32) (byte, bool) {
	switch {
	case p == 0 || p == 1: // Version/Traffic Class
		return byte(p), true
	case p == 4 || p == 5: // Payload Length -> Total Length
		return 2, true
	case p == 6: // Next Header -> Protocol
		return 9, true
	case p == 7: // Hop Limit -> Time to Live
		return 8, true
	case p >= 8 && p <= 23: // Source Address
		return 12, true
	case p >= 24 && p <= 39: // Destination Address
		return 16, true
	}
	return 0, false // Flow Label and beyond the header: no counterpart
}

// icmpError46 translates an ICMPv4 error (RFC 7915 section 4.2 for the
// type and code, section 4.3 for the quoted packet) into buf.
func (w *Worker) icmpError46(s *state, buf []byte, start, end, ihl int, src6, dst6 *[16]byte, off *Offload, sink Sink, hp hairpinPass) Result {
	r := Result{Dir: Dir46, Verdict: Drop, Proto: ProtoICMP}
	p := buf[start:end]
	icmp := p[ihl:]
	if !partialCsum(off) && checksum.Checksum(icmp, 0) != 0xffff {
		// The translation recomputes the checksum; check the old one first
		// so that damage in transit is not laundered.
		return drop(r, ReasonICMPChecksum)
	}
	typ, code := icmp[0], icmp[1]
	var t6, c6 byte
	var rest uint32
	hasLen := false // the ICMPv6 type carries an RFC 4884 length
	switch typ {
	case 3: // Destination Unreachable
		switch code {
		case 0, 1, 5, 6, 7, 8, 11, 12: // net/host unreachable, source route failed, ...
			t6, c6, hasLen = 1, 0, true
		case 9, 10, 13, 15: // administratively prohibited
			t6, c6, hasLen = 1, 1, true
		case 3: // port unreachable
			t6, c6, hasLen = 1, 4, true
		case 2: // protocol unreachable -> Parameter Problem, Next Header
			t6, c6, rest = 4, 1, 6
		case 4: // fragmentation needed -> Packet Too Big
			t6 = 2
		default: // 14 (host precedence violation) and unknown codes
			return drop(r, ReasonICMPType)
		}
	case 11: // Time Exceeded
		if code > 1 {
			return drop(r, ReasonICMPType)
		}
		t6, c6, hasLen = 3, code, true
	case 12: // Parameter Problem
		if code != 0 && code != 2 {
			return drop(r, ReasonICMPType)
		}
		ptr, ok := pointer46(icmp[4])
		if !ok {
			return drop(r, ReasonICMPType)
		}
		t6, rest = 4, ptr
	}

	inner := icmp[8:]
	if len(inner) < 20 || inner[0]>>4 != 4 {
		return drop(r, ReasonICMPInner)
	}
	iihl := int(inner[0]&0xf) * 4
	itot := int(be16(inner[2:]))
	if iihl < 20 || iihl > len(inner) || itot < iihl {
		return drop(r, ReasonICMPInner)
	}
	quote, extn := inner, []byte(nil)
	if l := int(icmp[5]) * 4; l != 0 && l >= iihl && l <= len(inner) {
		quote, extn = inner[:l], inner[l:] // RFC 4884 section 4.1
		if itot < len(quote) {
			// The zero padding to a 32-bit boundary is not part of the
			// packet: it is redone for the ICMPv6 form (RFC 4884 4.5).
			quote = quote[:itot]
		}
	}
	ifrag := be16(inner[6:])
	iproto := inner[9]
	isrc4, idst4 := [4]byte(inner[12:16]), [4]byte(inner[16:20])
	isrc6, dis, o := s.m.To6(isrc4)
	if o == mapping.NotTranslatable {
		return drop(r, ReasonICMPInner)
	}
	idst6, did, o := s.hairpinTo6(idst4, hp)
	if o == mapping.NotTranslatable {
		return drop(r, ReasonICMPInner)
	}
	iIsFrag := ifrag&0x3fff != 0
	iFirst := ifrag&0x1fff == 0
	ipl := quote[iihl:]
	if iproto == protoICMPv4 && iFirst && len(ipl) > 0 && isICMPv4Error(ipl[0]) {
		return drop(r, ReasonICMPNested)
	}
	if iproto == protoICMPv6 {
		return drop(r, ReasonICMPInner)
	}
	ihlen := 40
	if iIsFrag {
		ihlen = 48
	}
	out := w.scratch
	n := 48 + ihlen + len(ipl)
	copy(out[48+ihlen:], ipl)
	ip := out[48+ihlen : n]
	inh := iproto
	if iFirst {
		// The quoted transport header, translated like a normal packet
		// (RFC 7915 section 4.3) as far as it was quoted.
		d := csumAdd(dis, did)
		switch iproto {
		case protoTCP:
			if len(ip) >= 18 {
				adjust(ip[16:18], d, false, false)
			}
		case protoUDP:
			if len(ip) >= 8 && be16(ip[6:]) != 0 {
				adjust(ip[6:8], d, false, true)
			}
		case protoICMPv4:
			if len(ip) >= 4 && (ip[0] == 8 || ip[0] == 0) {
				nt := byte(128)
				if ip[0] == 0 {
					nt = 129
				}
				ps := pseudo6(&isrc6, &idst6, uint32(itot-iihl), protoICMPv6)
				adjust(ip[2:4], csumAdd(ps, csumSub(uint16(nt)<<8, uint16(ip[0])<<8)), false, false)
				ip[0] = nt
			}
		}
	}
	if iproto == protoICMPv4 {
		inh = protoICMPv6
	}
	ih := out[48 : 48+ihlen]
	itos := inner[1]
	ih[0] = 0x60 | itos>>4
	ih[1] = itos << 4
	ih[2], ih[3] = 0, 0
	put16(ih[4:], uint16(itot-iihl+ihlen-40))
	ih[7] = inner[8] // TTL unchanged inside an error
	copy(ih[8:24], isrc6[:])
	copy(ih[24:40], idst6[:])
	if iIsFrag {
		ih[6] = protoFragment
		ih[40], ih[41] = inh, 0
		put16(ih[42:], (ifrag&0x1fff)<<3|(ifrag>>13)&1)
		put32(ih[44:], uint32(be16(inner[4:])))
	} else {
		ih[6] = inh
	}
	lenField := 0
	if extn != nil && hasLen {
		// RFC 4884 section 4.5: the original datagram is zero-padded to a
		// 64-bit boundary and at least 128 bytes; length counts 64-bit words.
		l := n - 48
		pad := (l + 7) &^ 7
		if pad < rfc4884Min {
			pad = rfc4884Min
		}
		if 48+pad+len(extn) <= maxICMPv6Error {
			clear(out[n : 48+pad])
			copy(out[48+pad:], extn)
			n = 48 + pad + len(extn)
			lenField = pad / 8
		}
	}
	if n > maxICMPv6Error {
		n = maxICMPv6Error
	}
	if t6 == 2 {
		// RFC 7915 section 4.2: min(MTU+20, IPv6 next hop, IPv4 next hop
		// + 20), a plateau when the router said 0, never below 1280.
		m := int(be16(icmp[6:8]))
		if m == 0 {
			m = plateau(itot)
		}
		m += 20
		if s.mtu6 > 0 && m > s.mtu6 {
			m = s.mtu6
		}
		if s.mtu4 > 0 && m > s.mtu4+20 {
			m = s.mtu4 + 20
		}
		if m < 1280 {
			m = 1280
		}
		rest = uint32(m)
	}
	ic := out[40:48]
	ic[0], ic[1], ic[2], ic[3] = t6, c6, 0, 0
	put32(ic[4:], rest)
	if lenField > 0 {
		ic[4] = byte(lenField)
	}
	oh := out[:40]
	tos := p[1]
	oh[0] = 0x60 | tos>>4
	oh[1] = tos << 4
	oh[2], oh[3] = 0, 0
	put16(oh[4:], uint16(n-40))
	oh[6] = protoICMPv6
	oh[7] = p[8]
	if s.decTTL { // an error is forwarded like any packet (its expiry was checked)
		oh[7]--
	}
	copy(oh[8:24], src6[:])
	copy(oh[24:40], dst6[:])
	put16(ic[2:], ^checksum.Checksum(out[40:n], pseudo6(src6, dst6, uint32(n-40), protoICMPv6)))
	return w.place(buf, start, end, out[:n], r, off, sink)
}

// icmpError64 translates an ICMPv6 error (RFC 7915 section 5.2 for the
// type and code, section 5.3 for the quoted packet) into buf.
func (w *Worker) icmpError64(s *state, buf []byte, start, end int, x ext, src4, dst4 [4]byte, off *Offload, sink Sink) Result {
	r := Result{Dir: Dir64, Verdict: Drop, Proto: ProtoICMP}
	p := buf[start:end]
	icmp := p[x.off:]
	if !partialCsum(off) {
		ps := pseudo6((*[16]byte)(p[8:24]), (*[16]byte)(p[24:40]), uint32(len(icmp)), protoICMPv6)
		if checksum.Checksum(icmp, ps) != 0xffff {
			return drop(r, ReasonICMPChecksum)
		}
	}
	typ, code := icmp[0], icmp[1]
	var t4, c4 byte
	var rest uint32
	hasLen := false // the ICMPv6 type carries an RFC 4884 length
	switch typ {
	case 1: // Destination Unreachable
		hasLen = true
		switch code {
		case 0, 2, 3: // no route, beyond scope, address unreachable -> host unreachable
			t4, c4 = 3, 1
		case 1: // administratively prohibited
			t4, c4 = 3, 10
		case 4: // port unreachable
			t4, c4 = 3, 3
		default:
			return drop(r, ReasonICMPType)
		}
	case 2: // Packet Too Big -> Fragmentation Needed
		t4, c4 = 3, 4
	case 3: // Time Exceeded
		if code > 1 {
			return drop(r, ReasonICMPType)
		}
		t4, c4, hasLen = 11, code, true
	case 4: // Parameter Problem
		switch code {
		case 0:
			ptr, ok := pointer64(be32(icmp[4:]))
			if !ok {
				return drop(r, ReasonICMPType)
			}
			t4, rest = 12, uint32(ptr)<<24
		case 1: // unrecognized Next Header -> protocol unreachable
			t4, c4 = 3, 2
		default:
			return drop(r, ReasonICMPType)
		}
	default:
		return drop(r, ReasonICMPType)
	}
	inner := icmp[8:]
	if len(inner) < 40 || inner[0]>>4 != 6 {
		return drop(r, ReasonICMPInner)
	}
	quote, extn := inner, []byte(nil)
	if l := int(icmp[4]) * 8; hasLen && l != 0 && l >= 40 && l <= len(inner) {
		quote, extn = inner[:l], inner[l:] // RFC 4884 section 4.1
		if n := 40 + int(be16(inner[4:])); n < len(quote) {
			// The zero padding to a 64-bit boundary is not part of the
			// packet: carried over, it would make the ICMPv4 length a
			// word too long. It is redone to 32 bits (RFC 4884 4.5).
			quote = quote[:n]
		}
	}
	xi, why := walkExt(quote)
	if why != ReasonNone && why != ReasonSegmentsLeft {
		return drop(r, ReasonICMPInner)
	}
	if why == ReasonSegmentsLeft {
		// The quoted packet was still being source-routed: translate its
		// final destination as written, skipping the Routing header.
		if xi, why = walkExtInner(quote); why != ReasonNone {
			return drop(r, ReasonICMPInner)
		}
	}
	isrc6, idst6 := [16]byte(inner[8:24]), [16]byte(inner[24:40])
	isrc4, dis, o := s.m.To4(isrc6)
	if o == mapping.NotTranslatable {
		return drop(r, ReasonICMPInner)
	}
	idst4, did, o := s.m.To4(idst6)
	if o == mapping.NotTranslatable {
		return drop(r, ReasonICMPInner)
	}
	iFirst := xi.fragAt < 0 || xi.fo == 0
	ipl := quote[xi.off:]
	if xi.nh == protoICMPv6 && iFirst && len(ipl) > 0 && ipl[0] < 128 {
		return drop(r, ReasonICMPNested)
	}
	if xi.nh == protoICMPv4 {
		return drop(r, ReasonICMPInner)
	}
	iplen := int(be16(inner[4:])) - (xi.off - 40)
	if iplen < 0 {
		return drop(r, ReasonICMPInner)
	}
	out := w.scratch
	n := 48 + len(ipl)
	copy(out[48:], ipl)
	ip := out[48:n]
	iproto := xi.nh
	if iFirst {
		neg := ^csumAdd(dis, did)
		switch xi.nh {
		case protoTCP:
			if len(ip) >= 18 {
				adjust(ip[16:18], neg, false, false)
			}
		case protoUDP:
			if len(ip) >= 8 && be16(ip[6:]) != 0 {
				adjust(ip[6:8], neg, false, true)
			}
		case protoICMPv6:
			if len(ip) >= 4 && (ip[0] == 128 || ip[0] == 129) {
				nt := byte(8)
				if ip[0] == 129 {
					nt = 0
				}
				ps := pseudo6(&isrc6, &idst6, uint32(iplen), protoICMPv6)
				adjust(ip[2:4], csumAdd(^ps, csumSub(uint16(nt)<<8, uint16(ip[0])<<8)), false, false)
				ip[0] = nt
			}
		}
	}
	if iproto == protoICMPv6 {
		iproto = protoICMPv4
	}
	ih := out[28:48]
	itot := 20 + iplen
	ih[0] = 0x45
	ih[1] = inner[0]<<4 | inner[1]>>4
	put16(ih[2:], uint16(itot))
	if xi.fragAt >= 0 {
		put16(ih[4:], uint16(xi.id))
		m := uint16(0)
		if xi.m {
			m = 0x2000
		}
		put16(ih[6:], xi.fo|m)
	} else {
		put16(ih[4:], 0)
		if itot > dfThreshold {
			put16(ih[6:], 0x4000)
		} else {
			put16(ih[6:], 0)
		}
	}
	ih[8] = inner[7] // hop limit unchanged inside an error
	ih[9] = iproto
	copy(ih[12:16], isrc4[:])
	copy(ih[16:20], idst4[:])
	ipv4HeaderChecksum(ih)
	lenField := 0
	if extn != nil {
		// RFC 4884 section 4.5: pad to a 32-bit boundary, at least 128
		// bytes; the ICMPv4 length counts 32-bit words.
		l := n - 28
		pad := (l + 3) &^ 3
		if pad < rfc4884Min {
			pad = rfc4884Min
		}
		clear(out[n : 28+pad])
		copy(out[28+pad:], extn)
		n = 28 + pad + len(extn)
		lenField = pad / 4
	}
	if typ == 2 {
		// RFC 7915 section 5.2: min(MTU-20, IPv4 next hop, IPv6 next hop
		// - 20); 8 more when the packet in error had a Fragment header.
		m := int(min(be32(icmp[4:8]), 65535+28))
		m -= 20
		if xi.fragAt >= 0 {
			m -= 8
		}
		if s.mtu4 > 0 && m > s.mtu4 {
			m = s.mtu4
		}
		if s.mtu6 > 0 && m > s.mtu6-20 {
			m = s.mtu6 - 20
		}
		m = max(68, min(m, 65535))
		rest = uint32(m)
	}
	ic := out[20:28]
	ic[0], ic[1], ic[2], ic[3] = t4, c4, 0, 0
	put32(ic[4:], rest)
	if lenField > 0 {
		ic[5] = byte(lenField)
	}
	put16(ic[2:], ^checksum.Checksum(out[20:n], 0))
	oh := out[:20]
	oh[0] = 0x45
	oh[1] = p[0]<<4 | p[1]>>4
	put16(oh[2:], uint16(n))
	put16(oh[4:], w.nextID())
	if n > dfThreshold {
		put16(oh[6:], 0x4000)
	} else {
		put16(oh[6:], 0)
	}
	oh[8] = p[7]
	if s.decTTL { // an error is forwarded like any packet (its expiry was checked)
		oh[8]--
	}
	oh[9] = protoICMPv4
	copy(oh[12:16], src4[:])
	copy(oh[16:20], dst4[:])
	ipv4HeaderChecksum(oh)
	return w.place(buf, start, end, out[:n], r, off, sink)
}

// walkExtInner walks a quoted packet's extension headers skipping Routing
// headers whatever their Segments Left.
func walkExtInner(p []byte) (ext, Reason) {
	x := ext{nh: p[6], off: 40, fragAt: -1}
	for i := 0; i < maxExtHeaders; i++ {
		switch x.nh {
		case protoHopByHop, protoDestOpts, protoRouting:
			if x.off+8 > len(p) {
				return x, ReasonExtHeaders
			}
			x.nh, x.off = p[x.off], x.off+(int(p[x.off+1])+1)*8
			if x.off > len(p) {
				return x, ReasonExtHeaders
			}
		case protoFragment:
			if x.fragAt >= 0 || x.off+8 > len(p) {
				return x, ReasonExtHeaders
			}
			x.fragAt = x.off
			f := p[x.off:]
			x.nh, x.fo, x.m, x.id = f[0], be16(f[2:])>>3, f[3]&1 != 0, be32(f[4:])
			x.off += 8
			if x.fo != 0 {
				return x, ReasonNone
			}
		default:
			return x, ReasonNone
		}
	}
	return x, ReasonExtHeaders
}

// place copies a translated ICMP error from the scratch buffer into buf,
// ending where the input ended if there is room in front, else starting
// where it started; failing both it goes to the sink.
func (w *Worker) place(buf []byte, start, end int, out []byte, r Result, off *Offload, sink Sink) Result {
	if off != nil {
		*off = Offload{} // the checksums are complete; nothing to segment
	}
	n := len(out)
	ns := end - n
	if ns < 0 {
		ns = start
		if ns+n > len(buf) {
			if sink == nil {
				return drop(r, ReasonNoSink)
			}
			sink.Emit(out, nil)
			inc(&w.C.Emitted, 1)
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
