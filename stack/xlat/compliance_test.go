package xlat

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/map646/map646/mapping"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// RFC 7915 section 5.1: a packet whose IPv4 form carries DF and exceeds
// the IPv4 next hop's MTU is refused with a Packet Too Big announcing
// the MTU in IPv6 terms (RFC 8201), and never less than 1280: RFC 8201
// section 4 has IPv6 hosts discard a smaller one (Linux does),
// which would black-hole the path. At 1280 the host's packets translate
// to at most 1260 bytes without DF, which the IPv4 side fragments.
func TestPacketTooBigFloor(t *testing.T) {
	for _, c := range []struct {
		name    string
		mtu4    int
		payload int
		wantMTU uint32
	}{
		{"mtu4-1400", 1400, 1452, 1420},
		{"mtu4-1260", 1260, 1300, 1280},
		{"mtu4-1259", 1259, 1300, 1280},
		{"mtu4-1000", 1000, 1452, 1280},
		{"mtu4-68", 68, 1300, 1280},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, func(p *Policy) { p.IPv4MTU = c.mtu4 })
			in := ip6(S6A, C6, 64, 17, udpSeg(42000, 41000, payload(c.payload)), v6opt{})
			_, r, sk := run(w, in, nil)
			if r.Verdict != Drop || r.Reason != ReasonTooBig {
				t.Fatalf("verdict %d %v, want drop %v", r.Verdict, r.Reason, ReasonTooBig)
			}
			expectEmitted(t, sk, ip6(errSrc6, S6A, 64, 58, icmpMsg(2, 0, c.wantMTU, in[:1280-48]), v6opt{}))
		})
	}
	// What a host does with a Packet Too Big of 1280: its 1280-byte
	// packets pass, without DF, for the IPv4 next hop to fragment.
	w := newTestWorker(t, func(p *Policy) { p.IPv4MTU = 1000 })
	got, r, _ := run(w, ip6(S6A, C6, 64, 17, udpSeg(42000, 41000, payload(1280-48)), v6opt{}), nil)
	if r.Verdict != Forward || binary.BigEndian.Uint16(got[6:])&ip4DF != 0 || len(got) != 1260 {
		t.Errorf("a 1280-byte packet: verdict %d %v, length %d, flags %#x", r.Verdict, r.Reason, len(got), got[6])
	}
}

// RFC 1812 section 5.2.2: a router MUST verify the IPv4 header checksum
// and discard a packet whose checksum is wrong. With a tun the host
// kernel has checked it; in NIC mode (AF_PACKET) nothing has, and a
// damaged address would send the packet to another server. A quoted
// header inside an ICMP error is not checked: the router that quoted it
// may have changed its TTL, and the ICMP checksum covers the quote.
func TestIPv4HeaderChecksum(t *testing.T) {
	damage := func(p []byte, at int) []byte {
		p = append([]byte(nil), p...)
		p[at] ^= 0x40
		return p
	}
	udp := ip4(C4, S4A, 64, 17, udpSeg(41000, 42000, payload(20)), v4opt{})
	lsrr := []byte{0x83, 7, 4, 203, 0, 113, 9, 0}
	withOpts := ip4(C4, S4A, 64, 17, udpSeg(41000, 42000, payload(20)), v4opt{rawOpts: []byte{1, 1, 1, 0}})
	icmpErr := ip4(R4, S4A, 64, 1, icmpMsg(3, 3, 0, innerV4(20)), v4opt{})
	badInner := innerV4(20)
	badInner[ip4Checksum] ^= 0x40
	runCases(t, newTestWorker(t, nil), []xcase{
		{name: "valid", rfc: "1812 5.2.2", in: udp, want: ip6(C6, S6A, 64, 17, udpSeg(41000, 42000, payload(20)), v6opt{})},
		{name: "checksum-field", rfc: "1812 5.2.2", in: damage(udp, ip4Checksum), reason: ReasonIPv4Checksum},
		{name: "destination", rfc: "1812 5.2.2", in: damage(udp, ip4Dst+3), reason: ReasonIPv4Checksum},
		{name: "ttl", rfc: "1812 5.2.2", in: damage(udp, ip4TTL), reason: ReasonIPv4Checksum},
		{name: "option", rfc: "1812 5.2.2", in: damage(withOpts, ip4Size+1), reason: ReasonIPv4Checksum},
		// No Source Route Failed about a damaged header: the source
		// address it would go to is not to be trusted.
		{name: "source-route", rfc: "1812 5.2.2", in: damage(ip4(C4, S4A, 64, 17, udpSeg(1, 2, nil), v4opt{rawOpts: lsrr}), ip4Src), reason: ReasonIPv4Checksum},
		{name: "icmp-error", rfc: "1812 5.2.2", in: damage(icmpErr, ip4TOS), reason: ReasonIPv4Checksum},
		{name: "quoted-header-not-checked", rfc: "7915 4.3; 792",
			in:   ip4(R4, S4A, 64, 1, icmpMsg(3, 3, 0, badInner), v4opt{}),
			want: ip6(R4in6, S6A, 64, 58, icmpMsg(1, 4, 0, innerV4as6(20)), v6opt{})},
	})
	w := newTestWorker(t, nil)
	_, _, sk := run(w, damage(ip4(C4, S4A, 64, 17, udpSeg(1, 2, nil), v4opt{rawOpts: lsrr}), ip4Src), nil)
	if len(sk.pkts) != 0 {
		t.Errorf("%d errors sent about a packet with a damaged header", len(sk.pkts))
	}
	// The word-wise sum of an option-less header agrees with the general
	// checksum on random headers, half of them given a valid checksum,
	// and on the all-ones header (sums that fold to 0xffff more than once).
	rng := rand.New(rand.NewPCG(1, 2))
	h := make([]byte, ip4Size)
	for i := range 20000 {
		for j := range h {
			h[j] = byte(rng.Uint32())
		}
		if i == 0 {
			for j := range h {
				h[j] = 0xff
			}
		}
		h[0] = 0x45
		if i%2 == 1 {
			put16(h[ip4Checksum:], 0)
			put16(h[ip4Checksum:], ^checksum.Checksum(h, 0))
		}
		q := in4{p: h, h: (*[ip4Size]byte)(h), ihl: ip4Size}
		if got, want := q.checksumOK(), checksum.Checksum(h, 0) == 0xffff; got != want {
			t.Fatalf("header %x: checksumOK %v, the general sum says %v", h, got, want)
		}
	}
}

// icmpCode is one row of the type and code lists of RFC 7915 sections
// 4.2 and 5.2: the type and code out, or drop (ok false), and the second
// word out for the types whose second word is not copied.
type icmpCode struct {
	code     uint8
	ok       bool
	typ, out uint8
	rest     uint32
}

// Every ICMPv4 Destination Unreachable, Time Exceeded and Parameter
// Problem code, through Process, as the list of RFC 7915 section 4.2
// has them; codes the list does not name are silently dropped.
func TestICMPv4ErrorCodes(t *testing.T) {
	rows := map[uint8][]icmpCode{
		3: { // Destination Unreachable
			{0, true, 1, 0, 0}, {1, true, 1, 0, 0}, // net, host unreachable -> no route
			{2, true, 4, 1, 6},                                                             // protocol unreachable -> Parameter Problem, pointer to Next Header
			{3, true, 1, 4, 0},                                                             // port unreachable
			{4, true, 2, 0, 1320},                                                          // fragmentation needed -> Packet Too Big, MTU + 20
			{5, true, 1, 0, 0}, {6, true, 1, 0, 0}, {7, true, 1, 0, 0}, {8, true, 1, 0, 0}, // source route failed, unknown, isolated
			{9, true, 1, 1, 0}, {10, true, 1, 1, 0}, // administratively prohibited (net, host)
			{11, true, 1, 0, 0}, {12, true, 1, 0, 0}, // unreachable for TOS
			{13, true, 1, 1, 0},                         // communication administratively prohibited
			{14, false, 0, 0, 0},                        // host precedence violation: dropped
			{15, true, 1, 1, 0},                         // precedence cutoff
			{16, false, 0, 0, 0}, {255, false, 0, 0, 0}, // unknown codes
		},
		11: {{0, true, 3, 0, 0}, {1, true, 3, 1, 0}, {2, true, 3, 2, 0}, {255, true, 3, 255, 0}}, // Time Exceeded: "The Code is unchanged"
		12: { // Parameter Problem (pointer 9: Protocol -> Next Header)
			{0, true, 4, 0, 6}, {1, false, 0, 0, 0}, {2, true, 4, 0, 6}, {3, false, 0, 0, 0},
		},
	}
	w := newTestWorker(t, nil)
	var cases []xcase
	for typ, list := range rows {
		for _, c := range list {
			rest4 := uint32(0)
			switch {
			case typ == 3 && c.code == 4:
				rest4 = 1300
			case typ == 12:
				rest4 = 9 << 24
			}
			x := xcase{name: fmt.Sprintf("type%d-code%d", typ, c.code), rfc: "7915 4.2", reason: ReasonICMPType,
				in: ip4(R4, S4A, 64, 1, icmpMsg(typ, c.code, rest4, innerV4(60)), v4opt{})}
			if c.ok {
				x.want = ip6(R4in6, S6A, 64, 58, icmpMsg(c.typ, c.out, c.rest, innerV4as6(60)), v6opt{})
			}
			cases = append(cases, x)
		}
	}
	runCases(t, w, cases)
}

// Every ICMPv6 Destination Unreachable, Packet Too Big, Time Exceeded
// and Parameter Problem code, through Process, as the list of RFC 7915
// section 5.2 has them.
func TestICMPv6ErrorCodes(t *testing.T) {
	rows := map[uint8][]icmpCode{
		1: { // Destination Unreachable
			{0, true, 3, 1, 0},                     // no route -> host unreachable
			{1, true, 3, 10, 0},                    // administratively prohibited
			{2, true, 3, 1, 0}, {3, true, 3, 1, 0}, // beyond scope, address unreachable
			{4, true, 3, 3, 0},                                                                 // port unreachable
			{5, false, 0, 0, 0}, {6, false, 0, 0, 0}, {7, false, 0, 0, 0}, {8, false, 0, 0, 0}, // later codes: dropped
		},
		2: {{0, true, 3, 4, 1280}, {1, true, 3, 4, 1280}},                                           // Packet Too Big (RFC 4443 3.2: the code is ignored), MTU - 20
		3: {{0, true, 11, 0, 0}, {1, true, 11, 1, 0}, {2, true, 11, 2, 0}, {255, true, 11, 255, 0}}, // Time Exceeded: "The Code is unchanged"
		4: { // Parameter Problem (pointer 6: Next Header -> Protocol)
			{0, true, 12, 0, 9 << 24}, {1, true, 3, 2, 0}, {2, false, 0, 0, 0}, {3, false, 0, 0, 0},
		},
	}
	w := newTestWorker(t, nil)
	var cases []xcase
	for typ, list := range rows {
		for _, c := range list {
			rest6 := uint32(0)
			switch typ {
			case 2:
				rest6 = 1300
			case 4:
				rest6 = 6
			}
			x := xcase{name: fmt.Sprintf("type%d-code%d", typ, c.code), rfc: "7915 5.2", reason: ReasonICMPType, genID: true,
				in: ip6(S6A, C6, 64, 58, icmpMsg(typ, c.code, rest6, innerV6(60)), v6opt{})}
			if c.ok {
				x.want = ip4(S4A, C4, 64, 1, icmpMsg(c.typ, c.out, c.rest, innerV6as4(60)), v4opt{})
			}
			cases = append(cases, x)
		}
	}
	runCases(t, w, cases)
}

// RFC 7915 sections 4.2 and 5.2: the informational types without a
// counterpart, single-hop messages and unknown types are silently
// dropped (Echo is the only query translated); so are error types the
// lists do not name.
func TestICMPUntranslatableTypes(t *testing.T) {
	var cases []xcase
	for _, typ := range []uint8{4, 5, 6, 9, 10, 13, 14, 15, 16, 17, 18, 30, 40, 42, 43, 253} {
		cases = append(cases, xcase{name: fmt.Sprintf("icmpv4-type%d", typ), rfc: "7915 4.2", reason: ReasonICMPType,
			in: ip4(C4, S4A, 64, 1, icmpMsg(typ, 0, 0, innerV4(20)), v4opt{})})
	}
	for _, typ := range []uint8{5, 100, 127, 130, 131, 132, 133, 134, 135, 136, 137, 139, 140, 143, 160, 200, 255} {
		cases = append(cases, xcase{name: fmt.Sprintf("icmpv6-type%d", typ), rfc: "7915 5.2", reason: ReasonICMPType,
			in: ip6(S6A, C6, 64, 58, icmpMsg(typ, 0, 0, innerV6(20)), v6opt{})})
	}
	runCases(t, newTestWorker(t, nil), cases)
}

// RFC 7915 sections 4.3 and 5.3: a quoted fragment is translated like an
// outer one: the IPv4 fragment fields go into a Fragment header (section
// 4.1, the Identification in its low 16 bits) and back (section 5.1.1),
// only a first fragment has a transport header to fix, and a Packet Too
// Big about a packet that had a Fragment header takes 28 bytes off its
// MTU, not 20 (section 5.2).
func TestICMPErrorQuotedFragment(t *testing.T) {
	udp6 := udpSeg(41000, 42000, payload(60))
	fillCsum6(C6, S6A, 17, udp6) // client -> server, as the IPv6 side saw it
	udp4back := udpSeg(42000, 41000, payload(60))
	fillCsum4(S4A, C4, 17, udp4back) // server -> client, as the IPv4 side saw it
	udp6back := udpSeg(42000, 41000, payload(60))
	fillCsum6(S6A, C6, 17, udp6back)
	first4 := ip4(S4A, C4, 58, 17, udp4back, v4opt{id: 0x2222, flags: MF, nocsum: true})
	later4 := ip4(S4A, C4, 58, 17, payload(40), v4opt{id: 0x2222, fo: 64, nocsum: true})
	first6 := ip6(C6, S6A, 57, 44, nil, v6opt{nocsum: true, extNH: 44, ext: append(fragHdr(17, 0, true, 0xabcd5678), udp6...)})
	later6 := ip6(C6, S6A, 57, 44, nil, v6opt{nocsum: true, extNH: 44, ext: append(fragHdr(17, 64, false, 0xabcd5678), payload(40)...)})
	udp4 := udpSeg(41000, 42000, payload(60))
	fillCsum4(C4, S4A, 17, udp4)
	runCases(t, newTestWorker(t, nil), []xcase{
		{name: "4to6-first-fragment", rfc: "7915 4.3 4.1",
			in: ip4(R4, S4A, 64, 1, icmpMsg(11, 1, 0, first4), v4opt{}),
			want: ip6(R4in6, S6A, 64, 58, icmpMsg(3, 1, 0,
				ip6(S6A, C6, 58, 44, nil, v6opt{nocsum: true, extNH: 44, ext: append(fragHdr(17, 0, true, 0x2222), udp6back...)})), v6opt{})},
		{name: "4to6-later-fragment", rfc: "7915 4.3 4.1",
			in: ip4(R4, S4A, 64, 1, icmpMsg(11, 1, 0, later4), v4opt{}),
			want: ip6(R4in6, S6A, 64, 58, icmpMsg(3, 1, 0,
				ip6(S6A, C6, 58, 44, nil, v6opt{nocsum: true, extNH: 44, ext: append(fragHdr(17, 64, false, 0x2222), payload(40)...)})), v6opt{})},
		{name: "6to4-first-fragment", rfc: "7915 5.3 5.1.1", genID: true,
			in:   ip6(S6A, C6, 64, 58, icmpMsg(3, 1, 0, first6), v6opt{}),
			want: ip4(S4A, C4, 64, 1, icmpMsg(11, 1, 0, ip4(C4, S4A, 57, 17, udp4, v4opt{id: 0x5678, flags: MF, nocsum: true})), v4opt{})},
		{name: "6to4-later-fragment", rfc: "7915 5.3 5.1.1", genID: true,
			in:   ip6(S6A, C6, 64, 58, icmpMsg(3, 1, 0, later6), v6opt{}),
			want: ip4(S4A, C4, 64, 1, icmpMsg(11, 1, 0, ip4(C4, S4A, 57, 17, payload(40), v4opt{id: 0x5678, fo: 64, nocsum: true})), v4opt{})},
		{name: "6to4-ptb-fragment", rfc: "7915 5.2 (MTU - 28 with a Fragment header)", genID: true,
			in:   ip6(S6A, C6, 64, 58, icmpMsg(2, 0, 1300, first6), v6opt{}),
			want: ip4(S4A, C4, 64, 1, icmpMsg(3, 4, 1272, ip4(C4, S4A, 57, 17, udp4, v4opt{id: 0x5678, flags: MF, nocsum: true})), v4opt{})},
	})
}

// RFC 7915 section 5.2: the MTU of a Fragmentation Needed made from a
// Packet Too Big is minimum(MTU - 20, the IPv4 next hop's MTU, the IPv6
// next hop's MTU - 20), within what IPv4 can carry (68 to 65535).
func TestFragNeededMTU64(t *testing.T) {
	for _, c := range []struct {
		name       string
		mtu        uint32
		mtu4, mtu6 int
		want       uint32
	}{
		{"mtu-20", 1300, 0, 0, 1280},
		{"ipv4-next-hop", 1500, 1000, 0, 1000},
		{"ipv6-next-hop", 9000, 0, 1400, 1380},
		{"both-known", 9000, 1480, 1500, 1480},
		{"bogus-small", 40, 0, 0, 68},
		{"bogus-huge", 0xffffffff, 0, 0, 65535},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, func(p *Policy) { p.IPv4MTU, p.IPv6MTU = c.mtu4, c.mtu6 })
			got, r, _ := run(w, ip6(S6A, C6, 64, 58, icmpMsg(2, 0, c.mtu, innerV6(60)), v6opt{}), nil)
			if r.Verdict != Forward {
				t.Fatalf("verdict %d %v", r.Verdict, r.Reason)
			}
			if got[20] != 3 || got[21] != 4 || binary.BigEndian.Uint16(got[26:]) != uint16(c.want) || binary.BigEndian.Uint16(got[24:]) != 0 {
				t.Errorf("type %d code %d second word %#x, want 3 4 MTU %d", got[20], got[21], binary.BigEndian.Uint32(got[24:]), c.want)
			}
			checkWellFormed(t, got, true)
		})
	}
}

// With the well-known prefix 64:ff9b::/96, RFC 6052 section 3.1 forbids
// expressing non-global IPv4 addresses, so an IPv4 router numbered in
// shared (100.64/10, carrier-grade NAT) or private space has no IPv6
// address. Its ICMPv4 errors are still translated, from the translator's
// own error address inside the prefix (the RFC 6791 idea in the 4->6
// direction, as Jool's pool6791v6 does): dropping them would
// black-hole the path MTU discovery of servers whose clients sit behind
// such routers. Everything else from such a source stays untranslatable.
// (Engine-only bytes: the well-known prefix admits global addresses only.)
func TestICMPv4ErrorUntranslatableSource(t *testing.T) {
	const (
		srv4, srv6 = "8.8.4.4", "2001:db8:6::10"
		cli4, cli6 = "1.1.1.1", "64:ff9b::101:101"
		self4      = "8.8.8.8"
		self6      = "64:ff9b::808:808" // self4 in the prefix: the translator's own errors' source
	)
	pfx, err := mapping.NewPrefix(mapping.WellKnown)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := mapping.NewTable([]mapping.Entry{{IPv4: mustPrefix(srv4 + "/32"), IPv6: mustPrefix(srv6 + "/128")}})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := mapping.NewSnapshot(pfx, tab)
	if err != nil {
		t.Fatal(err)
	}
	pol := testPolicy()
	pol.ICMPSourcePool, pol.IPv4Address = []netip.Prefix{mustPrefix(self4 + "/32")}, netip.Addr{}
	e, err := NewEngine(&Config{Map: snap, Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	w := e.NewWorker()
	quoted4 := ip4(srv4, cli4, 58, 17, udpSeg(42000, 41000, payload(60)), v4opt{flags: DF})
	quoted6 := ip6(srv6, cli6, 58, 17, udpSeg(42000, 41000, payload(60)), v6opt{})
	var cases []xcase
	for _, router := range []string{"100.64.0.1", "10.20.30.40", "192.168.1.1"} {
		cases = append(cases,
			xcase{name: "frag-needed-from-" + router, rfc: "7915 4.2; 6052 3.1; 6791",
				in:   ip4(router, srv4, 60, 1, icmpMsg(3, 4, 1400, quoted4), v4opt{}),
				want: ip6(self6, srv6, 60, 58, icmpMsg(2, 0, 1420, quoted6), v6opt{})},
			xcase{name: "time-exceeded-from-" + router, rfc: "7915 4.2; 6052 3.1; 6791",
				in:   ip4(router, srv4, 60, 1, icmpMsg(11, 0, 0, quoted4), v4opt{}),
				want: ip6(self6, srv6, 60, 58, icmpMsg(3, 0, 0, quoted6), v6opt{})},
			xcase{name: "udp-from-" + router, rfc: "6052 3.1", reason: ReasonSrcUnmapped,
				in: ip4(router, srv4, 60, 17, udpSeg(1, 2, payload(8)), v4opt{})},
			xcase{name: "echo-from-" + router, rfc: "6052 3.1", reason: ReasonSrcUnmapped,
				in: ip4(router, srv4, 60, 1, icmpMsg(8, 0, 1, payload(8)), v4opt{})})
	}
	// Sources no router owns are not lent the error address.
	for _, martian := range []string{"127.0.0.1", "0.0.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255", "169.254.0.1"} {
		cases = append(cases, xcase{name: "frag-needed-from-" + martian, rfc: "7915 4.1; 6791", reason: ReasonSrcIllegal,
			in: ip4(martian, srv4, 60, 1, icmpMsg(3, 4, 1400, quoted4), v4opt{})})
	}
	// A global router keeps its own address in the prefix.
	cases = append(cases, xcase{name: "frag-needed-from-global", rfc: "7915 4.2; 6052",
		in:   ip4("9.9.9.9", srv4, 60, 1, icmpMsg(3, 4, 1400, quoted4), v4opt{}),
		want: ip6("64:ff9b::909:909", srv6, 60, 58, icmpMsg(2, 0, 1420, quoted6), v6opt{})})
	runCases(t, w, cases)
}

// RFC 7915 section 4.5 with section 4 (DF clear, larger than
// lowest-ipv6-mtu): an unfragmented datagram without a UDP checksum gets
// one computed over the whole datagram before the translator fragments
// it, so that the reassembled IPv6 datagram verifies.
func TestUDPZeroChecksumFragmented46(t *testing.T) {
	w := newTestWorker(t, nil)
	pl := payload(1372)
	in := ip4(C4, S4A, 64, 17, udpSeg(41000, 42000, pl), v4opt{id: 0x4455, nocsum: true})
	_, r, sk := run(w, in, nil)
	if r.Verdict != Consumed || len(sk.pkts) < 2 {
		t.Fatalf("verdict %d %v, %d packets", r.Verdict, r.Reason, len(sk.pkts))
	}
	var data []byte
	for _, f := range sk.pkts {
		data = append(data, f[48:]...)
	}
	want := ip6(C6, S6A, 64, 17, udpSeg(41000, 42000, pl), v6opt{})[40:]
	diff(t, "reassembled datagram", data, want)
}

// RFC 7915 sections 4.5 and 5.5 make other transports optional but
// require forwarding them all; DCCP (RFC 4340) and UDP-Lite (RFC 3828)
// checksum the pseudo-header as TCP does, so map646 moves their checksum
// with the addresses instead of forwarding packets every
// receiver would discard. Later fragments carry no header; a quoted
// packet is fixed like an outer one.
func TestPseudoHeaderTransports(t *testing.T) {
	// A DCCP-Request (RFC 4340 section 5.1, X=1: 16-byte generic header
	// plus the Service Code) and a UDP-Lite header with coverage 0 (the
	// whole datagram).
	dccp := append([]byte{0x9c, 0x40, 0x01, 0xbb, 5, 0, 0, 0, 0, 0x03, 0, 0, 0, 0, 0, 7, 0, 0, 0, 42}, payload(20)...)
	lite := append([]byte{0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 0}, payload(33)...)
	var cases []xcase
	for _, c := range []struct {
		name  string
		proto uint8
		l4    []byte
	}{{"dccp", 33, dccp}, {"udplite", 136, lite}} {
		cases = append(cases,
			xcase{name: c.name + "-4to6", rfc: "7915 4.5",
				in:   ip4(C4, S4A, 64, c.proto, c.l4, v4opt{}),
				want: ip6(C6, S6A, 64, c.proto, c.l4, v6opt{})},
			xcase{name: c.name + "-6to4", rfc: "7915 5.5", genID: true,
				in:   ip6(S6A, C6, 64, c.proto, c.l4, v6opt{}),
				want: ip4(S4A, C4, 64, c.proto, c.l4, v4opt{})},
			xcase{name: c.name + "-later-fragment-4to6", rfc: "7915 4.5",
				in:   ip4(C4, S4A, 64, c.proto, payload(16), v4opt{fo: 64, id: 3, nocsum: true}),
				want: ip6(C6, S6A, 64, 44, nil, v6opt{nocsum: true, extNH: 44, ext: append(fragHdr(c.proto, 64, false, 3), payload(16)...)})},
			xcase{name: c.name + "-short", rfc: "robustness", reason: ReasonMalformed,
				in: ip4(C4, S4A, 64, c.proto, payload(7), v4opt{nocsum: true})},
			xcase{name: c.name + "-quoted-4to6", rfc: "7915 4.3",
				in:   ip4(R4, S4A, 64, 1, icmpMsg(3, 3, 0, ip4(S4A, C4, 58, c.proto, c.l4, v4opt{})), v4opt{}),
				want: ip6(R4in6, S6A, 64, 58, icmpMsg(1, 4, 0, ip6(S6A, C6, 58, c.proto, c.l4, v6opt{})), v6opt{})},
			xcase{name: c.name + "-quoted-6to4", rfc: "7915 5.3", genID: true,
				in:   ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 0, ip6(C6, S6A, 57, c.proto, c.l4, v6opt{})), v6opt{}),
				want: ip4(S4A, C4, 64, 1, icmpMsg(3, 3, 0, ip4(C4, S4A, 57, c.proto, c.l4, v4opt{})), v4opt{})})
	}
	runCases(t, newTestWorker(t, nil), cases)
}

// RFC 7915 section 5.1: a packet with a Routing header whose Segments
// Left is not 0 is not translated, and a Parameter Problem pointing at
// that field goes back; but only about a packet the translator would
// otherwise have translated. One it refuses for its addresses (an
// unmapped or forged source, a destination outside the prefix and the
// mappings, an own address) earns no error, as in the 4->6 direction
// (source route): an error to a forged source is a reflection.
func TestSegmentsLeftAddressesFirst(t *testing.T) {
	rh := []byte{17, 2, 0, 1, 0, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	const own6 = "2001:db8:ff::1"
	for _, c := range []struct {
		name, src, dst string
		why            Reason
		emitted        int
	}{
		{"translatable", S6A, C6, ReasonSegmentsLeft, 1},
		{"unmapped-source", S6U, C6, ReasonSrcUnmapped, 0},
		{"forged-prefix-source", v4in6("192.0.2.99"), C6, ReasonSpoofed, 0},
		{"unmapped-destination", S6A, "2001:db8:7::1", ReasonDstUnmapped, 0},
		{"illegal-destination", S6A, v4in6("224.0.0.1"), ReasonDstIllegal, 0},
		{"untranslatable-source", R6X, C6, ReasonSrcUnmapped, 0},
		{"neither-mapped", R6X, "2001:db8:eeee::2", ReasonDstUnmapped, 0},
		{"prefix-source-to-prefix", C6, v4in6("192.0.2.3"), ReasonSpoofed, 0},
		{"to-own-ipv4", S6A, v4in6(SELF4), ReasonOwnAddress, 0},
		{"to-own-ipv6", S6A, own6, ReasonOwnAddress, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, func(p *Policy) { p.OwnAddrs = []netip.Prefix{mustPrefix(own6 + "/128")} })
			in := ip6(c.src, c.dst, 64, 17, udpSeg(1, 2, payload(8)), v6opt{ext: rh, extNH: 43})
			_, r, sk := run(w, in, nil)
			if r.Verdict != Drop || r.Reason != c.why || len(sk.pkts) != c.emitted {
				t.Fatalf("verdict %d %v, %d errors; want drop %v, %d", r.Verdict, r.Reason, len(sk.pkts), c.why, c.emitted)
			}
			if c.emitted == 1 {
				expectEmitted(t, sk, ip6(errSrc6, c.src, 64, 58, icmpMsg(4, 0, 43, in), v6opt{}))
			}
		})
	}
}
