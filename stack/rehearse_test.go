package stack

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// TestHandlerWarmQueueRehearses: WarmQueue replays the first packet the
// queue forwarded after its last idle period (of each direction: see
// TestHandlerWarmQueueRehearsesBothDirections) through a translator whose
// work is counted nowhere, and writes nothing: the link sees no packet,
// the engine's totals and the link counters do not move. A packet the
// engine drops does not become the one replayed, and neither does one
// that is not the first after an idle period.
func TestHandlerWarmQueueRehearses(t *testing.T) {
	const udp = header.UDPProtocolNumber
	eng := testEngine(t)
	out := &captureWriter{}
	h := NewHandler(out, 1, func() Translator { return eng.NewWorker() }, nil)
	q := h.queues[0]
	if q.reh.tr == nil {
		t.Fatal("the engine's worker gave the handler no rehearsal translator")
	}
	deliver := func(pkt []byte) {
		t.Helper()
		pb := chainedPacket(pkt)
		h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pb)
		pb.DecRef()
	}
	unmapped := tcpip.AddrFrom4(netip.MustParseAddr("198.51.100.99").As4())
	first := ipv4(udp, cli4, srv4, l4(udp, cli4, srv4, payload(56, 1), false), 0, 0)
	second := ipv4(udp, cli4, srv4, l4(udp, cli4, srv4, payload(300, 2), false), 0, 0)
	dropped := ipv4(udp, cli4, unmapped, l4(udp, cli4, unmapped, payload(56, 3), false), 0, 0)

	h.WarmQueue(0) // nothing forwarded yet: nothing to replay
	if q.reh.runs != 0 {
		t.Fatalf("%d rehearsals before any packet", q.reh.runs)
	}
	h.QueueIdle(0)
	deliver(dropped) // dropped: not replayed
	deliver(first)   // the first forwarded after the idle period
	deliver(second)  // not the first
	if s := &q.reh.dirs[dir4]; !bytes.Equal(s.pkt[s.cur][:s.n], first) {
		t.Fatalf("replayed packet is %d bytes, want the first forwarded after idle (%d bytes)", s.n, len(first))
	}
	h.QueueIdle(0)
	written, stats, totals := out.n, h.Stats(), eng.Totals()
	if written != 2 || totals.Packets[xlat.Dir46][xlat.ProtoUDP] != 2 {
		t.Fatalf("before rehearsals: %d written, %d counted, want 2 and 2", written, totals.Packets[xlat.Dir46][xlat.ProtoUDP])
	}
	for range 5 {
		h.WarmQueue(0)
	}
	h.QueueIdle(0)
	if q.reh.runs != 5 {
		t.Errorf("%d rehearsals forwarded, want 5", q.reh.runs)
	}
	if out.n != written {
		t.Errorf("rehearsals wrote %d packets", out.n-written)
	}
	if got := eng.Totals(); got != totals {
		t.Errorf("rehearsals changed the engine's totals:\n%+v\nwant\n%+v", got, totals)
	}
	if got := h.Stats(); got != stats {
		t.Errorf("rehearsals changed the link counters:\n%+v\nwant\n%+v", got, stats)
	}
	if !raceEnabled {
		if a := testing.AllocsPerRun(100, func() { h.WarmQueue(0) }); a != 0 {
			t.Errorf("%v allocations per rehearsal", a)
		}
	}
}

// TestHandlerWarmQueueRehearsesBothDirections: a queue carries both
// directions of a flow (the steering program's doing), so it keeps the
// first IPv4 and the first IPv6 packet forwarded after an idle period
// and replays both: a reply that follows its request with or without an
// idle period between them does not replace the request, and the next
// request and reply both find their own lookups' lines and code warm. A
// later idle period with traffic in one direction only renews that
// direction's sample. The direction of the first packet after the
// rehearsals is replayed last (its path freshest when the next exchange
// starts).
func TestHandlerWarmQueueRehearsesBothDirections(t *testing.T) {
	const udp = header.UDPProtocolNumber
	request := func(n int, seed byte) []byte {
		return ipv4(udp, cli4, srv4, l4(udp, cli4, srv4, payload(n, seed), false), 0, 0)
	}
	reply := func(n int, seed byte) []byte {
		return ipv6(udp, srv6, cli6, l4(udp, srv6, cli6, payload(n, seed), false))
	}
	for _, idleBetween := range []bool{false, true} {
		eng := testEngine(t)
		out := &captureWriter{}
		h := NewHandler(out, 1, func() Translator { return eng.NewWorker() }, nil)
		q := h.queues[0]
		deliver := func(pkt []byte) {
			t.Helper()
			proto := header.IPv4ProtocolNumber
			if pkt[0]>>4 == 6 {
				proto = header.IPv6ProtocolNumber
			}
			pb := chainedPacket(pkt)
			h.DeliverNetworkPacket(proto, pb)
			pb.DecRef()
		}
		sampled := func(d int) []byte {
			s := &q.reh.dirs[d]
			return s.pkt[s.cur][:s.n]
		}
		req1, rep1 := request(56, 1), reply(56, 2)
		h.QueueIdle(0)
		deliver(req1)
		if idleBetween {
			h.QueueIdle(0)
		}
		deliver(rep1)
		if !idleBetween {
			deliver(request(80, 3)) // not the first of either direction
			deliver(reply(80, 4))
		}
		if !bytes.Equal(sampled(dir4), req1) || !bytes.Equal(sampled(dir6), rep1) {
			t.Fatalf("idle between: %v: samples of %d and %d bytes, want the request (%d) and the reply (%d)",
				idleBetween, len(sampled(dir4)), len(sampled(dir6)), len(req1), len(rep1))
		}
		h.QueueIdle(0)
		written, totals := out.n, eng.Totals()
		for range 3 {
			h.WarmQueue(0)
		}
		if q.reh.runs != 6 {
			t.Errorf("idle between: %v: %d rehearsals forwarded after 3 periods, want 6 (both directions)", idleBetween, q.reh.runs)
		}
		if out.n != written || eng.Totals() != totals {
			t.Errorf("idle between: %v: rehearsals wrote %d packets or moved the totals", idleBetween, out.n-written)
		}
		if q.reh.lead != dir4 {
			t.Errorf("idle between: %v: the direction replayed last is %d, want the request's (%d)", idleBetween, q.reh.lead, dir4)
		}
		// After rehearsals, a reply that comes first (the other side
		// starts the next exchange) becomes the direction replayed last,
		// and a request behind it does not take that over.
		rep2 := reply(100, 5)
		deliver(rep2)
		h.QueueIdle(0)
		deliver(request(90, 6))
		if q.reh.lead != dir6 || !bytes.Equal(sampled(dir6), rep2) {
			t.Errorf("idle between: %v: lead %d and a reply sample of %d bytes after a reply came first, want %d and %d",
				idleBetween, q.reh.lead, len(sampled(dir6)), dir6, len(rep2))
		}
		h.WarmQueue(0)
		h.QueueIdle(0)
		req2 := request(100, 5)
		deliver(req2)
		if !bytes.Equal(sampled(dir4), req2) || !bytes.Equal(sampled(dir6), rep2) || q.reh.lead != dir4 {
			t.Errorf("idle between: %v: after a request alone, samples of %d and %d bytes and lead %d, want the new request (%d), the last reply (%d) and %d",
				idleBetween, len(sampled(dir4)), len(sampled(dir6)), q.reh.lead, len(req2), len(rep2), dir4)
		}
	}
}

// TestHandlerWarmQueueWithoutRehearsal: a translator that cannot make a
// rehearsal translator (not an *xlat.Worker) gets no rehearsals and no
// copies of its packets.
func TestHandlerWarmQueueWithoutRehearsal(t *testing.T) {
	out := &captureWriter{}
	h := NewHandler(out, 1, func() Translator { return &fakeTranslator{t: t} }, nil)
	h.QueueIdle(0)
	pb := chainedPacket(testPacket(4, markForward, 100))
	h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pb)
	pb.DecRef()
	h.WarmQueue(0)
	if q := h.queues[0]; q.reh.dirs[dir4].n != 0 || q.reh.runs != 0 || q.reh.frame != nil {
		t.Errorf("sampled %d bytes, %d rehearsals, frame %v: want none", q.reh.dirs[dir4].n, q.reh.runs, q.reh.frame != nil)
	}
	if out.n != 1 {
		t.Errorf("%d packets written, want 1", out.n)
	}
}

// BenchmarkHandlerWarmQueue is the cost of one rehearsal (a queue in its
// raw wait pays it every millisecond): a 64-byte UDP packet through the
// real engine, and the PacketBuffer it would go out in.
func BenchmarkHandlerWarmQueue(b *testing.B) {
	const udp = header.UDPProtocolNumber
	eng := testEngine(b)
	h := NewHandler(&captureWriter{discard: true}, 1, func() Translator { return eng.NewWorker() }, nil)
	pkt := ipv4(udp, cli4, srv4, l4(udp, cli4, srv4, payload(36, 1), false), 0, 0)
	h.QueueIdle(0)
	pb := chainedPacket(pkt)
	h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pb)
	pb.DecRef()
	b.ReportAllocs()
	for b.Loop() {
		h.WarmQueue(0)
	}
	if h.queues[0].reh.runs == 0 {
		b.Fatal("nothing rehearsed")
	}
}

// TestLinkRehearsalsWriteNothing: a Handler on the queue loop of an
// inherited tun's descriptor (tun.NewEndpointFiles: the 2 s raw wait,
// rehearsals every millisecond of it) translates packets that come a few
// rehearsals apart, each written once; the rehearsals between them write
// nothing and count nothing (the link sees exactly the translations, the
// engine's totals and the link counters exactly the live packets), and
// under -race they share nothing unsynchronized with the live path.
func TestLinkRehearsalsWriteNothing(t *testing.T) {
	const udp = header.UDPProtocolNumber
	eng := testEngine(t)
	c, peer := seqpacketPair(t)
	ep, err := tun.NewEndpointFiles([]*os.File{c}, 1520, 0, tun.VnetHdrLen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := serveLink(ctx, func() Translator { return eng.NewWorker() }, ep, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 30
	for i := range n {
		pkt := ipv4(udp, cli4, srv4, l4(udp, cli4, srv4, payload(56, byte(i)), false), 0, 0)
		if _, err := peer.Write(vnetPacket(xlat.Offload{}, pkt)); err != nil {
			t.Fatal(err)
		}
		if _, got := readPacket(t, peer); len(got) != len(pkt)+20 || got[0]>>4 != 6 {
			t.Fatalf("packet %d: %d bytes out of %d, version %d", i, len(got), len(pkt), got[0]>>4)
		}
		time.Sleep(3 * time.Millisecond) // rehearsals
	}
	expectNoPacket(t, peer) // 50 ms of rehearsals more
	cancel()
	if err := d.Wait(); err != nil {
		t.Fatal(err)
	}
	if runs := d.handler.queues[0].reh.runs; runs < n {
		t.Fatalf("%d rehearsals between %d packets a few ms apart", runs, n)
	}
	tot := eng.Totals()
	if tot.Packets[xlat.Dir46][xlat.ProtoUDP] != n || tot.Bytes[xlat.Dir46] != n*(20+8+56) || tot.Emitted != 0 {
		t.Errorf("engine counted %d packets, %d bytes, %d emitted; want %d, %d, 0", tot.Packets[xlat.Dir46][xlat.ProtoUDP], tot.Bytes[xlat.Dir46], tot.Emitted, n, n*(20+8+56))
	}
	for dir := range tot.Drops {
		for why, c := range tot.Drops[dir] {
			if c != 0 {
				t.Errorf("%d drops %v", c, xlat.Reason(why))
			}
		}
	}
	if s := d.LinkStats(); s.Reads != n || s.Writes != n || s.WriteErrors != 0 || s.Panics != 0 {
		t.Errorf("link counters %+v, want %d reads and writes", s, n)
	}
}

// BenchmarkHandlerSparsePair is a sparse ping's work in a table of one
// and of 1,048,576 /32 <-> /128 mappings: a request (IPv4, to a mapped server)
// and its reply (IPv6) delivered back to back on one queue, as the
// steering program puts them, after everything the previous pair touched
// was pushed out of the caches by writing a buffer larger than the last
// level cache (the work of other processes between two pings a
// millisecond or more apart). "cold" delivers the pair on a cold path;
// "rehearsed" has the queue rehearse (WarmQueue) after the eviction, as
// its raw wait does every millisecond. ns/pair is the median of the
// pair's delivery alone (ns/op includes the eviction). Run it with
// -benchtime=200x: each eviction writes to 64 MiB.
func BenchmarkHandlerSparsePair(b *testing.B) {
	const udp = header.UDPProtocolNumber
	evict := make([]byte, 64<<20)
	for _, size := range []int{1, 1 << 20} {
		entries, _, eng := engine1M(b, size)
		e := entries[len(entries)/3]
		s4, s6 := tcpip.AddrFrom4(e.IPv4.Addr().As4()), tcpip.AddrFrom16(e.IPv6.Addr().As16())
		request := ipv4(udp, cli4, s4, l4(udp, cli4, s4, payload(56, 1), false), 0, 0)
		reply := ipv6(udp, s6, cli6, l4(udp, s6, cli6, payload(56, 2), false))
		for _, rehearse := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/%s", map[int]string{1: "1", 1 << 20: "1M"}[size], map[bool]string{false: "cold", true: "rehearsed"}[rehearse]), func(b *testing.B) {
				h := NewHandler(&captureWriter{discard: true}, 1, func() Translator { return eng.NewWorker() }, nil)
				deliver := func(proto tcpip.NetworkProtocolNumber, pkt []byte) {
					pb := chainedPacket(pkt)
					h.DeliverNetworkPacket(proto, pb)
					pb.DecRef()
				}
				var pairs []time.Duration
				for b.Loop() {
					for i := 0; i < len(evict); i += 64 {
						evict[i]++
					}
					if rehearse {
						h.WarmQueue(0)
					}
					t0 := time.Now()
					h.QueueIdle(0)
					deliver(header.IPv4ProtocolNumber, request)
					deliver(header.IPv6ProtocolNumber, reply)
					pairs = append(pairs, time.Since(t0))
				}
				slices.Sort(pairs)
				b.ReportMetric(float64(pairs[len(pairs)/2].Nanoseconds()), "ns/pair")
				if s := h.Stats(); s.Writes != 2*uint64(b.N) {
					b.Fatalf("%d packets written for %d pairs", s.Writes, b.N)
				}
			})
		}
	}
}
