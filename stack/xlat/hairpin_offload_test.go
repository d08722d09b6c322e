package xlat

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func v4in6(v4 string) string {
	a := netip.MustParseAddr("2001:db8:64::").As16()
	b := netip.MustParseAddr(v4).As4()
	copy(a[12:], b[:])
	return netip.AddrFrom16(a).String()
}

// RFC 7757 section 4.2: server A -> prefix::<server B's public IPv4> is
// hairpinned to server B with the source prefix::<server A's public IPv4>.
func TestHairpin(t *testing.T) {
	pl := payload(20)
	in := ip6(S6A, v4in6(S4B), 64, 17, udpSeg(42000, 42001, pl), v6opt{})
	// The hairpin costs a hop (RFC 8200 section 3).
	want := ip6(v4in6(S4A), S6B, 63, 17, udpSeg(42000, 42001, pl), v6opt{})
	// Server B's ICMP error about a hairpinned packet goes back to server
	// A the same way (intrinsic mode only).
	errIn := ip6(S6B, v4in6(S4A), 64, 58, icmpMsg(1, 4, 0, ip6(v4in6(S4A), S6B, 60, 17, udpSeg(42000, 42001, pl), v6opt{})), v6opt{})
	errWant := ip6(v4in6(S4B), S6A, 63, 58, icmpMsg(1, 4, 0, ip6(S6A, v4in6(S4B), 60, 17, udpSeg(42000, 42001, pl), v6opt{})), v6opt{})
	for _, c := range []struct {
		mode       Hairpin
		pkt, err   Reason
		hairpinned uint64
	}{
		{HairpinOff, ReasonHairpinOff, ReasonHairpinOff, 0},
		{HairpinSimple, ReasonNone, ReasonHairpinError, 1},
		{HairpinIntrinsic, ReasonNone, ReasonNone, 2},
	} {
		w := newTestWorker(t, func(p *Policy) { p.Hairpin = c.mode })
		got, r, _ := run(w, in, nil)
		if r.Reason != c.pkt {
			t.Errorf("mode %d: packet reason %v, want %v", c.mode, r.Reason, c.pkt)
		} else if r.Verdict == Forward {
			diff(t, "RFC 7757 4.2 hairpin", got, want)
			if r.Dir != Dir64 || r.Proto != ProtoUDP {
				t.Errorf("dir %v proto %v", r.Dir, r.Proto)
			}
		}
		got, r, _ = run(w, errIn, nil)
		if r.Reason != c.err {
			t.Errorf("mode %d: error reason %v, want %v", c.mode, r.Reason, c.err)
		} else if r.Verdict == Forward {
			diff(t, "RFC 7757 4.2 intrinsic hairpin of an ICMP error", got, errWant)
			checkWellFormed(t, got, true)
		}
		if n := w.C.Hairpinned.Load(); n != c.hairpinned {
			t.Errorf("mode %d: hairpinned %d, want %d", c.mode, n, c.hairpinned)
		}
	}
}

// makePartial puts the non-complemented pseudo-header sum into the
// checksum field, as a sender using NEEDS_CSUM does.
func makePartial(p []byte) *Offload {
	var ps uint16
	var l4 []byte
	var proto uint8
	if p[0]>>4 == 4 {
		ihl := int(p[0]&15) * 4
		l4, proto = p[ihl:], p[9]
		if proto != 1 {
			ps = pseudo4((*[4]byte)(p[12:16]), (*[4]byte)(p[16:20]), uint16(len(l4)), proto)
		}
	} else {
		l4, proto = p[40:], p[6]
		ps = pseudo6((*[16]byte)(p[8:24]), (*[16]byte)(p[24:40]), uint32(len(l4)), proto)
	}
	at := csumAt(proto)
	binary.BigEndian.PutUint16(l4[at:], ps)
	return &Offload{Flags: OffloadNeedsCsum, CsumStart: uint16(len(p) - len(l4)), CsumOffset: uint16(at)}
}

// finish completes a partial checksum as a NIC (or the kernel) would.
func finish(p []byte, off *Offload) {
	l4 := p[off.CsumStart:]
	c := ^checksum.Checksum(l4, 0)
	if c == 0 && off.CsumOffset == 6 { // UDP
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off.CsumOffset:], c)
}

// Partial checksums (virtio NEEDS_CSUM): the field holds the pseudo-header
// sum, which the engine moves without complementing; completing it must
// give the checksum a full recomputation gives.
func TestPartialChecksum(t *testing.T) {
	w := newTestWorker(t, nil)
	tcp := func() []byte { return tcpSeg(1, 2, header.TCPFlagAck, 7, 8, nil, payload(333)) }
	for _, c := range []struct {
		name     string
		in, want []byte
	}{
		{"tcp-4to6", ip4(C4, S4A, 64, 6, tcp(), v4opt{}), ip6(C6, S6A, 64, 6, tcp(), v6opt{})},
		{"tcp-6to4", ip6(S6A, C6, 64, 6, tcp(), v6opt{}), ip4(S4A, C4, 64, 6, tcp(), v4opt{})},
		{"udp-4to6", ip4(C4, S4A, 64, 17, udpSeg(3, 4, payload(99)), v4opt{}), ip6(C6, S6A, 64, 17, udpSeg(3, 4, payload(99)), v6opt{})},
		{"udp-6to4", ip6(S6A, C6, 64, 17, udpSeg(3, 4, payload(99)), v6opt{}), ip4(S4A, C4, 64, 17, udpSeg(3, 4, payload(99)), v4opt{})},
		{"echo-4to6", ip4(C4, S4A, 64, 1, icmpMsg(8, 0, 5, payload(30)), v4opt{}), ip6(C6, S6A, 64, 58, icmpMsg(128, 0, 5, payload(30)), v6opt{})},
		{"echo-6to4", ip6(S6A, C6, 64, 58, icmpMsg(129, 0, 5, payload(30)), v6opt{}), ip4(S4A, C4, 64, 1, icmpMsg(0, 0, 5, payload(30)), v4opt{})},
	} {
		t.Run(c.name, func(t *testing.T) {
			off := makePartial(c.in)
			got, r, _ := run(w, c.in, off)
			if r.Verdict != Forward {
				t.Fatalf("verdict %d %v", r.Verdict, r.Reason)
			}
			if int(off.CsumStart) != len(got)-len(c.in)+int(makePartialStart(c.in)) {
				t.Errorf("csum_start %d", off.CsumStart)
			}
			finish(got, off)
			want := c.want
			if want[0]>>4 == 4 {
				want = withID(want, got)
			}
			diff(t, "completed partial checksum", got, want)
		})
	}
}

func makePartialStart(p []byte) int {
	if p[0]>>4 == 4 {
		return int(p[0]&15) * 4
	}
	return 40
}

// GSO super-packets are translated whole (DESIGN.md): gso_type TCPv4 <->
// TCPv6 keeping ECN, csum_start/hdr_len moved by 20, a TCP gso_size
// lowered to the other side's MTU, and never fragmented (UDP ones that do
// not fit: uso_test.go).
func TestGSO(t *testing.T) {
	seg := func() []byte { return tcpSeg(5001, 40000, header.TCPFlagAck, 1, 2, make([]byte, 12), payload(1448*44)) }
	t.Run("4to6", func(t *testing.T) {
		w := newTestWorker(t, func(p *Policy) { p.IPv6MTU = 1400 })
		in := ip4(C4, S4A, 64, 6, seg(), v4opt{flags: DF})
		off := makePartial(in)
		off.GSOType, off.GSOSize, off.HdrLen = GSOTCPv4|GSOECN, 1448, 52
		got, r, _ := run(w, in, off)
		if r.Verdict != Forward {
			t.Fatalf("verdict %d %v", r.Verdict, r.Reason)
		}
		want := Offload{Flags: OffloadNeedsCsum, GSOType: GSOTCPv6 | GSOECN, HdrLen: 72, GSOSize: 1400 - 72, CsumStart: 40, CsumOffset: 16}
		if *off != want {
			t.Errorf("offload %+v, want %+v", *off, want)
		}
		finish(got, off)
		diff(t, "GSO TCP 4to6", got, ip6(C6, S6A, 64, 6, seg(), v6opt{}))
	})
	// RFC 7915 section 4: a DF=0 packet larger than lowest-ipv6-mtu is
	// fragmented; a super-packet is not, its segments are cut to fit
	// lowest-ipv6-mtu (1280 by default; 1350 here) or the IPv6 next hop,
	// the smaller.
	for _, tc := range []struct {
		name        string
		lowest, mtu int
		gso         uint16
	}{
		{"4to6-df0-segments-fit-lowest", 1350, 0, 1350 - 72},
		{"4to6-df0-segments-fit-next-hop", 1350, 1300, 1300 - 72},
		{"4to6-df0-segments-small-kept", 1500, 0, 1400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newTestWorker(t, func(p *Policy) { p.LowestIPv6MTU, p.IPv6MTU = tc.lowest, tc.mtu })
			in := ip4(C4, S4A, 64, 6, seg(), v4opt{})
			off := makePartial(in)
			off.GSOType, off.GSOSize, off.HdrLen = GSOTCPv4, 1400, 52
			_, r, sk := run(w, in, off)
			if r.Verdict != Forward || len(sk.pkts) != 0 || off.GSOSize != tc.gso {
				t.Errorf("verdict %d %v, %d emitted, gso_size %d, want forwarded whole with %d", r.Verdict, r.Reason, len(sk.pkts), off.GSOSize, tc.gso)
			}
		})
	}
	t.Run("6to4", func(t *testing.T) {
		w := newTestWorker(t, func(p *Policy) { p.IPv4MTU = 1400 })
		in := ip6(S6A, C6, 64, 6, seg(), v6opt{})
		off := makePartial(in)
		off.GSOType, off.GSOSize, off.HdrLen = GSOTCPv6, 1428, 72
		got, r, _ := run(w, in, off)
		if r.Verdict != Forward {
			t.Fatalf("verdict %d %v", r.Verdict, r.Reason)
		}
		want := Offload{Flags: OffloadNeedsCsum, GSOType: GSOTCPv4, HdrLen: 52, GSOSize: 1400 - 52, CsumStart: 20, CsumOffset: 16}
		if *off != want {
			t.Errorf("offload %+v, want %+v", *off, want)
		}
		finish(got, off)
		diff(t, "GSO TCP 6to4", got, withID(ip4(S4A, C4, 64, 6, seg(), v4opt{flags: DF}), got))
	})
	t.Run("udp-l4", func(t *testing.T) {
		w := newTestWorker(t, nil)
		in := ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(1200*10)), v4opt{})
		off := makePartial(in)
		off.GSOType, off.GSOSize, off.HdrLen = GSOUDPL4, 1200, 28
		_, r, _ := run(w, in, off)
		if r.Verdict != Forward || off.GSOType != GSOUDPL4 || off.HdrLen != 48 || off.CsumStart != 40 {
			t.Errorf("verdict %d %v, offload %+v", r.Verdict, r.Reason, off)
		}
	})
}

// With ClampMSS, the MSS option of a SYN is clamped so that segments fit
// both next hops (IPv6 MTU - 60, IPv4 MTU - 40), with the checksum
// updated; without it, a known MTU leaves the option alone.
func TestMSSClamp(t *testing.T) {
	opts := func(mss uint16, pad bool) []byte {
		o := []byte{2, 4, byte(mss >> 8), byte(mss), 1, 1, 1, 0}
		if pad { // MSS at an odd offset
			o = []byte{1, 2, 4, byte(mss >> 8), byte(mss), 1, 1, 0}
		}
		return o
	}
	for _, pad := range []bool{false, true} {
		w := newTestWorker(t, func(p *Policy) { p.IPv6MTU, p.ClampMSS = 1400, true })
		in := ip4(C4, S4A, 64, 6, tcpSeg(1, 2, header.TCPFlagSyn, 1, 0, opts(1460, pad), nil), v4opt{})
		got, _, _ := run(w, in, nil)
		diff(t, "MSS clamp", got, ip6(C6, S6A, 64, 6, tcpSeg(1, 2, header.TCPFlagSyn, 1, 0, opts(1340, pad), nil), v6opt{}))
		// Not a SYN: untouched.
		in = ip4(C4, S4A, 64, 6, tcpSeg(1, 2, header.TCPFlagAck, 1, 0, opts(1460, pad), nil), v4opt{})
		got, _, _ = run(w, in, nil)
		diff(t, "no clamp without SYN", got, ip6(C6, S6A, 64, 6, tcpSeg(1, 2, header.TCPFlagAck, 1, 0, opts(1460, pad), nil), v6opt{}))
	}
	w := newTestWorker(t, func(p *Policy) { p.IPv6MTU = 1400 })
	in := ip4(C4, S4A, 64, 6, tcpSeg(1, 2, header.TCPFlagSyn, 1, 0, opts(1460, false), nil), v4opt{})
	got, _, _ := run(w, in, nil)
	diff(t, "no clamp without ClampMSS", got, ip6(C6, S6A, 64, 6, tcpSeg(1, 2, header.TCPFlagSyn, 1, 0, opts(1460, false), nil), v6opt{}))
	w = newTestWorker(t, func(p *Policy) { p.IPv4MTU, p.ClampMSS = 1300, true })
	in = ip6(S6A, C6, 64, 6, tcpSeg(1, 2, header.TCPFlagSyn|header.TCPFlagAck, 1, 2, opts(1440, false), nil), v6opt{})
	off := makePartial(in)
	got, _, _ = run(w, in, off)
	finish(got, off)
	diff(t, "MSS clamp, partial checksum", got, withID(ip4(S4A, C4, 64, 6, tcpSeg(1, 2, header.TCPFlagSyn|header.TCPFlagAck, 1, 2, opts(1260, false), nil), v4opt{}), got))
}
