package xlat

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// Embedded packets of the conformance suite (cases/public/20_icmp_errors.py).
func innerV4(n int) []byte { // server -> client, as seen on the IPv4 side
	return ip4(S4A, C4, 58, 17, udpSeg(42000, 41000, payload(n)), v4opt{id: 0x2222})
}
func innerV4as6(n int) []byte { return ip6(S6A, C6, 58, 17, udpSeg(42000, 41000, payload(n)), v6opt{}) }
func innerV6(n int) []byte { // client -> server, as seen on the IPv6 side
	return ip6(C6, S6A, 57, 17, udpSeg(41000, 42000, payload(n)), v6opt{})
}
func innerV6as4(n int) []byte {
	var f uint8
	if 28+n > 1260 {
		f = DF
	}
	return ip4(C4, S4A, 57, 17, udpSeg(41000, 42000, payload(n)), v4opt{flags: f})
}

func TestICMPErrors46(t *testing.T) {
	w := newTestWorker(t, nil)
	err46 := func(name, rfc, src4, src6 string, t4, c4 uint8, rest4 uint32, t6, c6 uint8, rest6 uint32) xcase {
		return xcase{name: name, rfc: rfc, proto: ProtoICMP,
			in:   ip4(src4, S4A, 64, 1, icmpMsg(t4, c4, rest4, innerV4(60)), v4opt{}),
			want: ip6(src6, S6A, 64, 58, icmpMsg(t6, c6, rest6, innerV4as6(60)), v6opt{})}
	}
	runCases(t, w, []xcase{
		err46("port-unreach", "7915 4.2 4.3", C4, C6, 3, 3, 0, 1, 4, 0),
		err46("host-unreach-router", "7915 4.2; 6052", R4, R4in6, 3, 1, 0, 1, 0, 0),
		err46("net-unreach", "7915 4.2 (Code 0)", R4, R4in6, 3, 0, 0, 1, 0, 0),
		err46("source-route-failed", "7915 4.2 (Code 5)", R4, R4in6, 3, 5, 0, 1, 0, 0),
		err46("admin-prohibited", "7915 4.2 (Code 13)", R4, R4in6, 3, 13, 0, 1, 1, 0),
		err46("net-prohibited", "7915 4.2 (Code 9)", R4, R4in6, 3, 9, 0, 1, 1, 0),
		err46("frag-needed", "7915 4.2 (Code 4: MTU+20)", R4, R4in6, 3, 4, 1400, 2, 0, 1420),
		err46("frag-needed-lowmtu", "7915 4.2 (PTB never < 1280)", R4, R4in6, 3, 4, 600, 2, 0, 1280),
		err46("time-exceeded", "7915 4.2 (Type 11)", R4, R4in6, 11, 0, 0, 3, 0, 0),
		err46("reassembly-time-exceeded", "7915 4.2 (Type 11 Code 1)", R4, R4in6, 11, 1, 0, 3, 1, 0),
		err46("paramprob-ttl", "7915 4.2 Figure 3 (8 -> 7)", R4, R4in6, 12, 0, 8<<24, 4, 0, 7),
		err46("paramprob-src", "7915 4.2 Figure 3 (12 -> 8)", R4, R4in6, 12, 0, 12<<24, 4, 0, 8),
		err46("paramprob-dst", "7915 4.2 Figure 3 (17 -> 24)", R4, R4in6, 12, 0, 17<<24, 4, 0, 24),
		err46("paramprob-len", "7915 4.2 Figure 3 (2 -> 4)", R4, R4in6, 12, 2, 2<<24, 4, 0, 4),
		err46("proto-unreach", "7915 4.2 (Code 2 -> 4/1 ptr 6)", C4, C6, 3, 2, 0, 4, 1, 6),
		{name: "paramprob-id-dropped", rfc: "7915 4.2 Figure 3 (4: n/a)", reason: ReasonICMPType,
			in: ip4(R4, S4A, 64, 1, icmpMsg(12, 0, 4<<24, innerV4(20)), v4opt{})},
		{name: "paramprob-option-missing", rfc: "7915 4.2 (Type 12 Code 1 dropped)", reason: ReasonICMPType,
			in: ip4(R4, S4A, 64, 1, icmpMsg(12, 1, 0, innerV4(20)), v4opt{})},
		{name: "precedence-violation", rfc: "7915 4.2 (Code 14 dropped)", reason: ReasonICMPType,
			in: ip4(R4, S4A, 64, 1, icmpMsg(3, 14, 0, innerV4(20)), v4opt{})},
		{name: "source-quench", rfc: "7915 4.2 (Type 4 dropped)", reason: ReasonICMPType,
			in: ip4(R4, S4A, 64, 1, icmpMsg(4, 0, 0, innerV4(20)), v4opt{})},
		{name: "nested-error", rfc: "7915 4.3 (one level only)", reason: ReasonICMPNested,
			in: ip4(R4, S4A, 64, 1, icmpMsg(3, 1, 0, ip4(S4A, C4, 64, 1, icmpMsg(3, 3, 0, innerV4(8)), v4opt{})), v4opt{})},
		{name: "inner-cut", rfc: "7915 4.3 (robustness)", reason: ReasonICMPInner,
			in: ip4(R4, S4A, 64, 1, icmpMsg(3, 1, 0, innerV4(8)[:10]), v4opt{})},
		{name: "inner-version6", rfc: "7915 4.3 (robustness)", reason: ReasonICMPInner,
			in: ip4(R4, S4A, 64, 1, icmpMsg(11, 0, 0, innerV6(8)), v4opt{})},
		{name: "no-inner", rfc: "7915 4.3 (robustness)", reason: ReasonICMPInner,
			in: ip4(R4, S4A, 64, 1, icmpMsg(3, 4, 0xffff, nil), v4opt{})},
		{name: "inner-echo", rfc: "7915 4.3 (embedded ICMP echo translated)",
			in:   ip4(R4, S4A, 64, 1, icmpMsg(11, 0, 0, ip4(S4A, C4, 1, 1, icmpMsg(8, 0, 0x10002, payload(24)), v4opt{})), v4opt{}),
			want: ip6(R4in6, S6A, 64, 58, icmpMsg(3, 0, 0, ip6(S6A, C6, 1, 58, icmpMsg(128, 0, 0x10002, payload(24)), v6opt{})), v6opt{})},
		{name: "inner-tcp", rfc: "7915 4.3 (embedded TCP checksum)",
			in:   ip4(R4, S4A, 64, 1, icmpMsg(3, 1, 0, ip4(S4A, C4, 9, 6, tcpSeg(443, 33000, 0x10, 1, 2, nil, payload(12)), v4opt{})), v4opt{}),
			want: ip6(R4in6, S6A, 64, 58, icmpMsg(1, 0, 0, ip6(S6A, C6, 9, 6, tcpSeg(443, 33000, 0x10, 1, 2, nil, payload(12)), v6opt{})), v6opt{})},
	})
}

// An ICMPv4 error quoting 1400 bytes becomes an ICMPv6 error of 1280
// bytes: the quote is truncated, its header keeps the full length
// (RFC 7915 4.3; RFC 4443 2.4(c)).
func TestICMPError46Truncate(t *testing.T) {
	w := newTestWorker(t, nil)
	in := ip4(R4, S4A, 64, 1, icmpMsg(11, 0, 0, innerV4(1372)), v4opt{})
	got, r, _ := run(w, in, nil)
	if r.Verdict != Forward {
		t.Fatalf("verdict %d %v", r.Verdict, r.Reason)
	}
	want := ip6(R4in6, S6A, 64, 58, icmpMsg(3, 0, 0, innerV4as6(1372)[:1280-48]), v6opt{})
	diff(t, "RFC 7915 4.3 truncation", got, want)
	checkWellFormed(t, got, true)
}

// The MTU of a Fragmentation Needed with MTU 0 comes from the RFC 1191
// plateaus below the quoted Total Length, and a known IPv6 MTU caps it.
func TestPTBPlateauAndClamp(t *testing.T) {
	for _, c := range []struct {
		name    string
		mtu6    int
		inner   int
		mtu4    uint32
		wantMTU uint32
	}{
		{"plateau-1492", 0, 1500 - 28, 0, 1512},
		{"plateau-small", 0, 100, 0, 1280},
		{"clamp-ipv6-mtu", 1400, 60, 1480, 1400},
		{"clamp-ipv6-mtu-equal", 1500, 60, 1500, 1500},
		{"clamp-plateau", 1500, 2000 - 28, 0, 1500},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, func(p *Policy) { p.IPv6MTU = c.mtu6 })
			in := ip4(R4, S4A, 64, 1, icmpMsg(3, 4, c.mtu4, innerV4(c.inner)), v4opt{})
			got, r, _ := run(w, in, nil)
			if r.Verdict != Forward || len(got) < 48 {
				t.Fatalf("verdict %d %v", r.Verdict, r.Reason)
			}
			if got[40] != 2 || binary.BigEndian.Uint32(got[44:]) != c.wantMTU {
				t.Errorf("RFC 7915 4.2: type %d MTU %d, want 2 %d", got[40], binary.BigEndian.Uint32(got[44:]), c.wantMTU)
			}
			checkWellFormed(t, got, true)
		})
	}
}

func TestICMPErrors64(t *testing.T) {
	w := newTestWorker(t, nil)
	err64 := func(name, rfc string, t6, c6 uint8, rest6 uint32, t4, c4 uint8, rest4 uint32) xcase {
		return xcase{name: name, rfc: rfc, genID: true, proto: ProtoICMP,
			in:   ip6(S6A, C6, 64, 58, icmpMsg(t6, c6, rest6, innerV6(60)), v6opt{}),
			want: ip4(S4A, C4, 64, 1, icmpMsg(t4, c4, rest4, innerV6as4(60)), v4opt{})}
	}
	runCases(t, w, []xcase{
		err64("port-unreach", "7915 5.2 5.3", 1, 4, 0, 3, 3, 0),
		err64("no-route", "7915 5.2 (Code 0)", 1, 0, 0, 3, 1, 0),
		err64("admin-prohibited", "7915 5.2 (Code 1)", 1, 1, 0, 3, 10, 0),
		err64("beyond-scope", "7915 5.2 (Code 2)", 1, 2, 0, 3, 1, 0),
		err64("addr-unreach", "7915 5.2 (Code 3)", 1, 3, 0, 3, 1, 0),
		err64("ptb", "7915 5.2 (Type 2: MTU-20)", 2, 0, 1300, 3, 4, 1280),
		err64("time-exceeded", "7915 5.2 (Type 3)", 3, 0, 0, 11, 0, 0),
		err64("paramprob-hlim", "7915 5.2 Figure 6 (7 -> 8)", 4, 0, 7, 12, 0, 8<<24),
		err64("paramprob-src", "7915 5.2 Figure 6 (8..23 -> 12)", 4, 0, 20, 12, 0, 12<<24),
		err64("paramprob-dst", "7915 5.2 Figure 6 (24..39 -> 16)", 4, 0, 24, 12, 0, 16<<24),
		err64("paramprob-nexthdr", "7915 5.2 (Type 4 Code 1 -> 3/2)", 4, 1, 6, 3, 2, 0),
		{name: "paramprob-flowlabel", rfc: "7915 5.2 Figure 6 (2: n/a)", reason: ReasonICMPType,
			in: ip6(S6A, C6, 64, 58, icmpMsg(4, 0, 2, innerV6(20)), v6opt{})},
		{name: "paramprob-option", rfc: "7915 5.2 (Type 4 Code 2 dropped)", reason: ReasonICMPType,
			in: ip6(S6A, C6, 64, 58, icmpMsg(4, 2, 40, innerV6(20)), v6opt{})},
		{name: "unreach-code5", rfc: "7915 5.2 (other codes dropped)", reason: ReasonICMPType,
			in: ip6(S6A, C6, 64, 58, icmpMsg(1, 5, 0, innerV6(20)), v6opt{})},
		{name: "nested-error", rfc: "7915 5.3 (one level only)", reason: ReasonICMPNested,
			in: ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 0, ip6(C6, S6A, 64, 58, icmpMsg(1, 4, 0, innerV6(8)), v6opt{})), v6opt{})},
		{name: "inner-cut", rfc: "7915 5.3 (robustness)", reason: ReasonICMPInner,
			in: ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 0, innerV6(8)[:20]), v6opt{})},
		{name: "inner-version4", rfc: "7915 5.3 (robustness)", reason: ReasonICMPInner,
			in: ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 0, append(innerV4(40), make([]byte, 20)...)), v6opt{})},
		{name: "inner-echo", rfc: "7915 5.3 (embedded echo translated)", genID: true,
			in:   ip6(S6A, C6, 64, 58, icmpMsg(3, 0, 0, ip6(C6, S6A, 1, 58, icmpMsg(128, 0, 0x50006, payload(16)), v6opt{})), v6opt{}),
			want: ip4(S4A, C4, 64, 1, icmpMsg(11, 0, 0, ip4(C4, S4A, 1, 1, icmpMsg(8, 0, 0x50006, payload(16)), v4opt{})), v4opt{})},
	})
}

// RFC 6791: an ICMPv6 error from an address that neither the EAM table
// nor the prefix can express gets a source from the pool, chosen
// deterministically; without a pool it is dropped.
func TestICMPError64RFC6791(t *testing.T) {
	w := newTestWorker(t, nil)
	in := ip6(R6X, C6, 64, 58, icmpMsg(1, 0, 0, innerV6(60)), v6opt{})
	got, r, _ := run(w, in, nil)
	if r.Verdict != Forward {
		t.Fatalf("verdict %d %v", r.Verdict, r.Reason)
	}
	src := netip.AddrFrom4([4]byte(got[12:16]))
	pool := netip.MustParsePrefix(POOL)
	if !pool.Contains(src) || src == pool.Addr() || src == netip.MustParseAddr("203.0.113.127") {
		t.Errorf("RFC 6791 source %v not a usable address of %v", src, pool)
	}
	want := withID(ip4(src.String(), C4, 64, 1, icmpMsg(3, 1, 0, innerV6as4(60)), v4opt{}), got)
	diff(t, "RFC 6791", got, want)
	again, _, _ := run(w, in, nil)
	if string(again[12:16]) != string(got[12:16]) {
		t.Errorf("pool choice not deterministic: %v then %v", got[12:16], again[12:16])
	}

	w = newTestWorker(t, func(p *Policy) { p.ICMPSourcePool, p.IPv4Address = nil, netip.Addr{} })
	if _, r, _ := run(w, in, nil); r.Verdict != Drop || r.Reason != ReasonPoolEmpty {
		t.Errorf("empty pool: %d %v", r.Verdict, r.Reason)
	}
	// A non-error from such an address is simply untranslatable.
	if _, r, _ := run(w, ip6(R6X, C6, 64, 17, udpSeg(1, 2, nil), v6opt{}), nil); r.Reason != ReasonSrcUnmapped {
		t.Errorf("non-error from unmapped source: %v", r.Reason)
	}
}

// RFC 7915 sections 4.3 and 5.3: the packet an ICMP error quotes is one
// its destination sent. Any other has the translator relay chosen bytes
// to a third party: an IPv6 host without a mapping may send errors (RFC
// 6791), and would reach any IPv4 address from the translator's own.
func TestICMPErrorQuoteFromDestination(t *testing.T) {
	const victim4 = "192.0.2.99"
	victim6 := v4in6(victim4)
	runCases(t, newTestWorker(t, nil), []xcase{
		{name: "6to4-quote-from-another-client", rfc: "7915 5.3", reason: ReasonICMPInner,
			in: ip6(S6A, victim6, 64, 58, icmpMsg(1, 4, 0, innerV6(60)), v6opt{})},
		{name: "6to4-unmapped-source-relay", rfc: "7915 5.3; 6791", reason: ReasonICMPInner,
			in: ip6(R6X, victim6, 64, 58, icmpMsg(1, 4, 0, ip6(C6, S6A, 64, 17, udpSeg(53, 53, payload(1000)), v6opt{})), v6opt{})},
		{name: "6to4-quote-from-server", rfc: "7915 5.3", reason: ReasonICMPInner,
			in: ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 0, ip6(S6A, C6, 64, 17, udpSeg(53, 53, payload(20)), v6opt{})), v6opt{})},
		{name: "4to6-quote-from-another-server", rfc: "7915 4.3", reason: ReasonICMPInner,
			in: ip4(R4, S4A, 64, 1, icmpMsg(3, 1, 0, ip4(S4B, C4, 64, 17, udpSeg(53, 53, payload(20)), v4opt{})), v4opt{})},
		{name: "4to6-quote-to-destination", rfc: "7915 4.3", reason: ReasonICMPInner,
			in: ip4(R4, S4A, 64, 1, icmpMsg(11, 0, 0, ip4(C4, S4A, 64, 17, udpSeg(53, 53, payload(20)), v4opt{})), v4opt{})},
	})
}

// RFC 1812 section 4.3.2.3: a translated ICMPv4 error is cut to 576 bytes
// (RFC 7915 section 5.3 truncates the quote), whatever the size of the
// ICMPv6 error; one of 64 KB would otherwise leave with its Total Length
// wrapped.
func TestICMPError64Truncate(t *testing.T) {
	for _, n := range []int{1280 - 96, 65535 - 96} { // ICMPv6 errors of 1280 and 65535 bytes
		w := newTestWorker(t, nil)
		in := ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 0, innerV6(n)), v6opt{})
		got, r, _ := run(w, in, nil)
		if r.Verdict != Forward {
			t.Fatalf("%d bytes: verdict %d %v", len(in), r.Verdict, r.Reason)
		}
		want := ip4(S4A, C4, 64, 1, icmpMsg(3, 3, 0, innerV6as4(n)[:576-28]), v4opt{})
		diff(t, "RFC 1812 4.3.2.3 truncation", got, withID(want, got))
		checkWellFormed(t, got, true)
	}
}

// A translated ICMP error that grows (RFC 4884 pads a short quote to 128
// bytes, section 4.5) stays behind the Headroom the caller reserved: in
// front of it lies the link's own header room (a tun frame's
// virtio_net_hdr), and an error written there is lost as a write error.
func TestICMPErrorGrowthWithinHeadroom(t *testing.T) {
	ext := []byte{0x20, 0, 0, 0, 0, 8, 1, 1, 0, 0, 0, 7}
	cat := func(a, b []byte) []byte { return append(append([]byte{}, a...), b...) }
	for _, c := range []struct {
		name string
		in   []byte
	}{
		{"4to6-quote-76", ip4(R4, S4A, 64, 1, icmpMsg(3, 3, 19<<16, cat(innerV4(200)[:76], ext)), v4opt{})},
		{"4to6-quote-20", ip4(R4, S4A, 64, 1, icmpMsg(11, 0, 5<<16, cat(innerV4(200)[:20], ext)), v4opt{})},
		{"6to4-quote-40", ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 5<<24, cat(innerV6(200)[:40], ext)), v6opt{})},
	} {
		t.Run(c.name, func(t *testing.T) {
			const front = 10 + Headroom // a link header, then the Headroom
			buf := make([]byte, front+len(c.in)+256)
			copy(buf[front:], c.in)
			r := newTestWorker(t, nil).Process(buf, front, front+len(c.in), nil, &sink{})
			if r.Verdict != Forward || r.Start < front-Headroom {
				t.Fatalf("verdict %d %v, result at %d, want at %d or later", r.Verdict, r.Reason, r.Start, front-Headroom)
			}
			checkWellFormed(t, buf[r.Start:r.End], false)
		})
	}
}

// RFC 4884 extensions: the original-datagram length is recomputed (32-bit
// words in ICMPv4, 64-bit words in ICMPv6) and the padding redone.
func TestRFC4884(t *testing.T) {
	ext := []byte{0x20, 0, 0, 0, 0, 8, 1, 1, 0, 0, 0, 7} // version 2 header + one object
	binary.BigEndian.PutUint16(ext[2:], 0)
	t.Run("4to6", func(t *testing.T) {
		w := newTestWorker(t, nil)
		inner := innerV4(100) // 128 bytes
		body := append(append([]byte{}, inner...), ext...)
		in := ip4(R4, S4A, 64, 1, icmpMsg(11, 0, uint32(len(inner)/4)<<16, body), v4opt{})
		got, r, _ := run(w, in, nil)
		if r.Verdict != Forward {
			t.Fatalf("verdict %d %v", r.Verdict, r.Reason)
		}
		q := innerV4as6(100) // 148 bytes -> padded to 152
		pad := (len(q) + 7) &^ 7
		wbody := append(append(append([]byte{}, q...), make([]byte, pad-len(q))...), ext...)
		want := ip6(R4in6, S6A, 64, 58, icmpMsg(3, 0, uint32(pad/8)<<24, wbody), v6opt{})
		diff(t, "RFC 4884 4to6", got, want)
	})
	t.Run("6to4", func(t *testing.T) {
		w := newTestWorker(t, nil)
		inner := innerV6(80) // 128 bytes
		body := append(append([]byte{}, inner...), ext...)
		in := ip6(S6A, C6, 64, 58, icmpMsg(1, 4, uint32(len(inner)/8)<<24, body), v6opt{})
		got, r, _ := run(w, in, nil)
		if r.Verdict != Forward {
			t.Fatalf("verdict %d %v", r.Verdict, r.Reason)
		}
		q := innerV6as4(80) // 108 bytes -> padded to 128
		wbody := append(append(append([]byte{}, q...), make([]byte, 128-len(q))...), ext...)
		want := withID(ip4(S4A, C4, 64, 1, icmpMsg(3, 3, 32<<16, wbody), v4opt{}), got)
		diff(t, "RFC 4884 6to4", got, want)
	})
}

// ICMP errors are re-checksummed from scratch, so a damaged one is
// dropped rather than laundered.
func TestICMPErrorBadChecksum(t *testing.T) {
	w := newTestWorker(t, nil)
	in4 := ip4(R4, S4A, 64, 1, icmpMsg(3, 1, 0, innerV4(20)), v4opt{})
	in4[len(in4)-1] ^= 1
	if _, r, _ := run(w, in4, nil); r.Reason != ReasonICMPChecksum {
		t.Errorf("ICMPv4: %v", r.Reason)
	}
	in6 := ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 0, innerV6(20)), v6opt{})
	in6[len(in6)-1] ^= 1
	if _, r, _ := run(w, in6, nil); r.Reason != ReasonICMPChecksum {
		t.Errorf("ICMPv6: %v", r.Reason)
	}
	// With a partial checksum there is nothing to check yet.
	if _, r, _ := run(w, in6, &Offload{Flags: OffloadNeedsCsum, CsumStart: 40, CsumOffset: 2}); r.Verdict != Forward {
		t.Errorf("partial: %d %v", r.Verdict, r.Reason)
	}
}

// RFC 4884 section 4.5: the quoted packet is zero-padded to the new
// family's boundary (64 bits in ICMPv6, 32 in ICMPv4), at least 128
// bytes, and the length counts exactly that; the old padding is not part
// of the packet. Every translated type that carries a length, and one
// that does not (Parameter Problem becomes ICMPv6 4, whose extensions
// are dropped with the padding).
func TestRFC4884Padding(t *testing.T) {
	ext := []byte{0x20, 0, 0, 0, 0, 8, 1, 1, 0, 0, 0, 7}
	pad := func(b []byte, to int) []byte { return append(append([]byte{}, b...), make([]byte, to-len(b))...) }
	cat := func(bs ...[]byte) []byte {
		var o []byte
		for _, b := range bs {
			o = append(o, b...)
		}
		return o
	}
	// Quoted packets whose length is not a multiple of the boundary.
	in4 := innerV4(122)         // 150 bytes: 152 in ICMPv4 (38 words)
	as6 := innerV4as6(122)      // 170 bytes: 176 in ICMPv6 (22 words)
	in6 := innerV6(132)         // 180 bytes: 184 in ICMPv6 (23 words)
	as4 := innerV6as4(132)      // 160 bytes: 160 in ICMPv4 (40 words)
	small6 := innerV6(100)      // 148 bytes: 152 in ICMPv6 (19 words)
	smallAs4 := innerV6as4(100) // 128 bytes: exactly the minimum (32 words)
	for _, c := range []struct {
		name string
		in   []byte
		want []byte
	}{
		{"4to6-time-exceeded",
			ip4(R4, S4A, 64, 1, icmpMsg(11, 0, 38<<16, cat(pad(in4, 152), ext)), v4opt{}),
			ip6(R4in6, S6A, 64, 58, icmpMsg(3, 0, 22<<24, cat(pad(as6, 176), ext)), v6opt{})},
		{"4to6-port-unreachable",
			ip4(C4, S4A, 64, 1, icmpMsg(3, 3, 38<<16, cat(pad(in4, 152), ext)), v4opt{}),
			ip6(C6, S6A, 64, 58, icmpMsg(1, 4, 22<<24, cat(pad(as6, 176), ext)), v6opt{})},
		{"4to6-parameter-problem-no-length",
			ip4(R4, S4A, 64, 1, icmpMsg(12, 0, 8<<24|38<<16, cat(pad(in4, 152), ext)), v4opt{}),
			ip6(R4in6, S6A, 64, 58, icmpMsg(4, 0, 7, as6), v6opt{})},
		{"6to4-port-unreachable",
			ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 23<<24, cat(pad(in6, 184), ext)), v6opt{}),
			ip4(S4A, C4, 64, 1, icmpMsg(3, 3, 40<<16, cat(as4, ext)), v4opt{})},
		{"6to4-time-exceeded",
			ip6(S6A, C6, 64, 58, icmpMsg(3, 0, 23<<24, cat(pad(in6, 184), ext)), v6opt{}),
			ip4(S4A, C4, 64, 1, icmpMsg(11, 0, 40<<16, cat(as4, ext)), v4opt{})},
		// The ICMPv4 error is cut to 576 bytes (RFC 1812 4.3.2.3): the
		// quote before the extension, which its one-octet length (134
		// words, not 1084 bytes wrapped to 15) then points past.
		{"6to4-long-quote-cut",
			ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 138<<24, cat(innerV6(1056), ext)), v6opt{}),
			ip4(S4A, C4, 64, 1, icmpMsg(3, 3, 134<<16, cat(innerV6as4(1056)[:576-28-len(ext)], ext)), v4opt{})},
		{"6to4-minimum-128",
			ip6(S6A, C6, 64, 58, icmpMsg(1, 0, 19<<24, cat(pad(small6, 152), ext)), v6opt{}),
			ip4(S4A, C4, 64, 1, icmpMsg(3, 1, 32<<16, cat(smallAs4, ext)), v4opt{})},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, nil)
			got, r, _ := run(w, c.in, nil)
			if r.Verdict != Forward {
				t.Fatalf("verdict %d %v", r.Verdict, r.Reason)
			}
			want := c.want
			if want[0]>>4 == 4 {
				want = withID(want, got)
			}
			diff(t, "RFC 4884 4.5", got, want)
			checkWellFormed(t, got, true)
		})
	}
}

// Every Parameter Problem pointer goes through the tables as RFC 7915
// section 4.2 Figure 3 and section 5.2 Figure 6 say, written here as the
// figures' field ranges; fields without a counterpart drop the error.
func TestParameterProblemPointers(t *testing.T) {
	figure3 := func(p int) int { // IPv4 field -> IPv6 field
		switch {
		case p <= 1: // Version/IHL, Type Of Service
			return p
		case p <= 3: // Total Length -> Payload Length
			return 4
		case p == 8: // Time to Live -> Hop Limit
			return 7
		case p == 9: // Protocol -> Next Header
			return 6
		case p >= 12 && p <= 15: // Source Address
			return 8
		case p >= 16 && p <= 19: // Destination Address
			return 24
		}
		return -1
	}
	figure6 := func(p int) int { // IPv6 field -> IPv4 field
		switch {
		case p <= 1: // Version/Traffic Class
			return p
		case p == 4 || p == 5: // Payload Length -> Total Length
			return 2
		case p == 6: // Next Header -> Protocol
			return 9
		case p == 7: // Hop Limit -> Time to Live
			return 8
		case p >= 8 && p <= 23: // Source Address
			return 12
		case p >= 24 && p <= 39: // Destination Address
			return 16
		}
		return -1
	}
	for p := range 256 {
		for _, c := range []struct {
			dir       string
			tbl       *icmpTable
			typ       byte
			pointers  []int8
			shift     uint
			want      int
			wantTyp   byte
			ptrOfRest func(uint32) int
		}{
			{"4to6", &icmpErrors46, 12, pointers46[:], 0, figure3(p), 4, func(r uint32) int { return int(r) }},
			{"6to4", &icmpErrors64, 4, pointers64[:], 24, figure6(p), 12, func(r uint32) int { return int(r >> 24) }},
		} {
			m, ok := c.tbl.lookup(c.typ, 0, uint32(p), c.pointers, c.shift)
			switch {
			case ok != (c.want >= 0):
				t.Errorf("%s pointer %d: translated %v, want %v", c.dir, p, ok, c.want >= 0)
			case ok && (m.typ != c.wantTyp || m.code != 0 || c.ptrOfRest(m.rest) != c.want):
				t.Errorf("%s pointer %d: type %d code %d pointer %d, want %d 0 %d", c.dir, p, m.typ, m.code, c.ptrOfRest(m.rest), c.wantTyp, c.want)
			}
		}
	}
	// A pointer beyond the table's reach (a 32-bit ICMPv6 pointer) too.
	if _, ok := icmpErrors64.lookup(4, 0, 1<<31, pointers64[:], 24); ok {
		t.Error("6to4 pointer 2^31 translated")
	}
}
