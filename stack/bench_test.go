package stack

import (
	"context"
	"os"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// handlerCases are the packets the handler benchmarks and allocation tests
// push through the real engine: full-size packets and 64 KiB super-packets
// in both directions.
func handlerCases() []struct {
	name string
	off  xlat.Offload
	pkt  []byte
} {
	const tcp = header.TCPProtocolNumber
	tso4 := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv4, HdrLen: 40, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}
	tso6 := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv6, HdrLen: 60, GSOSize: 1428, CsumStart: 40, CsumOffset: 16}
	v4 := func(n int, partial bool) []byte {
		return ipv4(tcp, cli4, srv4, l4(tcp, cli4, srv4, payload(n, 1), partial), header.IPv4FlagDontFragment, 0)
	}
	v6 := func(n int, partial bool) []byte {
		return ipv6(tcp, srv6, cli6, l4(tcp, srv6, cli6, payload(n, 2), partial))
	}
	return []struct {
		name string
		off  xlat.Offload
		pkt  []byte
	}{
		{"tcp4to6_1500", xlat.Offload{}, v4(1460, false)},
		{"tcp6to4_1500", xlat.Offload{}, v6(1440, false)},
		{"tso4to6_64k", tso4, v4(45*1448, true)},
		{"tso6to4_64k", tso6, v6(45*1428, true)},
	}
}

// BenchmarkHandlerDeliver is the fd path's handler with the real engine:
// copy out of a foreign PacketBuffer, translate, copy into a new one.
func BenchmarkHandlerDeliver(b *testing.B) {
	c := handlerCases()[0]
	h := NewHandler(&captureWriter{discard: true}, 1, func() Translator { return testEngine(b).NewWorker() }, nil)
	pkt := chainedPacket(c.pkt, 128, 384)
	defer pkt.DecRef()
	b.ReportAllocs()
	b.SetBytes(int64(len(c.pkt)))
	for b.Loop() {
		h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
	}
	if h.Stats().Writes == 0 {
		b.Fatal("nothing written")
	}
}

func TestHandlerAllocsEngine(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts of gVisor's pooled PacketBuffers are meaningless under -race")
	}
	c := handlerCases()[0]
	out := &captureWriter{discard: true}
	h := NewHandler(out, 1, func() Translator { return testEngine(t).NewWorker() }, nil)
	pkt := chainedPacket(c.pkt, 128, 384)
	defer pkt.DecRef()
	if a := testing.AllocsPerRun(500, func() { h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt) }); a != 0 {
		t.Errorf("%v allocations per packet", a)
	}
	if out.n == 0 {
		t.Error("nothing written")
	}
}

// serveLinkLoop serves one socketpair queue through the whole tun path
// (tun.Endpoint, Handler, eng) until t ends, and returns the data path
// and the peer end the test writes and reads.
func serveLinkLoop(t *testing.T, eng *xlat.Engine) (*Datapath, *os.File) {
	t.Helper()
	conn, peer := seqpacketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	d, err := ServeLink(ctx, eng, tun.NewEndpointConns([]tun.Conn{conn}, 1520, allOffloads), nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := d.Wait(); err != nil {
			t.Error(err)
		}
	})
	return d, peer
}

// TestLinkLoopAllocs: the whole tun path in steady state, over a real
// socketpair: the endpoint's raw read through the runtime poller (with
// the engine's counter flush on an empty queue), delivery in the frame,
// translation in place, the write from the frame. Nothing is allocated
// per packet or super-packet.
func TestLinkLoopAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts of gVisor's pooled PacketBuffers are meaningless under -race")
	}
	for _, c := range handlerCases() {
		t.Run(c.name, func(t *testing.T) {
			eng := testEngine(t)
			d, peer := serveLinkLoop(t, eng)
			in := vnetPacket(c.off, c.pkt)
			out := make([]byte, 70000)
			peer.SetReadDeadline(time.Now().Add(time.Minute))
			round := func() {
				if _, err := peer.Write(in); err != nil {
					t.Fatal(err)
				}
				if _, err := peer.Read(out); err != nil {
					t.Fatal(err)
				}
			}
			if a := testing.AllocsPerRun(200, round); a != 0 {
				t.Errorf("%v allocations per packet", a)
			}
			// The queue is empty now: the endpoint told the Handler,
			// which flushed the engine's batched counts.
			dir := xlat.Dir46
			if c.pkt[0]>>4 == 6 {
				dir = xlat.Dir64
			}
			waitFor(t, "the idle flush", func() bool { return eng.Totals().Packets[dir][xlat.ProtoTCP] == 201 })
			if s := d.LinkStats(); s.Reads != 201 || s.WriteErrors != 0 {
				t.Errorf("link stats %+v", s)
			}
		})
	}
}

// countedConn is a queue that holds the same packet n times, then reports
// itself closed; writes go nowhere. It lets a whole data path, goroutines
// included, run over memory.
type countedConn struct {
	pkt           []byte
	left          int
	writes, bytes int
}

func (c *countedConn) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, os.ErrClosed
	}
	c.left--
	return copy(p, c.pkt), nil
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.writes++
	c.bytes += len(p)
	return len(p), nil
}

func (c *countedConn) SetReadDeadline(time.Time) error { return nil }

// BenchmarkPathPerPacket is the data path over one tun queue with the
// real engine and no system calls, per packet read and written: "link" is
// the product's path (tun.Endpoint's dispatch loop delivering in its
// frame, Handler translating in place, WritePackets writing from the
// frame), "raw" the baseline it replaced (rawLoop: the bytes read straight
// into a buffer and handed to the engine, no gVisor types at all). Both
// run until the queue runs dry.
func BenchmarkPathPerPacket(b *testing.B) {
	for _, c := range handlerCases() {
		for _, path := range []string{"raw", "link"} {
			b.Run(path+"/"+c.name, func(b *testing.B) {
				conn := &countedConn{pkt: vnetPacket(c.off, c.pkt), left: b.N}
				eng := testEngine(b)
				b.ReportAllocs()
				b.SetBytes(int64(len(c.pkt)))
				b.ResetTimer()
				if path == "raw" {
					rawLoop(conn, eng.NewWorker())
				} else {
					d, err := ServeLink(context.Background(), eng, tun.NewEndpointConns([]tun.Conn{conn}, 1520, allOffloads), nil)
					if err != nil {
						b.Fatal(err)
					}
					d.Wait()
				}
				b.StopTimer()
				if conn.writes != b.N {
					b.Fatalf("%d of %d packets written", conn.writes, b.N)
				}
			})
		}
	}
}

// rawLoop is the measured baseline of BenchmarkPathPerPacket: the loop
// the daemon ran before the gVisor path became the only one (read into a
// buffer with headroom, decode the virtio_net_hdr, translate in place,
// encode, write), kept here only to compare against.
func rawLoop(conn tun.Conn, tr Translator) {
	buf := make([]byte, tun.FramePacket+maxPacket)
	var off xlat.Offload
	for {
		n, err := conn.Read(buf[tun.FrameHeader:])
		if err != nil {
			return
		}
		if tun.DecodeVnetHdr(buf[tun.FrameHeader:tun.FrameHeader+n], &off) != nil {
			continue
		}
		end := tun.FrameHeader + n
		if tun.ValidateOffload(&off, end-tun.FramePacket) != nil {
			continue
		}
		res := tr.Process(buf, tun.FramePacket, end, &off, discardSink{})
		if res.Verdict != xlat.Forward {
			continue
		}
		hdr := res.Start - tun.VnetHdrLen
		tun.EncodeVnetHdr(buf[hdr:res.Start], &off)
		conn.Write(buf[hdr:res.End])
	}
}

type discardSink struct{}

func (discardSink) Emit([]byte, *xlat.Offload) {}

// BenchmarkLinkRoundTrip is one small packet's round trip through the
// whole tun path over a socketpair, system calls and goroutine wake-ups
// included: the peer writes a 64-byte UDP packet, the queue's dispatch
// goroutine reads, translates and writes it, the peer reads the result.
// ns/op is the latency that packet sees; it is bound by the wake-ups.
func BenchmarkLinkRoundTrip(b *testing.B) {
	conn, peer := seqpacketPair(b)
	eng := testEngine(b)
	ctx, cancel := context.WithCancel(context.Background())
	d, err := ServeLink(ctx, eng, tun.NewEndpointConns([]tun.Conn{conn}, 1520, allOffloads), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		cancel()
		d.Wait()
	}()
	const udp = header.UDPProtocolNumber
	in := vnetPacket(xlat.Offload{}, ipv4(udp, cli4, srv4, l4(udp, cli4, srv4, payload(64-28, 1), false), 0, 0))
	out := make([]byte, 2048)
	peer.SetReadDeadline(time.Now().Add(time.Hour))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := peer.Write(in); err != nil {
			b.Fatal(err)
		}
		if _, err := peer.Read(out); err != nil {
			b.Fatal(err)
		}
	}
}
