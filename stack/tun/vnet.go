package tun

import (
	"encoding/binary"
	"errors"

	"github.com/map646/map646/stack/xlat"
)

// VnetHdrLen is the size of struct virtio_net_hdr (include/uapi/linux/
// virtio_net.h) without num_buffers: the prefix of every packet read from or
// written to a tun opened with IFF_VNET_HDR (the device is set to this size
// with TUNSETVNETHDRSZ).
const VnetHdrLen = 10

// knownFlags are the virtio_net_hdr flags a tun sets; VIRTIO_NET_HDR_F_RSC_INFO
// and anything newer is refused.
const knownFlags = xlat.OffloadNeedsCsum | xlat.OffloadDataValid

// Header validation errors.
var (
	ErrShortVnetHdr   = errors.New("tun: packet shorter than its virtio_net_hdr")
	ErrInvalidVnetHdr = errors.New("tun: invalid virtio_net_hdr")
)

// DecodeVnetHdr decodes the virtio_net_hdr at b[:VnetHdrLen] into o.
//
// The tun driver exchanges the header in little-endian byte order (virtio
// 1.0 "modern" layout, which tun uses on little-endian hosts and with
// TUNSETVNETLE); gVisor's header.VirtioNetHeader reads big-endian and so
// cannot be used here.
func DecodeVnetHdr(b []byte, o *xlat.Offload) error {
	if len(b) < VnetHdrLen {
		return ErrShortVnetHdr
	}
	o.Flags = b[0]
	o.GSOType = b[1]
	o.HdrLen = binary.LittleEndian.Uint16(b[2:])
	o.GSOSize = binary.LittleEndian.Uint16(b[4:])
	o.CsumStart = binary.LittleEndian.Uint16(b[6:])
	o.CsumOffset = binary.LittleEndian.Uint16(b[8:])
	return nil
}

// EncodeVnetHdr writes o as a little-endian virtio_net_hdr into b[:VnetHdrLen].
func EncodeVnetHdr(b []byte, o *xlat.Offload) {
	_ = b[VnetHdrLen-1]
	b[0] = o.Flags
	b[1] = o.GSOType
	binary.LittleEndian.PutUint16(b[2:], o.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], o.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], o.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], o.CsumOffset)
}

// ValidateOffload checks the offload metadata of a packet of pktLen bytes as
// the kernel's virtio_net_hdr_to_skb would before trusting it: known flags
// and GSO types (UFO, VIRTIO_NET_HDR_GSO_UDP, is refused: Open never
// enables it, and its segments are IP fragments the translator would have
// to make), a segment size for super-packets, and a checksum field that
// lies inside the packet (csum_start + csum_offset + 2 <= length).
func ValidateOffload(o *xlat.Offload, pktLen int) error {
	if o.Flags&^knownFlags != 0 {
		return ErrInvalidVnetHdr
	}
	switch o.GSOType &^ xlat.GSOECN {
	case xlat.GSONone:
		if o.GSOType&xlat.GSOECN != 0 {
			return ErrInvalidVnetHdr
		}
	case xlat.GSOTCPv4, xlat.GSOTCPv6, xlat.GSOUDPL4:
		if o.GSOSize == 0 || o.Flags&xlat.OffloadNeedsCsum == 0 {
			// Segmentation needs a partial checksum to complete per
			// segment (virtio_net_hdr_to_skb rejects it otherwise).
			return ErrInvalidVnetHdr
		}
	default:
		return ErrInvalidVnetHdr
	}
	if o.Flags&xlat.OffloadNeedsCsum != 0 {
		if int(o.CsumStart)+int(o.CsumOffset)+2 > pktLen {
			return ErrInvalidVnetHdr
		}
	}
	return nil
}

// udpMaxSegments is the kernel's UDP_MAX_SEGMENTS: the most datagrams one
// USO super-packet may carry (virtio_net_hdr_to_skb refuses more).
const udpMaxSegments = 128

// maxExtHeaders bounds the IPv6 extension headers ValidateOffloadPacket
// walks to find the transport header.
const maxExtHeaders = 8

// ValidateOffloadPacket checks the offload metadata of the IP packet pkt:
// ValidateOffload's checks, then the ones virtio_net_hdr_to_skb makes
// against the headers (include/linux/virtio_net.h: a segmentation type's
// checksum field is its transport's, TCP's or UDP's; the transport header
// lies past the network header; a USO super-packet has at most
// udpMaxSegments datagrams), and the ones the translator needs to
// rewrite the packet: a partial checksum never starts inside the IP
// header (RFC 7915 rewrites it, so it would move out of the packet or
// into the new header), one of TCP or UDP starts exactly at that
// transport header with that transport's checksum offset, and a
// segmentation type matches the packet: TCPv4 on IPv4 TCP, TCPv6 on IPv6
// TCP, USO on UDP, none on a fragment. A kernel's own tun or tap never
// hands over a header that fails these; a guest or VM manager writing
// into an inherited descriptor may.
//
// The checks count the packet to its IP length, not to the end of what
// was read: a frame's trailing bytes (Ethernet padding of a short frame)
// are not the packet's, and the translator drops them.
func ValidateOffloadPacket(o *xlat.Offload, pkt []byte) error {
	pkt = pkt[:min(len(pkt), ipLength(pkt))]
	if err := ValidateOffload(o, len(pkt)); err != nil {
		return err
	}
	if o.Flags&xlat.OffloadNeedsCsum == 0 {
		return nil
	}
	l4, proto, frag, ok := transportHeader(pkt)
	if !ok {
		return ErrInvalidVnetHdr
	}
	start := int(o.CsumStart)
	if start < l4 {
		return ErrInvalidVnetHdr
	}
	var csumOff, thlen int
	switch proto {
	case 6: // TCP
		csumOff, thlen = 16, 20
	case 17: // UDP
		csumOff, thlen = 6, 8
	}
	gso := o.GSOType &^ xlat.GSOECN
	if gso == xlat.GSONone {
		if thlen != 0 && start == l4 && int(o.CsumOffset) != csumOff {
			return ErrInvalidVnetHdr
		}
		return nil
	}
	want := uint8(17)
	switch gso {
	case xlat.GSOTCPv4:
		want = 6
		if pkt[0]>>4 != 4 {
			return ErrInvalidVnetHdr
		}
	case xlat.GSOTCPv6:
		want = 6
		if pkt[0]>>4 != 6 {
			return ErrInvalidVnetHdr
		}
	}
	if frag || proto != want || start != l4 || int(o.CsumOffset) != csumOff || start+thlen > len(pkt) {
		return ErrInvalidVnetHdr
	}
	if proto == 6 {
		if doff := int(pkt[start+12]>>4) * 4; doff < thlen || start+doff > len(pkt) {
			return ErrInvalidVnetHdr
		}
	} else if len(pkt)-start-thlen > int(o.GSOSize)*udpMaxSegments {
		return ErrInvalidVnetHdr
	}
	return nil
}

// ipLength is the length the IP header of pkt gives it (IPv4 Total
// Length, IPv6 40 + Payload Length), or len(pkt) if it gives none (not IP,
// an IPv6 jumbogram).
func ipLength(pkt []byte) int {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return int(binary.BigEndian.Uint16(pkt[2:]))
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		if n := int(binary.BigEndian.Uint16(pkt[4:])); n > 0 {
			return 40 + n
		}
	}
	return len(pkt)
}

// transportHeader finds where the transport header of the IP packet pkt
// starts and its protocol, walking up to maxExtHeaders IPv6 extension
// headers (hop-by-hop, routing, fragment, destination options; any other,
// such as AH, ends the walk there with that protocol). frag: pkt is a
// fragment, or a later part of one. ok is false if pkt is not IP or its
// headers do not fit it.
func transportHeader(pkt []byte) (l4 int, proto uint8, frag, ok bool) {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		l4 = int(pkt[0]&0xf) * 4
		frag = binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0
		return l4, pkt[9], frag, l4 >= 20 && l4 <= len(pkt)
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		l4, proto = 40, pkt[6]
		for range maxExtHeaders {
			switch proto {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if l4+8 > len(pkt) {
					return 0, 0, false, false
				}
				proto, l4 = pkt[l4], l4+(int(pkt[l4+1])+1)*8
			case 44: // fragment
				if l4+8 > len(pkt) {
					return 0, 0, false, false
				}
				frag = true
				proto, l4 = pkt[l4], l4+8
			default:
				return l4, proto, frag, l4 <= len(pkt)
			}
		}
		return 0, 0, false, false
	}
	return 0, 0, false, false
}
