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

// BenchmarkQueueHandle is one iteration of a queue worker (decode the vnet
// header, translate, re-encode, write) with the real engine and a write
// that goes nowhere: the data path's cost without system calls.
func BenchmarkQueueHandle(b *testing.B) {
	for _, c := range handlerCases() {
		b.Run(c.name, func(b *testing.B) {
			conn := &memConn{pkt: vnetPacket(c.off, c.pkt)}
			w := newQueueWorker(0, conn, testEngine(b).NewWorker(), nil)
			b.ReportAllocs()
			b.SetBytes(int64(len(c.pkt)))
			for b.Loop() {
				handleOnce(w)
			}
			if conn.writes == 0 {
				b.Fatal("nothing written")
			}
		})
	}
}

func TestQueueHandleAllocsEngine(t *testing.T) {
	for _, c := range handlerCases() {
		conn := &memConn{pkt: vnetPacket(c.off, c.pkt)}
		w := newQueueWorker(0, conn, testEngine(t).NewWorker(), nil)
		if a := testing.AllocsPerRun(200, func() { handleOnce(w) }); a != 0 {
			t.Errorf("%s: %v allocations per packet", c.name, a)
		}
		if conn.writes == 0 || w.stats.writeErrors.Load() != 0 {
			t.Errorf("%s: %d written, %d write errors", c.name, conn.writes, w.stats.writeErrors.Load())
		}
	}
}

// BenchmarkHandlerDeliver is the fd path's handler with the real engine:
// copy out of a PacketBuffer, translate, copy into a new one.
func BenchmarkHandlerDeliver(b *testing.B) {
	c := handlerCases()[0]
	h := NewHandler(testEngine(b).NewWorker(), &captureWriter{discard: true})
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
	h := NewHandler(testEngine(t).NewWorker(), out)
	pkt := chainedPacket(c.pkt, 128, 384)
	defer pkt.DecRef()
	if a := testing.AllocsPerRun(500, func() { h.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt) }); a != 0 {
		t.Errorf("%v allocations per packet", a)
	}
	if out.n == 0 {
		t.Error("nothing written")
	}
}

// TestQueueLoopAllocs covers what the other allocation tests leave out: the
// raw read through the runtime poller (with the engine's counter flush on
// an empty queue) and the write, over a real socketpair.
func TestQueueLoopAllocs(t *testing.T) {
	conn, peer := seqpacketPair(t)
	eng := testEngine(t)
	w := newQueueWorker(0, conn, eng.NewWorker(), nil)
	if w.raw == nil {
		t.Fatal("no raw access to the socketpair")
	}
	c := handlerCases()[0]
	in := vnetPacket(c.off, c.pkt)
	out := make([]byte, 70000)
	round := func() {
		if _, err := peer.Write(in); err != nil {
			t.Fatal(err)
		}
		n, err := w.read()
		if err != nil {
			t.Fatal(err)
		}
		w.handle(n)
		if _, err := peer.Read(out); err != nil {
			t.Fatal(err)
		}
	}
	if a := testing.AllocsPerRun(200, round); a != 0 {
		t.Errorf("%v allocations per packet", a)
	}
	// An empty queue: the read flushes the engine's counts, then waits
	// (here until a deadline).
	conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := w.read(); err != errStopped {
		t.Errorf("read after stop: %v", err)
	}
	if got := eng.Totals().Packets[xlat.Dir46][xlat.ProtoTCP]; got != 201 {
		t.Errorf("engine counted %d packets after the idle flush, want 201", got)
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

// BenchmarkPathPerPacket compares the two ways over one tun queue with the
// real engine and no system calls, per packet read and written: "fast" is
// Serve's queue worker (its own buffer, the engine in place), "link" is
// tun.Endpoint as a gVisor LinkEndpoint with Handler attached (ServeLink:
// a PacketBuffer in, a copy into the Handler's buffer, a PacketBuffer out,
// a copy into the endpoint's write buffer). Both run their real
// goroutines until the queue runs dry.
func BenchmarkPathPerPacket(b *testing.B) {
	for _, c := range handlerCases() {
		for _, path := range []string{"fast", "link"} {
			b.Run(path+"/"+c.name, func(b *testing.B) {
				conn := &countedConn{pkt: vnetPacket(c.off, c.pkt), left: b.N}
				eng := testEngine(b)
				b.ReportAllocs()
				b.SetBytes(int64(len(c.pkt)))
				b.ResetTimer()
				var d *Datapath
				var err error
				if path == "fast" {
					d, err = serveConns(context.Background(), []packetConn{conn}, func() Translator { return eng.NewWorker() }, nil)
				} else {
					d, err = ServeLink(context.Background(), eng, tun.NewEndpointConns([]tun.Conn{conn}, 1520, allOffloads), nil)
				}
				if err != nil {
					b.Fatal(err)
				}
				d.Wait()
				b.StopTimer()
				if conn.writes != b.N {
					b.Fatalf("%d of %d packets written; link stats %+v", conn.writes, b.N, d.LinkStats())
				}
			})
		}
	}
}
