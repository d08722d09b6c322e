package stack

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// vnetFrame is pkt behind a virtio_net_hdr of vnet bytes saying off, and
// with eth behind an Ethernet header from peerMAC to tapMAC (whose length
// the header's offsets then count too, as a tap's do). The bytes past
// VnetHdrLen (num_buffers) are set, which the endpoint must ignore.
func vnetFrame(vnet int, eth bool, off xlat.Offload, pkt []byte) []byte {
	b := make([]byte, vnet, vnet+ethHdrLen+len(pkt))
	if eth {
		if off.Flags&xlat.OffloadNeedsCsum != 0 {
			off.CsumStart += ethHdrLen
		}
		if off.HdrLen != 0 {
			off.HdrLen += ethHdrLen
		}
	}
	tun.EncodeVnetHdr(b, &off)
	for i := tun.VnetHdrLen; i < vnet; i++ {
		b[i] = 0xa5
	}
	if eth {
		b = append(b, tapMAC[:]...)
		b = append(b, peerMAC[:]...)
		b = binary.BigEndian.AppendUint16(b, map[byte]uint16{4: ethTypeIP4, 6: ethTypeIP6}[pkt[0]>>4])
	}
	return append(b, pkt...)
}

// splitVnet takes what the translator wrote apart: its virtio_net_hdr
// (offsets moved to count from the IP header), the Ethernet header (eth)
// and the IP packet. num_buffers must be zero.
func splitVnet(t testing.TB, vnet int, eth bool, b []byte) (xlat.Offload, []byte, []byte) {
	t.Helper()
	if len(b) < vnet {
		t.Fatalf("%d bytes written, shorter than the %d-byte virtio_net_hdr", len(b), vnet)
	}
	var off xlat.Offload
	tun.DecodeVnetHdr(b, &off)
	for i := tun.VnetHdrLen; i < vnet; i++ {
		if b[i] != 0 {
			t.Errorf("num_buffers byte %d is %#x, want 0", i, b[i])
		}
	}
	b = b[vnet:]
	var l2 []byte
	if eth {
		if len(b) < ethHdrLen {
			t.Fatalf("frame of %d bytes", len(b))
		}
		l2, b = b[:ethHdrLen], b[ethHdrLen:]
		if off.Flags&xlat.OffloadNeedsCsum != 0 {
			if off.CsumStart < ethHdrLen {
				t.Fatalf("csum_start %d inside the Ethernet header", off.CsumStart)
			}
			off.CsumStart -= ethHdrLen
		}
		if off.HdrLen != 0 {
			off.HdrLen -= ethHdrLen
		}
	}
	return off, l2, b
}

// vnetPath serves one end of a datagram socketpair, standing in for a
// tun (eth false) or tap opened with IFF_VNET_HDR and a vnet-byte header,
// and returns the data path, a sender of packets with offload metadata,
// the peer end and a reader of what the translator writes. On a tap the
// gateways (both peerMAC) are resolved first: a small packet each way is
// parked, the solicitation answered, and the parked packet must come out
// behind a virtio_net_hdr that says it is complete.
func vnetPath(t *testing.T, vnet int, eth bool) (*Datapath, *xlat.Engine, func(xlat.Offload, []byte), tapPeer, func() (xlat.Offload, []byte)) {
	t.Helper()
	eng := testEngine(t)
	var d *Datapath
	var peer tapPeer
	if eth {
		d, peer = serveTapPair(t, eng, TapConfig{MTU: 1520, VnetHdr: vnet, MAC: tapMAC, IPv4Gateway: gw4, IPv6Gateway: gw6})
	} else {
		fds := dgramPair(t)
		ctx, cancel := context.WithCancel(context.Background())
		var err error
		if d, err = ServeFDQueues(ctx, eng, []int{fds[0]}, 1520, vnet, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cancel()
			if err := d.Wait(); err != nil {
				t.Error(err)
			}
		})
		peer = tapPeer{t, fds[1]}
	}
	send := func(off xlat.Offload, pkt []byte) { peer.raw(vnetFrame(vnet, eth, off, pkt)) }
	recv := func() (xlat.Offload, []byte, []byte) {
		b := peer.recv()
		if b == nil {
			t.Fatal("nothing written")
		}
		return splitVnet(t, vnet, eth, b)
	}
	read := func() (xlat.Offload, []byte) {
		off, l2, ip := recv()
		if eth && (!bytes.Equal(l2[0:6], peerMAC[:]) || !bytes.Equal(l2[6:12], tapMAC[:])) {
			t.Errorf("sent from %x to %x", l2[6:12], l2[0:6])
		}
		return off, ip
	}
	if !eth {
		return d, eng, send, peer, read
	}
	data := payload(16, 3)
	for _, c := range []struct {
		pkt   []byte
		reply []byte // what answers the translator's solicitation
	}{
		{ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, data, false), 0, 0),
			ndPacket(header.ICMPv6NeighborAdvert, gw6.String(), "fe80::5eff:fe10:1", gw6.String(), 255, 0x60, peerMAC[:])},
		{ipv6(header.UDPProtocolNumber, srv6, cli6, l4(header.UDPProtocolNumber, srv6, cli6, data, false)),
			arpPacket(header.ARPReply, peerMAC, gw4.String(), "0.0.0.0", tapMAC)},
	} {
		send(xlat.Offload{}, c.pkt)
		if off, l2, _ := recv(); off != (xlat.Offload{}) || !bytes.Equal(l2[6:12], tapMAC[:]) {
			t.Fatalf("solicitation with offload %+v from %x", off, l2[6:12])
		}
		peer.raw(vnetFrame(vnet, false, xlat.Offload{}, append(ethHeader(tapMAC, peerMAC, map[bool]uint16{true: ethTypeIP6, false: ethTypeARP}[c.pkt[0]>>4 == 4]), c.reply...)))
		if off, l2, ip := recv(); off != (xlat.Offload{}) || !bytes.Equal(l2[0:6], peerMAC[:]) || ip[0]>>4 == c.pkt[0]>>4 {
			t.Fatalf("parked packet: offload %+v, to %x, IP version %d", off, l2[0:6], ip[0]>>4)
		}
	}
	return d, eng, send, peer, read
}

// ethHeader is an Ethernet header from src to dst.
func ethHeader(dst, src [6]byte, etherType uint16) []byte {
	return binary.BigEndian.AppendUint16(append(dst[:], src[:]...), etherType)
}

// vnetQueue is vnetPath as a queueFunc for testTranslate, which checks
// that nothing was dropped.
func vnetQueue(vnet int, eth bool) queueFunc {
	return func(t *testing.T) (*Datapath, *xlat.Engine, func(xlat.Offload, []byte), func() (xlat.Offload, []byte)) {
		d, eng, send, peer, read := vnetPath(t, vnet, eth)
		t.Cleanup(func() {
			peer.expectNone("after the test")
			if s := d.LinkStats(); s.WriteErrors != 0 || s.ReadErrors != 0 || s.InvalidVnetHdr != 0 || s.ShortVnetHdr != 0 || s.NoNextHop != 0 {
				t.Errorf("link stats %+v", s)
			}
		})
		return d, eng, send, read
	}
}

// TestFDVnetTranslates: an fd with a virtio_net_hdr (10 bytes, or 12 as
// QEMU and Firecracker set it) carries every kind of packet the tun does,
// TSO and USO super-packets and partial checksums included, with the
// offsets of the header moved by the translation (and on a tap, counted
// from the Ethernet header both ways).
func TestFDVnetTranslates(t *testing.T) {
	for _, vnet := range []int{tun.VnetHdrLen, maxVnetHdr} {
		for _, eth := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/vnet%d", map[bool]string{false: "tun", true: "tap"}[eth], vnet), func(t *testing.T) {
				for _, tc := range translateCases() {
					t.Run(tc.name, func(t *testing.T) { testTranslate(t, vnetQueue(vnet, eth), tc) })
				}
			})
		}
	}
}

// TestFDVnetBadHeaders: a virtio_net_hdr the kernel would refuse (an
// unknown flag, segmentation without a partial checksum, a checksum field
// past the end, on a tap one that starts inside the Ethernet header) and
// a read shorter than the header are counted and dropped, and the data
// path goes on.
func TestFDVnetBadHeaders(t *testing.T) {
	for _, eth := range []bool{false, true} {
		t.Run(map[bool]string{false: "tun", true: "tap"}[eth], func(t *testing.T) {
			d, _, send, peer, read := vnetPath(t, maxVnetHdr, eth)
			v6 := ipv6(header.UDPProtocolNumber, srv6, cli6, l4(header.UDPProtocolNumber, srv6, cli6, payload(400, 1), true))
			before := d.LinkStats()
			send(xlat.Offload{Flags: 0x10}, v6)
			send(xlat.Offload{GSOType: xlat.GSOTCPv6, GSOSize: 100}, v6)
			send(xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 40, CsumOffset: uint16(len(v6))}, v6)
			invalid := uint64(3)
			if eth {
				f := vnetFrame(maxVnetHdr, true, xlat.Offload{}, v6)
				tun.EncodeVnetHdr(f, &xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 4, CsumOffset: 6})
				peer.raw(f)
				invalid++
			}
			peer.raw(make([]byte, maxVnetHdr-1))
			peer.expectNone("bad headers")
			send(xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 40, CsumOffset: 6}, v6)
			off, out := read()
			complete(out, off)
			if p := parse(t, out); p.v6 || !checksumOK(p, p.seg) {
				t.Fatalf("good packet after bad ones: IPv6 %v, checksum ok %v", p.v6, checksumOK(p, p.seg))
			}
			s := d.LinkStats()
			if s.InvalidVnetHdr-before.InvalidVnetHdr != invalid || s.ShortVnetHdr-before.ShortVnetHdr != 1 || s.Reads-before.Reads != 1 {
				t.Errorf("invalid %d short %d reads %d; want %d, 1, 1", s.InvalidVnetHdr-before.InvalidVnetHdr, s.ShortVnetHdr-before.ShortVnetHdr, s.Reads-before.Reads, invalid)
			}
		})
	}
}

// TestFDVnetTransitAllocs: a TSO super-packet through an fd with a
// virtio_net_hdr, bare IP and on a tap, costs no allocation: read into
// the frame (the header beside it), translated there, one writev.
func TestFDVnetTransitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	const mss = 1448
	tso4 := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv4, HdrLen: 40, GSOSize: mss, CsumStart: 20, CsumOffset: 16}
	v4 := ipv4(header.TCPProtocolNumber, cli4, srv4, l4(header.TCPProtocolNumber, cli4, srv4, payload(40*mss, 1), true), header.IPv4FlagDontFragment, 0)
	for _, eth := range []bool{false, true} {
		t.Run(map[bool]string{false: "tun", true: "tap"}[eth], func(t *testing.T) {
			eng := testEngine(t)
			fds := dgramPair(t)
			unix.SetNonblock(fds[0], true)
			var ep *tapEndpoint
			if eth {
				ep = newTapEndpoint(TapConfig{FD: fds[0], MTU: 1500, VnetHdr: maxVnetHdr, MAC: tapMAC, IPv6Gateway: gw6},
					func(a netip.Addr) bool { return ownsForNeighbours(eng.Config(), a) }, slog.New(slog.DiscardHandler))
				ep.neigh.soliciting[gw6] = monoNow()
				ep.neigh.learn(gw6, peerMAC)
				ep.res.resolve(netip.MustParseAddr(serverV6))
			} else {
				ep = newRawFDEndpoint(fds[0], 1500, maxVnetHdr, slog.New(slog.DiscardHandler))
			}
			h := NewHandler(ep, 1, func() Translator { return eng.NewWorker() }, nil)
			in := vnetFrame(maxVnetHdr, eth, tso4, v4)
			buf := ep.frame.Bytes()[tun.FramePacket:]
			if eth {
				buf = ep.frame.Bytes()[tun.FramePacket-ethHdrLen:]
			}
			out := make([]byte, 70000)
			var n int
			allocs := testing.AllocsPerRun(100, func() {
				copy(ep.rvnet[:], in)
				ep.deliver(h, buf[:copy(buf, in[maxVnetHdr:])])
				n, _ = unix.Read(fds[1], out)
			})
			if allocs != 0 {
				t.Errorf("%v allocations per super-packet", allocs)
			}
			off, _, ip := splitVnet(t, maxVnetHdr, eth, out[:max(n, 0)])
			if len(ip) != len(v4)+20 || off.GSOType != xlat.GSOTCPv6 || off.GSOSize != mss || off.CsumStart != 40 || off.HdrLen != 60 {
				t.Errorf("wrote %d bytes (want %d) with %+v", len(ip), len(v4)+20, off)
			}
			if s := h.Stats(); s.WriteErrors != 0 {
				t.Errorf("write errors %d", s.WriteErrors)
			}
		})
	}
}

// BenchmarkServeFDVnet: one TSO super-packet of 40 segments at a time
// through ServeFDQueues over a datagram socketpair with a 12-byte
// virtio_net_hdr, with the real engine: write, translated whole, read
// back. SetBytes is the TCP payload: compare MB/s with BenchmarkServeFD's
// one packet per round trip.
func BenchmarkServeFDVnet(b *testing.B) {
	const mss = 1448
	fds := dgramPair(b)
	ctx, cancel := context.WithCancel(context.Background())
	d, err := ServeFDQueues(ctx, testEngine(b), []int{fds[0]}, 1500, maxVnetHdr, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { cancel(); d.Wait() }()
	data := payload(40*mss, 1)
	tso4 := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv4, HdrLen: 40, GSOSize: mss, CsumStart: 20, CsumOffset: 16}
	in := vnetFrame(maxVnetHdr, false, tso4, ipv4(header.TCPProtocolNumber, cli4, srv4, l4(header.TCPProtocolNumber, cli4, srv4, data, true), header.IPv4FlagDontFragment, 0))
	out := make([]byte, 70000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := unix.Write(fds[1], in); err != nil {
			b.Fatal(err)
		}
		if n, err := unix.Read(fds[1], out); err != nil || n != len(in)+20 {
			b.Fatalf("read %d: %v", n, err)
		}
	}
}
