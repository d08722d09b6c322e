package tun

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Test packets of copyingDispatcher: byte 1 says what to do with them,
// byte 2 numbers the copies, the last byte numbers the packets.
const (
	markInFrame = 0x00 // written back from the frame, as a translated packet is
	markCopies  = 0xcc // two copies written instead, as fragments are
)

// copyingDispatcher takes frames and writes what the Handler writes: a
// packet marked markInFrame back from its frame (which a queue on its
// io_uring queues on the ring), one marked markCopies as two packets of
// its own memory (engine-made: fragments, ICMP errors, the datagrams of a
// split UDP super-packet), which the endpoint writes at once. It writes
// on the delivering goroutine, with the queue's Hash, as FrameDispatcher
// asks.
type copyingDispatcher struct {
	t    testing.TB
	e    *Endpoint
	list gvstack.PacketBufferList
}

func (*copyingDispatcher) TakesFrames(*Endpoint) bool { return true }

func (*copyingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

func (d *copyingDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	f := d.e.Frame(int(pkt.Hash))
	start, end, ok := f.InFrame(pkt)
	if !ok {
		d.t.Error("a packet delivered outside its queue's frame")
		return
	}
	b := f.Bytes()[start:end]
	if b[1] != markCopies {
		d.write(pkt.IncRef())
		return
	}
	for k := range 2 {
		c := make([]byte, len(b))
		copy(c, b)
		c[2] = byte(k)
		pb := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(c)})
		pb.Hash = pkt.Hash
		d.write(pb)
	}
}

func (d *copyingDispatcher) write(pb *gvstack.PacketBuffer) {
	d.list.PushBack(pb)
	if n, err := d.e.WritePackets(d.list); n != 1 {
		d.t.Errorf("WritePackets: %d written, %v", n, err)
	}
	d.list.Reset()
}

// TestQueueWritesInOrder: the packets a queue's dispatcher writes leave
// in the order it wrote them, on either loop. On the io_uring a packet
// written from its frame is queued on the ring and leaves with the next
// io_uring_enter, while a packet of other memory (what the engine makes
// besides the translated packet) is written at once: in a batch whose
// slot 0 is translated in place and whose slot 1 is fragmented, slot 0's
// packet left after slot 1's fragments, reordering the flow. The packets
// wait in the queue before the endpoint is attached, so that the ring
// reads them in batches.
func TestQueueWritesInOrder(t *testing.T) {
	for _, mode := range queueIOModes {
		t.Run(mode, func(t *testing.T) {
			setQueueIO(t, mode)
			c, p := rawPair(t)
			e := NewEndpointConns([]Conn{c}, 1500, 0)
			const n = 60
			type out struct{ seq, copy byte }
			var want []out
			pkt := make([]byte, VnetHdrLen+28)
			pkt[VnetHdrLen] = 0x45
			for i := range n {
				pkt[VnetHdrLen+1] = markInFrame
				if i%3 == 2 {
					pkt[VnetHdrLen+1] = markCopies
					want = append(want, out{byte(i), 0}, out{byte(i), 1})
				} else {
					want = append(want, out{byte(i), 0})
				}
				pkt[len(pkt)-1] = byte(i)
				if _, err := p.Write(pkt); err != nil {
					t.Fatal(err)
				}
			}
			d := &copyingDispatcher{t: t, e: e}
			e.Attach(d)
			defer e.Close()
			buf := make([]byte, 100)
			p.SetReadDeadline(time.Now().Add(5 * time.Second))
			var got []out
			for range want {
				m, err := p.Read(buf)
				if err != nil || m != len(pkt) {
					t.Fatalf("after %d packets out: %d bytes, %v", len(got), m, err)
				}
				got = append(got, out{buf[m-1], buf[VnetHdrLen+2]})
			}
			requireQueueIO(t, e, 0, mode)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("packets out (number, copy): %v\nwant %v: reordered from the %d-th", got, want, i)
				}
			}
		})
	}
}

// BenchmarkQueueBurstFrames is BenchmarkQueueBurst with a dispatcher
// that takes frames and writes each packet back from its frame, as the
// Handler writes a translated packet: on the io_uring every write is
// queued on the ring, the data path's common case (the raw loop writes
// each at once).
func BenchmarkQueueBurstFrames(b *testing.B) {
	for _, mode := range queueIOModes {
		b.Run(mode, func(b *testing.B) {
			benchQueueBurstWith(b, mode, 16, func(e *Endpoint) gvstack.NetworkDispatcher { return &copyingDispatcher{t: b, e: e} })
		})
	}
}
