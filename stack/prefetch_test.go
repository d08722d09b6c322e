package stack

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// prefetchProbe is the engine's Worker with a fake seam on Prefetch: it
// remembers the last two bytes of each packet announced (the datagrams'
// sequence numbers) in a fixed ring, without allocating, and checks that
// Process then gets the announced packets in order.
type prefetchProbe struct {
	*xlat.Worker
	calls, announced int
	largest          int
	seq              [256]uint16 // announced, not yet processed
	head, tail       int
	processed        int // packets Process got that were announced
	mismatches       int
}

func (p *prefetchProbe) Prefetch(pkts [][]byte) {
	p.calls++
	p.largest = max(p.largest, len(pkts))
	for _, b := range pkts {
		p.seq[p.tail%len(p.seq)] = uint16(b[len(b)-2])<<8 | uint16(b[len(b)-1])
		p.tail++
		p.announced++
	}
	p.Worker.Prefetch(pkts)
}

func (p *prefetchProbe) Process(buf []byte, start, end int, off *xlat.Offload, sink xlat.Sink) xlat.Result {
	if p.head < p.tail {
		if got := uint16(buf[end-2])<<8 | uint16(buf[end-1]); got != p.seq[p.head%len(p.seq)] {
			p.mismatches++
		}
		p.head++
		p.processed++
	}
	return p.Worker.Process(buf, start, end, off, sink)
}

// TestLinkLoopPrefetch: through the whole tun path over a socketpair
// (the queue on its io_uring), packets that arrive together are announced
// to the queue's translator (Worker.Prefetch, through the Handler's
// PrefetchBatch) before it translates them, the same packets in the same
// order, and a round of a batch allocates nothing.
func TestLinkLoopPrefetch(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts of gVisor's pooled PacketBuffers are meaningless under -race")
	}
	conn, peer := seqpacketPair(t)
	probe := &prefetchProbe{Worker: testEngine(t).NewWorker()}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := serveLink(ctx, func() Translator { return probe }, tun.NewEndpointConns([]tun.Conn{conn}, 1520, allOffloads), nil)
	if err != nil {
		t.Fatal(err)
	}
	const batch = 16
	var in [batch][]byte
	for i := range in {
		data := payload(64, byte(i))
		data[len(data)-2], data[len(data)-1] = 0x5a, byte(i)
		in[i] = vnetPacket(xlat.Offload{}, ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, data, false), 0, 0))
	}
	out := make([]byte, 2048)
	peer.SetReadDeadline(time.Now().Add(time.Minute))
	round := func() {
		for i := range in {
			if _, err := peer.Write(in[i]); err != nil {
				t.Fatal(err)
			}
		}
		for range in {
			if _, err := peer.Read(out); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 5 {
		round()
	}
	allocs := testing.AllocsPerRun(50, round)
	cancel()
	if err := d.Wait(); err != nil {
		t.Error(err)
	}
	// The probe is read after the queue's goroutine ended.
	if allocs != 0 {
		t.Errorf("%v allocations per round of %d packets", allocs, batch)
	}
	if probe.calls == 0 || probe.largest < 2 || probe.processed != probe.announced || probe.mismatches != 0 {
		t.Errorf("%d batches announced (the largest %d packets), %d packets announced, %d of them translated, %d out of order",
			probe.calls, probe.largest, probe.announced, probe.processed, probe.mismatches)
	}
	t.Logf("%d of %d packets announced in %d batches", probe.announced, 56*batch, probe.calls)
}

// BenchmarkHandlerBatch1M is the Handler's dispatch of a batch as a queue
// on its io_uring makes it, without the system calls: 16 UDP datagrams
// (the most reads a queue posts at once) to or from random servers of a
// table of 1,048,576 /32 <-> /128 mappings, delivered one by one
// ("deliver") or after the Handler's PrefetchBatch of the batch
// ("prefetch"). The packets are PacketBuffers from elsewhere, which the
// Handler copies into its frame (the fd path; a tun's queue delivers in
// place), their headers rewritten before each batch from a pool of 8192.
// cpu-ns/packet is the benchmarking thread's CPU time per packet.
func BenchmarkHandlerBatch1M(b *testing.B) {
	const n, batch, pool = 1 << 20, 16, 1 << 13
	entries, _, eng := engine1M(b, n)
	const udp = header.UDPProtocolNumber
	rnd := uint64(646)
	next := func() mapping.Entry {
		rnd = rnd*6364136223846793005 + 1442695040888963407
		return entries[(rnd>>33)%n]
	}
	for _, dir := range []string{"4to6", "6to4"} {
		proto, hdr := header.IPv4ProtocolNumber, 28
		if dir == "6to4" {
			proto, hdr = header.IPv6ProtocolNumber, 48
		}
		heads := make([]byte, 0, pool*hdr)
		var pkt []byte
		for range pool {
			e := next()
			s4, s6 := tcpip.AddrFrom4(e.IPv4.Addr().As4()), tcpip.AddrFrom16(e.IPv6.Addr().As16())
			if dir == "4to6" {
				pkt = ipv4(udp, cli4, s4, l4(udp, cli4, s4, payload(36, 1), false), 0, 0)
			} else {
				pkt = ipv6(udp, s6, cli6, l4(udp, s6, cli6, payload(16, 2), false))
			}
			heads = append(heads, pkt[:hdr]...)
		}
		var pbs [batch]*gvstack.PacketBuffer
		var views [batch][]byte
		for i := range pbs {
			pbs[i] = chainedPacket(append([]byte(nil), pkt...))
			views[i] = pbs[i].AsSlices()[0]
		}
		for _, prefetch := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/%s", dir, map[bool]string{false: "deliver", true: "prefetch"}[prefetch]), func(b *testing.B) {
				h := NewHandler(&captureWriter{discard: true}, 1, func() Translator { return eng.NewWorker() }, nil)
				b.ReportAllocs()
				runtime.LockOSThread() // for threadCPU
				defer runtime.UnlockOSThread()
				from := 0
				cpu0, wall0 := threadCPU(), time.Now()
				for b.Loop() {
					for i := range views {
						copy(views[i], heads[(from+i)*hdr:(from+i+1)*hdr])
					}
					if from += batch; from == pool {
						from = 0
					}
					if prefetch {
						h.PrefetchBatch(0, views[:])
					}
					for _, pb := range pbs {
						h.DeliverNetworkPacket(proto, pb)
					}
				}
				b.StopTimer()
				pkts := float64(b.N * batch)
				b.ReportMetric(float64(time.Since(wall0).Nanoseconds())/pkts, "ns/packet")
				b.ReportMetric(float64((threadCPU()-cpu0).Nanoseconds())/pkts, "cpu-ns/packet")
				if s := h.Stats(); s.Writes != s.Reads || s.Reads == 0 {
					b.Fatalf("%d of %d packets written", s.Writes, s.Reads)
				}
			})
		}
	}
}

// BenchmarkHandlerOneFlow is a bulk flow's data path in a table of one and
// of 1,048,576 mappings: batches of 16 UDP datagrams of one flow (the
// same addresses in every packet, as a TCP stream's segments with GRO
// off; as large as the tests' engine forwards unfragmented, 1260 B IPv4
// and 1280 B IPv6), handed over with PrefetchBatch and delivered, as a
// queue on its io_uring does, in each direction. The question it answers: does a
// large table cost a flow whose key repeats anything per packet (the
// prefetch pass hashes and loads every packet's keys, repeated or not)?
// cpu-ns/packet is the benchmarking thread's CPU time per packet.
func BenchmarkHandlerOneFlow(b *testing.B) {
	const udp, batch = header.UDPProtocolNumber, 16
	for _, size := range []int{1, 1 << 20} {
		entries, _, eng := engine1M(b, size)
		e := entries[len(entries)/3]
		s4, s6 := tcpip.AddrFrom4(e.IPv4.Addr().As4()), tcpip.AddrFrom16(e.IPv6.Addr().As16())
		for _, dir := range []string{"4to6", "6to4"} {
			proto := header.IPv4ProtocolNumber
			pkt := ipv4(udp, cli4, s4, l4(udp, cli4, s4, payload(1232, 1), false), 0, 0)
			if dir == "6to4" {
				proto = header.IPv6ProtocolNumber
				pkt = ipv6(udp, s6, cli6, l4(udp, s6, cli6, payload(1232, 2), false))
			}
			b.Run(fmt.Sprintf("%s/%s", map[int]string{1: "1", 1 << 20: "1M"}[size], dir), func(b *testing.B) {
				h := NewHandler(&captureWriter{discard: true}, 1, func() Translator { return eng.NewWorker() }, nil)
				var pbs [batch]*gvstack.PacketBuffer
				var views [batch][]byte
				for i := range pbs {
					pbs[i] = chainedPacket(append([]byte(nil), pkt...))
					views[i] = pbs[i].AsSlices()[0]
				}
				b.ReportAllocs()
				runtime.LockOSThread() // for threadCPU
				defer runtime.UnlockOSThread()
				cpu0 := threadCPU()
				for b.Loop() {
					for i := range views {
						copy(views[i], pkt[:48]) // the headers the engine rewrote
					}
					h.PrefetchBatch(0, views[:])
					for _, pb := range pbs {
						h.DeliverNetworkPacket(proto, pb)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64((threadCPU()-cpu0).Nanoseconds())/float64(b.N*batch), "cpu-ns/packet")
				if s := h.Stats(); s.Writes != s.Reads || s.Reads == 0 {
					b.Fatalf("%d reads, %d writes", s.Reads, s.Writes)
				}
				for _, pb := range pbs {
					pb.DecRef()
				}
			})
		}
	}
}
