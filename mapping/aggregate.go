package mapping

import (
	"cmp"
	"math/bits"
	"net/netip"
	"slices"
)

// Aggregate4 returns the fewest prefixes that together cover exactly the
// IPv4 sides of t's entries: adjacent and nested prefixes merge
// (198.51.100.10/32 and 198.51.100.11/32 become 198.51.100.10/31). The
// result is sorted and disjoint. The daemon routes these into the tun, so
// a million mappings need few routes.
func Aggregate4(t *Table) []netip.Prefix {
	rs := make([]u128Range, len(t.recs))
	for i := range t.recs {
		r := &t.recs[i]
		lo := uint64(be32(r.v4))
		rs[i] = u128Range{u128{0, lo}, u128{0, lo | uint64(hostMask4(int(r.bits4)))}}
	}
	var out []netip.Prefix
	cover(rs, 32, func(start u128, bits int) {
		a := uint32(start.lo)
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits))
	})
	return out
}

// u128 is an unsigned 128-bit number (an IPv6 address, or an IPv4 one in
// lo).
type u128 struct{ hi, lo uint64 }

// u128Range is an inclusive address range.
type u128Range struct{ first, last u128 }

func (a u128) cmp(b u128) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

func (a u128) addOne() (u128, bool) {
	lo, c := bits.Add64(a.lo, 1, 0)
	hi, c := bits.Add64(a.hi, 0, c)
	return u128{hi, lo}, c != 0
}

func (a u128) sub(b u128) u128 {
	lo, br := bits.Sub64(a.lo, b.lo, 0)
	hi, _ := bits.Sub64(a.hi, b.hi, br)
	return u128{hi, lo}
}

func (a u128) add(b u128) (u128, bool) {
	lo, c := bits.Add64(a.lo, b.lo, 0)
	hi, c := bits.Add64(a.hi, b.hi, c)
	return u128{hi, lo}, c != 0
}

func (a u128) trailingZeros() int {
	if a.lo != 0 {
		return bits.TrailingZeros64(a.lo)
	}
	if a.hi != 0 {
		return 64 + bits.TrailingZeros64(a.hi)
	}
	return 128
}

// bitLen is the number of bits needed to write a.
func (a u128) bitLen() int {
	if a.hi != 0 {
		return 64 + bits.Len64(a.hi)
	}
	return bits.Len64(a.lo)
}

func pow2(k int) u128 {
	if k >= 64 {
		return u128{1 << (k - 64), 0}
	}
	return u128{0, 1 << k}
}

// cover sorts and merges the ranges (overlapping or adjacent ones join)
// and emits each merged range as its minimal list of aligned prefixes in
// an address space of width bits. rs is reordered.
func cover(rs []u128Range, width int, emit func(start u128, bits int)) {
	if len(rs) == 0 {
		return
	}
	slices.SortFunc(rs, func(a, b u128Range) int { return a.first.cmp(b.first) })
	cur := rs[0]
	for _, r := range rs[1:] {
		next, wrapped := cur.last.addOne()
		if !wrapped && r.first.cmp(next) > 0 {
			split(cur, width, emit)
			cur = r
			continue
		}
		if r.last.cmp(cur.last) > 0 {
			cur.last = r.last
		}
	}
	split(cur, width, emit)
}

// split emits the minimal aligned prefixes covering r: at each step the
// largest block that starts at r.first and does not run past r.last.
func split(r u128Range, width int, emit func(start u128, bits int)) {
	start := r.first
	for {
		size, wrapped := r.last.sub(start).addOne() // addresses left; 0 (wrapped) means 2^128
		k := 128
		if !wrapped {
			k = size.bitLen() - 1
		}
		k = min(k, start.trailingZeros(), width)
		emit(start, width-k)
		next, carry := start.add(pow2(k))
		if k == 128 || carry || next.cmp(r.last) > 0 {
			return
		}
		start = next
	}
}
