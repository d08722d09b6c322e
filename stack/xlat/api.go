// Package xlat is the stateless IP/ICMP translation engine of RFC 7915 with
// the explicit address mappings of RFC 7757: bytes in, bytes out, no I/O.
// It translates in place, so a caller reserves Headroom bytes in front of
// every packet; it never allocates per packet.
//
// Addresses (RFC 7755, SIIT-DC border relay): an IPv4 destination must have
// an EAM entry (a server's public address); an IPv4 address that only the
// RFC 6052 prefix can express is a client, valid as a source, and as an
// IPv6 destination (prefix::client). A packet to an unmapped public IPv4
// address is dropped (ReasonDstUnmapped) rather than sent to prefix::addr,
// which would be routed straight back into the translator.
//
// ICMP errors the engine itself originates (source route failed, Parameter
// Problem for Segments Left, Fragmentation Needed / Packet Too Big against
// a configured MTU, Time Exceeded for a hairpinned packet) are
// rate-limited per Worker and go to the Sink. ICMPv4 ones come from the
// first usable address of Policy.ICMPSourcePool, else Policy.IPv4Address,
// else 192.0.0.8 (RFC 7600); ICMPv6 ones from that same address inside the
// RFC 6052 prefix, which is how the IPv6 side sees the translator. They
// are never sent about an ICMP error or a non-first fragment (RFC 4443
// section 2.4 (e), RFC 1812 section 4.3.2.7). That same IPv6 address is
// the source of a translated ICMPv4 error whose router the prefix cannot
// express (the well-known prefix and non-global space, RFC 6052 section
// 3.1), as RFC 6791 pool addresses are for the other direction.
//
// Sources that only the translator writes are refused as spoofed
// (ReasonSpoofed): an IPv6 source inside the RFC 6052 prefix, an IPv4
// source with an EAM entry. Traffic to or from the translator's own
// addresses (Policy.OwnAddrs, Policy.IPv4Address, the first pool address;
// ReasonOwnAddress) and
// directed broadcast addresses (ReasonBroadcast) is refused too, but for
// ICMP errors from the own addresses (the host reports its forwarding
// failures from them); an echo request to an own address is answered
// through the Sink instead (echo.go). A hairpinned packet
// (RFC 7757 section 4.2) costs one hop and hairpins once: its output,
// with its source inside the prefix, is refused if it comes back.
//
// The code follows RFC 7915 step by step, one function per section:
// v4to6.go is section 4 (IPv4 -> IPv6), v6to4.go section 5, icmp.go the
// ICMP error sections 4.2/4.3 and 5.2/5.3 with their type, code and
// pointer tables; hdr.go holds what both directions and the quoted
// packets share (header writers, checksum fix-ups, offload).
package xlat

import (
	"net/netip"

	"github.com/map646/map646/mapping"
)

// Headroom is what a caller reserves in front of each packet: IPv4 -> IPv6
// grows the header by 20 bytes, 28 with a Fragment header.
const Headroom = 64

// UDPZero is the policy for IPv4 UDP datagrams with checksum zero
// (RFC 7915 section 4.5).
type UDPZero uint8

const (
	UDPZeroCompute UDPZero = iota // compute the checksum (unfragmented only)
	UDPZeroDrop                   // drop them
)

// Hairpin selects EAM hairpinning (RFC 7757 section 4.2): what happens to
// an IPv6 packet whose destination is prefix::<public IPv4 of an EAM
// entry>, i.e. one server talking to another by its public address. A
// hairpinned packet is translated 6->4 and at once 4->6, with the source
// expressed through the prefix (prefix::<first server's public IPv4>), not
// its EAM address, so that the other server's answer crosses the
// translator again and is translated back the same way.
type Hairpin uint8

const (
	// HairpinOff drops such packets (ReasonHairpinOff).
	HairpinOff Hairpin = iota
	// HairpinSimple hairpins ordinary packets only. An ICMPv6 error sent
	// to a prefix-embedded EAM address (server B's error about a
	// hairpinned packet from server A) is dropped (ReasonHairpinError),
	// like Jool's "simple" mode, which only recognises hairpins by the
	// outer destination of non-error packets.
	HairpinSimple
	// HairpinIntrinsic also hairpins those ICMP errors: the outer source
	// and the quoted packet's destination go through the prefix, the
	// outer destination and quoted source through the EAM table (Jool's
	// "intrinsic" mode, its default).
	HairpinIntrinsic
)

// Policy is what the operator configures besides the addresses.
type Policy struct {
	LowestIPv6MTU   int            // RFC 7915 section 4: DF=0 IPv4 whose IPv6 form exceeds it is fragmented; default 1280
	UDPZeroChecksum UDPZero        // RFC 7915 section 4.5
	Hairpin         Hairpin        // RFC 7757 section 4.2
	ICMPSourcePool  []netip.Prefix // RFC 6791: sources for ICMPv4 errors from untranslatable IPv6 routers
	DenyIPv4        []netip.Prefix // never translated, either direction
	IPv4MTU         int            // MTU towards the IPv4 side (0: unknown); GSO size / MSS limits
	IPv6MTU         int            // MTU towards the IPv6 side (0: unknown)
	// ICMPRate and ICMPBurst bound the ICMP messages the translator
	// originates (its errors and echo replies, not the errors it
	// translates), per Worker: a token bucket of ICMPBurst messages
	// refilled at ICMPRate per second (RFC 4443 section 2.4 (f), RFC 1812
	// section 4.3.2.8). 0: DefaultICMPRate; ICMPBurst 0: ICMPRate.
	ICMPRate  int
	ICMPBurst int
	// MTUPlateaus are the plateaus of RFC 1191 section 7 that RFC 7915
	// section 4.2 uses when an IPv4 router's Fragmentation Needed carries
	// MTU 0 (before RFC 1191): the Packet Too Big announces the greatest
	// plateau below the quoted packet's Total Length. Any order;
	// duplicates are ignored. Empty: DefaultMTUPlateaus.
	MTUPlateaus []int
	// TrafficClass is how the IPv6 Traffic Class of a packet translated
	// 4->6 is made from the IPv4 Type of Service (RFC 7915 section 4.1),
	// TypeOfService the IPv4 Type of Service of a packet translated 6->4
	// (section 5.1). The zero value copies, as the RFC says by default.
	TrafficClass  TOS
	TypeOfService TOS

	// IPv4Address is the translator's own IPv4 address (like TAYGA's
	// ipv4-addr): the source of the ICMPv4 errors it originates when
	// ICMPSourcePool is empty, and the RFC 6791 fallback source of ICMPv4
	// errors translated from IPv6 routers that have no IPv4 address, so
	// that Packet Too Big still reaches IPv4 hosts (RFC 7915 section 5.2,
	// RFC 1191). Invalid (zero): none. It is also one of OwnAddrs.
	IPv4Address netip.Addr
	// OwnAddrs are the translator's own addresses with their subnet
	// lengths (interface addresses, e.g. 203.0.113.1/28; a bare address
	// is /32 or /128). No packet is translated to or from them
	// (ReasonOwnAddress), nor to or from the directed broadcast address
	// of an IPv4 subnet shorter than /31 (ReasonBroadcast, RFC 1812
	// section 5.3.5.2).
	OwnAddrs []netip.Prefix
	// DecrementTTL: no kernel forwards the packets before or after the
	// translator (NIC mode), so the translator, as the router, decrements
	// the TTL / Hop Limit itself and answers its expiry with Time Exceeded
	// (RFC 7915 sections 4.1 and 5.1). With a tun the kernel does both.
	DecrementTTL bool
	// ClampMSS lowers the MSS option of translated TCP SYNs to the largest
	// segment that fits IPv4MTU and IPv6MTU after translation. RFC 7915
	// sections 4.5 and 5.5 change nothing in TCP but the checksum, so this
	// is operator policy (like a router's MSS clamp), not translation: the
	// configuration turns it on where the operator sets an MTU, while
	// MTUs learnt from the NICs only bound packet sizes.
	ClampMSS bool
}

// TOS says how the translator writes the Differentiated Services field
// (RFC 2474: the IPv4 Type of Service octet and the IPv6 Traffic Class)
// of a translated packet. RFC 7915 sections 4.1 and 5.1 copy it by
// default and let the operator reset it, as Jool's zeroize-traffic-class
// and override-tos do. Only the DSCP (the upper six bits) is ever reset:
// the ECN field (the lower two, RFC 3168) is always copied, so that
// ECN-capable transports keep working and Congestion Experienced marks
// reach the receiver instead of turning into losses (as RFC 3168 section
// 9 and RFC 6040 ask of tunnels). The translator's own ICMP errors carry
// 0, an echo reply that of the request, and a packet quoted inside an
// ICMP error is never changed.
type TOS struct {
	Reset bool  // false: copy the whole octet
	DSCP  uint8 // with Reset: the DSCP written, 0-63 (0: zero it)
}

// DefaultMTUPlateaus is the table of RFC 1191 section 7.
var DefaultMTUPlateaus = []int{65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68}

// MaxMTUPlateaus bounds Policy.MTUPlateaus: the list is scanned for each
// Fragmentation Needed with MTU 0.
const MaxMTUPlateaus = 64

// Config is one complete, immutable translator configuration.
type Config struct {
	Map    *mapping.Snapshot
	Policy Policy
}

// Offload is struct virtio_net_hdr decoded to host order: how a packet from
// a tun with IFF_VNET_HDR is to be checksummed and segmented. The engine
// rewrites it together with the packet (offsets are from the packet start).
type Offload struct {
	Flags      uint8 // OffloadNeedsCsum, OffloadDataValid
	GSOType    uint8 // GSONone, GSOTCPv4, GSOUDP, GSOTCPv6, GSOUDPL4, | GSOECN
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
}

// virtio_net_hdr flag and gso_type values (include/uapi/linux/virtio_net.h).
const (
	OffloadNeedsCsum = 1
	OffloadDataValid = 2

	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3
	GSOTCPv6 = 4
	GSOUDPL4 = 5
	GSOECN   = 0x80
)

// Sink receives packets the engine makes besides the in-place result:
// translator-originated ICMP errors and fragments. pkt is valid only
// during the call.
type Sink interface {
	Emit(pkt []byte, off *Offload)
}

// Verdict is what became of a packet.
type Verdict uint8

const (
	Forward  Verdict = iota // the translated packet is buf[Start:End]
	Consumed                // everything produced went to the Sink
	Drop                    // not translated; Reason says why
)

// Result describes one processed packet.
type Result struct {
	Start, End int
	Verdict    Verdict
	Reason     Reason
	Dir        Dir
	Proto      Proto
}
