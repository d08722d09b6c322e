package xlat

import (
	"runtime"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// benchPackets are the per-kind inputs of the benchmarks and of the
// allocation test.
func benchPackets() []struct {
	name string
	pkt  []byte
	off  *Offload
} {
	tcp := tcpSeg(443, 33000, header.TCPFlagAck, 5, 1001, []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, payload(64))
	gsoSeg := tcpSeg(5001, 40000, header.TCPFlagAck, 1, 2, make([]byte, 12), payload(65535-20-32))
	gso4 := ip4(C4, S4A, 64, 6, gsoSeg, v4opt{flags: DF})
	gsoOff := makePartial(gso4)
	gsoOff.GSOType, gsoOff.GSOSize, gsoOff.HdrLen = GSOTCPv4, 1448, 52
	return []struct {
		name string
		pkt  []byte
		off  *Offload
	}{
		{"tcp/4to6", ip4(C4, S4A, 64, 6, tcp, v4opt{flags: DF}), nil},
		{"tcp/6to4", ip6(S6A, C6, 64, 6, tcp, v6opt{}), nil},
		{"udp/4to6", ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(64)), v4opt{}), nil},
		{"udp/6to4", ip6(S6A, C6, 64, 17, udpSeg(1, 2, payload(64)), v6opt{}), nil},
		{"echo/4to6", ip4(C4, S4A, 64, 1, icmpMsg(8, 0, 1, payload(56)), v4opt{}), nil},
		{"echo/6to4", ip6(S6A, C6, 64, 58, icmpMsg(129, 0, 1, payload(56)), v6opt{}), nil},
		{"gso64k/4to6", gso4, gsoOff},
		{"fragment/4to6", ip4(C4, S4A, 64, 17, firstFragment(), v4opt{id: 7, flags: MF, nocsum: true}), nil},
		{"fragment/6to4", ip6(S6A, C6, 64, 44, nil, v6opt{nocsum: true, extNH: 44, ext: append(fragHdr(17, 0, true, 9), udpSeg(1, 2, payload(800))...)}), nil},
		{"split1400/4to6", ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(1372)), v4opt{}), nil},
		{"icmperr/4to6", ip4(R4, S4A, 64, 1, icmpMsg(3, 4, 1400, innerV4(60)), v4opt{}), nil},
		{"icmperr/6to4", ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 0, innerV6(60)), v6opt{}), nil},
		{"hairpin/6to6", ip6(S6A, v4in6(S4B), 64, 17, udpSeg(1, 2, payload(64)), v6opt{}), nil},
		{"ownecho/4to6", ip4(C4, SELF4, 64, 1, icmpMsg(8, 0, 1, payload(56)), v4opt{}), nil},
		{"ownecho/6to4", ip6(S6A, v4in6(SELF4), 64, 58, icmpMsg(128, 0, 1, payload(56)), v6opt{}), nil},
		{"ownerr/6to4", ip6(S6A, C6, 64, 17, udpSeg(1, 2, payload(8)), v6opt{extNH: 43,
			ext: []byte{17, 2, 0, 1, 0, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}}), nil},
	}
}

type nullSink struct{ n int }

func (s *nullSink) Emit(p []byte, _ *Offload) { s.n += len(p) }

// Each iteration restores the header bytes that translation rewrites
// (the payload is never touched), then translates in place.
func BenchmarkProcess(b *testing.B) {
	for _, c := range benchPackets() {
		b.Run(c.name, func(b *testing.B) {
			w := newTestWorker(b, nil)
			// A clock a second ahead at every reading keeps the error
			// rate limit's bucket full: the echo replies and errors the
			// translator makes are measured, not the drops once it is
			// empty (which failed the own* benchmarks in long runs).
			var clock int64
			w.now = func() int64 { clock += int64(time.Second); return clock }
			buf := make([]byte, Headroom+len(c.pkt))
			copy(buf[Headroom:], c.pkt)
			orig := append([]byte(nil), buf...)
			restore := min(len(buf), Headroom+128)
			var off Offload
			sk := &nullSink{}
			b.SetBytes(int64(len(c.pkt)))
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0 := threadCPU()
			for b.Loop() {
				copy(buf[:restore], orig[:restore])
				var o *Offload
				if c.off != nil {
					off = *c.off
					o = &off
				}
				if r := w.Process(buf, Headroom, len(buf), o, sk); r.Verdict == Drop && r.Reason != ReasonSegmentsLeft {
					b.Fatalf("dropped: %v", r.Reason)
				}
			}
			if cpu := threadCPU() - cpu0; cpu > 0 {
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			}
		})
	}
}

// Nothing on the packet path allocates (DESIGN.md: per-packet allocation
// must be zero), errors and fragments included.
func TestNoAllocs(t *testing.T) {
	for _, c := range benchPackets() {
		w := newTestWorker(t, nil)
		buf := make([]byte, Headroom+len(c.pkt))
		orig := make([]byte, len(c.pkt))
		copy(orig, c.pkt)
		var off Offload
		sk := &nullSink{}
		allocs := testing.AllocsPerRun(50, func() {
			copy(buf[Headroom:], orig)
			var o *Offload
			if c.off != nil {
				off = *c.off
				o = &off
			}
			w.Process(buf, Headroom, len(buf), o, sk)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per packet", c.name, allocs)
		}
	}
}

// firstFragment is the first 808 bytes of a UDP datagram with a valid
// checksum over all of it.
func firstFragment() []byte {
	d := udpSeg(1, 2, payload(1000))
	fillCsum4(C4, S4A, 17, d)
	return d[:808]
}

// The rarer paths stay allocation-free too: the cut RFC 4884 quote, the
// hairpinned error, the DF=0 super-packet cut to lowest-ipv6-mtu, the
// fragments for a next hop below it, and an error quoting another's
// packet, dropped.
func TestNoAllocsEdgePaths(t *testing.T) {
	ext := []byte{0x20, 0, 0, 0, 0, 8, 1, 1, 0, 0, 0, 7}
	gso4 := ip4(C4, S4A, 64, 6, tcpSeg(5001, 40000, header.TCPFlagAck, 1, 2, nil, payload(8*1448)), v4opt{})
	gsoOff := makePartial(gso4)
	gsoOff.GSOType, gsoOff.GSOSize, gsoOff.HdrLen = GSOTCPv4, 1448, 40
	for _, c := range []struct {
		name string
		pkt  []byte
		off  *Offload
		pol  func(*Policy)
	}{
		{"rfc4884-cut/6to4", ip6(S6A, C6, 64, 58, icmpMsg(1, 4, 138<<24, append(innerV6(1056), ext...)), v6opt{}), nil, nil},
		{"hairpin-error/6to6", ip6(S6B, v4in6(S4A), 64, 58, icmpMsg(1, 4, 0, ip6(v4in6(S4A), S6B, 60, 17, udpSeg(1, 2, payload(20)), v6opt{})), v6opt{}), nil,
			func(p *Policy) { p.DecrementTTL = true }},
		{"gso-df0/4to6", gso4, gsoOff, nil},
		{"split-next-hop/4to6", ip4(C4, S4A, 64, 17, udpSeg(1, 2, payload(1392)), v4opt{}), nil,
			func(p *Policy) { p.LowestIPv6MTU, p.IPv6MTU = 1500, 1400 }},
		{"quote-not-sender/6to4", ip6(R6X, v4in6("192.0.2.99"), 64, 58, icmpMsg(1, 4, 0, innerV6(60)), v6opt{}), nil, nil},
	} {
		w := newTestWorker(t, c.pol)
		buf := make([]byte, Headroom+len(c.pkt))
		var off Offload
		sk := &nullSink{}
		allocs := testing.AllocsPerRun(50, func() {
			copy(buf[Headroom:], c.pkt)
			var o *Offload
			if c.off != nil {
				off = *c.off
				o = &off
			}
			w.Process(buf, Headroom, len(buf), o, sk)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per packet", c.name, allocs)
		}
	}
}
