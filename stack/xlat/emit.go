package xlat

import "gvisor.dev/gvisor/pkg/tcpip/checksum"

// emitError4 sends the translator's own ICMPv4 error about the IPv4 packet
// orig back to its source (RFC 792), from s.errSrc4, rate-limited. Callers
// never call it for ICMP errors or non-first fragments (RFC 1812 4.3.2.7),
// nor about the intermediate IPv4 form of a hairpinned packet.
func (w *Worker) emitError4(s *state, orig []byte, typ, code byte, rest uint32, sink Sink) {
	if sink == nil || !w.allowError(s) {
		return
	}
	n := min(ip4Size+icmpSize+len(orig), maxICMPv4Error)
	b := w.errBuf[Headroom : Headroom+n]
	putIPv4(b[:ip4Size], 0, 64, protoICMPv4, n, w.nextID(), 0, &s.errSrc4, (*[4]byte)(orig[ip4Src:ip4Dst]))
	putICMPError(b[ip4Size:], typ, code, rest, orig, 0)
	w.emit(b, sink)
}

// emitError6 sends the translator's own ICMPv6 error about the IPv6 packet
// orig back to its source (RFC 4443), rate-limited. Its source is the
// translator's error address inside the RFC 6052 prefix (s.errSrc6), or
// the packet's destination when no prefix is configured.
func (w *Worker) emitError6(s *state, orig []byte, typ, code byte, rest uint32, sink Sink) {
	if sink == nil || !w.allowError(s) {
		return
	}
	n := min(ip6Size+icmpSize+len(orig), maxICMPv6Error)
	b := w.errBuf[Headroom : Headroom+n]
	src, dst := s.errSrc6, [16]byte(orig[ip6Src:ip6Dst])
	if !s.pfx.Valid() {
		src = [16]byte(orig[ip6Dst:ip6Size])
	}
	putIPv6(b[:ip6Size], 0, 64, protoICMPv6, n-ip6Size, &src, &dst, fragment{})
	putICMPError(b[ip6Size:], typ, code, rest, orig, pseudo6(&src, &dst, uint32(n-ip6Size), protoICMPv6))
	w.emit(b, sink)
}

// putICMPError writes at m an ICMP error message (RFC 792, RFC 4443
// section 2.1) quoting as much of orig as m holds, with its checksum over
// the pseudo-header sum ps (0 in ICMPv4, which has none).
func putICMPError(m []byte, typ, code byte, rest uint32, orig []byte, ps uint16) {
	m[0], m[1], m[2], m[3] = typ, code, 0, 0
	put32(m[4:], rest)
	copy(m[icmpSize:], orig)
	put16(m[icmpChecksum:], ^checksum.Checksum(m, ps))
}

// emit hands a packet the engine made to the sink.
func (w *Worker) emit(b []byte, sink Sink) {
	sink.Emit(b, nil)
	inc(&w.C.Emitted, 1)
}

// fragment6 splits the translated IPv6 packet pkt (which carries a
// Fragment header at offset 40) into fragments of at most fit6 bytes
// (lowest_ipv6_mtu, or the IPv6 next hop's MTU when smaller) with offsets in multiples of 8 (RFC 7915 section 4, RFC 8200
// section 4.5) and emits them.
func (w *Worker) fragment6(s *state, pkt []byte, off *Offload, sink Sink, r Result) Result {
	if sink == nil {
		return drop(r, ReasonNoSink)
	}
	base := int(be16(pkt[42:]) &^ 7)
	data := pkt[48:]
	if base+len(data) > 65535 {
		return drop(r, ReasonMalformed)
	}
	if off != nil {
		if off.Flags&OffloadNeedsCsum != 0 && base == 0 {
			// Fragments cannot be checksummed by the device: finish the
			// partial checksum over the whole datagram first.
			cs := int(off.CsumStart)
			if cs >= 48 && cs+int(off.CsumOffset)+2 <= len(pkt) {
				complete(pkt[cs:], int(off.CsumOffset), pkt[40] == protoUDP)
			}
		}
		*off = Offload{}
	}
	lastM := be16(pkt[42:]) & 1
	step := (s.fit6 - 48) &^ 7
	frags := uint64(0)
	for pos := 0; pos < len(data); {
		n := min(step, len(data)-pos)
		m := lastM
		if pos+n < len(data) {
			m = 1
		}
		o := w.scratch[:48+n]
		copy(o, pkt[:48])
		copy(o[48:], data[pos:pos+n])
		put16(o[4:], uint16(8+n))
		put16(o[42:], uint16(base+pos)|m)
		// What emit does, its count once for all: emit is just over the
		// inlining budget, and a frame per fragment shows.
		sink.Emit(o, nil)
		frags++
		pos += n
	}
	inc(&w.C.Emitted, frags)
	r.Verdict = Consumed
	return r
}
