package main

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// segments does to a packet build made what the kernel does to it: a
// super-packet (GSO_UDP_L4) is cut into datagrams of gso_size payload bytes
// (__udp_gso_segment: each gets its own length, and the partial checksum is
// moved from the super-packet's length to the segment's), and each
// NEEDS_CSUM checksum is completed over the UDP header and payload from
// csum_start. It returns the IPv6 datagrams as they reach the server.
func segments(t *testing.T, b []byte) [][]byte {
	t.Helper()
	h, ip := b[:vnetHdrLen], b[vnetHdrLen:]
	if h[0] != 1 || binary.LittleEndian.Uint16(h[6:]) != 40 || binary.LittleEndian.Uint16(h[8:]) != 6 {
		t.Fatalf("virtio_net_hdr % x: want NEEDS_CSUM from the UDP header, checksum at +6", h)
	}
	payload := ip[48:]
	seg := len(payload)
	if h[1] == 5 {
		seg = int(binary.LittleEndian.Uint16(h[4:]))
		if binary.LittleEndian.Uint16(h[2:]) != 48 || seg != payloadLen {
			t.Fatalf("virtio_net_hdr % x: want hdr_len 48 and gso_size %d", h, payloadLen)
		}
	} else if h[1] != 0 {
		t.Fatalf("gso_type %d", h[1])
	}
	var out [][]byte
	for o := 0; o < len(payload); o += seg {
		p := payload[o:min(o+seg, len(payload))]
		d := append(append([]byte(nil), ip[:48]...), p...)
		udpLen := uint16(8 + len(p))
		binary.BigEndian.PutUint16(d[4:], udpLen)
		u := header.UDP(d[40:])
		// The partial checksum holds the pseudo-header of the
		// super-packet's length: swap it for the segment's.
		partial := checksum.Combine(u.Checksum(), ^u.Length())
		partial = checksum.Combine(partial, udpLen)
		u.SetLength(udpLen)
		u.SetChecksum(0)
		u.SetChecksum(^checksum.Checksum(d[40:], partial))
		out = append(out, d)
	}
	return out
}

func TestBuildMakesWhatTheServerChecks(t *testing.T) {
	src, dst := netip.MustParseAddr("2001:db8:2::1"), netip.MustParseAddr("2001:db8:1::2")
	for _, k := range []int{1, 4, 16} {
		b := make([]byte, 65536)
		n := build(b, src, dst, 1000, k)
		if want := vnetHdrLen + 40 + 8 + k*payloadLen; n != want {
			t.Fatalf("k=%d: %d bytes, want %d", k, n, want)
		}
		if gso := b[1]; (k > 1) != (gso == 5) {
			t.Errorf("k=%d: gso_type %d", k, gso)
		}
		dgrams := segments(t, b[:n])
		if len(dgrams) != k {
			t.Fatalf("k=%d: %d datagrams after segmentation", k, len(dgrams))
		}
		for i, d := range dgrams {
			ip := header.IPv6(d)
			if !ip.IsValid(len(d)) || ip.TransportProtocol() != header.UDPProtocolNumber || ip.SourceAddress() != tcpip.AddrFrom16(src.As16()) || ip.DestinationAddress() != tcpip.AddrFrom16(dst.As16()) {
				t.Fatalf("k=%d datagram %d: IPv6 header % x", k, i, d[:40])
			}
			u := header.UDP(ip.Payload())
			if !u.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(u.Payload(), 0)) {
				t.Errorf("k=%d datagram %d: UDP checksum %#04x does not verify", k, i, u.Checksum())
			}
			if u.SourcePort() != srcPort || u.DestinationPort() != dstPort || len(u.Payload()) != payloadLen {
				t.Errorf("k=%d datagram %d: ports %d>%d, %d payload bytes", k, i, u.SourcePort(), u.DestinationPort(), len(u.Payload()))
			}
			// What the server checks: the sequence number and the bytes
			// that follow from it.
			p := u.Payload()
			seq := binary.BigEndian.Uint64(p)
			if seq != 1000+uint64(i) {
				t.Errorf("k=%d datagram %d: sequence %d", k, i, seq)
			}
			for j := 8; j < payloadLen; j++ {
				if p[j] != byte(seq+uint64(j)) {
					t.Fatalf("k=%d datagram %d: payload byte %d is %#x", k, i, j, p[j])
				}
			}
		}
	}
}

// A wrong partial checksum must not pass as a good one: the check above
// is what catches a pseudo-header built for the wrong length.
func TestSegmentsCatchABadPartialChecksum(t *testing.T) {
	src, dst := netip.MustParseAddr("2001:db8:2::1"), netip.MustParseAddr("2001:db8:1::2")
	b := make([]byte, 65536)
	n := build(b, src, dst, 0, 4)
	u := b[vnetHdrLen+40:]
	binary.BigEndian.PutUint16(u[6:], pseudoSum(src, dst, 8+payloadLen)) // a segment's length, not the super-packet's
	for i, d := range segments(t, b[:n]) {
		ip := header.IPv6(d)
		u := header.UDP(ip.Payload())
		if u.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(u.Payload(), 0)) {
			t.Errorf("datagram %d verifies with a partial checksum of the wrong length", i)
		}
	}
}
