package stack

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Ethernet framing of the tap mode (IEEE 802.3; RFC 894 for IPv4, RFC 2464
// for IPv6).
const (
	ethHdrLen  = header.EthernetMinimumSize // destination, source, EtherType
	ethTypeIP4 = uint16(header.IPv4ProtocolNumber)
	ethTypeIP6 = uint16(header.IPv6ProtocolNumber)
	ethTypeARP = uint16(header.ARPProtocolNumber)
)

var broadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// tapIfindex is the one link of the tap mode, as the resolver (neigh.go)
// names links.
const tapIfindex = 1

// Neighbour cache of the tap mode: at most maxNeighbours entries, each
// usable for neighbourTTL after its last confirmation (a reply to our
// solicitation, or the neighbour's own solicitation of us). The resolver's
// refresh re-solicits every next hop in use every neighbourRefresh (well
// within the TTL), so a live next hop never expires; a dead one does, and
// its packets are parked and resolved again. At most maxSolicitations
// addresses are being solicited at a time, each at most once per
// solicitInterval.
const (
	maxNeighbours    = 4096
	maxSolicitations = 1024
	neighbourTTL     = 3 * neighbourRefresh
	solicitInterval  = time.Second
)

// neighStats are the tap mode's link-layer counters.
type neighStats struct {
	ShortFrames    atomic.Uint64 // frames shorter than an Ethernet header, or oversized
	NotForUs       atomic.Uint64 // unicast frames to another MAC, group frames that are not ARP or ND, frames from a group or our own MAC
	OtherEtherType atomic.Uint64 // neither IPv4, IPv6 nor ARP
	BadNeighbour   atomic.Uint64 // malformed ARP, NS or NA (RFC 826, RFC 4861 sections 7.1.1 and 7.1.2)
	Conflicts      atomic.Uint64 // another host claims one of our addresses (gratuitous ARP, NA, ARP or NS from our address)
	ARPReplies     atomic.Uint64 // ARP replies we sent for our addresses
	NAs            atomic.Uint64 // Neighbor Advertisements we sent for our addresses
	Solicitations  atomic.Uint64 // ARP requests and Neighbor Solicitations we sent to resolve next hops
	Learned        atomic.Uint64 // neighbour entries added or changed
	Expired        atomic.Uint64 // neighbour entries that went unconfirmed for neighbourTTL
	SendErrors     atomic.Uint64 // ARP and ND frames we could not send
}

type neighEntry struct {
	mac       [6]byte
	confirmed int64 // monoNow
}

// tapNeigh is the tap mode's ARP (RFC 826) and IPv6 Neighbor Discovery
// (RFC 4861) on the Ethernet segment of an inherited tap: it answers for
// the translator's own addresses (owns) and nothing else, and resolves
// next hops for the resolver (it is the resolver's neighKernel).
//
// It parses and builds ARP and ND with gVisor's header package instead of
// running gVisor's ARP and IPv6 protocols: those need a gVisor Stack with
// a NIC, its addresses assigned one by one and its own routing, and would
// deliver IP to a transport layer the translator does not have; the
// addresses answered for here are a predicate over whole prefixes (the
// EAM pool, the RFC 6052 prefix), read from the engine's live
// configuration so that a reload changes them at once.
type tapNeigh struct {
	mac       [6]byte
	linkLocal netip.Addr // fe80::/64 with the modified EUI-64 of mac (RFC 4291 appendix A)
	gw4, gw6  netip.Addr // next hops; invalid: destinations are on-link
	owns      func(netip.Addr) bool
	// send writes one frame to the link; it may be called from several
	// goroutines.
	send  func(frame []byte) error
	now   func() int64
	stats *neighStats
	// update is the resolver's neighbourUpdate: a next hop's link
	// address is known (valid) or lost.
	update func(ifindex int, via netip.Addr, mac [6]byte, valid bool)

	mu         sync.Mutex
	cache      map[netip.Addr]neighEntry
	soliciting map[netip.Addr]int64 // address -> monoNow of the last solicitation
}

func newTapNeigh(mac [6]byte, gw4, gw6 netip.Addr, owns func(netip.Addr) bool, send func([]byte) error, stats *neighStats) *tapNeigh {
	var ll [16]byte
	ll[0], ll[1] = 0xfe, 0x80
	header.EthernetAdddressToModifiedEUI64IntoBuf(tcpip.LinkAddress(mac[:]), ll[8:])
	return &tapNeigh{
		mac:        mac,
		linkLocal:  netip.AddrFrom16(ll),
		gw4:        gw4,
		gw6:        gw6,
		owns:       owns,
		send:       send,
		now:        monoNow,
		stats:      stats,
		update:     func(int, netip.Addr, [6]byte, bool) {},
		cache:      map[netip.Addr]neighEntry{},
		soliciting: map[netip.Addr]int64{},
	}
}

// ours reports whether a is an address the translator answers for: its
// link-local address or one owns accepts.
func (n *tapNeigh) ours(a netip.Addr) bool {
	return a == n.linkLocal || n.owns(a)
}

// route implements neighKernel: the next hop for dst is the family's
// gateway, or dst itself when there is none (on-link). A destination that
// is one of our own addresses has no next hop on the segment.
func (n *tapNeigh) route(dst netip.Addr) (int, netip.Addr, error) {
	via := dst
	if dst.Is4() && n.gw4.IsValid() {
		via = n.gw4
	} else if dst.Is6() && n.gw6.IsValid() {
		via = n.gw6
	}
	if !validNeighbour(via) || n.ours(via) {
		return 0, netip.Addr{}, errNotOnSegment
	}
	return tapIfindex, via, nil
}

type noNextHopError struct{}

func (noNextHopError) Error() string {
	return "no next hop on the segment (multicast, broadcast, unspecified, or one of our own addresses)"
}

var errNotOnSegment error = noNextHopError{}

// validNeighbour reports whether a can be a neighbour's unicast address.
func validNeighbour(a netip.Addr) bool {
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
		return false
	}
	return !a.Is4() || a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// neighbour implements neighKernel: via's link address if it was
// confirmed within neighbourTTL.
func (n *tapNeigh) neighbour(_ int, via netip.Addr) ([6]byte, bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.cache[via]
	if !ok || time.Duration(n.now()-e.confirmed) > neighbourTTL {
		return [6]byte{}, false, nil
	}
	return e.mac, true, nil
}

// solicit implements neighKernel: it broadcasts an ARP request (IPv4) or
// multicasts a Neighbor Solicitation to via's solicited-node address
// (RFC 4861 section 7.2.2), at most once per solicitInterval per address.
func (n *tapNeigh) solicit(_ int, via netip.Addr) error {
	if !validNeighbour(via) {
		return errNotOnSegment
	}
	now := n.now()
	n.mu.Lock()
	last, pending := n.soliciting[via]
	if pending && time.Duration(now-last) < solicitInterval {
		n.mu.Unlock()
		return nil
	}
	if !pending && len(n.soliciting) >= maxSolicitations {
		n.pruneSolicitations(now)
		if len(n.soliciting) >= maxSolicitations {
			n.mu.Unlock()
			return errTooManySolicitations
		}
	}
	n.soliciting[via] = now
	n.mu.Unlock()
	var err error
	if via.Is4() {
		var f [ethHdrLen + header.ARPSize]byte
		// The sender address is 0.0.0.0 (an RFC 5227 probe's form, which
		// every stack answers): the translator has no address of its
		// own on the segment's subnet in general.
		n.arpFrame(f[:], header.ARPRequest, broadcastMAC, [6]byte{}, netip.AddrFrom4([4]byte{}), via)
		err = n.send(f[:])
	} else {
		var f [ethHdrLen + header.IPv6MinimumSize + header.ICMPv6NeighborSolicitMinimumSize + 8]byte
		snm := solicitedNode(via)
		n.ndFrame(f[:], header.ICMPv6NeighborSolicit, multicastMAC(snm), n.linkLocal, snm, via, false)
		err = n.send(f[:])
	}
	if err != nil {
		n.stats.SendErrors.Add(1)
		return err
	}
	n.stats.Solicitations.Add(1)
	return nil
}

type tooManySolicitations struct{}

func (tooManySolicitations) Error() string { return "too many neighbours being solicited at once" }

var errTooManySolicitations error = tooManySolicitations{}

// pruneSolicitations forgets solicitations older than three intervals:
// their neighbours did not answer. n.mu is held.
func (n *tapNeigh) pruneSolicitations(now int64) {
	for a, t := range n.soliciting {
		if time.Duration(now-t) > 3*solicitInterval {
			delete(n.soliciting, a)
		}
	}
}

// learn records that a has link address mac, if a is a neighbour we are
// resolving or already know (RFC 826's merge rule; RFC 4861 section 7.2.5
// for solicited advertisements): unsolicited claims about other addresses
// do not grow the cache. solicited says whether the claim confirms the
// neighbour is reachable (a reply to us, or its request of us).
func (n *tapNeigh) learn(a netip.Addr, mac [6]byte) {
	if !validNeighbour(a) || n.ours(a) || !unicastMAC(mac) || mac == n.mac {
		return
	}
	now := n.now()
	n.mu.Lock()
	e, known := n.cache[a]
	_, asked := n.soliciting[a]
	if !known && !asked {
		n.mu.Unlock()
		return
	}
	if !known && len(n.cache) >= maxNeighbours {
		n.expireLocked(now, true)
		if len(n.cache) >= maxNeighbours {
			n.mu.Unlock()
			return
		}
	}
	changed := !known || e.mac != mac || time.Duration(now-e.confirmed) > neighbourTTL
	n.cache[a] = neighEntry{mac: mac, confirmed: now}
	delete(n.soliciting, a)
	n.mu.Unlock()
	if changed {
		n.stats.Learned.Add(1)
		n.update(tapIfindex, a, mac, true)
	}
}

// expire forgets the neighbours not confirmed within neighbourTTL and
// tells the resolver, whose next packets to them are parked and resolved
// again.
func (n *tapNeigh) expire() {
	n.mu.Lock()
	gone := n.expireLocked(n.now(), false)
	n.pruneSolicitations(n.now())
	n.mu.Unlock()
	for _, a := range gone {
		n.update(tapIfindex, a, [6]byte{}, false)
	}
}

// expireLocked deletes the expired entries and returns their addresses
// (quiet: does not collect them, for making room). n.mu is held.
func (n *tapNeigh) expireLocked(now int64, quiet bool) []netip.Addr {
	var gone []netip.Addr
	for a, e := range n.cache {
		if time.Duration(now-e.confirmed) > neighbourTTL {
			delete(n.cache, a)
			n.stats.Expired.Add(1)
			if !quiet {
				gone = append(gone, a)
			}
		}
	}
	return gone
}

func unicastMAC(m [6]byte) bool { return m[0]&1 == 0 && m != [6]byte{} }

// multicastMAC is the Ethernet group address of an IPv6 multicast address
// (RFC 2464 section 7).
func multicastMAC(a netip.Addr) [6]byte {
	b := a.As16()
	return [6]byte{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// solicitedNode is a's solicited-node multicast address (RFC 4291 section
// 2.7.1).
func solicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 1, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]})
}

// NDP option types (RFC 4861 section 4.6.1).
const (
	ndpSourceLinkAddr byte = 1
	ndpTargetLinkAddr byte = 2
)

var allNodes = netip.MustParseAddr("ff02::1")

// handleARP handles one ARP packet (the frame's payload) that came from
// link address src: it learns the sender if we are resolving it and
// answers a request for one of our addresses (RFC 826; RFC 5227 probes
// from 0.0.0.0 are answered too, so that the prober sees the conflict).
// A sender claiming one of our addresses (a gratuitous ARP, or a request
// or reply from it) is a conflict: counted, never learned or answered.
func (n *tapNeigh) handleARP(p []byte, src [6]byte) {
	if len(p) < header.ARPSize {
		n.stats.BadNeighbour.Add(1)
		return
	}
	a := header.ARP(p)
	if !a.IsValid() || (a.Op() != header.ARPRequest && a.Op() != header.ARPReply) {
		n.stats.BadNeighbour.Add(1)
		return
	}
	sha := [6]byte(a.HardwareAddressSender())
	spa := netip.AddrFrom4([4]byte(a.ProtocolAddressSender()))
	tpa := netip.AddrFrom4([4]byte(a.ProtocolAddressTarget()))
	if !unicastMAC(sha) || sha == n.mac {
		n.stats.BadNeighbour.Add(1)
		return
	}
	if n.ours(spa) {
		n.stats.Conflicts.Add(1)
		return
	}
	if !spa.IsUnspecified() {
		n.learn(spa, sha)
	}
	if a.Op() != header.ARPRequest || !n.ours(tpa) {
		return
	}
	var f [ethHdrLen + header.ARPSize]byte
	n.arpFrame(f[:], header.ARPReply, sha, sha, tpa, spa)
	if err := n.send(f[:]); err != nil {
		n.stats.SendErrors.Add(1)
		return
	}
	n.stats.ARPReplies.Add(1)
}

// arpFrame builds an ARP packet in f from us (our MAC, spa) to the target
// (tha, tpa), in an Ethernet frame to dst. A request's tha is zero.
func (n *tapNeigh) arpFrame(f []byte, op header.ARPOp, dst, tha [6]byte, spa, tpa netip.Addr) {
	n.ethernet(f, dst, ethTypeARP)
	a := header.ARP(f[ethHdrLen:])
	a.SetIPv4OverEthernet()
	a.SetOp(op)
	copy(a.HardwareAddressSender(), n.mac[:])
	s4, t4 := spa.As4(), tpa.As4()
	copy(a.ProtocolAddressSender(), s4[:])
	copy(a.HardwareAddressTarget(), tha[:])
	copy(a.ProtocolAddressTarget(), t4[:])
}

func (n *tapNeigh) ethernet(f []byte, dst [6]byte, etherType uint16) {
	copy(f[0:6], dst[:])
	copy(f[6:12], n.mac[:])
	binary.BigEndian.PutUint16(f[12:14], etherType)
}

// isND reports whether the IPv6 packet p is an ICMPv6 Neighbor
// Solicitation or Advertisement without extension headers (RFC 6980
// forbids fragmenting ND; other extension headers are not used with it).
func isND(p []byte) bool {
	if len(p) < header.IPv6MinimumSize+1 || p[0]>>4 != 6 || p[6] != uint8(header.ICMPv6ProtocolNumber) {
		return false
	}
	t := header.ICMPv6Type(p[header.IPv6MinimumSize])
	return t == header.ICMPv6NeighborSolicit || t == header.ICMPv6NeighborAdvert
}

// handleND handles one NS or NA (isND) that came from link address src,
// after the checks of RFC 4861 sections 7.1.1 and 7.1.2. It answers a
// solicitation for one of our addresses with a solicited, overriding
// advertisement (to all nodes for a DAD probe from ::, RFC 4861 section
// 7.2.4 and RFC 4862 section 5.4.3), and learns the link address of a
// neighbour we are resolving. An NA for one of our addresses, or an NS
// from one, is a conflict: counted, never learned or answered.
func (n *tapNeigh) handleND(p []byte, src [6]byte) {
	ip := header.IPv6(p)
	plen := int(ip.PayloadLength())
	if !unicastMAC(src) || src == n.mac || len(p) < header.IPv6MinimumSize+plen || ip.HopLimit() != 255 || plen < header.ICMPv6NeighborSolicitMinimumSize {
		n.stats.BadNeighbour.Add(1)
		return
	}
	icmp := header.ICMPv6(p[header.IPv6MinimumSize : header.IPv6MinimumSize+plen])
	srcIP, dstIP := netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
	if icmp.Code() != 0 || header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: icmp, Src: tcpip.AddrFrom16([16]byte(p[8:24])), Dst: tcpip.AddrFrom16([16]byte(p[24:40])),
	}) != icmp.Checksum() {
		n.stats.BadNeighbour.Add(1)
		return
	}
	body := icmp[header.ICMPv6HeaderSize:]
	target := netip.AddrFrom16([16]byte(body[4:20]))
	lla, ok := linkAddrOption(body[20:], icmp.Type())
	if !ok || target.IsMulticast() || srcIP.IsMulticast() {
		n.stats.BadNeighbour.Add(1)
		return
	}
	switch icmp.Type() {
	case header.ICMPv6NeighborSolicit:
		dad := srcIP.IsUnspecified()
		if dad && (dstIP != solicitedNode(target) || lla != nil) {
			n.stats.BadNeighbour.Add(1)
			return
		}
		if n.ours(srcIP) {
			n.stats.Conflicts.Add(1)
			return
		}
		if !n.ours(target) {
			return
		}
		dstMAC, to := src, srcIP
		if lla != nil {
			dstMAC = [6]byte(lla)
			n.learn(srcIP, dstMAC)
		}
		if dad {
			dstMAC, to = multicastMAC(allNodes), allNodes
		}
		var f [ethHdrLen + header.IPv6MinimumSize + header.ICMPv6NeighborAdvertMinimumSize + 8]byte
		n.ndFrame(f[:], header.ICMPv6NeighborAdvert, dstMAC, target, to, target, !dad)
		if err := n.send(f[:]); err != nil {
			n.stats.SendErrors.Add(1)
			return
		}
		n.stats.NAs.Add(1)
	case header.ICMPv6NeighborAdvert:
		na := header.NDPNeighborAdvert(body)
		if srcIP.IsUnspecified() || (dstIP.IsMulticast() && na.SolicitedFlag()) {
			n.stats.BadNeighbour.Add(1)
			return
		}
		if n.ours(target) {
			n.stats.Conflicts.Add(1)
			return
		}
		if lla != nil {
			n.learn(target, [6]byte(lla))
		}
	}
}

// linkAddrOption walks NDP options (RFC 4861 section 4.6) and returns the
// source (NS) or target (NA) link-layer address option's 6 bytes, if
// present; ok is false if the options are malformed (a zero length).
func linkAddrOption(opts []byte, t header.ICMPv6Type) (lla []byte, ok bool) {
	want := ndpSourceLinkAddr
	if t == header.ICMPv6NeighborAdvert {
		want = ndpTargetLinkAddr
	}
	for len(opts) > 0 {
		if len(opts) < 2 || opts[1] == 0 || int(opts[1])*8 > len(opts) {
			return nil, false
		}
		l := int(opts[1]) * 8
		if opts[0] == want && l >= 8 {
			lla = opts[2:8]
		}
		opts = opts[l:]
	}
	return lla, true
}

// ndFrame builds in f an NS or NA about target, from IPv6 address from to
// to (link address dst), with our link address as its one option (source
// link-layer for an NS, target link-layer for an NA, RFC 4861 section 4.3
// and 4.4). An NA is overriding, from a router, and solicited if
// solicited.
func (n *tapNeigh) ndFrame(f []byte, t header.ICMPv6Type, dst [6]byte, from, to, target netip.Addr, solicited bool) {
	n.ethernet(f, dst, ethTypeIP6)
	plen := len(f) - ethHdrLen - header.IPv6MinimumSize
	ip := header.IPv6(f[ethHdrLen:])
	ip.Encode(&header.IPv6Fields{
		PayloadLength:     uint16(plen),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          255,
		SrcAddr:           tcpip.AddrFrom16(from.As16()),
		DstAddr:           tcpip.AddrFrom16(to.As16()),
	})
	icmp := header.ICMPv6(f[ethHdrLen+header.IPv6MinimumSize:])
	clear(icmp)
	icmp.SetType(t)
	body := icmp[header.ICMPv6HeaderSize:]
	tb := target.As16()
	copy(body[4:20], tb[:])
	opt := ndpSourceLinkAddr
	if t == header.ICMPv6NeighborAdvert {
		na := header.NDPNeighborAdvert(body)
		na.SetRouterFlag(true) // the translator forwards packets
		na.SetOverrideFlag(true)
		na.SetSolicitedFlag(solicited)
		opt = ndpTargetLinkAddr
	}
	body[20], body[21] = opt, 1
	copy(body[22:28], n.mac[:])
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: icmp, Src: tcpip.AddrFrom16(from.As16()), Dst: tcpip.AddrFrom16(to.As16()),
	}))
}
