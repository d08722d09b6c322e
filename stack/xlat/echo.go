package xlat

import (
	"github.com/map646/map646/mapping"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The translator's own addresses answer ICMP echo, as TAYGA's ipv4-addr
// does, so that either side can ping the translator itself:
//
//   - its IPv4 addresses (Policy.IPv4Address, the first address of
//     Policy.ICMPSourcePool, the IPv4 addresses of Policy.OwnAddrs),
//     from IPv4 hosts;
//   - the same addresses inside the RFC 6052 prefix, which is how the
//     IPv6 side sees the translator (its ICMPv6 errors come from there
//     when there is no pool), from any IPv6 host: mapped servers and
//     hosts without a mapping alike;
//   - its IPv6 addresses (the IPv6 addresses of Policy.OwnAddrs), when
//     traffic to them reaches the engine (an fd link, or routes into the
//     tun), from any IPv6 host.
//
// The reply goes to the Sink (Verdict Consumed), shares the rate limit of
// the errors the translator originates, and never goes to a spoofed,
// broadcast or own address, nor answers a fragment or a request with a
// bad checksum (RFC 792, RFC 4443 section 4.1).

// echoRequest4 reports an unfragmented ICMPv4 Echo Request (RFC 792).
func echoRequest4(proto byte, isFrag bool, l4 []byte) bool {
	return proto == protoICMPv4 && !isFrag && len(l4) >= 8 && l4[0] == 8 && l4[1] == 0
}

// answerEcho4 answers the Echo Request p (IPv4 header of ihl bytes) to one
// of the translator's own IPv4 addresses with an Echo Reply from it.
func (w *Worker) answerEcho4(s *state, p []byte, ihl int, sink Sink, r Result) Result {
	r.Proto = ProtoICMP
	src4 := [4]byte(p[ip4Src:ip4Dst])
	l4 := p[ihl:]
	switch {
	case s.isOwn4(src4):
		return drop(r, ReasonOwnAddress)
	case s.isBcast4(src4):
		return drop(r, ReasonBroadcast)
	}
	if _, _, mapped := s.m.Table().Lookup4(src4); mapped {
		return drop(r, ReasonSpoofed)
	}
	if checksum.Checksum(l4, 0) != 0xffff {
		return drop(r, ReasonICMPChecksum)
	}
	if why := w.mayReply(s, sink); why != ReasonNone {
		return drop(r, why)
	}
	n := ip4Size + len(l4)
	b := w.scratch[:n]
	putIPv4(b[:ip4Size], p[ip4TOS], 64, protoICMPv4, n, w.nextID(), 0, (*[4]byte)(p[ip4Dst:ip4Size]), &src4)
	m := b[ip4Size:]
	copy(m, l4)
	m[0], m[icmpChecksum], m[icmpChecksum+1] = byte(header.ICMPv4EchoReply), 0, 0
	put16(m[icmpChecksum:], ^checksum.Checksum(m, 0))
	return w.reply(b, sink, r)
}

// echoRequest6 reports an unfragmented ICMPv6 Echo Request (RFC 4443
// section 4.1).
func echoRequest6(q *in6) bool {
	return q.x.nh == protoICMPv6 && q.x.fragAt < 0 && len(q.l4) >= icmpSize && q.l4[0] == 128 && q.l4[1] == 0
}

// echoToOwn4 reports an Echo Request to one of the translator's own IPv4
// addresses inside the prefix from an IPv6 host without a mapping (which
// addresses64 refuses as src_unmapped: it could not be translated, but
// the translator answers it itself). Sources inside the prefix never get
// here (spoofed).
func (s *state) echoToOwn4(q *in6) bool {
	return q.dstOrigin == mapping.ByPrefix && q.srcOrigin == mapping.NotTranslatable &&
		s.isOwn4(q.dst4) && echoRequest6(q)
}

// toOwn6 is a packet to one of the translator's own IPv6 addresses:
// nothing is translated to them (ReasonOwnAddress), but an Echo Request
// from an IPv6 host is answered. A source inside the prefix is an IPv4
// client's, which only the translator writes (ReasonSpoofed).
func (w *Worker) toOwn6(s *state, q *in6, sink Sink, r Result) Result {
	switch {
	case !echoRequest6(q):
		return drop(r, ReasonOwnAddress)
	case s.isOwn6(&q.src6):
		return drop(r, ReasonOwnAddress)
	case s.pfx.Valid() && s.pfx.Contains(q.src6):
		return drop(r, ReasonSpoofed)
	}
	return w.answerEcho6(s, q.p, q.x, sink, r)
}

// answerEcho6 answers the ICMPv6 Echo Request (RFC 4443 section 4.1) at
// p[x.off:] to one of the translator's own IPv6 addresses (an own IPv4
// address inside the prefix, or an own IPv6 address) with an Echo Reply
// from that address. The caller has checked the source and that the
// request is no fragment.
func (w *Worker) answerEcho6(s *state, p []byte, x ext, sink Sink, r Result) Result {
	r.Proto = ProtoICMP
	src6, dst6 := [16]byte(p[ip6Src:ip6Dst]), [16]byte(p[ip6Dst:ip6Size])
	l4 := p[x.off:]
	if checksum.Checksum(l4, pseudo6(&src6, &dst6, uint32(len(l4)), protoICMPv6)) != 0xffff {
		return drop(r, ReasonICMPChecksum)
	}
	if why := w.mayReply(s, sink); why != ReasonNone {
		return drop(r, why)
	}
	n := ip6Size + len(l4)
	b := w.scratch[:n]
	putIPv6(b[:ip6Size], trafficClass(p), 64, protoICMPv6, len(l4), &dst6, &src6, fragment{}) // traffic class kept
	m := b[ip6Size:]
	copy(m, l4)
	m[0], m[icmpChecksum], m[icmpChecksum+1] = byte(header.ICMPv6EchoReply), 0, 0
	put16(m[icmpChecksum:], ^checksum.Checksum(m, pseudo6(&dst6, &src6, uint32(len(l4)), protoICMPv6)))
	return w.reply(b, sink, r)
}

// mayReply says why no echo reply can be sent (ReasonNone: one can): no
// sink, or the rate limit the replies share with the errors the
// translator originates.
func (w *Worker) mayReply(s *state, sink Sink) Reason {
	if sink == nil {
		return ReasonNoSink
	}
	if !w.allowError(s) {
		return ReasonOwnAddress
	}
	return ReasonNone
}

// reply hands the echo reply b to the sink.
func (w *Worker) reply(b []byte, sink Sink, r Result) Result {
	w.emit(b, sink)
	r.Verdict = Consumed
	return r
}
