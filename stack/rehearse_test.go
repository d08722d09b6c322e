package stack

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// TestHandlerWarmQueueRehearses: WarmQueue replays the first packet the
// queue forwarded after its last idle period through a translator whose
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
	if got := q.reh.pkt[q.reh.cur][:q.reh.n]; !bytes.Equal(got, first) {
		t.Fatalf("replayed packet is %d bytes, want the first forwarded after idle (%d bytes)", len(got), len(first))
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
	if q := h.queues[0]; q.reh.n != 0 || q.reh.runs != 0 || q.reh.frame != nil {
		t.Errorf("sampled %d bytes, %d rehearsals, frame %v: want none", q.reh.n, q.reh.runs, q.reh.frame != nil)
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
