package tun

import (
	"bytes"
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// recordDispatcher keeps a copy of the last packet delivered to it.
type recordDispatcher struct {
	n   int
	pkt []byte
}

func (d *recordDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	d.n++
	d.pkt = d.pkt[:0]
	for _, s := range pkt.AsSlices() {
		d.pkt = append(d.pkt, s...)
	}
}
func (*recordDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

// deliverHdrs are the header sizes a queue reads behind: none (a tun
// without IFF_VNET_HDR), struct virtio_net_hdr, virtio_net_hdr_mrg_rxbuf.
var deliverHdrs = [...]int{0, VnetHdrLen, MrgVnetHdrLen}

// deliverOne hands deliver a read of n bytes whose first bytes are data
// (what the queue's descriptor returned, header included) on a queue
// reading behind hdr bytes, and checks that it delivered exactly the
// packet read, with offload metadata the kernel would have accepted, or
// counted one reason for not delivering it, never reading past the frame.
func deliverOne(t *testing.T, e *Endpoint, d *recordDispatcher, data []byte, n int, frames bool) {
	q := e.queues[0]
	room := len(q.frame.buf) - q.readAt
	clear(q.frame.buf[q.readAt:min(len(q.frame.buf), q.readAt+max(n, len(data), 0))])
	copy(q.frame.buf[q.readAt:], data)
	load := func() [4]uint64 {
		return [4]uint64{q.stats.ReadErrors.Load(), q.stats.ShortVnetHdr.Load(), q.stats.InvalidVnetHdr.Load(), q.stats.NotIP.Load()}
	}
	before, delivered := load(), d.n
	e.deliver(q, q.frame, d, n, frames)
	after := load()
	counted := 0
	for i := range after {
		counted += int(after[i] - before[i])
	}
	if d.n == delivered {
		if counted != 1 {
			t.Fatalf("hdr %d, n %d: not delivered, %d counters moved", q.hdr, n, counted)
		}
		return
	}
	if counted != 0 || n < q.hdr || n > room {
		t.Fatalf("hdr %d, n %d (room %d): delivered, and %d counters moved", q.hdr, n, room, counted)
	}
	ip := q.frame.buf[FramePacket : q.readAt+n]
	if !bytes.Equal(d.pkt, ip) {
		t.Fatalf("hdr %d: delivered %d bytes, read %d", q.hdr, len(d.pkt), len(ip))
	}
	if v := ip[0] >> 4; v != 4 && v != 6 {
		t.Fatalf("version %d delivered", v)
	}
	if q.hdr == 0 {
		if len(ip) > int(e.mtu.Load()) {
			t.Fatalf("%d bytes delivered over an MTU of %d", len(ip), e.mtu.Load())
		}
		return
	}
	if err := ValidateOffloadPacket(&q.frame.Offload, ip); err != nil {
		t.Fatalf("delivered with offload %+v the kernel would refuse: %v", q.frame.Offload, err)
	}
}

// FuzzEndpointDeliver: whatever a queue's descriptor returns (any bytes,
// any header size the endpoint reads behind, any length a read or an
// io_uring completion reports), deliver hands over exactly the IP packet
// that was read, with valid offload metadata, or counts why not.
func FuzzEndpointDeliver(f *testing.F) {
	ip4 := make([]byte, 48)
	ip4[0], ip4[9] = 0x45, 17
	binary.BigEndian.PutUint16(ip4[2:], 48)
	ip6 := make([]byte, 60)
	ip6[0], ip6[6] = 0x60, 17
	binary.BigEndian.PutUint16(ip6[4:], 20)
	partial6 := append(make([]byte, VnetHdrLen), ip6...)
	partial6[0], partial6[6], partial6[8] = 1, 40, 6 // NEEDS_CSUM at the UDP checksum
	for _, hdr := range deliverHdrs {
		f.Add(uint8(hdr), append(make([]byte, hdr), ip4...), int32(-1), false)
		f.Add(uint8(hdr), append(make([]byte, hdr), ip6...), int32(-1), true)
		f.Add(uint8(hdr), make([]byte, hdr), int32(-1), true)
		f.Add(uint8(hdr), append(make([]byte, hdr), ip4...), int32(FrameHeader+GSOMaxSize), false)
	}
	f.Add(uint8(VnetHdrLen), partial6, int32(-1), true)
	ends := map[int]*Endpoint{}
	for _, hdr := range deliverHdrs {
		ends[hdr] = newEndpoint([]Conn{nopConn{}}, 1500, OffloadTSO4|OffloadUSO4, hdr, func(Conn) bool { return true })
	}
	d := &recordDispatcher{}
	f.Fuzz(func(t *testing.T, hdrSel uint8, data []byte, n int32, frames bool) {
		e := ends[deliverHdrs[int(hdrSel)%len(deliverHdrs)]]
		if len(data) > len(e.queues[0].frame.buf)-e.queues[0].readAt {
			return
		}
		read := len(data)
		if n >= 0 {
			read = int(n) // a length that lies about what was read
		}
		deliverOne(t, e, d, data, read, frames)
	})
}
