package mapping

// EntryIndex answers, for an address, which entry of a Table the lookups
// use: the index, in the order given to NewTable, of the entry Lookup4 or
// Lookup6 matches (RFC 7757 section 3: the longest prefix). It is what
// per-entry counters are indexed by.
//
// The table's slots do not hold their entry's index (a lookup reads only
// the slot, and a wider slot would cost every lookup cache space whether or
// not anything counts), so the index lives beside the table: one uint32 per
// slot, 18 bytes per /32 <-> /128 entry at the table's load factors, built
// by Table.EntryIndex only when asked for. Entry4 and Entry6 probe the same
// slots as Lookup4 and Lookup6 and do not allocate; right before or after
// the translator's own lookup of the same address they find those slots in
// cache, and pay one more memory access for the index.
type EntryIndex struct {
	t    *Table
	ent4 [][]uint32 // per level of t.levels4, per slot: the entry
	ent6 [][]uint32 // per level of t.levels6
}

// EntryIndex builds the entry index of t. It allocates 4 bytes per slot
// and takes time proportional to the number of entries.
func (t *Table) EntryIndex() *EntryIndex {
	x := &EntryIndex{t: t, ent4: make([][]uint32, len(t.levels4)), ent6: make([][]uint32, len(t.levels6))}
	for i := range t.levels4 {
		x.ent4[i] = make([]uint32, len(t.levels4[i].slots))
	}
	for i := range t.levels6 {
		x.ent6[i] = make([]uint32, len(t.levels6[i].buckets)*bucketSlots6)
	}
	for i := range t.recs {
		r := &t.recs[i]
		for l := range t.levels4 {
			if t.levels4[l].bits == r.bits4 {
				x.ent4[l][t.levels4[l].pos(be32(r.v4), t.seed)] = uint32(i)
			}
		}
		hi, lo := split6(r.v6)
		for l := range t.levels6 {
			if t.levels6[l].bits == r.bits6 {
				x.ent6[l][t.levels6[l].pos(hi, lo, t.seed)] = uint32(i)
			}
		}
	}
	return x
}

// Table is the table the index belongs to.
func (x *EntryIndex) Table() *Table { return x.t }

// Entry4 returns the index of the entry whose IPv4 prefix is the longest
// covering a: the entry Lookup4(a) translates with.
func (x *EntryIndex) Entry4(a [4]byte) (int, bool) {
	t := x.t
	v := be32(a)
	if t.any16[v>>22]&(1<<(v>>16&63)) == 0 {
		return 0, false
	}
	for l := range t.levels4 {
		if p := t.levels4[l].pos(v, t.seed); p >= 0 {
			return int(x.ent4[l][p]), true
		}
	}
	return 0, false
}

// Entry6 returns the index of the entry whose IPv6 prefix is the longest
// covering a: the entry Lookup6(a) translates with.
func (x *EntryIndex) Entry6(a [16]byte) (int, bool) {
	t := x.t
	hi, lo := split6(a)
	if b := bucket64(hi); t.any64[b>>6]&(1<<(b&63)) == 0 {
		return 0, false
	}
	for l := range t.levels6 {
		if p := t.levels6[l].pos(hi, lo, t.seed); p >= 0 {
			return int(x.ent6[l][p]), true
		}
	}
	return 0, false
}

// Exact returns the index of the entry that is exactly e (both prefixes
// equal), if the table has it: how counters follow an entry from one
// table to the next.
func (x *EntryIndex) Exact(e Entry) (int, bool) {
	t := x.t
	if !e.IPv4.IsValid() || !e.IPv4.Addr().Is4() {
		return 0, false
	}
	p4 := e.IPv4.Masked()
	for l := range t.levels4 {
		if int(t.levels4[l].bits) != p4.Bits() {
			continue
		}
		p := t.levels4[l].pos(be32(p4.Addr().As4()), t.seed)
		if p < 0 {
			return 0, false
		}
		i := int(x.ent4[l][p])
		return i, t.recs[i].entry() == Entry{IPv4: p4, IPv6: e.IPv6.Masked()}
	}
	return 0, false
}

// pos is find that returns the slot's position (-1: none).
func (l *level4) pos(a uint32, seed uint64) int {
	key := a & l.mask
	n := len(l.slots)
	for p := slotOf(hash4(key, seed), n); ; p = next(p, n) {
		s := &l.slots[p]
		if !s.used {
			return -1
		}
		if s.key == key {
			return p
		}
	}
}

// pos is find that returns the slot's position, bucket*bucketSlots6 +
// slot (-1: none).
func (l *level6) pos(hi, lo uint64, seed uint64) int {
	b, i := l.find(hi, lo, seed)
	if b < 0 {
		return -1
	}
	return b*bucketSlots6 + i
}
