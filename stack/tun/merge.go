package tun

import (
	"bytes"
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/stack/xlat"
)

// Write-side coalescing of UDP datagrams into USO super-packets: the
// translated IPv6 UDP datagrams of one flow that a queue on its io_uring
// writes in one batch leave as one write with a virtio_net_hdr of
// gso_type VIRTIO_NET_HDR_GSO_UDP_L4 (virtio 1.2 section 5.1.6.2), so the
// kernel makes one skb, routes it once and segments it where it must (the
// receiving socket, or a device's GSO) into exactly the datagrams that
// were merged. This is userspace GRO on the write side.
//
// What merges (mergeCandidate, joins): IPv6 datagrams (RFC 8200) whose
// next header is UDP, with no extension header (so never a fragment),
// carrying no offload metadata of their own (not a super-packet), with a
// UDP checksum that is known good (below), whose IPv6 headers are equal
// but for the payload length (version, traffic class, flow label, next
// header, hop limit, addresses) and whose ports are equal. The first
// datagram's payload size is the segment size: a datagram with a larger
// payload does not join, one with a shorter payload joins and ends the
// merge (the kernel's last segment may be short, no other), and so do the
// kernel's bounds: at most udpMaxSegments datagrams and an IPv6 payload
// length that fits 16 bits. IPv4 output is never merged: the kernel's UDP
// segmentation would give every segment an Identification of its own
// choosing (the first one's plus the segment's index), replacing the one
// RFC 7915 section 5.1 derives for each datagram, and a datagram's DF=0
// would stand for the whole super-packet.
//
// Checksums: a super-packet is written with NEEDS_CSUM, and the kernel
// computes every segment's UDP checksum, which would turn a datagram
// with a bad checksum into a good one. So a datagram joins only if its
// checksum is known good: its virtio_net_hdr says NEEDS_CSUM (the
// sender's kernel computes it anyway) or DATA_VALID (the kernel checked
// the input's checksum and the translation adjusted it incrementally), or
// the checksum verifies over the translated datagram (a flag-less packet:
// the sender's kernel did not look). Any other datagram is written on its
// own, as it is, after whatever merge it ended.
//
// Order and latency: a write that does not join a merge first writes the
// merge pending before it, and the loop writes the pending merge at the
// end of every batch, before it enters the ring again: datagrams leave in
// the order they were written, and none waits past its batch.
//
// Memory: a delivery's slot is read into again right after its batch, so
// a merge copies its datagrams into the queue's merge arena (small ones
// only: mergeMaxPacket), and a merge write keeps its part of the arena
// until its completion is reaped (the arena is reused once every merge
// write completed).

// mergeMaxPacket is the largest IPv6 datagram a merge copies: one
// Ethernet MTU. What a merge saves (a tun write, a routing pass, an skb)
// is the same for any size while the copy grows with it; past the MTU,
// datagrams are few per second at any rate.
const mergeMaxPacket = 1500

// mergeArenaLen is a queue's merge arena: room for two of the largest
// super-packets, so that the merge writes of a batch whose completions
// came late do not stop the next batch's (a batch of uringSlots
// datagrams of mergeMaxPacket takes a third of it).
const mergeArenaLen = 2 * (MrgVnetHdrLen + header.IPv6MinimumSize + 0xffff)

// mergeWrites bounds the merge writes in flight, each with its id in the
// ring's user data: one per datagram of two batches.
const mergeWrites = 2 * uringSlots

// udpHdrLen is the UDP header's length (RFC 768).
const udpHdrLen = 8

// udpMerger is a queue's pending merge and its merge writes in flight;
// only the queue's dispatch goroutine uses it.
type udpMerger struct {
	hdr   int    // the queue's virtio_net_hdr length
	arena []byte // mergeArenaLen bytes
	used  int    // arena bytes taken: by writes in flight, then the pending merge
	// The pending merge is arena[start:end]: its header, the first
	// datagram's IPv6 and UDP headers, the payloads. n datagrams of seg
	// payload bytes each, but a shorter last one, which ends it (closed).
	start, end, n, seg int
	closed             bool
	id                 int // the write id the pending merge holds
	// count[id] is the datagrams of merge write id in flight (0: the id is
	// free), want[id] its length; inflight counts them.
	count    [mergeWrites]int
	want     [mergeWrites]int
	inflight int
}

// newUDPMerger returns the merger of a queue whose packets have a
// virtio_net_hdr of hdr bytes.
func newUDPMerger(hdr int) *udpMerger {
	return &udpMerger{hdr: hdr, arena: make([]byte, mergeArenaLen), id: -1}
}

// offer is a write's turn at merging: it copies b (the virtio_net_hdr and
// the packet, whose offload metadata is off) into the pending merge, or
// calls flush to have the pending merge written first (when b does not
// join it) and then tries to begin a new merge with b. It reports false
// if b is not in a merge: the caller writes it itself, after what flush
// wrote.
func (m *udpMerger) offer(b []byte, off *xlat.Offload, flush func()) bool {
	payload, ok := mergeCandidate(b[m.hdr:], off)
	if ok && m.add(b, payload) {
		return true
	}
	if m.pending() {
		flush()
		return ok && m.add(b, payload)
	}
	return false
}

// pending reports whether a merge is pending.
func (m *udpMerger) pending() bool { return m.n > 0 }

// mergeCandidate reports whether ip, the IPv6 packet being written (its
// exact length) with offload metadata off, may be part of a USO
// super-packet, and its UDP payload length.
func mergeCandidate(ip []byte, off *xlat.Offload) (payload int, ok bool) {
	if len(ip) < header.IPv6MinimumSize+udpHdrLen || len(ip) > mergeMaxPacket || ip[0]>>4 != 6 || ip[6] != uint8(header.UDPProtocolNumber) {
		return 0, false
	}
	if off.GSOType != xlat.GSONone || off.Flags&^knownFlags != 0 {
		return 0, false
	}
	l := len(ip) - header.IPv6MinimumSize
	if int(binary.BigEndian.Uint16(ip[4:])) != l || int(binary.BigEndian.Uint16(ip[header.IPv6MinimumSize+4:])) != l {
		return 0, false
	}
	if l == udpHdrLen {
		return 0, false // no payload: no segment size
	}
	switch {
	case off.Flags&xlat.OffloadNeedsCsum != 0:
		if off.CsumStart != header.IPv6MinimumSize || off.CsumOffset != 6 {
			return 0, false
		}
	case off.Flags&xlat.OffloadDataValid != 0:
		// RFC 8200 section 8.1: zero is no checksum, which IPv6 UDP may
		// not carry; the kernel would compute one.
		if binary.BigEndian.Uint16(ip[header.IPv6MinimumSize+6:]) == 0 {
			return 0, false
		}
	default:
		if !udp6ChecksumGood(ip) {
			return 0, false
		}
	}
	return l - udpHdrLen, true
}

// udp6ChecksumGood reports whether the UDP checksum of the IPv6 UDP
// datagram ip (no extension header) verifies (RFC 8200 section 8.1), zero
// being no checksum.
func udp6ChecksumGood(ip []byte) bool {
	u := ip[header.IPv6MinimumSize:]
	if binary.BigEndian.Uint16(u[6:]) == 0 {
		return false
	}
	s := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpip.AddrFrom16Slice(ip[8:24]), tcpip.AddrFrom16Slice(ip[24:40]), uint16(len(u)))
	return checksum.Checksum(u, s) == 0xffff
}

// joins reports whether the datagram ip belongs to the flow of first: the
// same IPv6 header but for the payload length, the same ports.
func joins(first, ip []byte) bool {
	return bytes.Equal(first[:4], ip[:4]) && bytes.Equal(first[6:header.IPv6MinimumSize+4], ip[6:header.IPv6MinimumSize+4])
}

// add copies b (the virtio_net_hdr and the datagram, whose UDP payload is
// payload bytes long, mergeCandidate's) into the pending merge: as its
// next datagram, or, with none pending, as its first. It reports false if
// b cannot be added: another flow, a larger payload, the merge ended or
// full, or no room in the arena or no write id for a new merge.
func (m *udpMerger) add(b []byte, payload int) bool {
	if m.n == 0 {
		return m.begin(b, payload)
	}
	first := m.arena[m.start+m.hdr : m.end]
	ip := b[m.hdr:]
	if m.closed || payload > m.seg || m.n == udpMaxSegments || !joins(first, ip) {
		return false
	}
	if m.end-m.start-m.hdr-header.IPv6MinimumSize+payload > 0xffff || m.end+payload > len(m.arena) {
		return false
	}
	m.end += copy(m.arena[m.end:], ip[header.IPv6MinimumSize+udpHdrLen:])
	m.n++
	m.closed = payload < m.seg
	return true
}

// begin starts a merge with b.
func (m *udpMerger) begin(b []byte, payload int) bool {
	if m.inflight == 0 {
		m.used = 0
	}
	if m.used+len(b) > len(m.arena) {
		return false
	}
	id := -1
	for i, c := range m.count {
		if c == 0 {
			id = i
			break
		}
	}
	if id < 0 {
		return false
	}
	m.id, m.start = id, m.used
	m.end = m.start + copy(m.arena[m.start:], b)
	m.n, m.seg, m.closed = 1, payload, false
	return true
}

// finish ends the pending merge: it returns the bytes to write (the lone
// datagram as it came, or the super-packet with its header), its write id
// and how many datagrams it carries. The arena part stays taken until
// done(id).
func (m *udpMerger) finish() (b []byte, id, n int) {
	b, id, n = m.arena[m.start:m.end], m.id, m.n
	if n > 1 {
		ip := b[m.hdr:]
		l := len(ip) - header.IPv6MinimumSize
		binary.BigEndian.PutUint16(ip[4:], uint16(l))
		u := ip[header.IPv6MinimumSize:]
		binary.BigEndian.PutUint16(u[4:], uint16(l))
		// A partial checksum: the pseudo-header's sum, not complemented
		// (the kernel adds each segment's data and length).
		s := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpip.AddrFrom16Slice(ip[8:24]), tcpip.AddrFrom16Slice(ip[24:40]), uint16(l))
		binary.BigEndian.PutUint16(u[6:], s)
		EncodeVnetHdr(b, &xlat.Offload{
			Flags:      xlat.OffloadNeedsCsum,
			GSOType:    xlat.GSOUDPL4,
			HdrLen:     header.IPv6MinimumSize + udpHdrLen,
			GSOSize:    uint16(m.seg),
			CsumStart:  header.IPv6MinimumSize,
			CsumOffset: 6,
		})
	}
	m.count[id], m.want[id] = n, len(b)
	m.inflight++
	m.used = m.end
	m.n, m.id = 0, -1
	return b, id, n
}

// done frees merge write id, whose result is res; it returns how many
// datagrams were lost (all of them unless the whole write went through).
func (m *udpMerger) done(id int, res int32) (lost int) {
	if id < 0 || id >= mergeWrites || m.count[id] == 0 {
		return 0
	}
	if int(res) != m.want[id] {
		lost = m.count[id]
	}
	m.count[id] = 0
	m.inflight--
	return lost
}
