package xlat

import "gvisor.dev/gvisor/pkg/tcpip/checksum"

// maxUDP4Hdr is the largest IPv4 header (options included) and UDP header
// of a super-packet's datagram.
const maxUDP4Hdr = 60 + udpSize

// splitUSO46 translates an IPv4 UDP super-packet (USO, GSOUDPL4) without
// DF whose datagrams, translated, do not fit the IPv6 next hop or are
// larger than lowest-ipv6-mtu: each datagram alone would have been
// fragmented (RFC 7915 section 4; RFC 8200
// section 4.5), which one super-packet cannot express, so it is cut into
// its datagrams of gso payload bytes (the last may be shorter) and each is
// translated as if it had arrived alone. Datagram i is what the kernel's
// segmentation would make of it (__udp_gso_segment): the super-packet's
// headers with its own Total Length, IP ID (the super-packet's + i, as for
// any DF=0 segment), header checksum, UDP Length and a full UDP checksum
// (RFC 768). The checksum is computed afresh: a NEEDS_CSUM super-packet
// carries only the pseudo-header sum, a DATA_VALID one was verified by the
// kernel, and one with neither is verified here over the whole
// super-packet first (a wrong one is dropped as malformed: a fresh
// checksum would hide the damage). A zero UDP checksum stays zero in every
// datagram, for UDPZeroChecksum to decide as alone.
//
// The cut is made in place, without a copy: datagram i's headers are
// written just in front of its payload, over the tail of datagram i-1,
// whose translation has by then gone to the sink; the original headers
// are kept in w.usoHdr. The super-packet is Consumed; Process counts it as
// one translated packet of its input size, like a forwarded super-packet,
// and the fragments (or unfragmented datagrams) it became as Emitted.
func (w *Worker) splitUSO46(s *state, buf []byte, start int, q *in4, off *Offload, sink Sink) Result {
	r := Result{Dir: Dir46, Proto: ProtoUDP, Verdict: Drop}
	gso := int(off.GSOSize)
	ihl := q.ihl
	hdr := ihl + udpSize
	if len(q.l4) < udpSize || gso == 0 || hdr > maxUDP4Hdr {
		return drop(r, ReasonMalformed)
	}
	if sink == nil {
		return drop(r, ReasonNoSink)
	}
	data := len(q.l4) - udpSize
	csum := be16(q.l4[udpChecksum:])
	zero := off.Flags&(OffloadNeedsCsum|OffloadDataValid) == 0 && csum == 0
	if off.Flags&(OffloadNeedsCsum|OffloadDataValid) == 0 && csum != 0 {
		ps := csumAdd(checksum.Checksum(q.p[ip4Src:ip4Src+8], 0), csumAdd(protoUDP, uint16(len(q.l4))))
		if checksum.Checksum(q.l4, ps) != 0xffff {
			return drop(r, ReasonMalformed)
		}
	}
	copy(w.usoHdr[:hdr], q.p[:hdr])
	id := be16(q.h[ip4ID:])
	addrs := checksum.Checksum(q.p[ip4Src:ip4Src+8], 0)
	for i, pos := 0, 0; pos < data || i == 0; i++ {
		n := min(gso, data-pos)
		ds := start + pos // datagram i: headers, then payload at start+hdr+pos
		d := buf[ds : ds+hdr+n]
		copy(d, w.usoHdr[:hdr])
		put16(d[ip4TotalLen:], uint16(hdr+n))
		put16(d[ip4ID:], id+uint16(i))
		put16(d[ip4Checksum:], 0)
		put16(d[ip4Checksum:], ^checksum.Checksum(d[:ihl], 0))
		u := d[ihl:]
		put16(u[udpLen:], uint16(udpSize+n))
		put16(u[udpChecksum:], 0)
		if !zero {
			put16(u[udpChecksum:], csumAdd(addrs, csumAdd(protoUDP, uint16(len(u)))))
			complete(u, udpChecksum, true)
		}
		switch res := w.v4to6(s, buf, ds, ds+len(d), nil, sink, false); res.Verdict {
		case Forward:
			// Small enough for the next hop alone (a lowest-ipv6-mtu
			// above the datagram): sent whole.
			w.emit(buf[res.Start:res.End], sink)
		case Drop:
			// The super-packet's headers passed every check before the
			// cut, so only the first datagram can fail; stop at any.
			return drop(r, res.Reason)
		}
		pos += n
	}
	*off = Offload{}
	r.Verdict = Consumed
	return r
}
