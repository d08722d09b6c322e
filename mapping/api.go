package mapping

import (
	"net/netip"
)

// Entry is one RFC 7757 EAM record: an IPv4 prefix and an IPv6 prefix whose
// suffix (128-len6 bits) is at least as long as the IPv4 one (32-len4), and
// at most 64 bits. A single address pair is a /32 <-> /128 entry; with a
// longer IPv6 suffix the IPv4 suffix fills its most significant bits (RFC
// 7757 section 3.2), e.g. 198.51.100.1 in 198.51.100.0/30 <->
// 2001:db8:6::/124 is 2001:db8:6::4.
type Entry struct {
	IPv4 netip.Prefix
	IPv6 netip.Prefix
}

// Origin says which mechanism translated an address.
type Origin uint8

const (
	// NotTranslatable: neither an EAM entry nor the RFC 6052 prefix covers it.
	NotTranslatable Origin = iota
	// ByEAM: an RFC 7757 table entry matched.
	ByEAM
	// ByPrefix: the RFC 6052 prefix embedded or extracted it.
	ByPrefix
)

// Snapshot is the immutable address view the translator reads for one
// packet: the RFC 6052 prefix and the EAM table. EAM entries take
// precedence over the prefix (RFC 7757 section 3.3).
type Snapshot struct {
	prefix Prefix
	table  *Table
	wkp    bool // prefix is 64:ff9b::/96: non-global IPv4 is not translatable
}

// NewSnapshot combines a prefix (the zero Prefix for none) and a table (nil
// for none) after checking the rules that involve both. Errors are
// *EntryError values naming the entry's index in the table:
//
//   - An EAM IPv6 prefix must not overlap the translation prefix
//     (ErrInsidePrefix): the address would have two translations, and
//     RFC 7757 section 3.3's precedence would silently hide part of the
//     prefix.
//
//   - With the well-known prefix 64:ff9b::/96, every EAM IPv4 prefix must be
//     entirely global (ErrWellKnownNonGlobal). RFC 6052 section 3.1: the
//     well-known prefix "MUST NOT be used to represent non-global IPv4
//     addresses", and translators MUST drop packets that carry such an
//     address. An EAM IPv4 address does get represented with the prefix:
//     RFC 7757 section 4.2 hairpinning rewrites a server's source to
//     prefix+its IPv4 address, and other servers reach it there. EAM entries
//     with private or documentation IPv4 space are fine with a
//     network-specific prefix. Client addresses are checked per packet
//     instead: To6 and To4 report NotTranslatable for them.
func NewSnapshot(p Prefix, t *Table) (*Snapshot, error) {
	if t == nil {
		t = emptyTable
	}
	if err := validateSnapshot(p, t); err != nil {
		return nil, err
	}
	return &Snapshot{prefix: p, table: t, wkp: p.IsWellKnown()}, nil
}

// Prefix is the RFC 6052 translation prefix.
func (s *Snapshot) Prefix() Prefix { return s.prefix }

// Table is the EAM table.
func (s *Snapshot) Table() *Table { return s.table }

// To6 translates an IPv4 address: the EAM table first, then the prefix.
// With the well-known prefix, a non-global address (IsGlobal4) is
// NotTranslatable: RFC 6052 section 3.1 requires dropping such packets.
// delta is the ones' complement difference sum(v6 words) - sum(v4 words):
// adding it to a checksum sum that covered the IPv4 address makes it cover
// the IPv6 one (RFC 1624 incremental update).
func (s *Snapshot) To6(a [4]byte) (v6 [16]byte, delta uint16, o Origin) {
	if v6, delta, ok := s.table.Lookup4(a); ok {
		return v6, delta, ByEAM
	}
	if !s.prefix.Valid() || (s.wkp && !IsGlobal4(a)) {
		return v6, 0, NotTranslatable
	}
	v6, delta = s.prefix.embed(a)
	return v6, delta, ByPrefix
}

// To4 translates an IPv6 address: the EAM table first, then the prefix.
// (It tries the prefix first, which gives the same answer because
// NewSnapshot keeps EAM entries out of the prefix, and saves a table
// lookup for every IPv4 client address.) With the well-known prefix, an address that embeds non-global IPv4 is
// NotTranslatable (RFC 6052 section 3.1).
// delta is the same quantity as in To6 (sum(v6) - sum(v4)); subtract it
// (add its complement) to move a checksum from IPv6 to IPv4.
func (s *Snapshot) To4(a [16]byte) (v4 [4]byte, delta uint16, o Origin) {
	if v4, delta, ok := s.prefix.extract(a); ok {
		if s.wkp && !IsGlobal4(v4) {
			return [4]byte{}, 0, NotTranslatable
		}
		return v4, delta, ByPrefix
	}
	if v4, delta, ok := s.table.Lookup6(a); ok {
		return v4, delta, ByEAM
	}
	return v4, 0, NotTranslatable
}
