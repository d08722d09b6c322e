package stack

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// tapPeer is the other end of a datagram socketpair that ServeTap serves:
// the test is the rest of the Ethernet segment.
type tapPeer struct {
	t  *testing.T
	fd int
}

func (p tapPeer) send(dst, src [6]byte, etherType uint16, payload []byte) {
	p.t.Helper()
	f := make([]byte, ethHdrLen+len(payload))
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:14], etherType)
	copy(f[ethHdrLen:], payload)
	p.raw(f)
}

func (p tapPeer) raw(f []byte) {
	p.t.Helper()
	if _, err := unix.Write(p.fd, f); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the next frame the translator sends within a second, or
// nil.
func (p tapPeer) recv() []byte {
	p.t.Helper()
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 1000); err != nil || n == 0 {
		return nil
	}
	b := make([]byte, 70000)
	n, err := unix.Read(p.fd, b)
	if err != nil {
		p.t.Fatal(err)
	}
	return b[:n]
}

// expectNone checks the translator sends nothing within 100 ms.
func (p tapPeer) expectNone(what string) {
	p.t.Helper()
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(fds, 100); n != 0 {
		p.t.Errorf("%s: translator sent %x", what, p.recv())
	}
}

func serveTapPair(t *testing.T, eng *xlat.Engine, c TapConfig) (*Datapath, tapPeer) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.FD = fds[0]
	ctx, cancel := context.WithCancel(context.Background())
	dp, err := ServeTap(ctx, eng, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := dp.Wait(); err != nil {
			t.Errorf("Wait: %v", err)
		}
		unix.Close(fds[0])
		unix.Close(fds[1])
	})
	return dp, tapPeer{t, fds[1]}
}

// TestTapTranslates: over a tap-like datagram socket, an IPv4 packet to a
// mapped address is translated and sent to the IPv6 gateway once it is
// resolved (parked meanwhile), the answer comes back to the IPv4 gateway,
// ARP for the pool is answered, and hostile frames are counted while the
// data path goes on.
func TestTapTranslates(t *testing.T) {
	eng := testEngine(t)
	dp, peer := serveTapPair(t, eng, TapConfig{MTU: 1500, MAC: tapMAC, IPv4Gateway: gw4, IPv6Gateway: gw6})

	// ARP for a mapped address is answered.
	peer.send(broadcastMAC, peerMAC, ethTypeARP, arpPacket(header.ARPRequest, peerMAC, gw4.String(), serverV4, [6]byte{}))
	f := peer.recv()
	if f == nil || binary.BigEndian.Uint16(f[12:]) != ethTypeARP || header.ARP(f[ethHdrLen:]).Op() != header.ARPReply {
		t.Fatalf("no ARP reply: %x", f)
	}

	// Hostile and foreign frames: counted, nothing sent, still running.
	data := payload(32, 1)
	v4 := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, data, false), 0, 0)
	peer.raw([]byte{1, 2, 3, 4, 5})                                        // short
	peer.raw(make([]byte, 0))                                              // empty
	peer.send(tapMAC, peerMAC, ethTypeIP4, make([]byte, 1501))             // oversized
	peer.send(otherMAC, peerMAC, ethTypeIP4, v4)                           // another host's
	peer.send(broadcastMAC, peerMAC, ethTypeIP4, v4)                       // broadcast IP
	peer.send(tapMAC, broadcastMAC, ethTypeIP4, v4)                        // from a group address
	peer.send(tapMAC, peerMAC, 0x88cc, make([]byte, 40))                   // LLDP
	peer.send(tapMAC, peerMAC, ethTypeIP4, []byte{0x45, 0, 0})             // truncated IPv4
	peer.send(tapMAC, peerMAC, ethTypeIP6, []byte{0x60, 0, 0, 0, 0, 0x3a}) // truncated ND
	peer.expectNone("hostile frames")
	s := dp.LinkStats()
	if s.NotIP < 5 || s.LinkChatter < 3 || s.Reads != 0 {
		t.Errorf("hostile frames counted as %+v", s)
	}
	if !dp.Healthy() {
		t.Fatal("data path unhealthy after hostile frames")
	}

	// IPv4 → IPv6: parked until the gateway answers our NS.
	peer.send(tapMAC, peerMAC, ethTypeIP4, v4)
	f = peer.recv()
	if f == nil || !bytes.Equal(f[0:6], []byte{0x33, 0x33, 0xff, 0, 0, 1}) || !isND(f[ethHdrLen:]) {
		t.Fatalf("no NS for the gateway: %x", f)
	}
	peer.send(tapMAC, peerMAC, ethTypeIP6, ndPacket(header.ICMPv6NeighborAdvert, gw6.String(), "fe80::5eff:fe10:1", gw6.String(), 255, 0x60, peerMAC[:]))
	f = peer.recv()
	if f == nil || !bytes.Equal(f[0:6], peerMAC[:]) || !bytes.Equal(f[6:12], tapMAC[:]) || binary.BigEndian.Uint16(f[12:]) != ethTypeIP6 {
		t.Fatalf("parked packet not sent to the gateway: %x", f)
	}
	ip6 := header.IPv6(f[ethHdrLen:])
	if ip6.DestinationAddress() != srv6 || ip6.SourceAddress() != cli6 || !bytes.Equal(ip6.Payload()[udpHdrLen:], data) {
		t.Errorf("translated %v -> %v", ip6.SourceAddress(), ip6.DestinationAddress())
	}
	if ip6.HopLimit() != ttl {
		t.Logf("hop limit %d (the engine's policy decides)", ip6.HopLimit())
	}
	// Resolved now: the next one goes straight out.
	peer.send(tapMAC, peerMAC, ethTypeIP4, v4)
	if f = peer.recv(); f == nil || !bytes.Equal(f[0:6], peerMAC[:]) {
		t.Fatalf("second packet: %x", f)
	}

	// IPv6 → IPv4 towards the IPv4 gateway: ARP first.
	back := ipv6(header.UDPProtocolNumber, srv6, cli6, l4(header.UDPProtocolNumber, srv6, cli6, data, false))
	peer.send(tapMAC, otherMAC, ethTypeIP6, back)
	f = peer.recv()
	if f == nil || binary.BigEndian.Uint16(f[12:]) != ethTypeARP || header.ARP(f[ethHdrLen:]).Op() != header.ARPRequest {
		t.Fatalf("no ARP request for the IPv4 gateway: %x", f)
	}
	peer.send(tapMAC, otherMAC, ethTypeARP, arpPacket(header.ARPReply, otherMAC, gw4.String(), "0.0.0.0", tapMAC))
	f = peer.recv()
	if f == nil || !bytes.Equal(f[0:6], otherMAC[:]) || binary.BigEndian.Uint16(f[12:]) != ethTypeIP4 {
		t.Fatalf("IPv4 answer not sent to the gateway: %x", f)
	}
	ip4 := header.IPv4(f[ethHdrLen:])
	if ip4.DestinationAddress() != cli4 || ip4.SourceAddress() != srv4 || !ip4.IsChecksumValid() {
		t.Errorf("translated back %v -> %v", ip4.SourceAddress(), ip4.DestinationAddress())
	}
	if s := dp.LinkStats(); s.Reads != 3 || s.Writes != 3 {
		t.Errorf("reads %d writes %d, want 3 and 3", s.Reads, s.Writes)
	}
}

// TestTapNoNextHop: with the neighbour silent, the parking slots fill and
// further packets are counted in NoNextHop, not queued without bound.
func TestTapNoNextHop(t *testing.T) {
	eng := testEngine(t)
	dp, peer := serveTapPair(t, eng, TapConfig{MTU: 1500, MAC: tapMAC, IPv6Gateway: gw6})
	for i := range parkSlots + 5 {
		v4 := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(8, byte(i)), false), 0, 0)
		peer.send(tapMAC, peerMAC, ethTypeIP4, v4)
	}
	deadline := time.Now().Add(5 * time.Second)
	for dp.LinkStats().NoNextHop < 5 && time.Now().Before(deadline) {
		peer.recv() // the NS (one: rate-limited)
	}
	if s := dp.LinkStats(); s.NoNextHop != 5 {
		t.Errorf("NoNextHop %d, want 5 (%d parking slots)", s.NoNextHop, parkSlots)
	}
}

// TestTapTransitAllocs: once the next hop is known, a translated packet
// costs no allocation: frame in, Handler, Ethernet header, writev.
func TestTapTransitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	eng := testEngine(t)
	fds := dgramPair(t)
	unix.SetNonblock(fds[0], true)
	ep := newTapEndpoint(TapConfig{FD: fds[0], MTU: 1500, MAC: tapMAC, IPv6Gateway: gw6}, func(a netip.Addr) bool { return ownsForNeighbours(eng.Config(), a) }, slog.New(slog.DiscardHandler))
	h := NewHandler(ep, 1, func() Translator { return eng.NewWorker() }, nil)
	ep.neigh.soliciting[gw6] = monoNow()
	ep.neigh.learn(gw6, peerMAC)
	ep.res.resolve(netip.MustParseAddr(serverV6))
	if _, ok := ep.res.lookup(netip.MustParseAddr(serverV6)); !ok {
		t.Fatal("next hop not resolved")
	}
	v4 := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(32, 1), false), 0, 0)
	frame := make([]byte, ethHdrLen+len(v4))
	copy(frame, tapMAC[:])
	copy(frame[6:], peerMAC[:])
	binary.BigEndian.PutUint16(frame[12:], ethTypeIP4)
	copy(frame[ethHdrLen:], v4)
	buf := ep.frame.Bytes()[tun.FramePacket-ethHdrLen:]
	drain := make([]byte, 2048)
	allocs := testing.AllocsPerRun(200, func() {
		n := copy(buf, frame)
		ep.deliver(h, buf[:n])
		unix.Read(fds[1], drain)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per packet", allocs)
	}
	if s := h.Stats(); s.Writes == 0 || s.WriteErrors != 0 {
		t.Errorf("writes %d errors %d", s.Writes, s.WriteErrors)
	}
}

// TestFDTransitAllocs: a bare-IP fd's packet costs no allocation either:
// read into the frame, translated there, one writev.
func TestFDTransitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	eng := testEngine(t)
	fds := dgramPair(t)
	unix.SetNonblock(fds[0], true)
	ep := newRawFDEndpoint(fds[0], 1500, 0, slog.New(slog.DiscardHandler))
	h := NewHandler(ep, 1, func() Translator { return eng.NewWorker() }, nil)
	v4 := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(32, 1), false), 0, 0)
	buf := ep.frame.Bytes()[tun.FramePacket:]
	out := make([]byte, 2048)
	var n int
	allocs := testing.AllocsPerRun(200, func() {
		ep.deliver(h, buf[:copy(buf, v4)])
		n, _ = unix.Read(fds[1], out)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per packet", allocs)
	}
	if ip6 := header.IPv6(out[:n]); n != len(v4)+20 || ip6.DestinationAddress() != srv6 {
		t.Errorf("wrote %d bytes: %x", n, out[:n])
	}
	// Not IP, and larger than the MTU: counted, not delivered.
	ep.deliver(h, buf[:copy(buf, []byte{0x10, 0, 0, 0})])
	ep.deliver(h, buf[:1501])
	var s LinkStats
	ep.addStats(&s)
	if s.NotIP != 2 || h.Stats().Reads != 201 {
		t.Errorf("NotIP %d reads %d", s.NotIP, h.Stats().Reads)
	}
}

// TestFDStopsUnderFlood: cancelling stops the data path even while the
// descriptor never runs dry (each packet translated sends the next one).
func TestFDStopsUnderFlood(t *testing.T) {
	fds := dgramPair(t)
	unix.SetNonblock(fds[1], true)
	v4 := testPacket(4, markForward, 100)
	ctx, cancel := context.WithCancel(context.Background())
	d, err := serveFDs(ctx, func() Translator { return refillTranslator{&fakeTranslator{t: t}, fds[1], v4} }, []int{fds[0]}, 1500, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan struct{})
	go func() { // the replies, so that they do not fill the peer
		defer close(drained)
		out := make([]byte, 2048)
		for ctx.Err() == nil {
			if _, err := unix.Read(fds[1], out); err != nil {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	defer func() { <-drained }()
	unix.Write(fds[1], v4)
	waitFor(t, "the flood to be read", func() bool { return d.LinkStats().Reads > 1000 })
	cancel()
	done := make(chan error, 1)
	go func() { done <- d.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the data path did not stop under a flood")
	}
}

// refillTranslator sends pkt to the data path's descriptor (through the
// other end, fd) each time it translates a packet.
type refillTranslator struct {
	Translator
	fd  int
	pkt []byte
}

func (r refillTranslator) Process(buf []byte, start, end int, off *xlat.Offload, sink xlat.Sink) xlat.Result {
	unix.Write(r.fd, r.pkt)
	return r.Translator.Process(buf, start, end, off, sink)
}

// BenchmarkServeFD: one bare-IP packet at a time through ServeFD over a
// datagram socketpair, with the real engine: write, translated, read back.
// allocs/op counts every goroutine's allocations (the dispatch loop's
// included).
func BenchmarkServeFD(b *testing.B) {
	fds := dgramPair(b)
	ctx, cancel := context.WithCancel(context.Background())
	d, err := ServeFDQueues(ctx, testEngine(b), []int{fds[0]}, 1500, 0, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { cancel(); d.Wait() }()
	v4 := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(64, 1), false), 0, 0)
	out := make([]byte, 2048)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := unix.Write(fds[1], v4); err != nil {
			b.Fatal(err)
		}
		if n, err := unix.Read(fds[1], out); err != nil || n != len(v4)+20 {
			b.Fatalf("read %d: %v", n, err)
		}
	}
}

// TestFDQueues: with several descriptors (a multi-queue tun's), each
// packet is translated on its descriptor's own queue and written back to
// that descriptor; one descriptor failing stops them all and Wait says
// why.
func TestFDQueues(t *testing.T) {
	for _, vnet := range []int{0, maxVnetHdr} {
		t.Run(fmt.Sprintf("vnet%d", vnet), func(t *testing.T) { testFDQueues(t, vnet) })
	}
}

// testFDQueues is TestFDQueues with a virtio_net_hdr of vnet bytes (0:
// none) on every descriptor: a partial checksum read on one queue goes
// out of it with its header moved past the larger IPv6 header.
func testFDQueues(t *testing.T, vnet int) {
	var dps, peers []int
	for range 3 {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
		dps, peers = append(dps, fds[0]), append(peers, fds[1])
	}
	eng := testEngine(t)
	d, err := serveFDs(context.Background(), func() Translator { return eng.NewWorker() }, dps, 1500, vnet, nil)
	if err != nil {
		t.Fatal(err)
	}
	partial := vnet > 0
	v4 := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(32, 1), partial), 0, 0)
	in, off := v4, xlat.Offload{}
	if partial {
		off = xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 20, CsumOffset: 6}
		in = vnetFrame(vnet, false, off, v4)
	}
	for _, q := range []int{2, 0, 1, 2} {
		peer := tapPeer{t, peers[q]}
		peer.raw(in)
		got := peer.recv()
		var gotOff xlat.Offload
		if partial {
			gotOff, _, got = splitVnet(t, vnet, false, got)
		}
		if len(got) != len(v4)+20 || header.IPv6(got).DestinationAddress() != srv6 {
			t.Fatalf("queue %d: got %x", q, got)
		}
		if partial && (gotOff.Flags&xlat.OffloadNeedsCsum == 0 || gotOff.CsumStart != 40 || gotOff.CsumOffset != 6) {
			t.Errorf("queue %d: offload %+v, want a partial checksum at 40+6", q, gotOff)
		}
		for i, other := range peers {
			if i != q {
				tapPeer{t, other}.expectNone(fmt.Sprintf("queue %d's packet", q))
			}
		}
	}
	waitFor(t, "the counts", func() bool { return d.LinkStats().Writes == 4 })
	if qs := d.handler.queues; qs[0].stats.Reads.Load() != 1 || qs[1].stats.Reads.Load() != 1 || qs[2].stats.Reads.Load() != 2 {
		t.Errorf("per-queue reads %d %d %d, want 1 1 2", qs[0].stats.Reads.Load(), qs[1].stats.Reads.Load(), qs[2].stats.Reads.Load())
	}
	if !d.Healthy() {
		t.Fatalf("unhealthy: %v", d.Check())
	}
	unix.Shutdown(peers[1], unix.SHUT_RDWR)
	done := make(chan error, 1)
	go func() { done <- d.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("fd %d", dps[1])) {
			t.Errorf("Wait: %v, want queue fd %d's failure", err, dps[1])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the other queues did not stop after one failed")
	}
	if d.Healthy() {
		t.Error("healthy after a queue failed")
	}
}

// dgramPair is a datagram socketpair standing in for a tap or tun fd,
// closed when the test ends.
func dgramPair(tb testing.TB) [2]int {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds
}
