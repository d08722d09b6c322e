package tun

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// nopConn is a Conn that is never read: the test hands deliver its reads.
type nopConn struct{}

func (nopConn) Read([]byte) (int, error)        { return 0, nil }
func (nopConn) Write(p []byte) (int, error)     { return len(p), nil }
func (nopConn) SetReadDeadline(time.Time) error { return nil }

// countDispatcher counts the packets delivered to it and their sizes.
type countDispatcher struct{ n, bytes int }

func (d *countDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	d.n++
	d.bytes += pkt.Size()
}
func (*countDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

// TestDeliverReadLengths: whatever length a read reports (an io_uring
// completion's res, a Conn's n), deliver neither reads past its frame nor
// delivers a packet that is not there: a length larger than the frame's
// room is counted as a read error, one shorter than a virtio_net_hdr as
// ShortVnetHdr, for a frame dispatcher and a copying one.
func TestDeliverReadLengths(t *testing.T) {
	for _, frames := range []bool{true, false} {
		e := NewEndpointConns([]Conn{nopConn{}}, 1500, 0)
		q := e.queues[0]
		room := len(q.frame.buf) - FrameHeader
		buf := q.frame.buf[FramePacket:]
		buf[0] = 0x45
		d := &countDispatcher{}
		for _, tc := range []struct {
			n                       int
			delivered, errs, shorts int
		}{
			{n: VnetHdrLen + 20, delivered: 1},
			{n: room, delivered: 1},
			{n: room + 1, errs: 1},
			{n: 1 << 20, errs: 1},
			{n: -1, shorts: 1},
			{n: VnetHdrLen - 1, shorts: 1},
		} {
			before, errs, shorts := d.n, q.stats.ReadErrors.Load(), q.stats.ShortVnetHdr.Load()
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Errorf("frames %v, n %d: panic %v", frames, tc.n, r)
					}
				}()
				e.deliver(q, q.frame, d, tc.n, frames)
			}()
			if d.n-before != tc.delivered || int(q.stats.ReadErrors.Load()-errs) != tc.errs || int(q.stats.ShortVnetHdr.Load()-shorts) != tc.shorts {
				t.Errorf("frames %v, n %d: delivered %d, read errors %d, short %d; want %d, %d, %d", frames, tc.n,
					d.n-before, q.stats.ReadErrors.Load()-errs, q.stats.ShortVnetHdr.Load()-shorts, tc.delivered, tc.errs, tc.shorts)
			}
		}
	}
}
