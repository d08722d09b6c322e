package xlat

import (
	"bytes"
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// usoCase is a super-packet and what the engine must make of it.
type usoCase struct {
	name    string
	pol     func(*Policy)
	in      []byte // built with makePartial's partial checksum
	gsoType uint8
	gsoSize uint16
	hdrLen  uint16
	why     Reason // ReasonNone: forwarded
	// Forwarded: the offload expected afterwards, and for 6->4 whether
	// the IPv4 header carries DF.
	wantOff Offload
	wantDF  bool
	// Dropped: the ICMP error expected (type, code, MTU), if any.
	errType, errCode uint8
	errMTU           uint32
}

// usoCases: each segment of a UDP super-packet (USO, GSOUDPL4) is one
// datagram, so gso_size never changes; datagrams that do not fit the next
// hop are refused as they would be one by one, with one ICMP error
// quoting the first datagram (with DF; without, they are fragmented one
// by one: usosplit_test.go). TCP's segment size still shrinks.
func usoCases() []usoCase {
	const n = 10
	udp4 := func(df uint8, gso int) []byte {
		return ip4(C4, S4A, 64, 17, udpSeg(40000, 443, payload(gso*n)), v4opt{flags: df})
	}
	udp6 := func(gso int) []byte { return ip6(S6A, C6, 64, 17, udpSeg(443, 40000, payload(gso*n)), v6opt{}) }
	tcp4 := ip4(C4, S4A, 64, 6, tcpSeg(5001, 40000, header.TCPFlagAck, 1, 2, nil, payload(1448*n)), v4opt{flags: DF})
	tcp6 := ip6(S6A, C6, 64, 6, tcpSeg(5001, 40000, header.TCPFlagAck, 1, 2, nil, payload(1428*n)), v6opt{})
	nops := bytes.Repeat([]byte{1}, 40) // the largest TCP header: 60 bytes
	tcp6opts := ip6(S6A, C6, 64, 6, tcpSeg(5001, 40000, header.TCPFlagAck, 1, 2, nops, payload(1388*n)), v6opt{})
	mtu6 := func(m int) func(*Policy) { return func(p *Policy) { p.IPv6MTU = m } }
	mtu4 := func(m int) func(*Policy) { return func(p *Policy) { p.IPv4MTU = m } }
	return []usoCase{
		{name: "4to6 fits", pol: mtu6(1500), in: udp4(DF, 1400), gsoType: GSOUDPL4, gsoSize: 1400, hdrLen: 28,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOUDPL4, HdrLen: 48, GSOSize: 1400, CsumStart: 40, CsumOffset: 6}},
		{name: "4to6 fits exactly", pol: mtu6(1448), in: udp4(DF, 1400), gsoType: GSOUDPL4, gsoSize: 1400, hdrLen: 28,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOUDPL4, HdrLen: 48, GSOSize: 1400, CsumStart: 40, CsumOffset: 6}},
		{name: "4to6 DF too big", pol: mtu6(1447), in: udp4(DF, 1400), gsoType: GSOUDPL4, gsoSize: 1400, hdrLen: 28,
			why: ReasonTooBig, errType: 3, errCode: 4, errMTU: 1447 - 20},
		// Without DF the datagrams are cut apart and fragmented:
		// usosplit_test.go.
		{name: "4to6 TCP shrinks", pol: mtu6(1400), in: tcp4, gsoType: GSOTCPv4, gsoSize: 1448, hdrLen: 40,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOTCPv6, HdrLen: 60, GSOSize: 1400 - 60, CsumStart: 40, CsumOffset: 16}},
		{name: "6to4 fits, DF per datagram", pol: mtu4(1500), in: udp6(1200), gsoType: GSOUDPL4, gsoSize: 1200, hdrLen: 48,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOUDPL4, HdrLen: 28, GSOSize: 1200, CsumStart: 20, CsumOffset: 6}},
		{name: "6to4 fits with DF", pol: mtu4(1500), in: udp6(1400), gsoType: GSOUDPL4, gsoSize: 1400, hdrLen: 48,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOUDPL4, HdrLen: 28, GSOSize: 1400, CsumStart: 20, CsumOffset: 6}, wantDF: true},
		{name: "6to4 DF too big", pol: mtu4(1400), in: udp6(1380), gsoType: GSOUDPL4, gsoSize: 1380, hdrLen: 48,
			why: ReasonTooBig, errType: 2, errCode: 0, errMTU: 1400 + 20},
		// Below an IPv4 MTU of 1260 the Packet Too Big says 1280, the
		// least an IPv6 host accepts (RFC 8201 section 4): IPv6 packets
		// of that size translate to 1260 bytes without DF, which the
		// IPv4 next hop fragments.
		{name: "6to4 DF too big, IPv4 MTU under 1260", pol: mtu4(1000), in: udp6(1300), gsoType: GSOUDPL4, gsoSize: 1300, hdrLen: 48,
			why: ReasonTooBig, errType: 2, errCode: 0, errMTU: 1280},
		// Datagrams of 1228 bytes carry no DF (RFC 8021): the IPv4 next
		// hop fragments each, as it would have each alone.
		{name: "6to4 not DF too big", pol: mtu4(1000), in: udp6(1200), gsoType: GSOUDPL4, gsoSize: 1200, hdrLen: 48,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOUDPL4, HdrLen: 28, GSOSize: 1200, CsumStart: 20, CsumOffset: 6}},
		// USO metadata on a TCP packet, which the kernel would refuse: too
		// big all the same, but nothing is quoted as a datagram.
		{name: "4to6 USO on TCP", pol: mtu6(1447), in: tcp4, gsoType: GSOUDPL4, gsoSize: 1400, hdrLen: 40, why: ReasonTooBig},
		{name: "6to4 USO on TCP", pol: mtu4(1400), in: tcp6, gsoType: GSOUDPL4, gsoSize: 1380, hdrLen: 60, why: ReasonTooBig},
		{name: "6to4 TCP shrinks", pol: mtu4(1400), in: tcp6, gsoType: GSOTCPv6, gsoSize: 1428, hdrLen: 60,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1400 - 40, CsumStart: 20, CsumOffset: 16}, wantDF: true},
		// TSO: DF is weighed per segment (section 5.1, RFC 8021), as for
		// datagrams above, not on the whole super-packet: segments of an
		// IPv6 sender at the minimum MTU (1280) are 1260 bytes in IPv4
		// and leave without DF, one byte more with it.
		{name: "6to4 TCP segments of 1260 bytes, no DF", pol: mtu4(1500), in: tcp6, gsoType: GSOTCPv6, gsoSize: 1220, hdrLen: 60,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1220, CsumStart: 20, CsumOffset: 16}},
		{name: "6to4 TCP segments of 1261 bytes, DF", pol: mtu4(1500), in: tcp6, gsoType: GSOTCPv6, gsoSize: 1221, hdrLen: 60,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1221, CsumStart: 20, CsumOffset: 16}, wantDF: true},
		{name: "6to4 TCP shrinks to segments without DF", pol: mtu4(1200), in: tcp6, gsoType: GSOTCPv6, gsoSize: 1428, hdrLen: 60,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1200 - 40, CsumStart: 20, CsumOffset: 16}},
		{name: "6to4 TCP shrinks to the smallest IPv4 MTU", pol: mtu4(68), in: tcp6, gsoType: GSOTCPv6, gsoSize: 1428, hdrLen: 60,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 68 - 40, CsumStart: 20, CsumOffset: 16}},
		// An IPv4 MTU (68 and up is allowed) that the 80 bytes of IPv4
		// and a 60-byte TCP header fill or overflow: segments of one
		// byte, which the IPv4 side fragments (without DF, being short),
		// not a gso_size that wrapped round to 65524 (a DF segment the
		// link drops) or 0 (a header the kernel refuses).
		{name: "6to4 TCP headers fill the IPv4 MTU", pol: mtu4(80), in: tcp6opts, gsoType: GSOTCPv6, gsoSize: 1388, hdrLen: 100,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOTCPv4, HdrLen: 80, GSOSize: 1, CsumStart: 20, CsumOffset: 16}},
		{name: "6to4 TCP headers exceed the IPv4 MTU", pol: mtu4(68), in: tcp6opts, gsoType: GSOTCPv6, gsoSize: 1388, hdrLen: 100,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOTCPv4, HdrLen: 80, GSOSize: 1, CsumStart: 20, CsumOffset: 16}},
		{name: "6to4 TCP one short segment, no DF", pol: mtu4(1500), in: ip6(S6A, C6, 64, 6, tcpSeg(5001, 40000, header.TCPFlagAck, 1, 2, nil, payload(1000)), v6opt{}), gsoType: GSOTCPv6, gsoSize: 1428, hdrLen: 60,
			wantOff: Offload{Flags: OffloadNeedsCsum, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1428, CsumStart: 20, CsumOffset: 16}},
	}
}

func TestUSOKeepsDatagrams(t *testing.T) {
	for _, c := range usoCases() {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, c.pol)
			off := makePartial(c.in)
			off.GSOType, off.GSOSize, off.HdrLen = c.gsoType, c.gsoSize, c.hdrLen
			in := append([]byte(nil), c.in...) // with the partial checksum
			buf := make([]byte, Headroom+len(in))
			copy(buf[Headroom:], in)
			sk := &sink{}
			r := w.Process(buf, Headroom, len(buf), off, sk)
			w.Flush()
			if r.Reason != c.why || (r.Verdict == Drop) != (c.why != ReasonNone) {
				t.Fatalf("verdict %d reason %v, want reason %v", r.Verdict, r.Reason, c.why)
			}
			if c.why == ReasonNone {
				if *off != c.wantOff {
					t.Errorf("offload %+v, want %+v", *off, c.wantOff)
				}
				out := buf[r.Start:r.End]
				if out[0]>>4 == 4 {
					if df := out[6]&0x40 != 0; df != c.wantDF {
						t.Errorf("DF %v, want %v", df, c.wantDF)
					}
				}
				if len(sk.pkts) != 0 {
					t.Errorf("%d packets emitted", len(sk.pkts))
				}
				return
			}
			// The refused super-packet is left as it came.
			if !bytes.Equal(buf[Headroom:], in) {
				t.Errorf("dropped super-packet modified")
			}
			if c.errType == 0 {
				if len(sk.pkts) != 0 {
					t.Errorf("%d packets emitted, want none", len(sk.pkts))
				}
				return
			}
			if len(sk.pkts) != 1 {
				t.Fatalf("%d packets emitted, want one ICMP error", len(sk.pkts))
			}
			checkUSOError(t, sk.pkts[0], in, c)
		})
	}
}

// checkUSOError checks that e is the ICMP error c wants, quoting the first
// datagram of the super-packet in: its lengths (IPv4 Total Length and
// header checksum, or IPv6 Payload Length; UDP Length) those of one
// datagram of gso_size payload bytes.
func checkUSOError(t *testing.T, e, in []byte, c usoCase) {
	t.Helper()
	var icmp, first []byte
	seg := int(c.gsoSize) + udpSize
	if in[0]>>4 == 4 {
		icmp = e[20:]
		first = append([]byte(nil), in[:20+seg]...)
		h := header.IPv4(first)
		h.SetTotalLength(uint16(20 + seg))
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
		binary.BigEndian.PutUint16(first[20+4:], uint16(seg))
		first = first[:min(len(first), maxICMPv4Error-28)]
		if ^checksum.Checksum(icmp, 0) != 0 {
			t.Errorf("ICMPv4 checksum wrong")
		}
		if got := binary.BigEndian.Uint32(icmp[4:]); got != c.errMTU {
			t.Errorf("next-hop MTU %d, want %d", got, c.errMTU)
		}
	} else {
		icmp = e[40:]
		first = append([]byte(nil), in[:40+seg]...)
		binary.BigEndian.PutUint16(first[4:], uint16(seg))
		binary.BigEndian.PutUint16(first[40+4:], uint16(seg))
		first = first[:min(len(first), maxICMPv6Error-48)]
		ps := pseudo6((*[16]byte)(e[8:24]), (*[16]byte)(e[24:40]), uint32(len(icmp)), protoICMPv6)
		if ^checksum.Checksum(icmp, ps) != 0 {
			t.Errorf("ICMPv6 checksum wrong")
		}
		if got := binary.BigEndian.Uint32(icmp[4:]); got != c.errMTU {
			t.Errorf("MTU %d, want %d", got, c.errMTU)
		}
	}
	if icmp[0] != c.errType || icmp[1] != c.errCode {
		t.Errorf("ICMP type %d code %d, want %d %d", icmp[0], icmp[1], c.errType, c.errCode)
	}
	diff(t, "quoted first datagram", icmp[8:], first)
}

// A hairpinned UDP super-packet (IPv6 -> IPv4 -> IPv6) never meets the
// IPv4 next hop: a small IPv4 MTU neither refuses it nor re-cuts its
// datagrams. The IPv6 MTU refuses it, without an error (see size46).
func TestUSOHairpin(t *testing.T) {
	in := ip6(S6A, v4in6(S4B), 64, 17, udpSeg(40000, 443, payload(1400*10)), v6opt{})
	for _, c := range []struct {
		mtu4, mtu6 int
		why        Reason
	}{
		{mtu4: 576, mtu6: 1500},
		{mtu4: 1500, mtu6: 1447, why: ReasonTooBig},
	} {
		w := newTestWorker(t, func(p *Policy) { p.IPv4MTU, p.IPv6MTU = c.mtu4, c.mtu6 })
		off := makePartial(in)
		off.GSOType, off.GSOSize, off.HdrLen = GSOUDPL4, 1400, 48
		_, r, sk := run(w, in, off)
		if r.Reason != c.why || len(sk.pkts) != 0 {
			t.Errorf("mtu4 %d mtu6 %d: verdict %d %v, %d emitted", c.mtu4, c.mtu6, r.Verdict, r.Reason, len(sk.pkts))
		}
		if c.why == ReasonNone && (off.GSOSize != 1400 || off.GSOType != GSOUDPL4 || off.HdrLen != 48) {
			t.Errorf("mtu4 %d: offload %+v", c.mtu4, *off)
		}
	}
}

// Refusing a super-packet, with or without its error, allocates nothing.
func TestUSOAllocs(t *testing.T) {
	for _, c := range usoCases() {
		w := newTestWorker(t, c.pol)
		base := makePartial(c.in)
		base.GSOType, base.GSOSize, base.HdrLen = c.gsoType, c.gsoSize, c.hdrLen
		in := append([]byte(nil), c.in...)
		buf := make([]byte, Headroom+len(in))
		sk := &nullSink{}
		var off Offload
		if a := testing.AllocsPerRun(50, func() {
			copy(buf[Headroom:], in)
			off = *base
			w.Process(buf, Headroom, len(buf), &off, sk)
			w.Flush()
		}); a != 0 {
			t.Errorf("%s: %v allocations per super-packet", c.name, a)
		}
	}
}
