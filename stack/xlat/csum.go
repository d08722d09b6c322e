package xlat

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// Ones' complement arithmetic for RFC 1624 incremental checksum updates.
// A "sum" is the folded, non-complemented ones' complement sum; a checksum
// field in full form holds its complement, in partial form (virtio
// NEEDS_CSUM) the pseudo-header sum itself.

func be16(b []byte) uint16     { return binary.BigEndian.Uint16(b) }
func put16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
func be32(b []byte) uint32     { return binary.BigEndian.Uint32(b) }
func put32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }

func be32put(v uint32) (a [4]byte) {
	binary.BigEndian.PutUint32(a[:], v)
	return a
}

// csumAdd is a + b in ones' complement.
func csumAdd(a, b uint16) uint16 { return checksum.Combine(a, b) }

// csumSub is a - b in ones' complement.
func csumSub(a, b uint16) uint16 { return checksum.Combine(a, ^b) }

// sum16 sums the 16 bytes of an IPv6 address.
func sum16(a *[16]byte) uint16 {
	var s uint32
	for i := 0; i < 16; i += 2 {
		s += uint32(a[i])<<8 | uint32(a[i+1])
	}
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return uint16(s)
}

// adjust applies the ones' complement difference d to the checksum field
// at f. Full form (partial false): RFC 1624 eqn. 3, HC' = ~(~HC + d).
// Partial form: the field holds a non-complemented sum, so HC' = HC + d.
// zeroToFFFF maps a full-form result of 0 to 0xffff, as UDP requires.
//
// One csumAdd for both forms keeps adjust within the inlining budget: it
// runs once or twice per packet.
func adjust(f []byte, d uint16, partial, zeroToFFFF bool) {
	c := be16(f)
	if !partial {
		c = ^c
	}
	c = csumAdd(c, d)
	if !partial {
		if c = ^c; c == 0 && zeroToFFFF {
			c = 0xffff
		}
	}
	put16(f, c)
}

// pseudo6 is the sum of the IPv6 pseudo-header (RFC 8200 section 8.1).
func pseudo6(src, dst *[16]byte, length uint32, nh uint8) uint16 {
	s := csumAdd(sum16(src), sum16(dst))
	s = csumAdd(s, uint16(length>>16))
	s = csumAdd(s, uint16(length))
	return csumAdd(s, uint16(nh))
}

// complete turns a partial checksum (NEEDS_CSUM: the field at
// l4[csumOff:] holds the pseudo-header sum) into a full one.
func complete(l4 []byte, csumOff int, udp bool) {
	c := ^checksum.Checksum(l4, 0)
	if c == 0 && udp {
		c = 0xffff
	}
	put16(l4[csumOff:], c)
}
