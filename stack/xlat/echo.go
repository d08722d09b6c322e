package xlat

import (
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The translator's own IPv4 addresses (Policy.IPv4Address, the IPv4
// addresses of Policy.OwnAddrs) answer ICMP echo, as TAYGA's ipv4-addr
// does, so that either side can ping the translator itself: an IPv4 host
// pings the address, an IPv6 server pings it inside the RFC 6052 prefix
// (the address the translator's ICMPv6 errors come from). The reply goes
// to the Sink (Verdict Consumed), shares the rate limit of the errors the
// translator originates, and goes only to a source the translator would
// translate: never to a spoofed, broadcast or own address, nor about a
// fragment or a request with a bad checksum.

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

// answerEcho6 answers the ICMPv6 Echo Request (RFC 4443 section 4.1) at
// p[x.off:], sent by a server to the translator's own IPv4 address inside
// the prefix, with an Echo Reply from that address. The caller has
// checked the source (an EAM server) and that it is no fragment.
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
