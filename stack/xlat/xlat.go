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
	protoDCCP     = 33
	protoRouting  = 43
	protoFragment = 44
	protoICMPv6   = 58
	protoDestOpts = 60
	protoUDPLite  = 136

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

// noRouter4 reports the sources of illegal4 that no router's interface
// can have (RFC 1812 sections 4.2.2.11 and 5.3.7): this network (0/8),
// loopback (127/8), multicast (224/4) and the limited broadcast. An ICMPv4
// error from one is forged whatever the prefix; link-local and class E
// space may number a router and stay exempt from the source check
// (RFC 7915 sections 4.1 and 4.3).
func noRouter4(a [4]byte) bool {
	return a[0] == 0 || a[0] == 127 || a[0]&0xf0 == 224 || a == [4]byte{255, 255, 255, 255}
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
	if len(l4) < tcpMinSize {
		return 0
	}
	n := int(l4[12]>>4) * 4
	if n < tcpMinSize || n > len(l4) {
		return 0
	}
	return n
}

func (w *Worker) nextID() uint16 {
	w.ipID++
	return uint16(w.ipID)
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
// IPv6 next hop (0: no clamp, because Policy.ClampMSS is off or neither
// MTU is known).
func (s *state) maxMSS() int {
	if !s.cfg.Policy.ClampMSS {
		return 0
	}
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
