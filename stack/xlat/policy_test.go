package xlat

import (
	"net/netip"
	"testing"

	"github.com/map646/map646/mapping"
)

// Spoofing through the translator: addresses that only the translator
// writes must not come in.
func TestSpoofing(t *testing.T) {
	w := newTestWorker(t, nil)
	u := udpSeg(42000, 42001, payload(20))
	runCases(t, w, []xcase{
		{name: "6to4-src-in-prefix-as-server", rfc: "7757 4.2; issue 9",
			in: ip6(v4in6(S4B), C6, 64, 17, u, v6opt{}), reason: ReasonSpoofed},
		{name: "6to4-src-in-prefix-as-client", rfc: "7915 5.1; issue 9",
			in: ip6(C6, v4in6("192.0.2.3"), 64, 17, u, v6opt{}), reason: ReasonSpoofed},
		{name: "6to4-src-in-prefix-hairpin", rfc: "7757 4.2; issue 9",
			in: ip6(v4in6(C4), v4in6(S4B), 64, 17, u, v6opt{}), reason: ReasonSpoofed},
		{name: "6to4-error-from-prefix", rfc: "7915 5.2; issue 9",
			in: ip6(v4in6(R4), C6, 64, 58, icmpMsg(1, 0, 0, innerV6(20)), v6opt{}), reason: ReasonSpoofed},
		{name: "4to6-src-mapped", rfc: "7757 3; issue 9",
			in: ip4(S4B, S4A, 64, 17, u, v4opt{}), reason: ReasonSpoofed},
		{name: "4to6-error-from-mapped", rfc: "7757 3; issue 9",
			in: ip4(S4B, S4A, 64, 1, icmpMsg(3, 1, 0, innerV4(20)), v4opt{}), reason: ReasonSpoofed},
		{name: "4to6-src-mapped-source-routed", rfc: "7915 4.1; issue 9 (no error to a forged source)",
			in: ip4(S4B, S4A, 64, 17, u, v4opt{rawOpts: []byte{0x83, 7, 4, 203, 0, 113, 9, 0}}), reason: ReasonSpoofed},
		// The server-to-server packets that do translate.
		{name: "6to4-server-by-eam", rfc: "7757 3",
			in: ip6(S6A, v4in6(S4B), 64, 17, u, v6opt{}), want: ip6(v4in6(S4A), S6B, 63, 17, u, v6opt{})},
	})
	// A forged packet leaves nothing behind.
	for _, in := range [][]byte{ip4(S4B, S4A, 64, 17, u, v4opt{rawOpts: []byte{0x83, 7, 4, 203, 0, 113, 9, 0}})} {
		if _, _, sk := run(w, in, nil); len(sk.pkts) != 0 {
			t.Errorf("emitted %d packets about a forged packet", len(sk.pkts))
		}
	}
}

// reflect is a server that bounces every packet back to its sender with
// the hop limit it arrived with: addresses swapped, checksums still valid.
func reflect(p []byte) []byte { return swapAddrs(append([]byte(nil), p...)) }

// Issue 9: one hairpinned UDP packet between two reflecting servers went
// round for ever, since the translator neither spent a hop on the hairpin
// nor refused its own output. Now every hairpin costs one, the last one
// is answered with Time Exceeded, and the output never comes back in.
func TestHairpinLoop(t *testing.T) {
	w := newTestWorker(t, nil)
	pkt := ip6(S6A, v4in6(S4B), 64, 17, udpSeg(7, 7, payload(32)), v6opt{})
	passes := 0
	var last Result
	var errs *sink
	for passes < 1000 {
		out, r, sk := run(w, pkt, nil)
		if r.Verdict != Forward {
			last, errs = r, sk
			break
		}
		passes++
		if len(sk.pkts) != 0 {
			t.Fatalf("pass %d: one packet in made %d more", passes, len(sk.pkts))
		}
		// Fed back as it is (a route pointing into the translator), the
		// output is refused: a packet hairpins once.
		if _, r, sk := run(w, out, nil); r.Verdict != Drop || r.Reason != ReasonSpoofed || len(sk.pkts) != 0 {
			t.Fatalf("pass %d: hairpin output fed back: verdict %d %v, %d emitted", passes, r.Verdict, r.Reason, len(sk.pkts))
		}
		pkt = reflect(out)
	}
	if passes != 63 {
		t.Fatalf("the packet hairpinned %d times, want 63 (hop limit 64, one hop each)", passes)
	}
	if last.Reason != ReasonHopLimit {
		t.Fatalf("loop ended with %v, want %v", last.Reason, ReasonHopLimit)
	}
	// RFC 4443 3.3: Time Exceeded, code 0, to the sender of the last pass
	// (server A after an odd number of reflections... either server).
	if len(errs.pkts) != 1 {
		t.Fatalf("%d errors for the expired packet, want 1", len(errs.pkts))
	}
	want := ip6(errSrc6, string6(pkt[8:24]), 64, 58, icmpMsg(3, 0, 0, pkt), v6opt{})
	diff(t, "RFC 4443 3.3 Time Exceeded", errs.pkts[0], want)
	if n := w.C.Hairpinned.Load(); n != 63 {
		t.Errorf("hairpinned %d, want 63", n)
	}
}

func string6(b []byte) string { return netip.AddrFrom16([16]byte(b)).String() }

// The hop limit of a hairpinned packet (RFC 8200 section 3, RFC 4443
// section 2.4 (e)): spent by one; at 1 the packet is dropped, with Time
// Exceeded unless it is an ICMP error or a non-first fragment; errors go
// round once too.
func TestHairpinHopLimit(t *testing.T) {
	u := udpSeg(42000, 42001, payload(20))
	quote := ip6(v4in6(S4A), S6B, 60, 17, u, v6opt{})
	for _, c := range []struct {
		name    string
		in      []byte
		hlim    uint8 // the hop limit of the output; 0: dropped
		emitted int
	}{
		{"udp-hlim-2", ip6(S6A, v4in6(S4B), 2, 17, u, v6opt{}), 1, 0},
		{"udp-hlim-1", ip6(S6A, v4in6(S4B), 1, 17, u, v6opt{}), 0, 1},
		{"udp-hlim-0", ip6(S6A, v4in6(S4B), 0, 17, u, v6opt{}), 0, 1},
		{"error-hlim-1", ip6(S6B, v4in6(S4A), 1, 58, icmpMsg(1, 4, 0, quote), v6opt{}), 0, 0},
		{"error-hlim-2", ip6(S6B, v4in6(S4A), 2, 58, icmpMsg(1, 4, 0, quote), v6opt{}), 1, 0},
		{"non-first-fragment-hlim-1", ip6(S6A, v4in6(S4B), 1, 44, nil,
			v6opt{nocsum: true, extNH: 44, ext: append(fragHdr(17, 16, false, 5), payload(24)...)}), 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, nil)
			out, r, sk := run(w, c.in, nil)
			if len(sk.pkts) != c.emitted {
				t.Errorf("emitted %d, want %d", len(sk.pkts), c.emitted)
			}
			if c.hlim == 0 {
				if r.Verdict != Drop || r.Reason != ReasonHopLimit {
					t.Fatalf("verdict %d %v, want drop %v", r.Verdict, r.Reason, ReasonHopLimit)
				}
				if c.emitted == 1 {
					want := ip6(errSrc6, S6A, 64, 58, icmpMsg(3, 0, 0, c.in), v6opt{})
					diff(t, "Time Exceeded", sk.pkts[0], want)
					checkWellFormed(t, sk.pkts[0], true)
				}
				return
			}
			if r.Verdict != Forward {
				t.Fatalf("verdict %d %v", r.Verdict, r.Reason)
			}
			if out[7] != c.hlim {
				t.Errorf("hop limit %d, want %d", out[7], c.hlim)
			}
			checkWellFormed(t, out, true)
		})
	}
}

// One packet in never makes more than one packet out: the IPv4 form of a
// hairpinned packet is the engine's own, never the subject of an ICMPv4
// error, and the IPv4 MTU does not apply to a packet that never leaves
// for the IPv4 side.
func TestHairpinOneOut(t *testing.T) {
	big := ip6(S6A, v4in6(S4B), 64, 17, udpSeg(42000, 42001, payload(1400)), v6opt{})
	t.Run("ipv6-mtu", func(t *testing.T) {
		// Too big for the IPv6 MTU (it came in over a larger link): dropped,
		// and no ICMPv4 error to the server's public address.
		w := newTestWorker(t, func(p *Policy) { p.IPv6MTU = 1280 })
		_, r, sk := run(w, big, nil)
		if r.Verdict != Drop || r.Reason != ReasonTooBig || len(sk.pkts) != 0 {
			t.Errorf("verdict %d %v, %d emitted; want drop %v and nothing emitted", r.Verdict, r.Reason, len(sk.pkts), ReasonTooBig)
		}
	})
	t.Run("ipv4-mtu", func(t *testing.T) {
		w := newTestWorker(t, func(p *Policy) { p.IPv4MTU = 1280 })
		out, r, sk := run(w, big, nil)
		if r.Verdict != Forward || len(sk.pkts) != 0 {
			t.Fatalf("verdict %d %v, %d emitted; want it hairpinned alone", r.Verdict, r.Reason, len(sk.pkts))
		}
		checkWellFormed(t, out, true)
	})
}

// snapshotWith is testSnapshot plus a /24 mapping, whose broadcast address
// is a directed broadcast.
func snapshotWith(t *testing.T) *mapping.Snapshot {
	t.Helper()
	p, err := mapping.NewPrefix(netip.MustParsePrefix("2001:db8:64::/96"))
	if err != nil {
		t.Fatal(err)
	}
	tab, err := mapping.NewTable([]mapping.Entry{
		{IPv4: netip.MustParsePrefix(S4A + "/32"), IPv6: netip.MustParsePrefix(S6A + "/128")},
		{IPv4: netip.MustParsePrefix(S4B + "/32"), IPv6: netip.MustParsePrefix(S6B + "/128")},
		{IPv4: netip.MustParsePrefix("198.51.101.0/24"), IPv6: netip.MustParsePrefix("2001:db8:7::/120")},
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := mapping.NewSnapshot(p, tab)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// What the translator must never reach: its own addresses, link-local
// and metadata space, broadcast (limited and directed), and the IPv6
// scopes that cannot leave the link; ICMPv4 errors from illegal sources
// still go through (RFC 7915 4.1, 4.3).
func TestAddressPolicy(t *testing.T) {
	pol := testPolicy()
	pol.OwnAddrs = []netip.Prefix{mustPrefix("203.0.113.1/28"), mustPrefix("2001:db8:7::99/64"), mustPrefix("192.0.2.200/32"), mustPrefix("2001:db8:ffff::1/64")}
	e, err := NewEngine(&Config{Map: snapshotWith(t), Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	w := e.NewWorker()
	u := udpSeg(42000, 42001, payload(20))
	errInner := innerV4(20)
	runCases(t, w, []xcase{
		{name: "4to6-dst-metadata", rfc: "3927; issue 9", in: ip4(C4, "169.254.169.254", 64, 17, u, v4opt{}), reason: ReasonDstIllegal},
		{name: "4to6-src-link-local", rfc: "3927; 7915 4.1", in: ip4("169.254.1.1", S4A, 64, 17, u, v4opt{}), reason: ReasonSrcIllegal},
		{name: "6to4-dst-metadata", rfc: "3927; issue 9", in: ip6(S6A, v4in6("169.254.169.254"), 64, 17, u, v6opt{}), reason: ReasonDstIllegal},
		{name: "6to4-dst-limited-broadcast", rfc: "1812 5.3.5.1", in: ip6(S6A, v4in6("255.255.255.255"), 64, 17, u, v6opt{}), reason: ReasonDstIllegal},
		{name: "4to6-src-own", rfc: "issue 9", in: ip4("203.0.113.1", S4A, 64, 17, u, v4opt{}), reason: ReasonOwnAddress},
		{name: "4to6-src-own-host", rfc: "issue 9", in: ip4("192.0.2.200", S4A, 64, 17, u, v4opt{}), reason: ReasonOwnAddress},
		{name: "6to4-dst-own", rfc: "issue 9", in: ip6(S6A, v4in6("203.0.113.1"), 64, 17, u, v6opt{}), reason: ReasonOwnAddress},
		{name: "4to6-dst6-own", rfc: "issue 9", in: ip4(C4, "198.51.101.153", 64, 17, u, v4opt{}), reason: ReasonOwnAddress},
		{name: "6to4-src6-own", rfc: "issue 9", in: ip6("2001:db8:7::99", C6, 64, 17, u, v6opt{}), reason: ReasonOwnAddress},
		{name: "4to6-dst-mapped-broadcast", rfc: "1812 5.3.5.2", in: ip4(C4, "198.51.101.255", 64, 17, u, v4opt{}), reason: ReasonBroadcast},
		{name: "6to4-dst-mapped-broadcast-hairpin", rfc: "1812 5.3.5.2", in: ip6(S6A, v4in6("198.51.101.255"), 64, 17, u, v6opt{}), reason: ReasonBroadcast},
		{name: "6to4-src-mapped-broadcast", rfc: "1812 5.3.7", in: ip6("2001:db8:7::ff", C6, 64, 17, u, v6opt{}), reason: ReasonBroadcast},
		{name: "6to4-dst-own-subnet-broadcast", rfc: "1812 5.3.5.2", in: ip6(S6A, v4in6("203.0.113.15"), 64, 17, u, v6opt{}), reason: ReasonBroadcast},
		{name: "4to6-src-own-subnet-broadcast", rfc: "1812 5.3.7", in: ip4("203.0.113.15", S4A, 64, 17, u, v4opt{}), reason: ReasonBroadcast},
		{name: "6to4-dst-link-local", rfc: "7915 5.1; 4291", in: ip6(S6A, "fe80::1", 64, 17, u, v6opt{}), reason: ReasonDstIllegal},
		{name: "6to4-dst-unspecified", rfc: "7915 5.1; 4291", in: ip6(S6A, "::", 64, 17, u, v6opt{}), reason: ReasonDstIllegal},
		{name: "6to4-dst-multicast", rfc: "7915 5.1; 4291", in: ip6(S6A, "ff0e::1", 64, 17, u, v6opt{}), reason: ReasonDstIllegal},
		// Addresses next to the special ones translate.
		{name: "4to6-mapped-prefix-host", rfc: "7757 3", in: ip4(C4, "198.51.101.254", 64, 17, u, v4opt{}),
			want: ip6(C6, "2001:db8:7::fe", 64, 17, u, v6opt{})},
		{name: "4to6-own-subnet-neighbour", rfc: "7915 4.1", in: ip4("203.0.113.14", S4A, 64, 17, u, v4opt{}),
			want: ip6(v4in6("203.0.113.14"), S6A, 64, 17, u, v6opt{})},
		// RFC 7915 4.1/4.3: ICMPv4 errors keep the illegal sources a
		// router can be numbered in,
		{name: "error-from-class-e", rfc: "7915 4.1 4.3", in: ip4("240.0.0.1", S4A, 64, 1, icmpMsg(11, 0, 0, errInner), v4opt{}),
			want: ip6(v4in6("240.0.0.1"), S6A, 64, 58, icmpMsg(3, 0, 0, innerV4as6(20)), v6opt{})},
		{name: "error-from-link-local", rfc: "7915 4.1 4.3", in: ip4("169.254.7.7", S4A, 64, 1, icmpMsg(3, 1, 0, errInner), v4opt{}),
			want: ip6(v4in6("169.254.7.7"), S6A, 64, 58, icmpMsg(1, 0, 0, innerV4as6(20)), v6opt{})},
		// but not the sources no router has (RFC 1812 5.3.7), which the
		// well-known prefix refuses too (TestICMPv4ErrorUntranslatableSource).
		{name: "error-from-this-network", rfc: "1812 5.3.7; 7915 4.3", in: ip4("0.0.0.1", S4A, 64, 1, icmpMsg(11, 0, 0, errInner), v4opt{}), reason: ReasonSrcIllegal},
		{name: "error-from-loopback", rfc: "1812 5.3.7; 7915 4.3", in: ip4("127.0.0.1", S4A, 64, 1, icmpMsg(3, 1, 0, errInner), v4opt{}), reason: ReasonSrcIllegal},
		{name: "error-from-multicast", rfc: "1812 5.3.7; 7915 4.3", in: ip4("239.255.255.255", S4A, 64, 1, icmpMsg(3, 4, 1400, errInner), v4opt{}), reason: ReasonSrcIllegal},
		{name: "error-from-limited-broadcast", rfc: "1812 5.3.7; 7915 4.3", in: ip4("255.255.255.255", S4A, 64, 1, icmpMsg(3, 4, 1400, errInner), v4opt{}), reason: ReasonSrcIllegal},
		// The translator's host reports its forwarding failures from its
		// own addresses: those errors are translated.
		{name: "error-from-own", rfc: "7915 4.2; 1812 4.3.2.4", in: ip4("203.0.113.1", S4A, 64, 1, icmpMsg(11, 0, 0, errInner), v4opt{}),
			want: ip6(v4in6("203.0.113.1"), S6A, 64, 58, icmpMsg(3, 0, 0, innerV4as6(20)), v6opt{})},
		{name: "error-to-own", rfc: "issue 9", in: ip4(R4, "203.0.113.1", 64, 1, icmpMsg(11, 0, 0, errInner), v4opt{}), reason: ReasonOwnAddress},
		{name: "echo-from-class-e", rfc: "7915 4.1", in: ip4("240.0.0.1", S4A, 64, 1, icmpMsg(8, 0, 1, payload(8)), v4opt{}), reason: ReasonSrcIllegal},
		{name: "error-to-broadcast", rfc: "7915 4.1", in: ip4("240.0.0.1", "255.255.255.255", 64, 1, icmpMsg(11, 0, 0, errInner), v4opt{}), reason: ReasonDstIllegal},
	})
	// The kernel's Packet Too Big from the translator's own IPv6 address
	// (RFC 4443 3.2) becomes Fragmentation Needed; anything else from it
	// is refused (it has no translation).
	ptb := ip6("2001:db8:ffff::1", C6, 64, 58, icmpMsg(2, 0, 1300, innerV6(60)), v6opt{})
	if got, r, _ := run(w, ptb, nil); r.Verdict != Forward || len(got) < 28 || got[20] != 3 || got[21] != 4 {
		t.Errorf("PTB from an own address: verdict %d %v", r.Verdict, r.Reason)
	}
	if _, r, _ := run(w, ip6("2001:db8:ffff::1", C6, 64, 58, icmpMsg(128, 0, 1, nil), v6opt{}), nil); r.Reason != ReasonSrcUnmapped {
		t.Errorf("echo from an own address: %v, want %v", r.Reason, ReasonSrcUnmapped)
	}
}

// RFC 7915 section 4.2: IGMP is silently dropped.
func TestIGMP(t *testing.T) {
	w := newTestWorker(t, nil)
	report := []byte{0x16, 0, 0, 0, 224, 0, 0, 9} // IGMPv2 membership report
	_, r, sk := run(w, ip4(C4, S4A, 1, 2, report, v4opt{nocsum: true}), nil)
	if r.Verdict != Drop || r.Reason != ReasonIGMP || len(sk.pkts) != 0 {
		t.Errorf("IGMP: verdict %d %v, %d emitted; want a silent drop %v", r.Verdict, r.Reason, len(sk.pkts), ReasonIGMP)
	}
}

// RFC 4443 section 2.4 (e), RFC 1812 4.3.2.7: no error about an ICMP
// error or a non-first fragment, even when the packet is refused for a
// reason that otherwise earns one.
func TestNoErrorAboutErrors(t *testing.T) {
	rh := []byte{58, 2, 0, 1, 0, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	rhFrag := append([]byte{44}, rh[1:]...)
	rhUDP := append([]byte{17}, rh[1:]...)
	errMsg := icmpMsg(1, 4, 0, innerV6(20))
	for _, c := range []struct {
		name    string
		in      []byte
		emitted int
	}{
		{"segments-left-icmp-error", ip6(S6A, C6, 64, 58, errMsg, v6opt{ext: rh, extNH: 43, nocsum: true}), 0},
		{"segments-left-non-first-fragment", ip6(S6A, C6, 64, 44, nil,
			v6opt{nocsum: true, extNH: 43, ext: append(append(append([]byte{}, rhFrag...), fragHdr(17, 64, true, 3)...), payload(32)...)}), 0},
		{"segments-left-first-fragment", ip6(S6A, C6, 64, 44, nil,
			v6opt{nocsum: true, extNH: 43, ext: append(append(append([]byte{}, rhFrag...), fragHdr(17, 0, true, 3)...), udpSeg(1, 2, payload(32))...)}), 1},
		{"segments-left-echo", ip6(S6A, C6, 64, 58, icmpMsg(128, 0, 1, payload(8)), v6opt{ext: append([]byte{58}, rh[1:]...), extNH: 43, nocsum: true}), 1},
		{"segments-left-udp", ip6(S6A, C6, 64, 17, udpSeg(1, 2, payload(8)), v6opt{ext: rhUDP, extNH: 43}), 1},
		{"segments-left-cut", ip6(S6A, C6, 64, 60, []byte{17, 5}, v6opt{ext: append([]byte{60}, rh[1:]...), extNH: 43, nocsum: true}), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, nil)
			_, r, sk := run(w, c.in, nil)
			if r.Verdict != Drop || r.Reason != ReasonSegmentsLeft {
				t.Fatalf("verdict %d %v, want drop %v", r.Verdict, r.Reason, ReasonSegmentsLeft)
			}
			if len(sk.pkts) != c.emitted {
				t.Errorf("emitted %d errors, want %d", len(sk.pkts), c.emitted)
			}
		})
	}
}

// RFC 7915 section 5.1.1: an extension header after the Fragment header
// of a non-atomic fragment belongs to the fragmentable part; stripping it
// from the first fragment alone would corrupt the reassembly.
func TestExtAfterFragment(t *testing.T) {
	w := newTestWorker(t, nil)
	udp := udpSeg(42000, 41000, payload(40))
	fillCsum6(S6A, C6, 17, udp)
	runCases(t, w, []xcase{
		{name: "first-fragment", rfc: "7915 5.1.1",
			in:     ip6(S6A, C6, 64, 44, nil, v6opt{nocsum: true, extNH: 44, ext: append(append(fragHdr(60, 0, true, 9), dstPad...), udp...)}),
			reason: ReasonExtAfterFragment},
		{name: "first-fragment-routing", rfc: "7915 5.1.1",
			in:     ip6(S6A, C6, 64, 44, nil, v6opt{nocsum: true, extNH: 44, ext: append(append(fragHdr(43, 0, true, 9), 17, 0, 0, 0, 0, 0, 0, 0), udp...)}),
			reason: ReasonExtAfterFragment},
		// An atomic fragment is the whole packet: its headers go.
		{name: "atomic-fragment", rfc: "7915 5.1.1", genID: true,
			in:   ip6(S6A, C6, 64, 44, nil, v6opt{nocsum: true, extNH: 44, ext: append(append(fragHdr(60, 0, false, 9), dstPad...), udp...)}),
			want: ip4(S4A, C4, 64, 17, udpSeg(42000, 41000, payload(40)), v4opt{})},
	})
}

// Without an RFC 6791 pool, ipv4_address is the source of translated
// ICMPv6 errors from untranslatable routers (so PMTUD works) and of the
// translator's own errors; without either, such errors are dropped.
func TestIPv4AddressFallback(t *testing.T) {
	const self4 = "203.0.113.65"
	in := ip6(R6X, C6, 64, 58, icmpMsg(2, 0, 1400, innerV6(60)), v6opt{})
	w := newTestWorker(t, func(p *Policy) { p.ICMPSourcePool = nil; p.IPv4Address = netip.MustParseAddr(self4) })
	got, r, _ := run(w, in, nil)
	if r.Verdict != Forward {
		t.Fatalf("PTB from an untranslatable router: verdict %d %v", r.Verdict, r.Reason)
	}
	want := withID(ip4(self4, C4, 64, 1, icmpMsg(3, 4, 1380, innerV6as4(60)), v4opt{}), got)
	diff(t, "RFC 7915 5.2 PTB -> Frag Needed from ipv4_address", got, want)
	checkWellFormed(t, got, true)

	// The translator's own errors come from it too, and from it inside
	// the prefix on the IPv6 side.
	lsrr := []byte{0x83, 7, 4, 203, 0, 113, 9, 0}
	src := ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(8)), v4opt{rawOpts: lsrr})
	_, _, sk := run(w, src, nil)
	expectEmitted(t, sk, ip4(self4, C4, 64, 1, icmpMsg(3, 5, 0, src), v4opt{}))
	rh := []byte{17, 2, 0, 1, 0, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	sl := ip6(S6A, C6, 64, 17, udpSeg(1, 2, payload(8)), v6opt{ext: rh, extNH: 43})
	_, _, sk = run(w, sl, nil)
	expectEmitted(t, sk, ip6(v4in6(self4), S6A, 64, 58, icmpMsg(4, 0, 43, sl), v6opt{}))

	// It is one of the translator's own addresses.
	if _, r, _ := run(w, ip6(S6A, v4in6(self4), 64, 17, udpSeg(1, 2, nil), v6opt{}), nil); r.Reason != ReasonOwnAddress {
		t.Errorf("to ipv4_address: %v, want %v", r.Reason, ReasonOwnAddress)
	}

	w = newTestWorker(t, func(p *Policy) { p.ICMPSourcePool, p.IPv4Address = nil, netip.Addr{} })
	if _, r, _ := run(w, in, nil); r.Verdict != Drop || r.Reason != ReasonPoolEmpty {
		t.Errorf("neither pool nor ipv4_address: verdict %d %v", r.Verdict, r.Reason)
	}
	// A pool wins over the address.
	w = newTestWorker(t, func(p *Policy) { p.IPv4Address = netip.MustParseAddr("192.0.2.1") })
	got, _, _ = run(w, in, nil)
	if a := netip.AddrFrom4([4]byte(got[12:16])); !mustPrefix(POOL).Contains(a) {
		t.Errorf("with a pool, source %v", a)
	}

	for _, bad := range []Policy{
		{IPv4Address: netip.MustParseAddr("2001:db8::1")},
		{OwnAddrs: []netip.Prefix{{}}},
	} {
		if _, err := NewEngine(&Config{Map: testSnapshot(t), Policy: bad}); err == nil {
			t.Errorf("policy %+v accepted", bad)
		}
	}
}

// Issue 10: the translator's own IPv4 addresses answer echo, from the
// IPv4 side directly and from the IPv6 side inside the prefix; nothing
// else to them is answered, and no reply goes where the translator would
// not translate to.
func TestEchoOwnAddress(t *testing.T) {
	const self4 = "203.0.113.65"
	const if4 = "203.0.113.1"
	pol := func(p *Policy) {
		p.ICMPSourcePool = nil
		p.IPv4Address = netip.MustParseAddr(self4)
		p.OwnAddrs = []netip.Prefix{mustPrefix(if4 + "/28")}
	}
	echo := icmpMsg(8, 0, 0x42420007, payload(56))
	reply := icmpMsg(0, 0, 0x42420007, payload(56))
	echo6 := icmpMsg(128, 0, 0x42420007, payload(56))
	reply6 := icmpMsg(129, 0, 0x42420007, payload(56))
	badEcho := ip4(C4, self4, 64, 1, echo, v4opt{})
	badEcho[len(badEcho)-1] ^= 1
	for _, c := range []struct {
		name   string
		in     []byte
		want   []byte // the reply; nil: dropped with reason
		reason Reason
	}{
		{"4to6-ipv4_address", ip4(C4, self4, 64, 1, echo, v4opt{tos: 0x10}), ip4(self4, C4, 64, 1, reply, v4opt{tos: 0x10}), 0},
		{"4to6-interface-address", ip4(C4, if4, 9, 1, echo, v4opt{}), ip4(if4, C4, 64, 1, reply, v4opt{}), 0},
		{"6to4-ipv4_address-in-prefix", ip6(S6A, v4in6(self4), 64, 58, echo6, v6opt{tc: 0x20}), ip6(v4in6(self4), S6A, 64, 58, reply6, v6opt{tc: 0x20}), 0},
		{"4to6-from-mapped", ip4(S4B, self4, 64, 1, echo, v4opt{}), nil, ReasonSpoofed},
		{"4to6-from-own-broadcast", ip4("203.0.113.15", self4, 64, 1, echo, v4opt{}), nil, ReasonBroadcast},
		{"4to6-from-own", ip4(if4, self4, 64, 1, echo, v4opt{}), nil, ReasonOwnAddress},
		{"4to6-bad-checksum", badEcho, nil, ReasonICMPChecksum},
		{"4to6-fragment", ip4(C4, self4, 64, 1, echo, v4opt{flags: MF}), nil, ReasonOwnAddress},
		{"4to6-echo-reply", ip4(C4, self4, 64, 1, reply, v4opt{}), nil, ReasonOwnAddress},
		{"4to6-udp", ip4(C4, self4, 64, 17, udpSeg(1, 7, payload(8)), v4opt{}), nil, ReasonOwnAddress},
		{"6to4-from-prefix", ip6(C6, v4in6(self4), 64, 58, echo6, v6opt{}), nil, ReasonSpoofed},
		{"6to4-udp", ip6(S6A, v4in6(self4), 64, 17, udpSeg(1, 7, payload(8)), v6opt{}), nil, ReasonOwnAddress},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, pol)
			_, r, sk := run(w, c.in, nil)
			if c.want == nil {
				if r.Verdict != Drop || r.Reason != c.reason || len(sk.pkts) != 0 {
					t.Fatalf("verdict %d %v, %d emitted; want drop %v and nothing", r.Verdict, r.Reason, len(sk.pkts), c.reason)
				}
				return
			}
			if r.Verdict != Consumed || r.Proto != ProtoICMP {
				t.Fatalf("verdict %d %v proto %v, want the reply emitted", r.Verdict, r.Reason, r.Proto)
			}
			expectEmitted(t, sk, c.want)
		})
	}
	// The replies share the rate limit of the translator's own errors.
	w := newTestWorker(t, func(p *Policy) { pol(p); p.ICMPRate = 1 })
	w.now = func() int64 { return 0 }
	in := ip4(C4, self4, 64, 1, echo, v4opt{})
	if _, r, sk := run(w, in, nil); r.Verdict != Consumed || len(sk.pkts) != 1 {
		t.Fatalf("first echo: verdict %d %v", r.Verdict, r.Reason)
	}
	if _, r, sk := run(w, in, nil); r.Verdict != Drop || len(sk.pkts) != 0 || w.C.RateLimited.Load() != 1 {
		t.Errorf("second echo within the limit: verdict %d %v, %d emitted, %d limited", r.Verdict, r.Reason, len(sk.pkts), w.C.RateLimited.Load())
	}
}
