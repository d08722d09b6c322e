package tun

import (
	"errors"

	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/stack/xlat"
)

// GSOMaxSize is the largest super-packet the tun hands over or accepts: an
// IP packet's 16-bit length.
const GSOMaxSize = 65535

// ErrUnsupportedGSO is returned for offload metadata that has no
// virtio_net_hdr form: gVisor's software GSO (GSOGvisor, which only
// gVisor's own endpoints can segment) or an unknown type.
var ErrUnsupportedGSO = errors.New("tun: GSO type without a virtio_net_hdr form")

// OffloadToPacket sets pkt's GSOOptions and RXChecksumValidated from the
// virtio_net_hdr fields in off, which ValidateOffload has accepted:
//
//   - NEEDS_CSUM becomes GSOOptions.NeedsCsum, with csum_start as L3HdrLen
//     (a tun has no link header, so the transport header starts right
//     after the network headers) and csum_offset as CsumOffset;
//   - the TCP GSO types become GSOTCPv4/GSOTCPv6, with gso_size as MSS
//     and GSOMaxSize as MaxSize;
//   - DATA_VALID becomes RXChecksumValidated.
//
// Two fields have no gVisor form and are recomputed from the packet by
// OffloadFromPacket: hdr_len (a hint to the kernel) and the ECN bit of the
// TCP GSO types, which the kernel sets exactly when the super-packet's TCP
// header has CWR (tcp_ecn_send, tcp_gro_complete).
//
// It reports false, leaving pkt alone, for a GSO type gVisor has no form
// for: UDP segmentation (VIRTIO_NET_HDR_GSO_UDP_L4, the tun's USO4/USO6;
// gVisor's GSOType knows TCP only) and UFO (VIRTIO_NET_HDR_GSO_UDP, which
// Open never enables). Such super-packets cross an Endpoint only in its
// frames, whose Offload carries the virtio_net_hdr as it is.
func OffloadToPacket(off *xlat.Offload, pkt *gvstack.PacketBuffer) bool {
	var g gvstack.GSO
	switch off.GSOType &^ xlat.GSOECN {
	case xlat.GSONone:
	case xlat.GSOTCPv4:
		g.Type = gvstack.GSOTCPv4
	case xlat.GSOTCPv6:
		g.Type = gvstack.GSOTCPv6
	default:
		return false
	}
	if g.Type != gvstack.GSONone {
		g.MSS = off.GSOSize
		g.MaxSize = GSOMaxSize
	}
	if off.Flags&xlat.OffloadNeedsCsum != 0 {
		g.NeedsCsum = true
		g.L3HdrLen = off.CsumStart
		g.CsumOffset = off.CsumOffset
	}
	pkt.GSOOptions = g
	pkt.RXChecksumValidated = off.Flags&xlat.OffloadDataValid != 0
	return true
}

// OffloadFromPacket is the inverse of OffloadToPacket: it fills off from
// pkt's GSOOptions and RXChecksumValidated, reading hdr_len and the ECN bit
// from the packet bytes b (the whole IP packet). It reports whether the
// packet carries any offload metadata at all (false: off is zero and the
// packet is complete), or ErrUnsupportedGSO.
func OffloadFromPacket(pkt *gvstack.PacketBuffer, b []byte, off *xlat.Offload) (bool, error) {
	*off = xlat.Offload{}
	g := &pkt.GSOOptions
	if pkt.RXChecksumValidated {
		off.Flags |= xlat.OffloadDataValid
	}
	if g.NeedsCsum {
		off.Flags |= xlat.OffloadNeedsCsum
		off.CsumStart = g.L3HdrLen
		off.CsumOffset = g.CsumOffset
	}
	var l4hdr int
	switch g.Type {
	case gvstack.GSONone:
		return off.Flags != 0, nil
	case gvstack.GSOTCPv4, gvstack.GSOTCPv6:
		off.GSOType = xlat.GSOTCPv4
		if g.Type == gvstack.GSOTCPv6 {
			off.GSOType = xlat.GSOTCPv6
		}
		if th := int(g.L3HdrLen); th+14 <= len(b) {
			l4hdr = int(b[th+12]>>4) * 4
			if b[th+13]&0x80 != 0 { // CWR
				off.GSOType |= xlat.GSOECN
			}
		}
	default:
		return false, ErrUnsupportedGSO
	}
	off.GSOSize = g.MSS
	if h := int(g.L3HdrLen) + l4hdr; l4hdr > 0 && h <= len(b) {
		off.HdrLen = uint16(h)
	}
	return true, nil
}

// CopyPacket copies the whole of pkt (headers and data) into dst without
// allocating; ok is false if it does not fit.
func CopyPacket(dst []byte, pkt *gvstack.PacketBuffer) (n int, ok bool) {
	n = CopyHead(dst, pkt)
	return n, n == pkt.Size()
}

// CopyHead copies the first len(dst) bytes of pkt (headers and data), or
// all of it if it is shorter, into dst without allocating, and returns how
// many it copied: a look at a packet's headers whatever views hold them.
func CopyHead(dst []byte, pkt *gvstack.PacketBuffer) int {
	n := 0
	views, skip := pkt.AsViewList()
	for v := views.Front(); v != nil && n < len(dst); v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		n += copy(dst[n:], s[skip:])
		skip = 0
	}
	return n
}
