package mapping

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// Prefix is an RFC 6052 IPv4-embedded IPv6 prefix of length 32, 40, 48,
// 56, 64 or 96. The zero Prefix is invalid (no prefix configured).
type Prefix struct {
	p   netip.Prefix
	raw [16]byte
	pos [4]uint8 // where the four IPv4 octets go, from positions
	// delta is Delta(a, Embed(a)) for every a when it does not depend on
	// a (deltaFixed): when each IPv4 octet keeps its byte parity (/32 and
	// /96), sum(v6) = sum(prefix) + sum(v4), so the delta is sum(prefix)
	// exactly, as long as that is not zero (the ones' complement zero
	// would be represented differently).
	delta      uint16
	deltaFixed bool
	// raw and its network mask as big-endian halves, for contains.
	rawHi, rawLo, maskHi, maskLo uint64
}

// WellKnown is 64:ff9b::/96 (RFC 6052 section 2.1).
var WellKnown = netip.MustParsePrefix("64:ff9b::/96")

// NewPrefix validates p as an RFC 6052 prefix (section 2.2): one of the
// permitted lengths, no host bits, and bits 64-71 (the "u" octet) zero.
func NewPrefix(p netip.Prefix) (Prefix, error) {
	if !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() {
		return Prefix{}, fmt.Errorf("prefix %v: not an IPv6 prefix", p)
	}
	switch p.Bits() {
	case 32, 40, 48, 56, 64, 96:
	default:
		return Prefix{}, fmt.Errorf("prefix %v: RFC 6052 allows only /32, /40, /48, /56, /64 or /96", p)
	}
	if p.Masked() != p {
		return Prefix{}, fmt.Errorf("prefix %v: host bits set (did you mean %v?)", p, p.Masked())
	}
	raw := p.Addr().As16()
	if raw[8] != 0 {
		return Prefix{}, fmt.Errorf("prefix %v: bits 64-71 must be zero (RFC 6052 section 2.2)", p)
	}
	np := Prefix{p: p, raw: raw, pos: positions[p.Bits()]}
	np.rawHi, np.rawLo = split6(raw)
	np.maskHi = ^uint64(0) << (64 - min(p.Bits(), 64))
	np.maskLo = ^uint64(0) << (128 - max(p.Bits(), 64)) // Go's shift by 64 gives 0
	np.delta = checksum.Checksum(raw[:], 0)
	np.deltaFixed = np.delta != 0
	for i, at := range np.pos {
		np.deltaFixed = np.deltaFixed && int(at)%2 == i%2
	}
	return np, nil
}

// Valid reports whether a prefix is configured.
func (p Prefix) Valid() bool { return p.p.IsValid() }

// Prefix returns the prefix as a netip.Prefix.
func (p Prefix) Prefix() netip.Prefix { return p.p }

// IsWellKnown reports whether this is 64:ff9b::/96.
func (p Prefix) IsWellKnown() bool { return p.p == WellKnown }

// positions lists where the four IPv4 octets go for each prefix length
// (RFC 6052 section 2.2, Figure 1): octet 8 is always skipped.
var positions = map[int][4]uint8{
	32: {4, 5, 6, 7},
	40: {5, 6, 7, 9},
	48: {6, 7, 9, 10},
	56: {7, 9, 10, 11},
	64: {9, 10, 11, 12},
	96: {12, 13, 14, 15},
}

// Embed returns the IPv4-embedded IPv6 address for a (RFC 6052 section
// 2.2: the u octet and the suffix are zero) and the checksum delta
// sum(v6) - sum(v4). p must be Valid.
func (p Prefix) Embed(a [4]byte) (v6 [16]byte, delta uint16) { return p.embed(a) }

// embed is Embed without copying the Prefix, for the packet path.
func (p *Prefix) embed(a [4]byte) (v6 [16]byte, delta uint16) {
	v6 = p.raw
	v6[p.pos[0]&15] = a[0]
	v6[p.pos[1]&15] = a[1]
	v6[p.pos[2]&15] = a[2]
	v6[p.pos[3]&15] = a[3]
	if p.deltaFixed {
		return v6, p.delta
	}
	return v6, Delta(a, v6)
}

// Extract returns the IPv4 address embedded in v6 if v6 is inside the
// prefix. The suffix bits are ignored, as RFC 6052 section 2.2 requires.
func (p Prefix) Extract(v6 [16]byte) (a [4]byte, delta uint16, ok bool) { return p.extract(v6) }

// extract is Extract without copying the Prefix, for the packet path.
func (p *Prefix) extract(v6 [16]byte) (a [4]byte, delta uint16, ok bool) {
	if !p.contains(v6) {
		return a, 0, false
	}
	a = [4]byte{v6[p.pos[0]&15], v6[p.pos[1]&15], v6[p.pos[2]&15], v6[p.pos[3]&15]}
	// Only /32 and /96 have a fixed delta; a /32 one holds only when the
	// bits after the IPv4 address (u octet and suffix) are zero.
	if p.deltaFixed && (p.p.Bits() == 96 || binary.BigEndian.Uint64(v6[8:]) == 0) {
		return a, p.delta, true
	}
	return a, Delta(a, v6), true
}

// Contains reports whether v6 is inside the prefix.
func (p Prefix) Contains(v6 [16]byte) bool { return p.contains(v6) }

func (p *Prefix) contains(v6 [16]byte) bool {
	// The zero Prefix has zero masks and a zero address, so it would
	// contain everything: check validity first.
	hi, lo := split6(v6)
	return p.p.IsValid() && hi&p.maskHi == p.rawHi && lo&p.maskLo == p.rawLo
}

// Delta is the ones' complement difference sum(v6) - sum(v4) of the 16-bit
// words of two addresses (RFC 1624).
func Delta(v4 [4]byte, v6 [16]byte) uint16 {
	s6 := checksum.Checksum(v6[:], 0)
	s4 := checksum.Checksum(v4[:], 0)
	return checksum.Combine(s6, ^s4)
}
