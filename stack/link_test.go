package stack

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// allOffloads is what Open asks a recent kernel for.
const allOffloads = tun.OffloadCsum | tun.OffloadTSO4 | tun.OffloadTSO6 | tun.OffloadUSO4 | tun.OffloadUSO6

// engineQueue serves one socketpair queue with the real engine: a
// tun.Endpoint with a Handler attached (ServeLink). It returns functions
// that send a packet into the queue and read the next one out.
func engineQueue(t *testing.T) (*Datapath, *xlat.Engine, func(xlat.Offload, []byte), func() (xlat.Offload, []byte)) {
	conn, peer := seqpacketPair(t)
	eng := testEngine(t)
	ep := tun.NewEndpointConns([]tun.Conn{conn}, 1520, allOffloads)
	ctx, cancel := context.WithCancel(context.Background())
	d, err := ServeLink(ctx, eng, ep, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := d.Wait(); err != nil {
			t.Error(err)
		}
		if s := d.LinkStats(); s.WriteErrors != 0 || s.ReadErrors != 0 {
			t.Errorf("link stats %+v", s)
		}
	})
	send := func(off xlat.Offload, pkt []byte) {
		if _, err := peer.Write(vnetPacket(off, pkt)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { expectNoPacket(t, peer) })
	return d, eng, send, func() (xlat.Offload, []byte) { return readPacket(t, peer) }
}

// TestEndpointDrops: what the endpoint cannot deliver is counted, nothing
// is written, and the queue goes on.
func TestEndpointDrops(t *testing.T) {
	d, _, send, read := engineQueue(t)
	send(xlat.Offload{}, []byte{0x15, 0, 0, 0})                                                  // not IP
	send(xlat.Offload{Flags: 0x10}, ipv6(header.UDPProtocolNumber, srv6, cli6, make([]byte, 8))) // unknown flag
	send(xlat.Offload{GSOType: xlat.GSOUDP, GSOSize: 100, Flags: xlat.OffloadNeedsCsum, CsumStart: 40, CsumOffset: 6},
		ipv6(header.UDPProtocolNumber, srv6, cli6, make([]byte, 400))) // UFO: Open never enables it
	in := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(10, 1), false), 0, 0)
	send(xlat.Offload{}, in)
	if _, out := read(); out[0]>>4 != 6 {
		t.Fatalf("not translated: % x", out[:8])
	}
	want := LinkStats{Reads: 1, Writes: 1, InvalidVnetHdr: 2, NotIP: 1}
	waitFor(t, "stats", func() bool { return d.LinkStats() == want })
}

// TestEndpointShortRead: a read shorter than the virtio_net_hdr.
func TestEndpointShortRead(t *testing.T) {
	conn, peer := seqpacketPair(t)
	ep := tun.NewEndpointConns([]tun.Conn{conn}, 1500, 0)
	ep.Attach(&recordDispatcher{})
	defer ep.Close()
	peer.Write([]byte{1, 2, 3})
	waitFor(t, "short read counted", func() bool { return ep.Stats().ShortVnetHdr == 1 })
}

// recordDispatcher keeps what an Endpoint delivers.
type recordDispatcher struct {
	ch chan delivered
}

type delivered struct {
	proto tcpip.NetworkProtocolNumber
	gso   gvstack.GSO
	valid bool
	data  []byte
}

func (r *recordDispatcher) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	if r.ch == nil {
		return
	}
	b := pkt.ToBuffer()
	r.ch <- delivered{proto, pkt.GSOOptions, pkt.RXChecksumValidated, b.Flatten()}
	b.Release()
}

func (*recordDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

// TestEndpointGSO: the endpoint as any gVisor dispatcher sees it. A TSO
// super-packet read from a queue arrives with GSOOptions saying so, and a
// PacketBuffer written with GSOOptions (as gVisor's TCP makes them with
// host GSO) leaves with the matching virtio_net_hdr.
func TestEndpointGSO(t *testing.T) {
	conn, peer := seqpacketPair(t)
	ep := tun.NewEndpointConns([]tun.Conn{conn}, 1500, allOffloads)
	if ep.SupportedGSO() != gvstack.HostGSOSupported || ep.GSOMaxSize() != tun.GSOMaxSize ||
		ep.ARPHardwareType() != header.ARPHardwareNone || ep.MTU() != 1500 || ep.MaxHeaderLength() != 0 {
		t.Errorf("endpoint properties: GSO %v max %d, ARP %v, MTU %d", ep.SupportedGSO(), ep.GSOMaxSize(), ep.ARPHardwareType(), ep.MTU())
	}
	if tun.NewEndpointConns([]tun.Conn{conn}, 1500, tun.OffloadCsum).SupportedGSO() != gvstack.GSONotSupported {
		t.Error("GSO advertised without TSO/USO")
	}
	rec := &recordDispatcher{ch: make(chan delivered, 4)}
	ep.Attach(rec)
	if !ep.IsAttached() {
		t.Error("not attached")
	}
	tso := xlat.Offload{Flags: xlat.OffloadNeedsCsum | xlat.OffloadDataValid, GSOType: xlat.GSOTCPv4, HdrLen: 40, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}
	in := ipv4(header.TCPProtocolNumber, cli4, srv4, l4(header.TCPProtocolNumber, cli4, srv4, payload(10*1448, 3), true), header.IPv4FlagDontFragment, 0)
	peer.Write(vnetPacket(tso, in))
	var got delivered
	select {
	case got = <-rec.ch:
	case <-time.After(2 * time.Second):
		t.Fatal("nothing delivered")
	}
	wantGSO := gvstack.GSO{Type: gvstack.GSOTCPv4, NeedsCsum: true, CsumOffset: 16, MSS: 1448, L3HdrLen: 20, MaxSize: tun.GSOMaxSize}
	if got.proto != header.IPv4ProtocolNumber || got.gso != wantGSO || !got.valid || !bytes.Equal(got.data, in) {
		t.Errorf("delivered proto %d GSO %+v valid %v, %d bytes", got.proto, got.gso, got.valid, len(got.data))
	}
	// A USO super-packet has no gVisor form: a dispatcher that does not
	// take frames cannot be given it.
	uso := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOUDPL4, HdrLen: 28, GSOSize: 1000, CsumStart: 20, CsumOffset: 6}
	peer.Write(vnetPacket(uso, ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(3000, 5), true), 0, 0)))
	waitFor(t, "the USO packet to be refused", func() bool { return ep.Stats().InvalidVnetHdr == 1 })
	select {
	case got := <-rec.ch:
		t.Errorf("USO super-packet delivered with GSO %+v", got.gso)
	default:
	}
	ep.Close()
	ep.Wait()
	if ep.IsAttached() {
		t.Error("attached after Close")
	}

	// Out: a gVisor-made IPv6 TSO packet with ECN (CWR set) in a chain of views.
	seg := l4(header.TCPProtocolNumber, srv6, cli6, payload(5*1000, 4), true)
	seg[13] |= byte(header.TCPFlagCwr)
	out := ipv6(header.TCPProtocolNumber, srv6, cli6, seg)
	var b buffer.Buffer
	b.Append(buffer.NewViewWithData(out[:60]))
	b.Append(buffer.NewViewWithData(out[60:]))
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: b})
	pkt.GSOOptions = gvstack.GSO{Type: gvstack.GSOTCPv6, NeedsCsum: true, CsumOffset: 16, MSS: 1000, L3HdrLen: 40, MaxSize: tun.GSOMaxSize}
	var list gvstack.PacketBufferList
	list.PushBack(pkt)
	if n, err := ep.WritePackets(list); n != 1 || err != nil {
		t.Fatalf("WritePackets: %d, %v", n, err)
	}
	list.Reset()
	off, wire := readPacket(t, peer)
	wantOff := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv6 | xlat.GSOECN, HdrLen: 60, GSOSize: 1000, CsumStart: 40, CsumOffset: 16}
	if off != wantOff || !bytes.Equal(wire, out) {
		t.Errorf("written with %+v, want %+v; bytes equal %v", off, wantOff, bytes.Equal(wire, out))
	}

	// gVisor's software GSO has no virtio_net_hdr form.
	pkt = gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(out)})
	pkt.GSOOptions.Type = gvstack.GSOGvisor
	list.PushBack(pkt)
	if n, err := ep.WritePackets(list); n != 0 || err == nil {
		t.Errorf("software GSO written: %d, %v", n, err)
	}
	list.Reset()
}

// TestEndpointReattach: Attach(nil) stops the dispatch loops; attaching
// again resumes reading the same queues.
func TestEndpointReattach(t *testing.T) {
	conn, peer := seqpacketPair(t)
	ep := tun.NewEndpointConns([]tun.Conn{conn}, 1500, 0)
	for range 2 {
		rec := &recordDispatcher{ch: make(chan delivered, 1)}
		ep.Attach(rec)
		peer.Write(vnetPacket(xlat.Offload{}, []byte{0x60, 1, 2, 3}))
		select {
		case d := <-rec.ch:
			if d.proto != header.IPv6ProtocolNumber {
				t.Errorf("proto %d", d.proto)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("nothing delivered")
		}
		ep.Attach(nil)
	}
	ep.Wait()
	// Closing the queue ends the loops of an attached endpoint too.
	ep.Attach(&recordDispatcher{})
	conn.Close()
	done := make(chan struct{})
	go func() { ep.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("dispatch loop still running after the queue was closed")
	}
}

// TestLinkPathAllocs: the LinkEndpoint path allocates nothing per packet
// beyond gVisor's pooled PacketBuffers (which, warm, allocate nothing
// either). A run of the whole path, goroutines included, is measured, so a
// small constant for starting it is allowed.
func TestLinkPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts of gVisor's pooled PacketBuffers are meaningless under -race")
	}
	const packets = 5000
	for _, c := range handlerCases() {
		eng := testEngine(t)
		run := func(n int) *countedConn {
			conn := &countedConn{pkt: vnetPacket(c.off, c.pkt), left: n}
			ep := tun.NewEndpointConns([]tun.Conn{conn}, 1520, allOffloads)
			d, err := ServeLink(context.Background(), eng, ep, nil)
			if err != nil {
				t.Fatal(err)
			}
			d.Wait()
			return conn
		}
		run(100) // warm gVisor's pools
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		conn := run(packets)
		runtime.ReadMemStats(&after)
		if conn.writes != packets {
			t.Fatalf("%s: %d of %d packets written", c.name, conn.writes, packets)
		}
		// NewEndpointConns and NewHandler allocate their 64 KiB buffers,
		// ServeLink its Datapath and goroutines: a few dozen in all.
		if n := after.Mallocs - before.Mallocs; n > 100 {
			t.Errorf("%s: %d allocations for %d packets", c.name, n, packets)
		}
	}
}

// TestServeLinkOtherEndpoint: ServeLink over a gVisor endpoint that is not
// a tun.Endpoint (here fdbased on a socketpair) attaches a one-queue
// Handler, which copies each packet into its own frame and translates it.
func TestServeLinkOtherEndpoint(t *testing.T) {
	conn, peer := seqpacketPair(t)
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	ep, err := fdbased.New(&fdbased.Options{FDs: []int{fd}, MTU: 1500, ProcessorsPerChannel: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := ServeLink(ctx, testEngine(t), ep, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := payload(300, 9)
	peer.Write(ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, data, false), 0, 0))
	buf := make([]byte, 2000)
	peer.SetReadDeadline(timeIn(t))
	n, err := peer.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if p := parse(t, buf[:n]); !p.v6 || p.src != cli6 || p.dst != srv6 || !checksumOK(p, p.seg) || !bytes.Equal(p.seg[udpHdrLen:], data) {
		t.Errorf("translated to %v -> %v v6 %v", p.src, p.dst, p.v6)
	}
	if !d.Healthy() {
		t.Errorf("unhealthy: %v", d.Check())
	}
	cancel()
	if err := d.Wait(); err != nil {
		t.Errorf("Wait: %v", err)
	}
	waitFor(t, "the write to be counted", func() bool { return d.LinkStats().Writes == 1 })
	if s := d.LinkStats(); s != (LinkStats{Reads: 1, Writes: 1}) {
		t.Errorf("link stats %+v", s)
	}
}
