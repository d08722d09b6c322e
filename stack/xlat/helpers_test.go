package xlat

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"testing"

	"github.com/map646/map646/mapping"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The address plan of the conformance suite (xlat_harness/plan.py).
const (
	C4    = "192.0.2.2"
	C6    = "2001:db8:64::c000:202"
	S4A   = "198.51.100.10"
	S6A   = "2001:db8:6::10"
	S4B   = "198.51.100.11"
	S6B   = "2001:db8:6::11"
	S4U   = "198.51.100.99" // no EAM entry
	S6U   = "2001:db8:6::99"
	R4    = "203.0.113.200"
	R4in6 = "2001:db8:64::cb00:71c8"
	R6X   = "2001:db8:ffff:99::1" // neither EAM nor prefix
	POOL  = "203.0.113.64/26"
	SELF4 = "203.0.113.1" // the translator's own IPv4 address (Policy.IPv4Address)
)

func testSnapshot(t testing.TB) *mapping.Snapshot {
	t.Helper()
	p, err := mapping.NewPrefix(netip.MustParsePrefix("2001:db8:64::/96"))
	if err != nil {
		t.Fatal(err)
	}
	tab, err := mapping.NewTable([]mapping.Entry{
		{IPv4: netip.MustParsePrefix(S4A + "/32"), IPv6: netip.MustParsePrefix(S6A + "/128")},
		{IPv4: netip.MustParsePrefix(S4B + "/32"), IPv6: netip.MustParsePrefix(S6B + "/128")},
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

func testPolicy() Policy {
	return Policy{
		LowestIPv6MTU:  1280,
		Hairpin:        HairpinIntrinsic,
		ICMPSourcePool: []netip.Prefix{netip.MustParsePrefix(POOL)},
		ICMPRate:       1000000,
		// As the daemon always sets one (config.DummyIPv4Address at
		// least), so that the own-address checks are on the tested path.
		IPv4Address: netip.MustParseAddr(SELF4),
	}
}

func newTestWorker(t testing.TB, mod func(*Policy)) *Worker {
	t.Helper()
	pol := testPolicy()
	if mod != nil {
		mod(&pol)
	}
	e, err := NewEngine(&Config{Map: testSnapshot(t), Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	return e.NewWorker()
}

// sink collects what the engine emits.
type sink struct{ pkts [][]byte }

func (s *sink) Emit(p []byte, _ *Offload) { s.pkts = append(s.pkts, append([]byte(nil), p...)) }

// run translates one packet with Headroom in front and returns a copy of
// the output.
func run(w *Worker, in []byte, off *Offload) ([]byte, Result, *sink) {
	buf := make([]byte, Headroom+len(in)+64)
	copy(buf[Headroom:], in)
	sk := &sink{}
	r := w.Process(buf, Headroom, Headroom+len(in), off, sk)
	w.Flush()
	var out []byte
	if r.Verdict == Forward {
		out = append([]byte(nil), buf[r.Start:r.End]...)
	}
	return out, r, sk
}

func a4(s string) tcpip.Address { return tcpip.AddrFrom4(netip.MustParseAddr(s).As4()) }
func a6(s string) tcpip.Address { return tcpip.AddrFrom16(netip.MustParseAddr(s).As16()) }

// Transport builders: checksums are filled in by ip4/ip6.

func udpSeg(sp, dp uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	header.UDP(b).Encode(&header.UDPFields{SrcPort: sp, DstPort: dp, Length: uint16(len(b))})
	copy(b[8:], payload)
	return b
}

func tcpSeg(sp, dp uint16, flags header.TCPFlags, seq, ack uint32, opts, payload []byte) []byte {
	hl := 20 + len(opts)
	b := make([]byte, hl+len(payload))
	header.TCP(b).Encode(&header.TCPFields{SrcPort: sp, DstPort: dp, SeqNum: seq, AckNum: ack,
		DataOffset: uint8(hl), Flags: flags, WindowSize: 65535})
	copy(b[20:], opts)
	copy(b[hl:], payload)
	return b
}

func icmpMsg(typ, code uint8, rest uint32, body []byte) []byte {
	b := make([]byte, 8+len(body))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint32(b[4:], rest)
	copy(b[8:], body)
	return b
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

// csumAt is where each transport keeps its checksum.
func csumAt(proto uint8) int {
	switch proto {
	case 6:
		return 16
	case 17, 33, 136: // UDP, DCCP, UDP-Lite
		return 6
	case 1, 58:
		return 2
	}
	return -1
}

// fillCsum4 computes the transport checksum of an IPv4 packet's payload
// from scratch (a full sum, independent of the engine's incremental code).
func fillCsum4(src, dst string, proto uint8, l4 []byte) {
	at := csumAt(proto)
	if at < 0 || len(l4) < at+2 {
		return
	}
	l4[at], l4[at+1] = 0, 0
	var x uint16
	if proto != 1 {
		x = header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(proto), a4(src), a4(dst), uint16(len(l4)))
	}
	c := ^checksum.Checksum(l4, x)
	if c == 0 && (proto == 17 || proto == 136) {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[at:], c)
}

func fillCsum6(src, dst string, proto uint8, l4 []byte) {
	at := csumAt(proto)
	if at < 0 || len(l4) < at+2 {
		return
	}
	l4[at], l4[at+1] = 0, 0
	x := header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(proto), a6(src), a6(dst), uint16(len(l4)))
	c := ^checksum.Checksum(l4, x)
	if c == 0 && (proto == 17 || proto == 136) {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[at:], c)
}

type v4opt struct {
	tos     uint8
	id      uint16
	flags   uint8 // header.IPv4FlagDontFragment | header.IPv4FlagMoreFragments
	fo      uint16
	options header.IPv4OptionsSerializer
	rawOpts []byte // options as bytes (a multiple of 4), instead of options
	nocsum  bool   // leave the transport checksum as given
}

// ip4 builds an IPv4 packet with a correct header checksum and (unless
// o.nocsum) a correct transport checksum.
func ip4(src, dst string, ttl, proto uint8, l4 []byte, o v4opt) []byte {
	l4 = append([]byte(nil), l4...)
	if !o.nocsum {
		fillCsum4(src, dst, proto, l4)
	}
	hl := header.IPv4MinimumSize
	if o.options != nil {
		hl += int(o.options.Length())
	}
	b := make([]byte, hl+len(l4))
	h := header.IPv4(b)
	h.Encode(&header.IPv4Fields{TOS: o.tos, TotalLength: uint16(len(b)), ID: o.id, Flags: o.flags,
		FragmentOffset: o.fo, TTL: ttl, Protocol: proto, SrcAddr: a4(src), DstAddr: a4(dst), Options: o.options})
	if o.rawOpts != nil {
		b = append(b[:20:20], o.rawOpts...)
		b = append(b, make([]byte, len(l4))...)
		hl = len(b) - len(l4)
		h = header.IPv4(b)
		h.SetHeaderLength(uint8(hl))
		h.SetTotalLength(uint16(len(b)))
	}
	h.SetChecksum(0)
	h.SetChecksum(^h.CalculateChecksum())
	copy(b[hl:], l4)
	return b
}

type v6opt struct {
	tc     uint8
	fl     uint32
	ext    []byte // extension headers, already chained; extNH is the first
	extNH  uint8
	nocsum bool
}

func ip6(src, dst string, hlim, proto uint8, l4 []byte, o v6opt) []byte {
	l4 = append([]byte(nil), l4...)
	if !o.nocsum {
		fillCsum6(src, dst, proto, l4)
	}
	b := make([]byte, 40+len(o.ext)+len(l4))
	nh := proto
	if o.ext != nil {
		nh = o.extNH
	}
	header.IPv6(b).Encode(&header.IPv6Fields{TrafficClass: o.tc, FlowLabel: o.fl,
		PayloadLength: uint16(len(o.ext) + len(l4)), TransportProtocol: tcpip.TransportProtocolNumber(nh),
		HopLimit: hlim, SrcAddr: a6(src), DstAddr: a6(dst)})
	copy(b[40:], o.ext)
	copy(b[40+len(o.ext):], l4)
	return b
}

// fragHdr is an IPv6 Fragment header.
func fragHdr(nh uint8, offBytes int, m bool, id uint32) []byte {
	b := make([]byte, 8)
	b[0] = nh
	v := uint16(offBytes)
	if m {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[2:], v)
	binary.BigEndian.PutUint32(b[4:], id)
	return b
}

func diff(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	n := min(len(got), len(want))
	i := 0
	for i < n && got[i] == want[i] {
		i++
	}
	t.Errorf("%s: differ at byte %d (len got %d, want %d)\n got  %s\nwant %s", what, i, len(got), len(want),
		hexAround(got, i), hexAround(want, i))
}

func hexAround(b []byte, i int) string {
	lo, hi := max(0, i-8), min(len(b), i+24)
	return fmt.Sprintf("[%d:]%s", lo, hex.EncodeToString(b[lo:hi]))
}

// checkWellFormed verifies lengths, the IPv4 header checksum and (if
// wantL4) the transport checksum of an output packet.
func checkWellFormed(t testing.TB, p []byte, wantL4 bool) {
	t.Helper()
	if err := wellFormed(p, wantL4); err != nil {
		t.Errorf("%v: %x", err, p[:min(len(p), 64)])
	}
}

func wellFormed(p []byte, wantL4 bool) error {
	if len(p) < 1 {
		return fmt.Errorf("empty output")
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return fmt.Errorf("short IPv4")
		}
		h := header.IPv4(p)
		if int(h.TotalLength()) != len(p) || int(h.HeaderLength()) < 20 || int(h.HeaderLength()) > len(p) {
			return fmt.Errorf("IPv4 length %d, have %d", h.TotalLength(), len(p))
		}
		if checksum.Checksum(p[:h.HeaderLength()], 0) != 0xffff {
			return fmt.Errorf("bad IPv4 header checksum")
		}
		if wantL4 && h.FragmentOffset() == 0 && h.Flags()&header.IPv4FlagMoreFragments == 0 {
			l4 := p[h.HeaderLength():]
			at := csumAt(h.Protocol())
			if at >= 0 && len(l4) >= at+2 && !(h.Protocol() == 17 && binary.BigEndian.Uint16(l4[6:]) == 0) {
				var x uint16
				if h.Protocol() != 1 {
					x = header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(h.Protocol()), h.SourceAddress(), h.DestinationAddress(), uint16(len(l4)))
				}
				if checksum.Checksum(l4, x) != 0xffff {
					return fmt.Errorf("bad IPv4 transport checksum (proto %d)", h.Protocol())
				}
			}
		}
	case 6:
		if len(p) < 40 || 40+int(binary.BigEndian.Uint16(p[4:])) != len(p) {
			return fmt.Errorf("IPv6 payload length mismatch")
		}
		if wantL4 {
			x, why := walkExt(p, false)
			if why == ReasonNone && (x.fragAt < 0 || (x.fo == 0 && !x.m)) {
				l4 := p[x.off:]
				at := csumAt(x.nh)
				if at >= 0 && len(l4) >= at+2 {
					src, dst := tcpip.AddrFrom16([16]byte(p[8:24])), tcpip.AddrFrom16([16]byte(p[24:40]))
					s := header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(x.nh), src, dst, uint16(len(l4)))
					if checksum.Checksum(l4, s) != 0xffff {
						return fmt.Errorf("bad IPv6 transport checksum (nh %d)", x.nh)
					}
				}
			}
		}
	default:
		return fmt.Errorf("output version %d", p[0]>>4)
	}
	return nil
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// sum4 sums the 4 bytes of an IPv4 address.
func sum4(a *[4]byte) uint16 {
	s := uint32(a[0])<<8 | uint32(a[1])
	s += uint32(a[2])<<8 | uint32(a[3])
	s = s&0xffff + s>>16
	return uint16(s)
}

// pseudo4 is the sum of the IPv4 pseudo-header (RFC 793 section 3.1).
func pseudo4(src, dst *[4]byte, length uint16, proto uint8) uint16 {
	s := csumAdd(sum4(src), sum4(dst))
	s = csumAdd(s, length)
	return csumAdd(s, uint16(proto))
}
