package mapping

import (
	"crypto/rand"
	"encoding/binary"
	"iter"
	"math/bits"
	"net/netip"
)

// Table is an immutable RFC 7757 EAM table with longest-prefix match in
// both directions (RFC 7757 section 3.2).
//
// Layout: the entries live in one flat array of 24-byte records, in input
// order. Each side has one open-addressing hash index per prefix length
// present (usually only /32 and /128), probed from the longest length
// down; a slot holds a 32-bit key or tag and the record's index, so a miss
// never touches the records and a hit touches one. Indexes are kept at most
// half full. Lookups do not allocate.
type Table struct {
	recs    []record
	levels4 []level4 // longest prefix first
	levels6 []level6 // longest prefix first
	seed    uint64
}

// record is one entry in the compact form the packet path reads.
type record struct {
	v6    [16]byte // IPv6 prefix address
	v4    [4]byte  // IPv4 prefix address
	delta uint16   // Delta(v4, v6): exact for /32 entries
	bits4 uint8    // IPv4 prefix length; the IPv6 one is 96+bits4
}

// level4 indexes the IPv4 sides of the entries with one prefix length.
type level4 struct {
	mask  uint32 // network mask of this length
	shift uint8  // 64 - log2(len(slots))
	bits  uint8
	slots []slot // len is a power of two
}

// level6 indexes the IPv6 sides of the entries with one prefix length
// (always /96../128, so only the low 32 bits are ever masked).
type level6 struct {
	mask  uint32 // network mask applied to the low 32 bits
	shift uint8
	bits  uint8
	slots []slot
}

// slot is a hash index cell. idx is the record index plus one (0: empty);
// key is the masked IPv4 address (level4) or a 32-bit hash tag (level6).
type slot struct {
	key uint32
	idx uint32
}

const (
	hashMul1 = 0x9e3779b97f4a7c15 // 2^64 / golden ratio (Fibonacci hashing)
	hashMul2 = 0xc2b2ae3d27d4eb4f
)

var emptyTable = &Table{}

// Options change what NewTableWith accepts.
type Options struct {
	// AllowNested accepts an entry whose prefix lies inside another
	// entry's on one side; the longest match wins (RFC 7757 section 3.2).
	// Such tables are not symmetric: see the RFC's discussion. Entries
	// with exactly the same prefix on one side are always refused.
	AllowNested bool
}

// NewTable validates entries and builds a table. Nested (overlapping)
// entries are refused; see NewTableWith. The first problem found is
// returned as an *EntryError naming the entry by its index in entries.
// See checkEntry for the per-entry rules.
func NewTable(entries []Entry) (*Table, error) {
	return NewTableWith(entries, Options{})
}

// NewTableWith is NewTable with options.
func NewTableWith(entries []Entry, opt Options) (*Table, error) {
	var count4 [33]int
	t := &Table{recs: make([]record, len(entries)), seed: randomSeed()}
	for i, e := range entries {
		if err := checkEntry(e); err != nil {
			return nil, &EntryError{Index: i, Entry: e, Other: -1, Err: err}
		}
		r := record{v4: e.IPv4.Addr().As4(), v6: e.IPv6.Addr().As16(), bits4: uint8(e.IPv4.Bits())}
		r.delta = Delta(r.v4, r.v6)
		t.recs[i] = r
		count4[r.bits4]++
	}
	for b := 32; b >= 0; b-- {
		if n := count4[b]; n > 0 {
			size, shift := indexSize(n)
			m := ^hostMask4(b)
			t.levels4 = append(t.levels4, level4{mask: m, shift: shift, bits: uint8(b), slots: make([]slot, size)})
			t.levels6 = append(t.levels6, level6{mask: m, shift: shift, bits: uint8(96 + b), slots: make([]slot, size)})
		}
	}
	for i := range t.recs {
		if j := t.insert(uint32(i)); j >= 0 {
			return nil, t.conflict(entries, i, j, ErrDuplicate)
		}
	}
	if !opt.AllowNested && len(t.levels4) > 1 {
		for i := range t.recs {
			if err := t.checkNested(entries, i); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

// indexSize returns a power-of-two slot count at least twice n and the
// matching Fibonacci-hash shift.
func indexSize(n int) (size int, shift uint8) {
	k := bits.Len(uint(2*n - 1))
	if k < 3 {
		k = 3
	}
	return 1 << k, uint8(64 - k)
}

func randomSeed() uint64 {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand panics on a broken system source)
	return binary.LittleEndian.Uint64(b[:])
}

func (t *Table) level4For(b uint8) *level4 {
	for i := range t.levels4 {
		if t.levels4[i].bits == b {
			return &t.levels4[i]
		}
	}
	return nil
}

func (t *Table) level6For(b uint8) *level6 {
	for i := range t.levels6 {
		if t.levels6[i].bits == b {
			return &t.levels6[i]
		}
	}
	return nil
}

// insert adds record i to both indexes; it returns the index of an entry
// that already has the same prefix on either side, or -1.
func (t *Table) insert(i uint32) int {
	r := &t.recs[i]
	l4 := t.level4For(r.bits4)
	key := be32(r.v4)
	m := uint64(len(l4.slots) - 1)
	for p := hash4(key, t.seed) >> l4.shift; ; p = (p + 1) & m {
		s := &l4.slots[p]
		if s.idx == 0 {
			*s = slot{key: key, idx: i + 1}
			break
		}
		if s.key == key {
			return int(s.idx - 1)
		}
	}
	l6 := t.level6For(96 + r.bits4)
	hi, lo := split6(r.v6)
	h := hash6(hi, lo, t.seed)
	m = uint64(len(l6.slots) - 1)
	for p := h >> l6.shift; ; p = (p + 1) & m {
		s := &l6.slots[p]
		if s.idx == 0 {
			*s = slot{key: uint32(h), idx: i + 1}
			return -1
		}
		if s.key == uint32(h) && t.recs[s.idx-1].v6 == r.v6 {
			return int(s.idx - 1)
		}
	}
}

// checkNested refuses entry i if a shorter entry covers it on either side.
func (t *Table) checkNested(entries []Entry, i int) error {
	r := &t.recs[i]
	for l := range t.levels4 {
		if t.levels4[l].bits >= r.bits4 {
			continue
		}
		if j, ok := t.levels4[l].find(be32(r.v4), t.seed); ok {
			return t.conflict(entries, i, int(j), ErrOverlap)
		}
		hi, lo := split6(r.v6)
		if j, ok := t.levels6[l].find(t.recs, hi, lo, t.seed); ok {
			return t.conflict(entries, i, int(j), ErrOverlap)
		}
	}
	return nil
}

// conflict describes entries i and j clashing on one side; the error is
// reported against the later of the two.
func (t *Table) conflict(entries []Entry, i, j int, reason error) *EntryError {
	if j > i {
		i, j = j, i
	}
	ei, ej := entries[i], entries[j]
	side, pi, pj := "IPv4", ei.IPv4, ej.IPv4
	if !pi.Overlaps(pj) {
		side, pi, pj = "IPv6", ei.IPv6, ej.IPv6
	}
	verb := "equals that of"
	switch {
	case pi.Bits() > pj.Bits():
		verb = "lies inside that of"
	case pi.Bits() < pj.Bits():
		verb = "contains that of"
	}
	return &EntryError{Index: i, Entry: ei, Other: j, OtherEntry: ej,
		Err: errorf(reason, "the %s side %v %s entry %s (index %d)", side, pi, verb, formatEntry(ej), j)}
}

// find returns the record index for the masked key.
func (l *level4) find(a uint32, seed uint64) (uint32, bool) {
	key := a & l.mask
	m := uint64(len(l.slots) - 1)
	for p := hash4(key, seed) >> l.shift; ; p = (p + 1) & m {
		s := l.slots[p&m]
		if s.idx == 0 {
			return 0, false
		}
		if s.key == key {
			return s.idx - 1, true
		}
	}
}

// find returns the record index for hi:lo masked to this level's length.
func (l *level6) find(recs []record, hi, lo uint64, seed uint64) (uint32, bool) {
	lo &= 0xffffffff_00000000 | uint64(l.mask)
	h := hash6(hi, lo, seed)
	m := uint64(len(l.slots) - 1)
	for p := h >> l.shift; ; p = (p + 1) & m {
		s := l.slots[p&m]
		if s.idx == 0 {
			return 0, false
		}
		if s.key == uint32(h) {
			r := &recs[s.idx-1]
			rhi, rlo := split6(r.v6)
			if rhi == hi && rlo == lo {
				return s.idx - 1, true
			}
		}
	}
}

func hash4(key uint32, seed uint64) uint64 {
	return (uint64(key) ^ seed) * hashMul1
}

func hash6(hi, lo, seed uint64) uint64 {
	h := (hi ^ seed) * hashMul1
	h = (bits.RotateLeft64(h, 31) ^ lo) * hashMul2
	return h ^ h>>32 // the top bits pick the slot; this mixes them into the tag too
}

func be32(a [4]byte) uint32 { return binary.BigEndian.Uint32(a[:]) }

func split6(a [16]byte) (hi, lo uint64) {
	return binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
}

// Len is the number of entries.
func (t *Table) Len() int { return len(t.recs) }

// All yields every entry, in the order given to NewTable.
func (t *Table) All() iter.Seq[Entry] {
	return func(yield func(Entry) bool) {
		for i := range t.recs {
			if !yield(t.recs[i].entry()) {
				return
			}
		}
	}
}

func (r *record) entry() Entry {
	return Entry{
		IPv4: netip.PrefixFrom(netip.AddrFrom4(r.v4), int(r.bits4)),
		IPv6: netip.PrefixFrom(netip.AddrFrom16(r.v6), 96+int(r.bits4)),
	}
}

// PrefixLengths returns the distinct IPv4 prefix lengths in the table,
// longest first (the IPv6 ones are 96 more). Lookups probe one index per
// length.
func (t *Table) PrefixLengths() []int {
	out := make([]int, len(t.levels4))
	for i, l := range t.levels4 {
		out[i] = int(l.bits)
	}
	return out
}

// Lookup4 finds the longest IPv4 prefix covering a and returns the mapped
// IPv6 address (suffix bits copied, RFC 7757 section 3.2) and the checksum
// delta sum(v6) - sum(v4).
func (t *Table) Lookup4(a [4]byte) (v6 [16]byte, delta uint16, ok bool) {
	x := be32(a)
	for i := range t.levels4 {
		idx, found := t.levels4[i].find(x, t.seed)
		if !found {
			continue
		}
		r := &t.recs[idx]
		if r.bits4 == 32 {
			return r.v6, r.delta, true
		}
		v6 = r.v6
		low := binary.BigEndian.Uint32(v6[12:]) | x&hostMask4(int(r.bits4))
		binary.BigEndian.PutUint32(v6[12:], low)
		return v6, Delta(a, v6), true
	}
	return v6, 0, false
}

// Lookup6 finds the longest IPv6 prefix covering a and returns the mapped
// IPv4 address (suffix bits copied) and the checksum delta sum(v6) - sum(v4).
func (t *Table) Lookup6(a [16]byte) (v4 [4]byte, delta uint16, ok bool) {
	hi, lo := split6(a)
	for i := range t.levels6 {
		idx, found := t.levels6[i].find(t.recs, hi, lo, t.seed)
		if !found {
			continue
		}
		r := &t.recs[idx]
		if r.bits4 == 32 {
			return r.v4, r.delta, true
		}
		x := be32(r.v4) | uint32(lo)&hostMask4(int(r.bits4))
		binary.BigEndian.PutUint32(v4[:], x)
		return v4, Delta(v4, a), true
	}
	return v4, 0, false
}

// validateSnapshot applies the rules documented on NewSnapshot.
func validateSnapshot(p Prefix, t *Table) error {
	if !p.Valid() {
		return nil
	}
	wkp := p.IsWellKnown()
	for i := range t.recs {
		r := &t.recs[i]
		if p.Contains(r.v6) {
			e := r.entry()
			return &EntryError{Index: i, Entry: e, Other: -1,
				Err: errorf(ErrInsidePrefix, "the IPv6 side %v lies inside the RFC 6052 prefix %v", e.IPv6, p.Prefix())}
		}
		if lo := be32(r.v4); wkp && overlapsNonGlobal4(lo, lo|hostMask4(int(r.bits4))) {
			e := r.entry()
			as6, _ := p.Embed(r.v4)
			return &EntryError{Index: i, Entry: e, Other: -1,
				Err: errorf(ErrWellKnownNonGlobal, "the IPv4 side %v is not global, and with the well-known prefix %v hairpinned traffic (RFC 7757 section 4.2) would represent it as %v, which RFC 6052 section 3.1 forbids; use a network-specific prefix",
					e.IPv4, WellKnown, netip.AddrFrom16(as6))}
		}
	}
	return nil
}
