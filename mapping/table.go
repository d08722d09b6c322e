package mapping

import (
	"fmt"
	"iter"
	"net/netip"
)

// Table is an immutable RFC 7757 EAM table with longest-prefix match in
// both directions.
//
// This first version is a plain linear scan that fixes the API; the
// indexed version replaces it.
type Table struct {
	entries []Entry
}

var emptyTable = &Table{}

// NewTable validates entries and builds a table.
func NewTable(entries []Entry) (*Table, error) {
	for i, e := range entries {
		if !e.IPv4.Addr().Is4() || !e.IPv6.Addr().Is6() || e.IPv6.Addr().Is4In6() {
			return nil, fmt.Errorf("entry %d: need an IPv4 and an IPv6 prefix", i)
		}
		if 32-e.IPv4.Bits() != 128-e.IPv6.Bits() {
			return nil, fmt.Errorf("entry %d (%v = %v): suffix lengths differ", i, e.IPv4, e.IPv6)
		}
	}
	return &Table{entries: append([]Entry(nil), entries...)}, nil
}

// Len is the number of entries.
func (t *Table) Len() int { return len(t.entries) }

// All yields every entry.
func (t *Table) All() iter.Seq[Entry] {
	return func(yield func(Entry) bool) {
		for _, e := range t.entries {
			if !yield(e) {
				return
			}
		}
	}
}

// Lookup4 finds the longest IPv4 prefix covering a and returns the mapped
// IPv6 address (suffix bits copied) and the checksum delta.
func (t *Table) Lookup4(a [4]byte) (v6 [16]byte, delta uint16, ok bool) {
	addr := netip.AddrFrom4(a)
	best := -1
	for i, e := range t.entries {
		if e.IPv4.Contains(addr) && (best < 0 || e.IPv4.Bits() > t.entries[best].IPv4.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return v6, 0, false
	}
	e := t.entries[best]
	v6 = e.IPv6.Addr().As16()
	suffix := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n := 32 - e.IPv4.Bits()
	if n > 0 {
		suffix &= 1<<n - 1
		lo := uint32(v6[12])<<24 | uint32(v6[13])<<16 | uint32(v6[14])<<8 | uint32(v6[15])
		lo |= suffix
		v6[12], v6[13], v6[14], v6[15] = byte(lo>>24), byte(lo>>16), byte(lo>>8), byte(lo)
	}
	return v6, Delta(a, v6), true
}

// Lookup6 finds the longest IPv6 prefix covering a and returns the mapped
// IPv4 address and the checksum delta.
func (t *Table) Lookup6(a [16]byte) (v4 [4]byte, delta uint16, ok bool) {
	addr := netip.AddrFrom16(a)
	best := -1
	for i, e := range t.entries {
		if e.IPv6.Contains(addr) && (best < 0 || e.IPv6.Bits() > t.entries[best].IPv6.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return v4, 0, false
	}
	e := t.entries[best]
	v4 = e.IPv4.Addr().As4()
	n := 32 - e.IPv4.Bits()
	if n > 0 {
		suffix := (uint32(a[12])<<24 | uint32(a[13])<<16 | uint32(a[14])<<8 | uint32(a[15])) & (1<<n - 1)
		x := uint32(v4[0])<<24 | uint32(v4[1])<<16 | uint32(v4[2])<<8 | uint32(v4[3]) | suffix
		v4 = [4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}
	}
	return v4, Delta(v4, a), true
}

func validateSnapshot(p Prefix, t *Table) error {
	for e := range t.All() {
		if p.Valid() && p.Prefix().Overlaps(e.IPv6) {
			return fmt.Errorf("EAM entry %v = %v: the IPv6 side overlaps the translation prefix %v", e.IPv4, e.IPv6, p.Prefix())
		}
	}
	return nil
}
