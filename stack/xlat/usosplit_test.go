package xlat

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// splitCsum is how a super-packet's UDP checksum field arrives.
type splitCsum uint8

const (
	csumPartial splitCsum = iota // NEEDS_CSUM: the pseudo-header sum
	csumValid                    // DATA_VALID: the kernel checked it
	csumWhole                    // no flag: a full checksum over the whole super-packet
	csumZero                     // no flag, checksum 0: the sender left it out
)

// splitCase is a DF=0 IPv4 UDP super-packet of datagrams of the given
// payload sizes whose datagrams do not fit the IPv6 MTU.
type splitCase struct {
	name  string
	sizes []int // payload of each datagram
	gso   int
	csum  splitCsum
	opts  []byte // IPv4 options
	lie   bool   // the super-packet's UDP Length lies (the kernel ignores it)
	mtu6  int    // the IPv6 next hop's MTU; 0: 1447 (splitPolicy)
}

// policy is splitPolicy with the case's IPv6 MTU.
func (c splitCase) policy(p *Policy) {
	splitPolicy(p)
	if c.mtu6 != 0 {
		p.IPv6MTU = c.mtu6
	}
}

func splitCases() []splitCase {
	nop := []byte{1, 1, 1, 0}
	return []splitCase{
		{name: "1 datagram", sizes: []int{1400}, gso: 1400},
		{name: "2 datagrams", sizes: []int{1400, 1400}, gso: 1400},
		{name: "3, short last", sizes: []int{1400, 1400, 333}, gso: 1400},
		{name: "3, short last fragmented too", sizes: []int{1500, 1500, 1300}, gso: 1500},
		{name: "data valid", sizes: []int{1400, 1400, 333}, gso: 1400, csum: csumValid},
		{name: "whole checksum", sizes: []int{1400, 1400, 333}, gso: 1400, csum: csumWhole},
		{name: "zero checksum", sizes: []int{1400, 1400, 333}, gso: 1400, csum: csumZero},
		{name: "IPv4 options", sizes: []int{1400, 1400, 7}, gso: 1400, opts: nop},
		// Not larger than gso_size: one datagram, as the kernel takes it
		// ("too small packets are not really GSO ones",
		// virtio_net_hdr_to_skb), translated alone rather than dropped.
		{name: "gso larger than the payload", sizes: []int{700}, gso: 1400},
		{name: "UDP length lies", sizes: []int{1400, 1400, 333}, gso: 1400, lie: true},
		{name: "44 datagrams", sizes: repeatSize(1432, 44), gso: 1432},
		// The next hop takes them, but alone each would be fragmented
		// all the same: larger than lowest-ipv6-mtu (1280).
		{name: "fits the next hop, not lowest-ipv6-mtu", sizes: []int{1400, 1400, 333}, gso: 1400, mtu6: 1500},
	}
}

func repeatSize(n, k int) []int {
	s := make([]int, k)
	for i := range s {
		s[i] = n
	}
	return s
}

const splitID = 0xfffe // the super-packet's IP ID: datagram 2's wraps to 0

func splitPolicy(p *Policy) { p.IPv6MTU = 1447 }

// build returns the super-packet, its offload and the datagrams it is made
// of, each as the sender would have sent it alone.
func (c splitCase) build() (in []byte, off *Offload, alone [][]byte) {
	var all []byte
	for _, n := range c.sizes {
		all = append(all, payload(n)...)
	}
	for i := range all {
		all[i] ^= byte(i >> 8) // no two datagrams alike
	}
	o := v4opt{id: splitID, rawOpts: c.opts, nocsum: c.csum == csumZero}
	in = ip4(C4, S4A, 64, 17, udpSeg(40000, 443, all), o)
	ihl := 20 + len(c.opts)
	if c.lie {
		binary.BigEndian.PutUint16(in[ihl+4:], 9)
	}
	switch c.csum {
	case csumPartial:
		off = makePartial(in)
	case csumValid:
		off = &Offload{Flags: OffloadDataValid}
	default:
		off = &Offload{}
	}
	off.GSOType, off.GSOSize, off.HdrLen = GSOUDPL4, uint16(c.gso), uint16(ihl+8)
	pos := 0
	for i, n := range c.sizes {
		o.id = uint16(splitID + i)
		alone = append(alone, ip4(C4, S4A, 64, 17, udpSeg(40000, 443, all[pos:pos+n]), o))
		pos += n
	}
	return in, off, alone
}

// RFC 7915 section 4: a DF=0 UDP super-packet whose datagrams do not fit
// the IPv6 side, or would each be fragmented alone, is cut into its datagrams, and each leaves exactly as it
// would have alone (fragmented, or whole if it fits): the same packets,
// byte for byte, as the same engine makes of each datagram sent alone.
func TestUSOSplit46(t *testing.T) {
	for _, c := range splitCases() {
		t.Run(c.name, func(t *testing.T) {
			in, off, alone := c.build()
			var want [][]byte
			ref := newTestWorker(t, c.policy)
			for i, d := range alone {
				out, r, sk := run(ref, d, nil)
				switch r.Verdict {
				case Forward:
					want = append(want, out)
				case Consumed:
					want = append(want, sk.pkts...)
				default:
					t.Fatalf("datagram %d alone: dropped, %v", i, r.Reason)
				}
			}
			w := newTestWorker(t, c.policy)
			buf := make([]byte, Headroom+len(in))
			copy(buf[Headroom:], in)
			sk := &sink{}
			r := w.Process(buf, Headroom, len(buf), off, sk)
			w.Flush()
			if r.Verdict != Consumed || r.Dir != Dir46 || r.Proto != ProtoUDP {
				t.Fatalf("verdict %d reason %v dir %v proto %v, want consumed UDP 4->6", r.Verdict, r.Reason, r.Dir, r.Proto)
			}
			if *off != (Offload{}) {
				t.Errorf("offload %+v left", *off)
			}
			if len(sk.pkts) != len(want) {
				t.Fatalf("%d packets emitted, %d when sent alone", len(sk.pkts), len(want))
			}
			for i := range want {
				diff(t, "packet", sk.pkts[i], want[i])
			}
			checkSplitOutput(t, sk.pkts, alone)
			// Counted as one translated super-packet, like a forwarded one,
			// and what it became as emitted; nothing as a drop.
			if n := w.C.Packets[Dir46][ProtoUDP].Load(); n != 1 {
				t.Errorf("packets %d, want 1", n)
			}
			if n := w.C.Bytes[Dir46].Load(); n != uint64(len(in)) {
				t.Errorf("bytes %d, want %d", n, len(in))
			}
			if n := w.C.Emitted.Load(); n != uint64(len(want)) {
				t.Errorf("emitted %d, want %d", n, len(want))
			}
			for why := range NumReasons {
				if n := w.C.Drops[Dir46][why].Load(); n != 0 {
					t.Errorf("%d drops %v", n, why)
				}
			}
		})
	}
}

// checkSplitOutput reassembles the IPv6 packets out (fragments, or whole
// datagrams) and checks each datagram against the IPv4 one it came from:
// its payload, UDP Length and a valid UDP checksum; and that no packet
// exceeds lowest-ipv6-mtu (1280).
func checkSplitOutput(t *testing.T, out, alone [][]byte) {
	t.Helper()
	for i, p := range out {
		checkWellFormed(t, p, true)
		if len(p) > 1280 {
			t.Errorf("packet %d is %d bytes", i, len(p))
		}
	}
	got := reassembleSplit(out)
	if len(got) != len(alone) {
		t.Fatalf("%d datagrams out, %d in", len(got), len(alone))
	}
	for i, d := range got {
		checkWellFormed(t, d, true)
		u4, u6 := alone[i][int(alone[i][0]&15)*4:], d[40:]
		if d[6] != protoUDP || binary.BigEndian.Uint16(u6[4:]) != uint16(len(u6)) || !bytes.Equal(u6[8:], u4[8:]) {
			t.Errorf("datagram %d: next header %d, UDP length %d of %d, payload equal %v", i, d[6], binary.BigEndian.Uint16(u6[4:]), len(u6), bytes.Equal(u6[8:], u4[8:]))
		}
	}
}

// reassembleSplit puts the IPv6 datagrams a split emitted back together:
// whole ones as they are, the fragments of one (which come in a row, the
// last without M) into one packet without the Fragment header. A run of
// fragments not ended by a last one is left out.
func reassembleSplit(out [][]byte) [][]byte {
	var got [][]byte
	var data []byte
	for _, p := range out {
		if len(p) < 48 || p[6] != protoFragment {
			got = append(got, p)
			continue
		}
		data = append(data, p[48:]...)
		if p[43]&1 == 0 { // the last fragment
			whole := append(append([]byte(nil), p[:40]...), data...)
			whole[6] = p[40]
			binary.BigEndian.PutUint16(whole[4:], uint16(len(data)))
			got = append(got, whole)
			data = nil
		}
	}
	return got
}

// Splitting allocates nothing.
func TestUSOSplit46Allocs(t *testing.T) {
	for _, c := range splitCases() {
		w := newTestWorker(t, splitPolicy)
		in, base, _ := c.build()
		buf := make([]byte, Headroom+len(in))
		sk := &nullSink{}
		var off Offload
		if a := testing.AllocsPerRun(50, func() {
			copy(buf[Headroom:], in)
			off = *base
			if r := w.Process(buf, Headroom, len(buf), &off, sk); r.Verdict != Consumed {
				t.Fatalf("%s: verdict %d %v", c.name, r.Verdict, r.Reason)
			}
			w.Flush()
		}); a != 0 {
			t.Errorf("%s: %v allocations per super-packet", c.name, a)
		}
	}
}

// What cannot be cut into datagrams is counted and dropped, and nothing is
// emitted: a truncated UDP header, a Total Length beyond the packet, a
// whole-packet checksum that does not verify (a fresh one per datagram
// would hide the damage), no sink. DF, a hairpin and USO metadata on
// another protocol keep their refusal (uso_test.go).
func TestUSOSplit46Hostile(t *testing.T) {
	good, goodOff, _ := splitCases()[2].build()
	for _, c := range []struct {
		name  string
		in    func() []byte
		off   func(*Offload)
		nosnk bool
		why   Reason
	}{
		{name: "truncated UDP header", why: ReasonMalformed,
			in: func() []byte { return ip4(C4, S4A, 64, 17, []byte{1, 2, 3, 4}, v4opt{nocsum: true}) }},
		{name: "Total Length beyond the packet", why: ReasonMalformed,
			in: func() []byte {
				p := append([]byte(nil), good...)
				binary.BigEndian.PutUint16(p[2:], uint16(len(p)+100))
				return refreshIPv4Csum(p)
			}},
		{name: "whole checksum wrong", why: ReasonMalformed,
			in: func() []byte {
				p := ip4(C4, S4A, 64, 17, udpSeg(40000, 443, payload(3000)), v4opt{})
				p[len(p)-1] ^= 0x55
				return p
			},
			off: func(o *Offload) { o.Flags, o.CsumStart, o.CsumOffset = 0, 0, 0 }},
		{name: "no sink", why: ReasonNoSink, nosnk: true},
		{name: "zero checksum, policy drop", why: ReasonUDPZeroChecksum,
			in:  func() []byte { return ip4(C4, S4A, 64, 17, udpSeg(40000, 443, payload(3000)), v4opt{nocsum: true}) },
			off: func(o *Offload) { o.Flags, o.CsumStart, o.CsumOffset = 0, 0, 0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorker(t, func(p *Policy) {
				splitPolicy(p)
				p.UDPZeroChecksum = UDPZeroDrop
			})
			in := good
			if c.in != nil {
				in = c.in()
			}
			off := *goodOff
			if c.off != nil {
				c.off(&off)
			}
			buf := make([]byte, Headroom+len(in))
			copy(buf[Headroom:], in)
			sk := &sink{}
			var snk Sink = sk
			if c.nosnk {
				snk = nil
			}
			r := w.Process(buf, Headroom, len(buf), &off, snk)
			w.Flush()
			if r.Verdict != Drop || r.Reason != c.why {
				t.Fatalf("verdict %d reason %v, want drop %v", r.Verdict, r.Reason, c.why)
			}
			if n := w.C.Drops[Dir46][c.why].Load(); n != 1 {
				t.Errorf("%d drops counted", n)
			}
			if len(sk.pkts) != 0 || w.C.Emitted.Load() != 0 {
				t.Errorf("%d packets emitted", len(sk.pkts))
			}
		})
	}
}

// A USO super-packet with gso_size 0 never comes this far (the endpoints
// refuse it, tun.ValidateOffload, and it is never too big), but the cut
// itself refuses it rather than loop.
func TestUSOSplit46ZeroGSO(t *testing.T) {
	in, off, _ := splitCases()[2].build()
	off.GSOSize = 0
	w := newTestWorker(t, splitPolicy)
	var q in4
	if why := q.parse(in); why != ReasonNone {
		t.Fatal(why)
	}
	buf := make([]byte, Headroom+len(in))
	copy(buf[Headroom:], in)
	q.parse(buf[Headroom:])
	if r := w.splitUSO46(w.eng.st.Load(), buf, Headroom, &q, off, &sink{}); r.Verdict != Drop || r.Reason != ReasonMalformed {
		t.Errorf("verdict %d reason %v, want malformed", r.Verdict, r.Reason)
	}
}

func refreshIPv4Csum(p []byte) []byte {
	ihl := int(p[0]&15) * 4
	p[10], p[11] = 0, 0
	binary.BigEndian.PutUint16(p[10:], ^checksum.Checksum(p[:ihl], 0))
	return p
}

// BenchmarkUSOSplit46: a 44-datagram DF=0 super-packet (63 KB) cut and
// each datagram fragmented in two ("split"), against the same 44
// datagrams translated one by one ("alone": copy and Process each). Both
// copy the same bytes in; ns/datagram and cpu-ns/datagram (the thread's
// CPU time, honest on a shared machine) are the costs per datagram.
func BenchmarkUSOSplit46(b *testing.B) {
	c := splitCases()[len(splitCases())-1]
	in, base, alone := c.build()
	bench := func(b *testing.B, once func(w *Worker, buf []byte, sk Sink)) {
		w := newTestWorker(b, splitPolicy)
		buf := make([]byte, Headroom+len(in))
		sk := &nullSink{}
		b.SetBytes(int64(len(in)))
		b.ReportAllocs()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cpu0 := threadCPU()
		for b.Loop() {
			once(w, buf, sk)
		}
		n := float64(b.N * len(alone))
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/datagram")
		if cpu := threadCPU() - cpu0; cpu > 0 {
			b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/datagram")
		}
	}
	b.Run("split", func(b *testing.B) {
		var off Offload
		bench(b, func(w *Worker, buf []byte, sk Sink) {
			copy(buf[Headroom:], in)
			off = *base
			if r := w.Process(buf, Headroom, len(buf), &off, sk); r.Verdict != Consumed {
				b.Fatalf("verdict %d %v", r.Verdict, r.Reason)
			}
		})
	})
	b.Run("alone", func(b *testing.B) {
		bench(b, func(w *Worker, buf []byte, sk Sink) {
			for _, d := range alone {
				copy(buf[Headroom:], d)
				if r := w.Process(buf, Headroom, Headroom+len(d), nil, sk); r.Verdict != Consumed {
					b.Fatalf("verdict %d %v", r.Verdict, r.Reason)
				}
			}
		})
	})
}

// FuzzUSOSplit46 feeds IPv4 packets with USO metadata (gso_size and
// checksum flags fuzzed) to an engine whose IPv6 MTU makes large
// datagrams too big: no panic, every packet emitted well formed and, if
// a fragment, within lowest-ipv6-mtu; a drop counted.
func FuzzUSOSplit46(f *testing.F) {
	for _, c := range splitCases() {
		in, off, _ := c.build()
		f.Add(in, off.GSOSize, off.Flags)
	}
	short := ip4(C4, S4A, 64, 17, []byte{1, 2, 3, 4}, v4opt{nocsum: true})
	f.Add(short, uint16(1400), uint8(OffloadNeedsCsum))
	f.Add(ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(3000)), v4opt{}), uint16(0), uint8(0))
	f.Add(ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(3000)), v4opt{flags: DF}), uint16(1400), uint8(OffloadNeedsCsum))
	w := newTestWorker(f, splitPolicy)
	buf := make([]byte, Headroom+65536)
	f.Fuzz(func(t *testing.T, pkt []byte, gso uint16, flags uint8) {
		if len(pkt) == 0 || len(pkt) > 65535 {
			return
		}
		pkt[0] = 0x40 | pkt[0]&0x0f
		ihl := int(pkt[0]&15) * 4
		off := Offload{Flags: flags & (OffloadNeedsCsum | OffloadDataValid), GSOType: GSOUDPL4, GSOSize: gso,
			HdrLen: uint16(ihl + udpSize), CsumStart: uint16(ihl), CsumOffset: udpChecksum}
		n := copy(buf[Headroom:], pkt)
		sk := &sink{}
		drops := &w.C.Drops[Dir46]
		before := uint64(0)
		for i := range drops {
			before += drops[i].Load()
		}
		r := w.Process(buf, Headroom, Headroom+n, &off, sk)
		after := uint64(0)
		for i := range drops {
			after += drops[i].Load()
		}
		if (r.Verdict == Drop) != (after == before+1) {
			t.Fatalf("verdict %d reason %v: drops %d -> %d", r.Verdict, r.Reason, before, after)
		}
		for i, p := range sk.pkts {
			if err := wellFormed(p, false); err != nil {
				t.Fatalf("packet %d: %v", i, err)
			}
			if p[0]>>4 == 6 && p[6] == protoFragment && len(p) > 1280 {
				t.Fatalf("fragment %d of %d bytes", i, len(p))
			}
		}
		if r.Verdict == Consumed && n >= ihl+udpSize && pkt[9] == protoUDP {
			// Cut into datagrams: each one's UDP checksum is computed
			// afresh (or verified whole first), so every datagram, put
			// back together, carries a valid one over its IPv6 pseudo-header.
			for i, d := range reassembleSplit(sk.pkts) {
				if d[0]>>4 != 6 || d[6] != protoUDP {
					continue // an ICMPv4 error about the super-packet
				}
				if err := wellFormed(d, true); err != nil {
					t.Fatalf("datagram %d of a split: %v", i, err)
				}
			}
		}
	})
}
