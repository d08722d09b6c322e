package stack

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// captureWriter is a gvstack.LinkWriter that keeps copies of what is
// written (or only counts, if discard is set).
type captureWriter struct {
	pkts    [][]byte
	discard bool
	n       int
}

func (w *captureWriter) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	for _, p := range pkts.AsSlice() {
		w.n++
		if !w.discard {
			b := p.ToBuffer()
			w.pkts = append(w.pkts, b.Flatten())
			b.Release()
		}
	}
	return pkts.Len(), nil
}

// chainedPacket makes a PacketBuffer whose bytes are spread over several
// views, as fdbased's readv buffers deliver them.
func chainedPacket(pkt []byte, cuts ...int) *gvstack.PacketBuffer {
	var b buffer.Buffer
	prev := 0
	for _, c := range append(cuts, len(pkt)) {
		b.Append(buffer.NewViewWithData(pkt[prev:c]))
		prev = c
	}
	return gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: b})
}

func TestHandlerDeliver(t *testing.T) {
	out := &captureWriter{}
	fake := &fakeTranslator{t: t}
	h := NewHandler(out, 1, func() Translator { return fake }, nil)

	v4 := testPacket(4, markForward, 1400)
	pkt := chainedPacket(v4, 7, 128, 384)
	h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
	pkt.DecRef()
	v6 := testPacket(6, markForward, 200)
	pkt = chainedPacket(v6)
	h.DeliverNetworkPacket(header.IPv6ProtocolNumber, pkt)
	pkt.DecRef()
	for _, mark := range []byte{markEmit, markDrop} {
		pkt = chainedPacket(testPacket(4, mark, 40), 20)
		h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
		pkt.DecRef()
	}
	// Larger than any IP packet: the link truncated or garbled it.
	pkt = chainedPacket(make([]byte, maxPacket+1), 1000)
	h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
	pkt.DecRef()

	want := [][]byte{
		append(bytes.Repeat([]byte{0x66}, 20), v4...),
		v6[20:],
		emitted1,
		emitted2,
	}
	if len(out.pkts) != len(want) {
		t.Fatalf("%d packets written, want %d", len(out.pkts), len(want))
	}
	for i := range want {
		if !bytes.Equal(out.pkts[i], want[i]) {
			t.Errorf("packet %d: % x..., want % x...", i, out.pkts[i][:min(24, len(out.pkts[i]))], want[i][:min(24, len(want[i]))])
		}
	}
	if s := h.Stats(); s != (LinkStats{Reads: 5, Writes: 4, ReadErrors: 1}) {
		t.Errorf("stats %+v", s)
	}
	h.DeliverLinkPacket(header.IPv4ProtocolNumber, nil) // nothing to do, must not crash
}

func TestHandlerAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts of gVisor's pooled PacketBuffers are meaningless under -race")
	}
	for _, mark := range []byte{markForward, markEmit} {
		out := &captureWriter{discard: true}
		h := NewHandler(out, 1, func() Translator { return &fakeTranslator{t: t} }, nil)
		pkt := chainedPacket(testPacket(4, mark, 1500), 128, 384)
		if a := testing.AllocsPerRun(1000, func() { h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt) }); a != 0 {
			t.Errorf("mark %#x: %v allocations per packet", mark, a)
		}
		pkt.DecRef()
		if out.n == 0 {
			t.Errorf("mark %#x: nothing written", mark)
		}
	}
}

// A translated ICMP error that grows (RFC 4884 section 4.5 pads a short
// quote to 128 bytes) is written whole through the Handler, not lost as a
// write error for landing in the link's header room.
func TestHandlerGrowingICMPError(t *testing.T) {
	const udp = header.UDPProtocolNumber
	inner := ipv4(udp, srv4, cli4, l4(udp, srv4, cli4, payload(200, 3), false), 0, 0)
	ext := []byte{0x20, 0, 0, 0, 0, 8, 1, 1, 0, 0, 0, 7}
	router := tcpip.AddrFrom4(netip.MustParseAddr("203.0.113.200").As4())
	for _, quote := range []int{76, 128} { // grows by 72 and 16 bytes
		icmp := make([]byte, header.ICMPv4MinimumSize, header.ICMPv4MinimumSize+quote+len(ext))
		icmp[0], icmp[1], icmp[5] = 3, 3, byte(quote/4) // Port Unreachable, RFC 4884 length
		icmp = append(append(icmp, inner[:quote]...), ext...)
		binary.BigEndian.PutUint16(icmp[2:], ^checksum.Checksum(icmp, 0))
		out := &captureWriter{}
		eng := testEngine(t)
		h := NewHandler(out, 1, func() Translator { return eng.NewWorker() }, nil)
		pb := chainedPacket(ipv4(header.ICMPv4ProtocolNumber, router, srv4, icmp, 0, 0))
		h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pb)
		pb.DecRef()
		if st := h.Stats(); len(out.pkts) != 1 || st.WriteErrors != 0 {
			t.Errorf("quote %d: %d packets written, %d write errors; want the translated error written", quote, len(out.pkts), st.WriteErrors)
		}
	}
}

func BenchmarkHandlerDeliverFake(b *testing.B) {
	h := NewHandler(&captureWriter{discard: true}, 1, func() Translator { return &fakeTranslator{t: b} }, nil)
	pkt := chainedPacket(testPacket(4, markForward, 1500), 128, 384)
	defer pkt.DecRef()
	b.ReportAllocs()
	b.SetBytes(1500)
	for b.Loop() {
		h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
	}
}

// TestServeFDFake runs the fdbased path over a socketpair: bare packets in,
// translated packets out.
func TestServeFDFake(t *testing.T) {
	conn, peer := seqpacketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := serveFDs(ctx, func() Translator { return &fakeTranslator{t: t} }, []int{int(conn.Fd())}, 1500, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	v4 := testPacket(4, markForward, 1000)
	peer.Write(v4)
	buf := make([]byte, 2000)
	peer.SetReadDeadline(timeIn(t))
	n, err := peer.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(bytes.Repeat([]byte{0x66}, 20), v4...); !bytes.Equal(buf[:n], want) {
		t.Errorf("got %d bytes, want %d", n, len(want))
	}
	if !d.Healthy() {
		t.Errorf("unhealthy: %v", d.Check())
	}
	waitFor(t, "the write to be counted", func() bool { return d.LinkStats().Writes == 1 })
	if s := d.LinkStats(); s != (LinkStats{Reads: 1, Writes: 1}) {
		t.Errorf("stats %+v", s)
	}
	cancel()
	if err := d.Wait(); err != nil {
		t.Errorf("Wait: %v", err)
	}
	if d.Healthy() {
		t.Error("healthy after stop")
	}
}

// TestServeFDPeerClosed: when the other end of the descriptor goes away the
// data path stops and says so.
func TestServeFDPeerClosed(t *testing.T) {
	conn, peer := seqpacketPair(t)
	rc, _ := conn.SyscallConn()
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	d, err := serveFDs(context.Background(), func() Translator { return &fakeTranslator{t: t} }, []int{fd}, 1500, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Healthy() {
		t.Fatalf("unhealthy at start: %v", d.Check())
	}
	peer.Close()
	done := make(chan error)
	go func() { done <- d.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Wait returned nil: an unexpected end of the link is a fault")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the peer closed")
	}
	if d.Healthy() {
		t.Error("healthy after the peer closed")
	}
}

// TestServeAgain: a device can be served again after a stopped Datapath.
func TestServeAgain(t *testing.T) {
	conn, peer := seqpacketPair(t)
	for round := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		d, err := serveConns(ctx, []tun.Conn{conn}, func() Translator { return &fakeTranslator{t: t} })
		if err != nil {
			t.Fatal(err)
		}
		peer.Write(vnetPacket(xlat.Offload{}, testPacket(6, markForward, 60)))
		if _, got := readPacket(t, peer); len(got) != 40 {
			t.Errorf("round %d: got %d bytes", round, len(got))
		}
		cancel()
		if err := d.Wait(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHandlerOffload: a delivered packet's GSOOptions reach the engine as
// its offload metadata and the translated metadata goes out in the
// written PacketBuffer; metadata the engine must not trust is counted and
// dropped.
func TestHandlerOffload(t *testing.T) {
	var got gvstack.GSO
	out := &gsoWriter{got: &got}
	h := NewHandler(out, 1, func() Translator { return &fakeTranslator{t: t} }, nil)
	pkt := chainedPacket(tcp4Packet(markForward, 3000), 100)
	pkt.GSOOptions = gvstack.GSO{Type: gvstack.GSOTCPv4, NeedsCsum: true, L3HdrLen: 20, CsumOffset: 16, MSS: 1000, MaxSize: 65535}
	h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
	pkt.DecRef()
	// fakeTranslator turns TCPv4 GSO into TCPv6 and moves csum_start by 20.
	want := gvstack.GSO{Type: gvstack.GSOTCPv6, NeedsCsum: true, L3HdrLen: 40, CsumOffset: 16, MSS: 1000, MaxSize: 65535}
	if got != want {
		t.Errorf("written GSO %+v, want %+v", got, want)
	}
	for _, bad := range []gvstack.GSO{
		{Type: gvstack.GSOGvisor, MSS: 1000},              // no virtio_net_hdr form
		{Type: gvstack.GSOTCPv4, MSS: 1000},               // segmentation without a partial checksum
		{NeedsCsum: true, L3HdrLen: 2990, CsumOffset: 16}, // checksum field outside the packet
	} {
		pkt := chainedPacket(testPacket(4, markForward, 3000), 100)
		pkt.GSOOptions = bad
		h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
		pkt.DecRef()
	}
	if s := h.Stats(); s != (LinkStats{Reads: 4, Writes: 1, InvalidVnetHdr: 3}) {
		t.Errorf("stats %+v", s)
	}
}

// gsoWriter records the GSOOptions of what is written.
type gsoWriter struct{ got *gvstack.GSO }

func (w *gsoWriter) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	for _, p := range pkts.AsSlice() {
		*w.got = p.GSOOptions
	}
	return pkts.Len(), nil
}

// keepWriter keeps a reference to every packet written, as a queueing
// discipline does.
type keepWriter struct{ kept []*gvstack.PacketBuffer }

func (w *keepWriter) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	for _, p := range pkts.AsSlice() {
		w.kept = append(w.kept, p.IncRef())
	}
	return pkts.Len(), nil
}

// TestHandlerWriterKeeps: a packet from another link is translated in the
// queue's copy frame and written as a PacketBuffer over it; a writer that
// keeps that PacketBuffer keeps its bytes intact, because the queue moves
// on to a new frame.
func TestHandlerWriterKeeps(t *testing.T) {
	out := &keepWriter{}
	h := NewHandler(out, 1, func() Translator { return &fakeTranslator{t: t} }, nil)
	var want [][]byte
	for i := range 3 {
		p := testPacket(4, markForward, 100+i)
		p[5] = byte(0xa0 + i) // each packet its own bytes
		pkt := chainedPacket(p, 30)
		h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
		pkt.DecRef()
		want = append(want, append(bytes.Repeat([]byte{0x66}, 20), p...))
	}
	if len(out.kept) != 3 {
		t.Fatalf("%d packets written", len(out.kept))
	}
	for i, pb := range out.kept {
		b := pb.ToBuffer()
		if got := b.Flatten(); !bytes.Equal(got, want[i]) {
			t.Errorf("kept packet %d changed: %d bytes, % x...", i, len(got), got[:min(len(got), 24)])
		}
		b.Release()
		pb.DecRef()
	}
}
