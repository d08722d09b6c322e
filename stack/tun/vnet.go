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
