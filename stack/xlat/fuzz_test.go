package xlat

import (
	"bytes"
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// fuzzSeeds are packets of every kind the unit tests use.
func fuzzSeeds4() [][]byte {
	lsrr := []byte{0x83, 7, 4, 203, 0, 113, 9, 0}
	return [][]byte{
		ip4(C4, S4A, 64, 17, udpSeg(40000, 41053, payload(100)), v4opt{flags: DF}),
		ip4(C4, S4B, 50, 6, tcpSeg(33000, 443, header.TCPFlagSyn, 1000, 0, synOpts, nil), v4opt{}),
		ip4(C4, S4A, 64, 1, icmpMsg(8, 0, 0x42420007, payload(56)), v4opt{}),
		ip4(R4, S4A, 64, 1, icmpMsg(3, 4, 1400, innerV4(60)), v4opt{}),
		ip4(R4, S4A, 64, 1, icmpMsg(12, 0, 8<<24, innerV4(60)), v4opt{}),
		ip4(R4, S4A, 64, 1, icmpMsg(11, 0, 32<<16, append(innerV4(100), 0x20, 0, 0, 0, 0, 8, 1, 1, 0, 0, 0, 7)), v4opt{}),
		ip4(R4, S4A, 64, 1, icmpMsg(11, 0, 19<<16, append(innerV4(100)[:76], 0x20, 0, 0, 0, 0, 8, 1, 1, 0, 0, 0, 7)), v4opt{}), // grows by 72
		ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(1372)), v4opt{id: 0x4455}),
		ip4(C4, S4A, 64, 17, payload(400), v4opt{id: 0xabcd, flags: MF, fo: 400, nocsum: true}),
		ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(8)), v4opt{rawOpts: lsrr}),
		ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(64)), v4opt{nocsum: true}),
		ip4(C4, S4A, 64, 253, payload(40), v4opt{}),
	}
}

func fuzzSeeds6() [][]byte {
	rh := []byte{17, 2, 0, 1, 0, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	return [][]byte{
		ip6(S6A, C6, 64, 17, udpSeg(41053, 40000, payload(100)), v6opt{}),
		ip6(S6B, C6, 64, 6, tcpSeg(443, 33000, header.TCPFlagSyn|header.TCPFlagAck, 5, 1001, synOpts, payload(30)), v6opt{}),
		ip6(S6A, C6, 64, 58, icmpMsg(129, 0, 0x42420007, payload(56)), v6opt{}),
		ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 0, innerV6(60)), v6opt{}),
		ip6(R6X, C6, 64, 58, icmpMsg(2, 0, 1300, innerV6(60)), v6opt{}),
		ip6(S6A, C6, 64, 58, icmpMsg(4, 0, 7, innerV6(60)), v6opt{}),
		ip6(S6A, C6, 64, 58, icmpMsg(3, 0, 16<<24, append(innerV6(80), 0x20, 0, 0, 0, 0, 8, 1, 1, 0, 0, 0, 7)), v6opt{}),
		ip6(S6A, C6, 64, 58, icmpMsg(3, 0, 5<<24, append(innerV6(80)[:40], 0x20, 0, 0, 0, 0, 8, 1, 1, 0, 0, 0, 7)), v6opt{}), // grows by 68
		ip6(S6A, C6, 64, 44, nil, v6opt{nocsum: true, extNH: 44, ext: append(fragHdr(17, 0, true, 0x12345678), udpSeg(1, 2, payload(400))...)}),
		ip6(S6A, C6, 64, 17, udpSeg(42000, 41000, payload(40)), v6opt{ext: append(append([]byte{}, hbhPad...), dstPad...), extNH: 0}),
		ip6(S6A, C6, 64, 17, udpSeg(1, 2, payload(8)), v6opt{ext: rh, extNH: 43}),
		ip6(S6A, v4in6(S4B), 64, 17, udpSeg(42000, 42001, payload(20)), v6opt{}),
		// Server to server by EAM address: these translate back.
		ip6(S6A, S6B, 64, 17, udpSeg(42000, 42001, payload(20)), v6opt{tc: 0x2a, fl: 5}),
		ip6(S6A, S6B, 64, 6, tcpSeg(443, 33000, header.TCPFlagAck, 5, 1001, nil, payload(30)), v6opt{}),
		ip6(S6A, S6B, 64, 58, icmpMsg(128, 0, 0x42420007, payload(56)), v6opt{}),
	}
}

// fuzzOne checks the invariants every input must keep: no panic, every
// output well formed (lengths, IPv4 header checksum, and the transport
// checksum when the input's was valid), and a round trip back through the
// engine restores the packet but for the fields RFC 7915 changes. A
// result stays behind the Headroom: in front of it lies the link's own
// header (linkHdr bytes, a tun frame's virtio_net_hdr).
func fuzzOne(t *testing.T, w *Worker, back *Worker, data []byte) (roundTripped bool) {
	const linkHdr = 10
	buf := make([]byte, linkHdr+Headroom+len(data)+64)
	copy(buf[linkHdr+Headroom:], data)
	sk := &sink{}
	inValid := wellFormed(data, true) == nil
	r := w.Process(buf, linkHdr+Headroom, linkHdr+Headroom+len(data), nil, sk)
	for _, p := range sk.pkts {
		if err := wellFormed(p, inValid || isOwnError(p)); err != nil {
			t.Fatalf("emitted: %v\n in  %x\n out %x", err, data, p)
		}
	}
	if r.Verdict != Forward {
		return false
	}
	if r.Start < linkHdr || r.End > len(buf) || r.Start >= r.End {
		t.Fatalf("result out of bounds: %+v", r)
	}
	out := append([]byte(nil), buf[r.Start:r.End]...)
	if err := wellFormed(out, inValid); err != nil {
		t.Fatalf("%v\n in  %x\n out %x", err, data, out)
	}
	if !inValid || !roundTrips(data) || out[0]>>4 == data[0]>>4 {
		return false
	}
	// The way back is the reply: the translated packet with its addresses
	// swapped. (The output itself may not come back in: its source is
	// inside the prefix or a mapped address, which the translator takes
	// for spoofing.) Swapping leaves every checksum valid.
	buf2 := make([]byte, Headroom+len(out)+64)
	copy(buf2[Headroom:], out)
	swapAddrs(buf2[Headroom : Headroom+len(out)])
	r2 := back.Process(buf2, Headroom, Headroom+len(out), nil, &sink{})
	if r2.Verdict != Forward {
		// e.g. IPv6 -> IPv4 to a prefix address: the IPv4 destination is
		// then a client, which 4->6 does not accept as a destination.
		return false
	}
	again := buf2[r2.Start:r2.End]
	if !bytes.Equal(normalize(again), normalize(swapAddrs(append([]byte(nil), data...)))) {
		t.Fatalf("round trip changed the packet\n in   %x\n out  %x\n back %x", data, out, again)
	}
	return true
}

// swapAddrs exchanges the source and destination addresses of p in place.
func swapAddrs(p []byte) []byte {
	var a, b []byte
	if p[0]>>4 == 4 {
		a, b = p[12:16], p[16:20]
	} else {
		a, b = p[8:24], p[24:40]
	}
	for i := range a {
		a[i], b[i] = b[i], a[i]
	}
	return p
}

func isOwnError(p []byte) bool {
	return (p[0]>>4 == 4 && len(p) > 20 && p[9] == 1) || (p[0]>>4 == 6 && len(p) > 40 && p[6] == 58)
}

// roundTrips reports packets whose translation keeps all information:
// no IPv4 options or IPv6 extension headers, unfragmented, no ICMP error
// (their quoted headers get new IDs), no zero UDP checksum.
func roundTrips(p []byte) bool {
	var proto uint8
	var l4 []byte
	switch p[0] >> 4 {
	case 4:
		h := header.IPv4(p)
		if h.HeaderLength() != 20 || h.Flags()&header.IPv4FlagMoreFragments != 0 || h.FragmentOffset() != 0 {
			return false
		}
		proto, l4 = p[9], p[20:]
	case 6:
		proto, l4 = p[6], p[40:]
		if proto == 0 || proto == 43 || proto == 44 || proto == 60 {
			return false
		}
	}
	switch proto {
	case 1, 58:
		return len(l4) > 0 && (l4[0] == 0 || l4[0] == 8 || l4[0] == 128 || l4[0] == 129)
	case 17:
		return len(l4) >= 8 && binary.BigEndian.Uint16(l4[6:]) != 0
	}
	return true
}

// normalize clears what RFC 7915 lets change on a round trip: the IPv4
// Identification, flags and header checksum; the IPv6 flow label. A TCP or
// ICMP checksum of 0xffff becomes 0: both are ones' complement zero, and
// an incremental update (RFC 1624) may turn one into the other.
func normalize(p []byte) []byte {
	p = append([]byte(nil), p...)
	var proto uint8
	var l4 []byte
	if p[0]>>4 == 4 {
		p[4], p[5], p[6], p[7], p[10], p[11] = 0, 0, 0, 0, 0, 0
		proto, l4 = p[9], p[20:]
	} else {
		p[1] &= 0xf0
		p[2], p[3] = 0, 0
		proto, l4 = p[6], p[40:]
	}
	if at := csumAt(proto); proto != 17 && at >= 0 && len(l4) >= at+2 && l4[at] == 0xff && l4[at+1] == 0xff {
		l4[at], l4[at+1] = 0, 0
	}
	return p
}

func FuzzProcess46(f *testing.F) {
	for _, s := range fuzzSeeds4() {
		f.Add(s)
	}
	w := newTestWorker(f, nil)
	back := w.eng.NewWorker()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 0 {
			data[0] = 0x40 | data[0]&0x0f
		}
		fuzzOne(t, w, back, data)
	})
}

func FuzzProcess64(f *testing.F) {
	for _, s := range fuzzSeeds6() {
		f.Add(s)
	}
	w := newTestWorker(f, nil)
	back := w.eng.NewWorker()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 0 {
			data[0] = 0x60 | data[0]&0x0f
		}
		fuzzOne(t, w, back, data)
	})
}

// The fuzz invariants, on the seeds: the round-trip check must really run.
func TestFuzzSeeds(t *testing.T) {
	w := newTestWorker(t, nil)
	back := w.eng.NewWorker()
	n := 0
	for _, s := range append(fuzzSeeds4(), fuzzSeeds6()...) {
		if fuzzOne(t, w, back, s) {
			n++
		}
	}
	if n < 7 {
		t.Errorf("only %d seeds made the round trip", n)
	}
}
