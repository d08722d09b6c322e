package stack

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var (
	tapMAC   = [6]byte{0x02, 0, 0x5e, 0x10, 0, 1}
	peerMAC  = [6]byte{0x02, 0, 0x5e, 0x10, 0, 2}
	otherMAC = [6]byte{0x02, 0, 0x5e, 0x10, 0, 3}
	gw4      = netip.MustParseAddr("203.0.113.14")
	gw6      = netip.MustParseAddr("fe80::1")
)

// neighFake is a tapNeigh with a fake clock, the frames it sends and the
// resolver updates it makes. It answers for testEngine's addresses.
type neighFake struct {
	*tapNeigh
	sent    [][]byte
	now     int64
	updates []string
	sendErr error
}

func newNeighFake(t *testing.T) *neighFake {
	eng := testEngine(t)
	f := &neighFake{}
	f.tapNeigh = newTapNeigh(tapMAC, gw4, gw6, func(a netip.Addr) bool { return ownsForNeighbours(eng.Config(), a) },
		func(b []byte) error {
			if f.sendErr != nil {
				return f.sendErr
			}
			f.sent = append(f.sent, slices.Clone(b))
			return nil
		}, &neighStats{})
	f.now = int64(time.Hour)
	f.tapNeigh.now = func() int64 { return f.now }
	f.update = func(_ int, via netip.Addr, mac [6]byte, valid bool) {
		f.updates = append(f.updates, via.String()+" "+tcpip.LinkAddress(mac[:]).String()+" "+map[bool]string{true: "valid", false: "lost"}[valid])
	}
	return f
}

func (f *neighFake) take() [][]byte {
	s := f.sent
	f.sent = nil
	return s
}

func arpPacket(op header.ARPOp, sha [6]byte, spa, tpa string, tha [6]byte) []byte {
	b := make([]byte, header.ARPSize)
	a := header.ARP(b)
	a.SetIPv4OverEthernet()
	a.SetOp(op)
	copy(a.HardwareAddressSender(), sha[:])
	s, t := netip.MustParseAddr(spa).As4(), netip.MustParseAddr(tpa).As4()
	copy(a.ProtocolAddressSender(), s[:])
	copy(a.HardwareAddressTarget(), tha[:])
	copy(a.ProtocolAddressTarget(), t[:])
	return b
}

// ndPacket builds an IPv6 NS or NA about target, with a link-layer
// address option of lla unless it is nil, and a valid checksum.
func ndPacket(typ header.ICMPv6Type, src, dst, target string, hop uint8, flags byte, lla []byte) []byte {
	icmpLen := header.ICMPv6NeighborSolicitMinimumSize
	if lla != nil {
		icmpLen += 8
	}
	b := make([]byte, header.IPv6MinimumSize+icmpLen)
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength: uint16(icmpLen), TransportProtocol: header.ICMPv6ProtocolNumber, HopLimit: hop,
		SrcAddr: tcpip.AddrFrom16(s), DstAddr: tcpip.AddrFrom16(d),
	})
	icmp := header.ICMPv6(b[header.IPv6MinimumSize:])
	icmp.SetType(typ)
	body := icmp[header.ICMPv6HeaderSize:]
	body[0] = flags
	tb := netip.MustParseAddr(target).As16()
	copy(body[4:20], tb[:])
	if lla != nil {
		body[20] = ndpSourceLinkAddr
		if typ == header.ICMPv6NeighborAdvert {
			body[20] = ndpTargetLinkAddr
		}
		body[21] = 1
		copy(body[22:28], lla)
	}
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: tcpip.AddrFrom16(s), Dst: tcpip.AddrFrom16(d)}))
	return b
}

// TestOwnsForNeighbours: the translator answers for the EAM IPv4 pool,
// its own IPv4 address and the RFC 6052 prefix, and for nothing else: not
// the servers' EAM IPv6 addresses, not clients' IPv4 addresses, not
// deny_ipv4, not special addresses.
func TestOwnsForNeighbours(t *testing.T) {
	eng := testEngine(t)
	c := *eng.Config()
	c.Policy.IPv4Address = netip.MustParseAddr("203.0.113.1")
	c.Policy.DenyIPv4 = []netip.Prefix{netip.MustParsePrefix("192.0.2.128/25")}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{serverV4, true},
		{"198.51.100.11", true},
		{"203.0.113.1", true},
		{clientInV6, true},
		{"198.51.100.12", false},         // not mapped
		{clientV4, false},                // a client
		{serverV6, false},                // a server's own address
		{"2001:db8:6::11", false},        // another server
		{"2001:db8:64::c000:280", false}, // prefix ‖ 192.0.2.128: deny_ipv4
		{"2001:db8:65::1", false},
		{"0.0.0.0", false},
		{"255.255.255.255", false},
		{"ff02::1", false},
		{"fe80::1", false},
		{"::", false},
	} {
		if got := ownsForNeighbours(&c, netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.addr, got, tc.want)
		}
	}
	if ownsForNeighbours(nil, netip.MustParseAddr(serverV4)) {
		t.Error("answers without a configuration")
	}
}

// TestARPResponder: requests for our addresses are answered to the
// requester, others are not; hostile ARP is counted and changes nothing.
func TestARPResponder(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pkt       []byte
		src       [6]byte
		reply     bool
		bad, conf uint64
	}{
		{"request for a mapped address", arpPacket(header.ARPRequest, peerMAC, "203.0.113.14", serverV4, [6]byte{}), peerMAC, true, 0, 0},
		{"probe for a mapped address (RFC 5227)", arpPacket(header.ARPRequest, peerMAC, "0.0.0.0", serverV4, [6]byte{}), peerMAC, true, 0, 0},
		{"request for a client address", arpPacket(header.ARPRequest, peerMAC, "203.0.113.14", clientV4, [6]byte{}), peerMAC, false, 0, 0},
		{"request for an unmapped pool address", arpPacket(header.ARPRequest, peerMAC, "203.0.113.14", "198.51.100.12", [6]byte{}), peerMAC, false, 0, 0},
		{"gratuitous ARP for our address", arpPacket(header.ARPRequest, otherMAC, serverV4, serverV4, [6]byte{}), otherMAC, false, 0, 1},
		{"gratuitous reply for our address", arpPacket(header.ARPReply, otherMAC, serverV4, serverV4, broadcastMAC), otherMAC, false, 0, 1},
		{"sender is a group address", arpPacket(header.ARPRequest, broadcastMAC, "203.0.113.14", serverV4, [6]byte{}), peerMAC, false, 1, 0},
		{"sender is our MAC", arpPacket(header.ARPRequest, tapMAC, "203.0.113.14", serverV4, [6]byte{}), peerMAC, false, 1, 0},
		{"short", arpPacket(header.ARPRequest, peerMAC, "203.0.113.14", serverV4, [6]byte{})[:27], peerMAC, false, 1, 0},
		{"empty", nil, peerMAC, false, 1, 0},
		{"not Ethernet/IPv4", func() []byte {
			b := arpPacket(header.ARPRequest, peerMAC, "203.0.113.14", serverV4, [6]byte{})
			b[1] = 6 // IEEE 802
			return b
		}(), peerMAC, false, 1, 0},
		{"unknown op", func() []byte {
			b := arpPacket(header.ARPRequest, peerMAC, "203.0.113.14", serverV4, [6]byte{})
			b[7] = 9
			return b
		}(), peerMAC, false, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newNeighFake(t)
			f.handleARP(tc.pkt, tc.src)
			sent := f.take()
			if got := f.stats.BadNeighbour.Load(); got != tc.bad {
				t.Errorf("bad %d, want %d", got, tc.bad)
			}
			if got := f.stats.Conflicts.Load(); got != tc.conf {
				t.Errorf("conflicts %d, want %d", got, tc.conf)
			}
			if len(f.cache) != 0 || len(f.updates) != 0 {
				t.Errorf("learned %v %v from it", f.cache, f.updates)
			}
			if !tc.reply {
				if len(sent) != 0 {
					t.Errorf("sent %x", sent)
				}
				return
			}
			if len(sent) != 1 || len(sent[0]) != ethHdrLen+header.ARPSize {
				t.Fatalf("sent %x, want one ARP reply", sent)
			}
			fr := sent[0]
			if !bytes.Equal(fr[0:6], peerMAC[:]) || !bytes.Equal(fr[6:12], tapMAC[:]) || binary.BigEndian.Uint16(fr[12:]) != ethTypeARP {
				t.Errorf("Ethernet header %x", fr[:14])
			}
			a := header.ARP(fr[ethHdrLen:])
			req := header.ARP(tc.pkt)
			if !a.IsValid() || a.Op() != header.ARPReply ||
				!bytes.Equal(a.HardwareAddressSender(), tapMAC[:]) || !bytes.Equal(a.ProtocolAddressSender(), req.ProtocolAddressTarget()) ||
				!bytes.Equal(a.HardwareAddressTarget(), peerMAC[:]) || !bytes.Equal(a.ProtocolAddressTarget(), req.ProtocolAddressSender()) {
				t.Errorf("reply %x", fr[ethHdrLen:])
			}
			if f.stats.ARPReplies.Load() != 1 {
				t.Errorf("ARPReplies %d", f.stats.ARPReplies.Load())
			}
		})
	}
}

// TestNDResponder: Neighbor Solicitations for our addresses are answered
// with a solicited Neighbor Advertisement carrying our link address;
// malformed ND (RFC 4861 section 7.1) is counted and ignored.
func TestNDResponder(t *testing.T) {
	peer := "fe80::2"
	snm := solicitedNode(netip.MustParseAddr(clientInV6)).String()
	for _, tc := range []struct {
		name      string
		pkt       []byte
		na        bool   // an NA is sent
		to        string // its destination
		toMAC     [6]byte
		solicited bool
		bad, conf uint64
	}{
		{"NS for the prefix, with SLLA", ndPacket(header.ICMPv6NeighborSolicit, peer, snm, clientInV6, 255, 0, otherMAC[:]), true, peer, otherMAC, true, 0, 0},
		{"NS for the prefix, without SLLA", ndPacket(header.ICMPv6NeighborSolicit, peer, snm, clientInV6, 255, 0, nil), true, peer, peerMAC, true, 0, 0},
		{"unicast NS (reachability)", ndPacket(header.ICMPv6NeighborSolicit, peer, clientInV6, clientInV6, 255, 0, nil), true, peer, peerMAC, true, 0, 0},
		{"DAD NS for our address", ndPacket(header.ICMPv6NeighborSolicit, "::", snm, clientInV6, 255, 0, nil), true, "ff02::1", [6]byte{0x33, 0x33, 0, 0, 0, 1}, false, 0, 0},
		{"NS for our link-local address", ndPacket(header.ICMPv6NeighborSolicit, peer, "ff02::1:ff10:1", "fe80::5eff:fe10:1", 255, 0, nil), true, peer, peerMAC, true, 0, 0},
		{"NS for a server", ndPacket(header.ICMPv6NeighborSolicit, peer, "ff02::1:ff00:10", serverV6, 255, 0, nil), false, "", [6]byte{}, false, 0, 0},
		{"NS for another prefix", ndPacket(header.ICMPv6NeighborSolicit, peer, snm, "2001:db8:65::c000:202", 255, 0, nil), false, "", [6]byte{}, false, 0, 0},
		{"NS from our address", ndPacket(header.ICMPv6NeighborSolicit, clientInV6, snm, clientInV6, 255, 0, nil), false, "", [6]byte{}, false, 0, 1},
		{"DAD NS to the wrong group", ndPacket(header.ICMPv6NeighborSolicit, "::", "ff02::1", clientInV6, 255, 0, nil), false, "", [6]byte{}, false, 1, 0},
		{"DAD NS with SLLA", ndPacket(header.ICMPv6NeighborSolicit, "::", snm, clientInV6, 255, 0, peerMAC[:]), false, "", [6]byte{}, false, 1, 0},
		{"hop limit 254", ndPacket(header.ICMPv6NeighborSolicit, peer, snm, clientInV6, 254, 0, nil), false, "", [6]byte{}, false, 1, 0},
		{"bad checksum", func() []byte {
			b := ndPacket(header.ICMPv6NeighborSolicit, peer, snm, clientInV6, 255, 0, nil)
			b[header.IPv6MinimumSize+2] ^= 0xff
			return b
		}(), false, "", [6]byte{}, false, 1, 0},
		{"code 1", func() []byte {
			b := ndPacket(header.ICMPv6NeighborSolicit, peer, snm, clientInV6, 255, 0, nil)
			b[header.IPv6MinimumSize+1] = 1
			return b
		}(), false, "", [6]byte{}, false, 1, 0},
		{"zero-length option", func() []byte {
			b := ndPacket(header.ICMPv6NeighborSolicit, peer, snm, clientInV6, 255, 0, otherMAC[:])
			b[len(b)-7] = 0
			return b
		}(), false, "", [6]byte{}, false, 1, 0},
		{"truncated", ndPacket(header.ICMPv6NeighborSolicit, peer, snm, clientInV6, 255, 0, nil)[:50], false, "", [6]byte{}, false, 1, 0},
		{"multicast target", ndPacket(header.ICMPv6NeighborSolicit, peer, snm, "ff02::1", 255, 0, nil), false, "", [6]byte{}, false, 1, 0},
		{"NA for our address", ndPacket(header.ICMPv6NeighborAdvert, peer, "ff02::1", clientInV6, 255, 0x20, otherMAC[:]), false, "", [6]byte{}, false, 0, 1},
		{"solicited NA to a group", ndPacket(header.ICMPv6NeighborAdvert, peer, "ff02::1", "fe80::9", 255, 0x40, otherMAC[:]), false, "", [6]byte{}, false, 1, 0},
		{"NA from ::", ndPacket(header.ICMPv6NeighborAdvert, "::", "ff02::1", "fe80::9", 255, 0, otherMAC[:]), false, "", [6]byte{}, false, 1, 0},
		{"unsolicited NA for a stranger", ndPacket(header.ICMPv6NeighborAdvert, "fe80::9", "ff02::1", "fe80::9", 255, 0x20, otherMAC[:]), false, "", [6]byte{}, false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newNeighFake(t)
			if !isND(tc.pkt) && len(tc.pkt) >= 41 {
				t.Fatal("test packet is not ND")
			}
			f.handleND(tc.pkt, peerMAC)
			sent := f.take()
			if got := f.stats.BadNeighbour.Load(); got != tc.bad {
				t.Errorf("bad %d, want %d", got, tc.bad)
			}
			if got := f.stats.Conflicts.Load(); got != tc.conf {
				t.Errorf("conflicts %d, want %d", got, tc.conf)
			}
			if len(f.cache) != 0 {
				t.Errorf("learned %v from it", f.cache)
			}
			if !tc.na {
				if len(sent) != 0 {
					t.Errorf("sent %x", sent)
				}
				return
			}
			if len(sent) != 1 {
				t.Fatalf("sent %d frames, want one NA", len(sent))
			}
			fr := sent[0]
			if !bytes.Equal(fr[0:6], tc.toMAC[:]) || !bytes.Equal(fr[6:12], tapMAC[:]) || binary.BigEndian.Uint16(fr[12:]) != ethTypeIP6 {
				t.Errorf("Ethernet header %x", fr[:14])
			}
			p := fr[ethHdrLen:]
			ip := header.IPv6(p)
			target := header.NDPNeighborSolicit(tc.pkt[header.IPv6MinimumSize+4:]).TargetAddress()
			if ip.HopLimit() != 255 || ip.SourceAddress() != target || ip.DestinationAddress() != tcpip.AddrFrom16(netip.MustParseAddr(tc.to).As16()) {
				t.Errorf("IPv6 header %v -> %v hop limit %d", ip.SourceAddress(), ip.DestinationAddress(), ip.HopLimit())
			}
			icmp := header.ICMPv6(ip.Payload())
			if icmp.Type() != header.ICMPv6NeighborAdvert || icmp.Checksum() != header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}) {
				t.Errorf("not a valid NA: %x", icmp)
			}
			na := header.NDPNeighborAdvert(icmp[header.ICMPv6HeaderSize:])
			if na.TargetAddress() != target || na.SolicitedFlag() != tc.solicited || !na.OverrideFlag() || !na.RouterFlag() {
				t.Errorf("NA target %v S=%v O=%v R=%v", na.TargetAddress(), na.SolicitedFlag(), na.OverrideFlag(), na.RouterFlag())
			}
			lla, ok := linkAddrOption(icmp[header.ICMPv6HeaderSize+20:], header.ICMPv6NeighborAdvert)
			if !ok || !bytes.Equal(lla, tapMAC[:]) {
				t.Errorf("target link-layer option %x", lla)
			}
			// Our own frame passes our own checks.
			g := newNeighFake(t)
			g.handleND(p, peerMAC)
			if g.stats.BadNeighbour.Load() != 0 {
				t.Error("the NA we sent fails our own validation")
			}
		})
	}
}

// TestNeighbourResolution: solicitations go out (rate-limited), answers
// for addresses we solicited are learned and reported to the resolver,
// unsolicited claims are not, and entries expire.
func TestNeighbourResolution(t *testing.T) {
	f := newNeighFake(t)
	if _, via, err := f.route(netip.MustParseAddr(clientV4)); err != nil || via != gw4 {
		t.Fatalf("route: %v %v", via, err)
	}
	if _, via, err := f.route(netip.MustParseAddr(serverV6)); err != nil || via != gw6 {
		t.Fatalf("route: %v %v", via, err)
	}
	// Unsolicited: a reply and a request from a stranger teach nothing.
	f.handleARP(arpPacket(header.ARPReply, otherMAC, "203.0.113.9", serverV4, tapMAC), otherMAC)
	f.handleARP(arpPacket(header.ARPRequest, otherMAC, "203.0.113.9", serverV4, [6]byte{}), otherMAC)
	f.handleND(ndPacket(header.ICMPv6NeighborAdvert, "fe80::9", "ff02::1", "fe80::9", 255, 0x20, otherMAC[:]), otherMAC)
	if len(f.cache) != 0 || len(f.updates) != 0 {
		t.Fatalf("learned unsolicited %v", f.cache)
	}
	f.take()

	// IPv4: an ARP request, once per second.
	if err := f.solicit(tapIfindex, gw4); err != nil {
		t.Fatal(err)
	}
	if err := f.solicit(tapIfindex, gw4); err != nil {
		t.Fatal(err)
	}
	sent := f.take()
	if len(sent) != 1 {
		t.Fatalf("%d solicitations within a second, want 1", len(sent))
	}
	a := header.ARP(sent[0][ethHdrLen:])
	if !bytes.Equal(sent[0][:6], broadcastMAC[:]) || a.Op() != header.ARPRequest || !bytes.Equal(a.ProtocolAddressTarget(), gw4.AsSlice()) || !bytes.Equal(a.HardwareAddressSender(), tapMAC[:]) {
		t.Errorf("ARP request %x", sent[0])
	}
	f.handleARP(arpPacket(header.ARPReply, peerMAC, gw4.String(), "0.0.0.0", tapMAC), peerMAC)
	if mac, ok, _ := f.neighbour(tapIfindex, gw4); !ok || mac != peerMAC {
		t.Fatalf("gateway not learned: %x %v", mac, ok)
	}
	// IPv6: an NS to the solicited-node group with our SLLA, from our
	// link-local address.
	if err := f.solicit(tapIfindex, gw6); err != nil {
		t.Fatal(err)
	}
	sent = f.take()
	if len(sent) != 1 {
		t.Fatalf("%d NS, want 1", len(sent))
	}
	ip := header.IPv6(sent[0][ethHdrLen:])
	if !bytes.Equal(sent[0][:6], []byte{0x33, 0x33, 0xff, 0, 0, 1}) || ip.DestinationAddress().String() != "ff02::1:ff00:1" || ip.SourceAddress().String() != "fe80::5eff:fe10:1" {
		t.Errorf("NS %x", sent[0])
	}
	icmp := header.ICMPv6(ip.Payload())
	if icmp.Checksum() != header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}) {
		t.Error("NS checksum")
	}
	if lla, ok := linkAddrOption(icmp[header.ICMPv6HeaderSize+20:], header.ICMPv6NeighborSolicit); !ok || !bytes.Equal(lla, tapMAC[:]) {
		t.Errorf("NS source link-layer option %x", lla)
	}
	f.handleND(ndPacket(header.ICMPv6NeighborAdvert, "fe80::1", "fe80::5eff:fe10:1", "fe80::1", 255, 0x60, peerMAC[:]), peerMAC)
	if mac, ok, _ := f.neighbour(tapIfindex, gw6); !ok || mac != peerMAC {
		t.Fatalf("IPv6 gateway not learned: %x %v", mac, ok)
	}
	want := []string{"203.0.113.14 02:00:5e:10:00:02 valid", "fe80::1 02:00:5e:10:00:02 valid"}
	if !slices.Equal(f.updates, want) {
		t.Errorf("updates %q, want %q", f.updates, want)
	}
	// A known neighbour that changes its link address is updated.
	f.handleARP(arpPacket(header.ARPRequest, otherMAC, gw4.String(), serverV4, [6]byte{}), otherMAC)
	if mac, _, _ := f.neighbour(tapIfindex, gw4); mac != otherMAC {
		t.Errorf("gateway's new MAC not learned: %x", mac)
	}
	// Expiry: unconfirmed for the TTL, the entries go and the resolver
	// hears of it.
	f.updates = nil
	f.now += int64(neighbourTTL + time.Second)
	if _, ok, _ := f.neighbour(tapIfindex, gw6); ok {
		t.Error("expired entry still used")
	}
	f.expire()
	if len(f.cache) != 0 || len(f.updates) != 2 {
		t.Errorf("after expiry: cache %v updates %q", f.cache, f.updates)
	}
	// Our own addresses and group addresses have no next hop.
	for _, a := range []string{serverV4, clientInV6, "255.255.255.255", "ff02::1", "0.0.0.0"} {
		g := newNeighFake(t)
		g.gw4, g.gw6 = netip.Addr{}, netip.Addr{}
		if _, _, err := g.route(netip.MustParseAddr(a)); err == nil {
			t.Errorf("route to %s on the segment", a)
		}
	}
}

// TestNeighbourBounds: solicitations and the cache stay bounded whatever
// the packets ask for.
func TestNeighbourBounds(t *testing.T) {
	f := newNeighFake(t)
	for i := range maxSolicitations + 10 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		err := f.solicit(tapIfindex, a)
		if i < maxSolicitations && err != nil {
			t.Fatalf("solicitation %d: %v", i, err)
		}
		if i >= maxSolicitations && err == nil {
			t.Fatalf("solicitation %d accepted beyond the bound", i)
		}
	}
	if len(f.soliciting) != maxSolicitations {
		t.Errorf("%d solicitations pending", len(f.soliciting))
	}
	// Old ones are pruned to make room.
	f.now += int64(4 * solicitInterval)
	if err := f.solicit(tapIfindex, netip.MustParseAddr("10.255.0.1")); err != nil {
		t.Errorf("after pruning: %v", err)
	}
	if len(f.soliciting) != 1 {
		t.Errorf("%d solicitations pending after pruning", len(f.soliciting))
	}
	f.sendErr = unixErr{}
	if err := f.solicit(tapIfindex, netip.MustParseAddr("10.255.0.2")); err == nil || f.stats.SendErrors.Load() != 1 {
		t.Errorf("send error: %v, counted %d", err, f.stats.SendErrors.Load())
	}
}

type unixErr struct{}

func (unixErr) Error() string { return "no buffer space" }
