package xlat

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// splitPayload cuts b into chunks of the given sizes plus the rest.
func splitPayload(b []byte, sizes ...int) [][]byte {
	var out [][]byte
	for _, n := range sizes {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// RFC 7915 section 4.1 (Fragment header): IPv4 fragments become IPv6
// fragments with the ID zero-extended, the same offsets and M = MF; the
// first fragment's UDP checksum is updated, the others are untouched.
func TestFragments46(t *testing.T) {
	w := newTestWorker(t, nil)
	pl := payload(1000)
	d4 := udpSeg(41000, 42000, pl)
	fillCsum4(C4, S4A, 17, d4)
	d6 := udpSeg(41000, 42000, pl)
	fillCsum6(C6, S6A, 17, d6)
	p4, p6 := splitPayload(d4, 400, 400), splitPayload(d6, 400, 400)
	off := 0
	for i := range p4 {
		var f uint8
		if i < len(p4)-1 {
			f = MF
		}
		in := ip4(C4, S4A, 64, 17, p4[i], v4opt{id: 0xabcd, flags: f, fo: uint16(off), nocsum: true})
		want := ip6(C6, S6A, 64, 44, nil, v6opt{nocsum: true, extNH: 44,
			ext: append(fragHdr(17, off, f == MF, 0xabcd), p6[i]...)})
		got, r, _ := run(w, in, nil)
		if r.Verdict != Forward {
			t.Fatalf("fragment %d: verdict %d %v", i, r.Verdict, r.Reason)
		}
		diff(t, "RFC 7915 4.1 fragment", got, want)
		if wantProto := map[bool]Proto{true: ProtoUDP, false: ProtoFragment}[i == 0]; r.Proto != wantProto {
			t.Errorf("fragment %d proto %v", i, r.Proto)
		}
		off += len(p4[i])
	}
}

// RFC 7915 section 5.1.1: IPv6 fragments become IPv4 fragments with the
// low 16 bits of the ID, DF clear, MF copied.
func TestFragments64(t *testing.T) {
	w := newTestWorker(t, nil)
	pl := payload(1000)
	d6 := udpSeg(42000, 41000, pl)
	fillCsum6(S6A, C6, 17, d6)
	d4 := udpSeg(42000, 41000, pl)
	fillCsum4(S4A, C4, 17, d4)
	p4, p6 := splitPayload(d4, 400, 400), splitPayload(d6, 400, 400)
	off := 0
	for i := range p6 {
		m := i < len(p6)-1
		var f uint8
		if m {
			f = MF
		}
		in := ip6(S6A, C6, 64, 44, nil, v6opt{nocsum: true, extNH: 44, ext: append(fragHdr(17, off, m, 0x12345678), p6[i]...)})
		want := ip4(S4A, C4, 64, 17, p4[i], v4opt{id: 0x5678, flags: f, fo: uint16(off), nocsum: true})
		got, r, _ := run(w, in, nil)
		if r.Verdict != Forward {
			t.Fatalf("fragment %d: verdict %d %v", i, r.Verdict, r.Reason)
		}
		diff(t, "RFC 7915 5.1.1 fragment", got, want)
		off += len(p6[i])
	}
}

// RFC 7915 section 4 (lowest-ipv6-mtu): a DF=0 IPv4 packet whose IPv6
// form exceeds 1280 bytes leaves as IPv6 fragments that each fit and
// reassemble to the translation.
func TestFragmentLarge46(t *testing.T) {
	for _, partial := range []bool{false, true} {
		w := newTestWorker(t, nil)
		pl := payload(1372)
		in := ip4(C4, S4A, 64, 17, udpSeg(41000, 42000, pl), v4opt{id: 0x4455})
		var off *Offload
		if partial {
			// The UDP checksum field holds the pseudo-header sum only.
			l4 := in[20:]
			binary.BigEndian.PutUint16(l4[6:], pseudo4((*[4]byte)(in[12:16]), (*[4]byte)(in[16:20]), uint16(len(l4)), 17))
			off = &Offload{Flags: OffloadNeedsCsum, CsumStart: 20, CsumOffset: 6}
		}
		_, r, sk := run(w, in, off)
		if r.Verdict != Consumed || len(sk.pkts) < 2 {
			t.Fatalf("partial=%v: verdict %d %v, %d packets", partial, r.Verdict, r.Reason, len(sk.pkts))
		}
		var data []byte
		for i, f := range sk.pkts {
			if len(f) > 1280 {
				t.Errorf("fragment %d is %d bytes", i, len(f))
			}
			checkWellFormed(t, f, false)
			fo := int(binary.BigEndian.Uint16(f[42:]) &^ 7)
			m := f[43]&1 == 1
			if f[6] != 44 || f[40] != 17 || binary.BigEndian.Uint32(f[44:]) != 0x4455 || fo != len(data) || m != (i < len(sk.pkts)-1) {
				t.Errorf("fragment %d header %x", i, f[:48])
			}
			data = append(data, f[48:]...)
		}
		want := ip6(C6, S6A, 64, 17, udpSeg(41000, 42000, pl), v6opt{})[40:]
		if !bytes.Equal(data, want) {
			t.Errorf("partial=%v: reassembled datagram differs", partial)
		}
		if off != nil && *off != (Offload{}) {
			t.Errorf("offload not cleared: %+v", off)
		}
		if n := w.C.Emitted.Load(); n != uint64(len(sk.pkts)) {
			t.Errorf("partial=%v: %d packets emitted, %d counted", partial, len(sk.pkts), n)
		}
	}
}

// A fragmented IPv4 packet that grows beyond lowest-ipv6-mtu is split
// again, keeping its offset and its MF bit on the last piece.
func TestRefragment46(t *testing.T) {
	w := newTestWorker(t, nil)
	data := payload(1400)
	in := ip4(C4, S4A, 64, 17, data, v4opt{id: 9, flags: MF, fo: 1600, nocsum: true})
	_, r, sk := run(w, in, nil)
	if r.Verdict != Consumed || len(sk.pkts) != 2 {
		t.Fatalf("verdict %d %v, %d packets", r.Verdict, r.Reason, len(sk.pkts))
	}
	var got []byte
	for i, f := range sk.pkts {
		fo := int(binary.BigEndian.Uint16(f[42:]) &^ 7)
		if fo != 1600+len(got) || f[43]&1 != 1 {
			t.Errorf("piece %d offset %d M %d", i, fo, f[43]&1)
		}
		got = append(got, f[48:]...)
	}
	if !bytes.Equal(got, data) {
		t.Error("data differs")
	}
}

func TestUDPZeroChecksum(t *testing.T) {
	pl := payload(64)
	zero := ip4(C4, S4A, 64, 17, udpSeg(41000, 42000, pl), v4opt{nocsum: true})
	t.Run("compute", func(t *testing.T) {
		w := newTestWorker(t, nil)
		got, r, _ := run(w, zero, nil)
		if r.Verdict != Forward {
			t.Fatalf("RFC 7915 4.5: %d %v", r.Verdict, r.Reason)
		}
		diff(t, "RFC 7915 4.5 compute", got, ip6(C6, S6A, 64, 17, udpSeg(41000, 42000, pl), v6opt{}))
	})
	t.Run("drop", func(t *testing.T) {
		w := newTestWorker(t, func(p *Policy) { p.UDPZeroChecksum = UDPZeroDrop })
		if _, r, _ := run(w, zero, nil); r.Reason != ReasonUDPZeroChecksum {
			t.Errorf("RFC 7915 4.5 drop: %v", r.Reason)
		}
	})
	t.Run("fragment", func(t *testing.T) {
		w := newTestWorker(t, nil)
		in := ip4(C4, S4A, 64, 17, udpSeg(41000, 42000, pl)[:40], v4opt{nocsum: true, flags: MF, id: 5})
		if _, r, _ := run(w, in, nil); r.Reason != ReasonUDPZeroFragment {
			t.Errorf("RFC 7915 4.5 fragment: %v", r.Reason)
		}
	})
	t.Run("6to4-keeps-zero", func(t *testing.T) {
		w := newTestWorker(t, nil)
		got, r, _ := run(w, ip6(S6A, C6, 64, 17, udpSeg(1, 2, pl), v6opt{nocsum: true}), nil)
		if r.Verdict != Forward || binary.BigEndian.Uint16(got[26:]) != 0 {
			t.Errorf("verdict %d, checksum %x", r.Verdict, got[26:28])
		}
	})
}

func TestICMPFragmentedDropped(t *testing.T) {
	w := newTestWorker(t, nil)
	in := ip4(C4, S4A, 64, 1, icmpMsg(8, 0, 1, payload(40)), v4opt{flags: MF, id: 3})
	if _, r, _ := run(w, in, nil); r.Reason != ReasonICMPFragmented {
		t.Errorf("4to6: %v", r.Reason)
	}
	in = ip6(S6A, C6, 64, 44, nil, v6opt{nocsum: true, extNH: 44, ext: append(fragHdr(58, 0, true, 1), icmpMsg(128, 0, 1, payload(40))...)})
	if _, r, _ := run(w, in, nil); r.Reason != ReasonICMPFragmented {
		t.Errorf("6to4: %v", r.Reason)
	}
}

// expectEmitted checks one translator-originated ICMP error.
func expectEmitted(t *testing.T, sk *sink, want []byte) {
	t.Helper()
	if len(sk.pkts) != 1 {
		t.Fatalf("emitted %d packets, want 1", len(sk.pkts))
	}
	got := sk.pkts[0]
	if got[0]>>4 == 4 {
		want = withID(want, got)
	}
	diff(t, "emitted error", got, want)
	checkWellFormed(t, got, true)
}

const errSrc4 = "203.0.113.65"           // first usable pool address
const errSrc6 = "2001:db8:64::cb00:7141" // errSrc4 in the prefix

func TestOwnErrors(t *testing.T) {
	t.Run("df-4to6-too-big", func(t *testing.T) {
		// RFC 7915 4.1: DF set and the IPv6 form exceeds the IPv6 MTU.
		w := newTestWorker(t, func(p *Policy) { p.IPv6MTU = 1280 })
		in := ip4(C4, S4A, 64, 17, udpSeg(41000, 42000, payload(1372)), v4opt{flags: DF})
		_, r, sk := run(w, in, nil)
		if r.Reason != ReasonTooBig {
			t.Fatalf("reason %v", r.Reason)
		}
		expectEmitted(t, sk, ip4(errSrc4, C4, 64, 1, icmpMsg(3, 4, 1260, in[:576-28]), v4opt{}))
	})
	t.Run("ipv6-too-big-6to4", func(t *testing.T) {
		w := newTestWorker(t, func(p *Policy) { p.IPv4MTU = 1400 })
		in := ip6(S6A, C6, 64, 17, udpSeg(42000, 41000, payload(1452)), v6opt{})
		_, r, sk := run(w, in, nil)
		if r.Reason != ReasonTooBig {
			t.Fatalf("reason %v", r.Reason)
		}
		expectEmitted(t, sk, ip6(errSrc6, S6A, 64, 58, icmpMsg(2, 0, 1420, in[:1280-48]), v6opt{}))
	})
	t.Run("source-route", func(t *testing.T) {
		// RFC 7915 4.1: unexpired LSRR -> ICMPv4 3/5, not translated.
		w := newTestWorker(t, nil)
		lsrr := []byte{0x83, 7, 4, 203, 0, 113, 9, 0} // pointer 4 <= length 7: one hop left
		in := ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(8)), v4opt{rawOpts: lsrr})
		_, r, sk := run(w, in, nil)
		if r.Reason != ReasonSourceRoute {
			t.Fatalf("reason %v", r.Reason)
		}
		expectEmitted(t, sk, ip4(errSrc4, C4, 64, 1, icmpMsg(3, 5, 0, in), v4opt{}))
		// An expired route (pointer past the end) is just an option.
		spent := []byte{0x89, 7, 8, 203, 0, 113, 9, 0}
		got, r, _ := run(w, ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(8)), v4opt{rawOpts: spent}), nil)
		if r.Verdict != Forward {
			t.Fatalf("expired route: %v", r.Reason)
		}
		diff(t, "expired source route", got, ip6(C6, S6A, 64, 17, udpSeg(1, 2, payload(8)), v6opt{}))
	})
	t.Run("segments-left", func(t *testing.T) {
		// RFC 7915 5.1: Routing header with Segments Left != 0 ->
		// Parameter Problem code 0 pointing at Segments Left.
		w := newTestWorker(t, nil)
		rh := []byte{17, 2, 0, 1, 0, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
		in := ip6(S6A, C6, 64, 17, udpSeg(1, 2, payload(8)), v6opt{ext: rh, extNH: 43})
		_, r, sk := run(w, in, nil)
		if r.Reason != ReasonSegmentsLeft {
			t.Fatalf("reason %v", r.Reason)
		}
		expectEmitted(t, sk, ip6(errSrc6, S6A, 64, 58, icmpMsg(4, 0, 43, in), v6opt{}))
	})
	t.Run("no-error-for-errors", func(t *testing.T) {
		// RFC 1812 4.3.2.7: never an error about an ICMP error.
		w := newTestWorker(t, nil)
		lsrr := []byte{0x83, 7, 4, 203, 0, 113, 9, 0}
		in := ip4(R4, S4A, 64, 1, icmpMsg(3, 1, 0, innerV4(20)), v4opt{rawOpts: lsrr})
		_, r, sk := run(w, in, nil)
		if r.Reason != ReasonSourceRoute || len(sk.pkts) != 0 {
			t.Errorf("reason %v, emitted %d", r.Reason, len(sk.pkts))
		}
	})
	t.Run("rate-limit", func(t *testing.T) {
		w := newTestWorker(t, func(p *Policy) { p.ICMPRate = 2 })
		now := int64(0)
		w.now = func() int64 { return now }
		lsrr := []byte{0x83, 7, 4, 203, 0, 113, 9, 0}
		in := ip4(C4, S4A, 64, 17, udpSeg(1, 2, nil), v4opt{rawOpts: lsrr})
		emitted := 0
		for range 5 {
			_, _, sk := run(w, in, nil)
			emitted += len(sk.pkts)
		}
		if emitted != 2 || w.C.RateLimited.Load() != 3 {
			t.Errorf("burst: emitted %d, limited %d", emitted, w.C.RateLimited.Load())
		}
		now += int64(time.Second / 2)
		if _, _, sk := run(w, in, nil); len(sk.pkts) != 1 {
			t.Error("no token after half a second at 2/s")
		}
		if _, _, sk := run(w, in, nil); len(sk.pkts) != 0 {
			t.Error("bucket refilled too fast")
		}
	})
}

// RFC 7915 section 4: a DF=0 packet is fragmented to fit lowest-ipv6-mtu,
// and to fit the IPv6 next hop where that is smaller (an MTU learned from
// a NIC below the configured lowest-ipv6-mtu): between the two it used
// to leave whole, too big for the link.
func TestFragment46NextHopBelowLowest(t *testing.T) {
	for _, n := range []int{1392, 1472, 3000} { // IPv6 forms of 1440, 1520, 3048 bytes
		w := newTestWorker(t, func(p *Policy) { p.LowestIPv6MTU, p.IPv6MTU = 1500, 1400 })
		pl := payload(n)
		_, r, sk := run(w, ip4(C4, S4A, 64, 17, udpSeg(41000, 42000, pl), v4opt{id: 0x4455}), nil)
		if r.Verdict != Consumed || len(sk.pkts) < 2 {
			t.Fatalf("payload %d: verdict %d %v, %d packets", n, r.Verdict, r.Reason, len(sk.pkts))
		}
		var data []byte
		for i, f := range sk.pkts {
			if len(f) > 1400 {
				t.Errorf("payload %d: fragment %d is %d bytes, over the next hop's 1400", n, i, len(f))
			}
			checkWellFormed(t, f, false)
			data = append(data, f[48:]...)
		}
		if want := ip6(C6, S6A, 64, 17, udpSeg(41000, 42000, pl), v6opt{})[40:]; !bytes.Equal(data, want) {
			t.Errorf("payload %d: reassembled datagram differs", n)
		}
	}
}
