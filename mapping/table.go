package mapping

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"iter"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"unsafe"
)

// Table is an immutable RFC 7757 EAM table with longest-prefix match in
// both directions (RFC 7757 section 3).
//
// Layout: each side has one open-addressing (linear probing) hash index
// per prefix length present — usually only /32 and /128 — probed from the
// longest length down. A slot holds the masked key and everything a lookup
// returns, so a lookup reads one slot and no other memory: at a million
// entries every access is a cache miss, and one miss per lookup is what
// keeps it fast. The IPv6 index goes further: its slots come three to a
// 64-byte bucket, one cache line (bucket6), so a hit or a miss reads one
// line unless its bucket overflowed (see indexSize and bucketCount6 for
// the load factors). A flat array of the entries in input order serves
// All, validation and aggregation. Lookups do not allocate. Large arrays are on huge pages
// where the kernel offers them (largeSlice).
type Table struct {
	recs    []record
	levels4 []level4 // longest prefix first
	levels6 []level6 // same lengths as levels4, plus 96
	seed    uint64
	// Bitmaps that let most misses skip the indexes (8 KiB each, so they
	// stay in cache): one bit per IPv4 /16 holding an entry, and one per
	// hash bucket of the IPv6 /64s holding one (EAM IPv6 prefixes are /96
	// or longer, so each lies in one /64). Client addresses, which
	// To6 looks up on every IPv4 packet and almost always miss, mostly
	// stop here.
	any16 [1 << 10]uint64
	any64 [1 << 10]uint64
}

// record is one entry in compact form.
type record struct {
	v6    [16]byte // IPv6 prefix address
	v4    [4]byte  // IPv4 prefix address
	delta uint16   // Delta(v4, v6): exact for /32 entries
	bits4 uint8    // IPv4 prefix length
	bits6 uint8    // IPv6 prefix length: 64 or more, at most 96+bits4
}

// shift is where the IPv4 suffix sits in the IPv6 suffix: the IPv6 suffix
// is the IPv4 suffix followed by shift zero bits (RFC 7757 section 3.2).
func (r *record) shift() uint8 { return (128 - r.bits6) - (32 - r.bits4) }

// level4 indexes the IPv4 sides of the entries with one prefix length.
type level4 struct {
	mask  uint32 // network mask of this length
	bits  uint8
	slots []slot4
}

// slot4 maps a masked IPv4 address to its IPv6 prefix address.
type slot4 struct {
	v6    [16]byte
	key   uint32
	delta uint16
	used  bool
	shift uint8 // record.shift
}

// level6 indexes the IPv6 sides of the entries with one prefix length
// (always /64../128, so only the low 64 bits are ever masked).
type level6 struct {
	mask    uint64 // network mask of the low 64 bits
	bits    uint8
	buckets []bucket6
}

// bucketSlots6 is the number of slots in a bucket6.
const bucketSlots6 = 3

// bucket6 is one cache line of an IPv6 index: three slots, each mapping a
// masked IPv6 address (as two big-endian halves) to its IPv4 prefix
// address. A key lives in the first bucket from its hash's with a free
// slot (linear probing by buckets, slots filled in order); over marks a
// bucket that a key hashing to it or before it was placed past, so a
// lookup stops at the first bucket without it. A slot of one bucket used
// to be a 24-byte slot6 that straddled two lines three times in eight and
// whose misses probed 2.5 slots on average; unlike slot6 a bucket holds no
// checksum delta (delta6 computes it from the address in a few adds).
type bucket6 struct {
	hi, lo [bucketSlots6]uint64
	v4     [bucketSlots6][4]byte
	meta   [bucketSlots6]uint8 // slotUsed | record.shift (at most 64)
	over   bool
}

// slotUsed marks a used slot in bucket6.meta.
const slotUsed = 0x80

// The bucket must be exactly a cache line.
var _ [64 - unsafe.Sizeof(bucket6{})]byte
var _ [unsafe.Sizeof(bucket6{}) - 64]byte

const (
	hashMul1 = 0x9e3779b97f4a7c15 // 2^64 / golden ratio (Fibonacci hashing)
	hashMul2 = 0xc2b2ae3d27d4eb4f
)

var emptyTable = &Table{}

// TableOptions change what NewTableWith accepts.
type TableOptions struct {
	// AllowNested accepts an entry whose prefix lies inside another
	// entry's on one side; the longest match wins (RFC 7757 section 3).
	// Such tables are not symmetric (192.0.2.0/24 = 2001:db8:a::/120 with
	// 192.0.2.9 = 2001:db8:b::9 maps 2001:db8:a::9 to 192.0.2.9 and that
	// back to 2001:db8:b::9), which is why NewTable refuses them. Entries
	// with exactly the same prefix on one side are always refused.
	AllowNested bool
	// Nested, when AllowNested is false, says per entry (by index) whether
	// it may lie inside another entry: an operator's explicit opt-in for
	// one more-specific entry, like Jool's "eamt add --force". The opt-in
	// belongs to the inner entry (the longer prefixes; suffix lengths are
	// equal, so it is longer on both sides), the one that punches a hole
	// into the other.
	Nested func(i int) bool
}

// TableError lists every entry NewTable refused, in entry order: the
// first MaxReported in Errs, and the number of further ones in More.
// NewTable returns a single refusal as the bare *EntryError; errors.As
// with an *EntryError finds the first one either way.
type TableError = ErrorList[*EntryError]

// ErrorList is every problem of one kind found in an input, in input
// order: the first MaxReported in Errs, and the number of further ones in
// More (they were only counted).
type ErrorList[E error] struct {
	Errs []E
	More int
}

func (e *ErrorList[E]) Error() string {
	var b strings.Builder
	for i, err := range e.Errs {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(err.Error())
	}
	if e.More > 0 {
		fmt.Fprintf(&b, "\nand %d more", e.More)
	}
	return b.String()
}

// Unwrap gives the individual errors to errors.Is and errors.As.
func (e *ErrorList[E]) Unwrap() []error {
	out := make([]error, len(e.Errs))
	for i, err := range e.Errs {
		out[i] = err
	}
	return out
}

// refusals collects EntryErrors up to MaxReported and counts the rest.
type refusals struct {
	errs []*EntryError
	more int
	bad  []bool // entries already refused, reported once each
}

// full reports whether further refusals are only counted.
func (r *refusals) full() bool { return len(r.errs) >= MaxReported }

func (r *refusals) add(i int, describe func() *EntryError) {
	if r.bad == nil {
		// Only error paths get here; the table is already too big for a
		// few more bytes per entry to matter.
		r.bad = make([]bool, i+1)
	}
	if i >= len(r.bad) {
		r.bad = append(r.bad, make([]bool, i+1-len(r.bad))...)
	}
	if r.bad[i] {
		return
	}
	r.bad[i] = true
	if r.full() {
		r.more++
		return
	}
	r.errs = append(r.errs, describe())
}

func (r *refusals) err() error {
	switch {
	case len(r.errs) == 0:
		return nil
	case len(r.errs) == 1 && r.more == 0:
		return r.errs[0]
	}
	slices.SortStableFunc(r.errs, func(a, b *EntryError) int { return cmp.Compare(a.Index, b.Index) })
	return &TableError{Errs: r.errs, More: r.more}
}

// NewTable validates entries and builds a table. Nested (overlapping)
// entries are refused; see NewTableWith. Every refused entry is reported
// (see TableError), each as an *EntryError naming the entry by its index
// in entries. See checkEntry for the per-entry rules.
func NewTable(entries []Entry) (*Table, error) {
	return NewTableWith(entries, TableOptions{})
}

// NewTableWith is NewTable with options.
func NewTableWith(entries []Entry, opt TableOptions) (*Table, error) {
	var count4 [33]int
	var count6 [129]int
	var bad refusals
	t := &Table{recs: largeSlice[record](len(entries)), seed: randomSeed()}
	for i, e := range entries {
		if err := checkEntry(e); err != nil {
			bad.add(i, func() *EntryError { return &EntryError{Index: i, Entry: e, Other: -1, Err: err} })
			continue
		}
		r := record{v4: e.IPv4.Addr().As4(), v6: e.IPv6.Addr().As16(), bits4: uint8(e.IPv4.Bits()), bits6: uint8(e.IPv6.Bits())}
		r.delta = Delta(r.v4, r.v6)
		t.recs[i] = r
		count4[r.bits4]++
		count6[r.bits6]++
		lo := be32(r.v4)
		for x := lo >> 16; x <= (lo|hostMask4(int(r.bits4)))>>16; x++ {
			t.any16[x>>6] |= 1 << (x & 63)
		}
		hi, _ := split6(r.v6)
		b := bucket64(hi)
		t.any64[b>>6] |= 1 << (b & 63)
	}
	if err := bad.err(); err != nil {
		return nil, err
	}
	for b := 32; b >= 0; b-- {
		if n := count4[b]; n > 0 {
			t.levels4 = append(t.levels4, level4{mask: ^hostMask4(b), bits: uint8(b), slots: largeSlice[slot4](indexSize(n))})
		}
	}
	for b := 128; b >= 64; b-- {
		if n := count6[b]; n > 0 {
			t.levels6 = append(t.levels6, level6{mask: ^hostMask64(b), bits: uint8(b), buckets: largeSlice[bucket6](bucketCount6(n))})
		}
	}
	for i := range t.recs {
		if !t.insert(&t.recs[i]) {
			bad.add(i, func() *EntryError { return t.conflict(entries, i, ErrDuplicate) })
		}
	}
	if !opt.AllowNested && (len(t.levels4) > 1 || len(t.levels6) > 1) {
		for i := range t.recs {
			if (opt.Nested == nil || !opt.Nested(i)) && t.nested(&t.recs[i]) {
				bad.add(i, func() *EntryError { return t.conflict(entries, i, ErrOverlap) })
			}
		}
	}
	if err := bad.err(); err != nil {
		return nil, err
	}
	return t, nil
}

// indexSize returns the IPv4 slot count for n keys at a load factor of at
// most 2/3: IPv4 keys, usually dense runs of addresses, spread almost
// perfectly under Fibonacci hashing.
func indexSize(n int) int {
	return n + n/2 + 8
}

// bucketCount6 returns the IPv6 bucket count for n keys: one bucket per
// key (a load factor of 1/3 per slot; IPv6 keys spread like random ones).
// About one lookup in fifty then reads a second bucket (TestBucket6Overflow),
// and about 60% of the hits are in a bucket's first slot, which the compare loop
// predicts. With 1.5 keys per bucket (43 B per key instead of 64) hits
// measured 1.25x slower after a prefetch, the slot of a hit being random.
func bucketCount6(n int) int {
	return n + 2
}

// randomSeed keys a table's hashes, so that nobody who does not know it
// can pick addresses that share buckets. A variable so that tests can fix
// it: what they assert of the buckets' fill must not depend on luck.
var randomSeed = func() uint64 {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand panics on a broken system source)
	return binary.LittleEndian.Uint64(b[:])
}

// slotOf maps a hash to [0, n) by multiply-shift, using its high bits.
func slotOf(h uint64, n int) int {
	hi, _ := bits.Mul64(h, uint64(n))
	return int(hi)
}

// bucket64 picks the any64 bit of an IPv6 /64.
func bucket64(hi uint64) uint64 {
	return (hi * hashMul1) >> 48
}

func hash4(key uint32, seed uint64) uint64 {
	return (uint64(key) ^ seed) * hashMul1
}

// hash6 is Fibonacci hashing of the low half, offset by a mix of the high
// half: servers are usually numbered densely within a few subnets, and
// Fibonacci hashing spreads dense keys more evenly than random.
func hash6(hi, lo, seed uint64) uint64 {
	return (lo ^ seed ^ bits.RotateLeft64(hi*hashMul2, 32)) * hashMul1
}

// insert adds r to both indexes; it reports false if either side's
// prefix is already present.
func (t *Table) insert(r *record) bool {
	var l4 *level4
	var l6 *level6
	for i := range t.levels4 {
		if t.levels4[i].bits == r.bits4 {
			l4 = &t.levels4[i]
		}
	}
	for i := range t.levels6 {
		if t.levels6[i].bits == r.bits6 {
			l6 = &t.levels6[i]
		}
	}
	key := be32(r.v4)
	n := len(l4.slots)
	p := slotOf(hash4(key, t.seed), n)
	for ; l4.slots[p].used; p = next(p, n) {
		if l4.slots[p].key == key {
			return false
		}
	}
	hi, lo := split6(r.v6)
	q := l6.free(hi, lo, t.seed)
	if q < 0 {
		return false
	}
	l4.slots[p] = slot4{v6: r.v6, key: key, delta: r.delta, used: true, shift: r.shift()}
	l6.put(q, hi, lo, r.v4, r.shift(), t.seed)
	return true
}

// free returns the position (bucket*bucketSlots6 + slot) where the key
// hi:lo goes, or -1 if it is already present.
func (l *level6) free(hi, lo uint64, seed uint64) int {
	n := len(l.buckets)
	for b := slotOf(hash6(hi, lo, seed), n); ; b = next(b, n) {
		bk := &l.buckets[b]
		for i := range bucketSlots6 {
			if bk.meta[i]&slotUsed == 0 {
				return b*bucketSlots6 + i
			}
			if bk.hi[i] == hi && bk.lo[i] == lo {
				return -1
			}
		}
	}
}

// put stores the key hi:lo at position q (from free) and marks the
// buckets it was placed past.
func (l *level6) put(q int, hi, lo uint64, v4 [4]byte, shift uint8, seed uint64) {
	n := len(l.buckets)
	for b := slotOf(hash6(hi, lo, seed), n); b != q/bucketSlots6; b = next(b, n) {
		l.buckets[b].over = true
	}
	bk, i := &l.buckets[q/bucketSlots6], q%bucketSlots6
	bk.hi[i], bk.lo[i], bk.v4[i], bk.meta[i] = hi, lo, v4, slotUsed|shift
}

func next(p, n int) int {
	p++
	if p == n {
		return 0
	}
	return p
}

// nested reports whether a shorter entry covers r on either side.
func (t *Table) nested(r *record) bool {
	for i := range t.levels4 {
		if t.levels4[i].bits < r.bits4 && t.levels4[i].find(be32(r.v4), t.seed) != nil {
			return true
		}
	}
	hi, lo := split6(r.v6)
	for i := range t.levels6 {
		if t.levels6[i].bits < r.bits6 {
			if b, _ := t.levels6[i].find(hi, lo, t.seed); b >= 0 {
				return true
			}
		}
	}
	return false
}

// conflict describes entry i clashing with another on one side: for
// ErrDuplicate an earlier entry with the same prefix, for ErrOverlap an
// entry whose shorter prefix covers entry i's (i is the inner one, whose
// opt-in TableOptions.Nested would have allowed it). Only error paths call
// it, so it searches linearly.
func (t *Table) conflict(entries []Entry, i int, reason error) *EntryError {
	ei := entries[i]
	for j, ej := range entries {
		if j == i || (reason == ErrDuplicate && j > i) {
			continue
		}
		var side string
		var pi netip.Prefix
		for _, s := range [2]struct {
			name   string
			pi, pj netip.Prefix
		}{{"IPv4", ei.IPv4, ej.IPv4}, {"IPv6", ei.IPv6, ej.IPv6}} {
			if reason == ErrDuplicate && s.pi == s.pj || reason == ErrOverlap && s.pj.Bits() < s.pi.Bits() && s.pj.Overlaps(s.pi) {
				side, pi = s.name, s.pi
				break
			}
		}
		if side == "" {
			continue
		}
		verb := "equals that of"
		if reason == ErrOverlap {
			verb = "lies inside that of"
		}
		return &EntryError{Index: i, Entry: ei, Other: j, OtherEntry: ej,
			Err: errorf(reason, "the %s side %v %s entry %s (index %d)", side, pi, verb, formatEntry(ej), j)}
	}
	return &EntryError{Index: i, Entry: ei, Other: -1, Err: reason} // not reached
}

// find returns the slot for a masked to this level's length, or nil.
func (l *level4) find(a uint32, seed uint64) *slot4 {
	key := a & l.mask
	n := len(l.slots)
	for p := slotOf(hash4(key, seed), n); ; p = next(p, n) {
		s := &l.slots[p]
		if !s.used {
			return nil
		}
		if s.key == key {
			return s
		}
	}
}

// find returns the bucket and slot for hi:lo masked to this level's
// length (b -1: none). It ends at the first bucket not overflowed; one
// always exists, as a bucket with a free slot was never placed past.
// Lookup6 has its own copy of the loop (see there).
func (l *level6) find(hi, lo uint64, seed uint64) (b, i int) {
	lo &= l.mask
	n := len(l.buckets)
	for b = slotOf(hash6(hi, lo, seed), n); ; b = next(b, n) {
		bk := &l.buckets[b]
		for i := range bucketSlots6 {
			if bk.lo[i] == lo && bk.hi[i] == hi && bk.meta[i] != 0 {
				return b, i
			}
		}
		if !bk.over {
			return -1, 0
		}
	}
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
		IPv6: netip.PrefixFrom(netip.AddrFrom16(r.v6), int(r.bits6)),
	}
}

// PrefixLengths returns the distinct IPv4 prefix lengths in the table,
// longest first. Lookup4 probes one index per IPv4 length, Lookup6 one per
// IPv6 length.
func (t *Table) PrefixLengths() []int {
	out := make([]int, len(t.levels4))
	for i, l := range t.levels4 {
		out[i] = int(l.bits)
	}
	return out
}

// Lookup4 finds the longest IPv4 prefix covering a and returns the mapped
// IPv6 address and the checksum delta sum(v6) - sum(v4). The IPv4 suffix
// becomes the most significant bits of the IPv6 suffix, the rest zero
// (RFC 7757 section 3.2; with equal suffix lengths it is copied as is).
func (t *Table) Lookup4(a [4]byte) (v6 [16]byte, delta uint16, ok bool) {
	x := be32(a)
	if t.any16[x>>22]&(1<<(x>>16&63)) == 0 {
		return v6, 0, false
	}
	for i := range t.levels4 {
		l := &t.levels4[i]
		s := l.find(x, t.seed)
		if s == nil {
			continue
		}
		if l.bits == 32 {
			return s.v6, s.delta, true
		}
		v6 = s.v6
		binary.BigEndian.PutUint64(v6[8:], binary.BigEndian.Uint64(v6[8:])|uint64(x&^l.mask)<<s.shift)
		return v6, Delta(a, v6), true
	}
	return v6, 0, false
}

// Lookup6 finds the longest IPv6 prefix covering a and returns the mapped
// IPv4 address and the checksum delta sum(v6) - sum(v4). The IPv4 suffix
// is the most significant bits of the IPv6 suffix; when the IPv6 suffix is
// longer, its remaining bits are ignored (RFC 7757 section 3.2).
func (t *Table) Lookup6(a [16]byte) (v4 [4]byte, delta uint16, ok bool) {
	hi, lo := split6(a)
	if b := bucket64(hi); t.any64[b>>6]&(1<<(b&63)) == 0 {
		return v4, 0, false
	}
	// The probe loop of level6.find, written out: as a call it cost a
	// hit in cache half again as much (the call, and the values kept
	// across it). The loop stops at the matching slot rather than
	// comparing all three without branches, which measured twice as slow:
	// it chains the slot's address to the comparisons, where a predicted
	// branch lets the CPU go on.
	for i := range t.levels6 {
		l := &t.levels6[i]
		key := lo & l.mask
		n := len(l.buckets)
		for b := slotOf(hash6(hi, key, t.seed), n); ; b = next(b, n) {
			bk := &l.buckets[b]
			for j := range bucketSlots6 {
				if bk.lo[j] == key && bk.hi[j] == hi && bk.meta[j] != 0 {
					x := be32(bk.v4[j])
					if l.bits != 128 {
						x |= uint32((lo &^ l.mask) >> (bk.meta[j] &^ slotUsed))
					}
					binary.BigEndian.PutUint32(v4[:], x)
					return v4, delta6(x, hi, lo), true
				}
			}
			if !bk.over {
				break
			}
		}
	}
	return v4, 0, false
}

// delta6 is Delta(v4, v6) for v4 as a number and a non-zero v6 as two
// big-endian halves, in a few adds instead of the byte loops of a general
// checksum. Ones' complement sums (RFC 1071) can be taken over 64-bit words
// and folded to 16 bits (RFC 1071 section 2(B)), and in ones' complement
// the negation of sum(v4) is the complement of v4 as a 64-bit word. The
// sum is never the all-zero one (v6 is not zero: NewTable refuses the
// unspecified address), so the result is the representation Delta gives.
func delta6(v4 uint32, hi, lo uint64) uint16 {
	s, c := bits.Add64(hi, lo, 0)
	s, c = bits.Add64(s, ^uint64(v4), c)
	return fold64(s + c) // no carry out: s <= 2^64-2 when c is 1
}

// fold64 folds a ones' complement sum of 64-bit words to 16 bits; zero
// stays zero, anything else is non-zero.
func fold64(x uint64) uint16 {
	x = x>>32 + x&0xffffffff
	x = x>>16 + x&0xffff
	x = x>>16 + x&0xffff
	x = x>>16 + x&0xffff
	return uint16(x)
}

// validateSnapshot applies the rules documented on NewSnapshot to every
// entry and reports all the refused ones (see TableError).
func validateSnapshot(p Prefix, t *Table) error {
	if !p.Valid() {
		return nil
	}
	var bad refusals
	wkp := p.IsWellKnown()
	for i := range t.recs {
		r := &t.recs[i]
		if p.Prefix().Overlaps(netip.PrefixFrom(netip.AddrFrom16(r.v6), int(r.bits6))) {
			bad.add(i, func() *EntryError {
				e := r.entry()
				verb := "lies inside"
				if e.IPv6.Bits() < p.Prefix().Bits() {
					verb = "contains"
				}
				return &EntryError{Index: i, Entry: e, Other: -1,
					Err: errorf(ErrInsidePrefix, "the IPv6 side %v %s the RFC 6052 prefix %v", e.IPv6, verb, p.Prefix())}
			})
			continue
		}
		if lo := be32(r.v4); wkp && overlapsNonGlobal4(lo, lo|hostMask4(int(r.bits4))) {
			bad.add(i, func() *EntryError {
				e := r.entry()
				as6, _ := p.Embed(r.v4)
				return &EntryError{Index: i, Entry: e, Other: -1,
					Err: errorf(ErrWellKnownNonGlobal, "the IPv4 side %v is not global, and with the well-known prefix %v hairpinned traffic (RFC 7757 section 4.2) would represent it as %v, which RFC 6052 section 3.1 forbids; use a network-specific prefix",
						e.IPv4, WellKnown, netip.AddrFrom16(as6))}
			})
		}
	}
	return bad.err()
}

// Entry returns entry i, in the order given to NewTable.
func (t *Table) Entry(i int) Entry { return t.recs[i].entry() }

// Find4 returns the index of the entry Lookup4 uses for a: the one with
// the longest IPv4 prefix covering it. It scans the whole table, for
// diagnostics (map646 lookup), not for the packet path.
func (t *Table) Find4(a [4]byte) (i int, ok bool) {
	x := be32(a)
	best, bestBits := -1, -1
	for j := range t.recs {
		r := &t.recs[j]
		if int(r.bits4) > bestBits && x&^hostMask4(int(r.bits4)) == be32(r.v4) {
			best, bestBits = j, int(r.bits4)
		}
	}
	return best, best >= 0
}

// Find6 is Find4 for the IPv6 side: the entry Lookup6 uses for a.
func (t *Table) Find6(a [16]byte) (i int, ok bool) {
	hi, lo := split6(a)
	best, bestBits := -1, -1
	for j := range t.recs {
		r := &t.recs[j]
		rhi, rlo := split6(r.v6)
		if int(r.bits6) > bestBits && hi == rhi && lo&^hostMask64(int(r.bits6)) == rlo {
			best, bestBits = j, int(r.bits6)
		}
	}
	return best, best >= 0
}

// hostMask64 is the mask of the host bits of an IPv6 /bits (64..128)
// within the low 64 bits.
func hostMask64(bits int) uint64 {
	if bits >= 128 {
		return 0
	}
	return ^uint64(0) >> (bits - 64)
}
