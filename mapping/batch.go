package mapping

// Batched lookups. At a million entries every index slot a lookup reads is
// a cache miss, and a lone lookup waits for its miss before the next can
// start. For a batch of packets, the caller first prefetches the slots of
// every address the batch will look up: the prefetch computes each key's
// slot and loads one word of it, independent loads, so the CPU keeps
// several misses in flight (as vector routers do with prefetch
// instructions, which Go does not expose). The lookups made while
// translating the batch then find their slots in cache. A prefetch costs
// one pass over the keys; it pays when the keys' slots are not already
// cached, that is for large tables. Batches of a few dozen packets keep
// the touched lines (one or two per key and prefix length) in cache until
// they are used.

// touch4 brings into cache the slot Lookup4 probes first for each key at
// every prefix length, by loading a word of it; it skips keys the /16
// filter rejects (Lookup4 reads nothing else for them). The loaded words are summed and returned so that the
// compiler keeps the loads; noinline keeps the call, whose result the
// callers drop.
//
//go:noinline
func (t *Table) touch4(keys [][4]byte) (sum uint32) {
	for _, a := range keys {
		x := be32(a)
		if t.any16[x>>22]&(1<<(x>>16&63)) == 0 {
			continue
		}
		for i := range t.levels4 {
			l := &t.levels4[i]
			sum += l.slots[slotOf(hash4(x&l.mask, t.seed), len(l.slots))].key
		}
	}
	return sum
}

// touch6 is touch4 for Lookup6 and its /64 filter; it loads the first
// bucket Lookup6 reads at each prefix length, one cache line.
//
//go:noinline
func (t *Table) touch6(keys [][16]byte) (sum uint64) {
	for _, a := range keys {
		hi, lo := split6(a)
		if b := bucket64(hi); t.any64[b>>6]&(1<<(b&63)) == 0 {
			continue
		}
		for i := range t.levels6 {
			l := &t.levels6[i]
			sum += l.buckets[slotOf(hash6(hi, lo&l.mask, t.seed), len(l.buckets))].lo[0]
		}
	}
	return sum
}

// Prefetch warms the table slots that To6 of each of keys4 and To4 of
// each of keys6 will read. To4 reads no slot for an address inside the
// RFC 6052 prefix; the translator then looks up the embedded IPv4 address
// (an RFC 7757 section 4.2 hairpin check), which is warmed instead.
// Prefetch only reads the table: it changes no result, only how long the
// lookups that follow wait for memory. It does not allocate.
func (s *Snapshot) Prefetch(keys4 [][4]byte, keys6 [][16]byte) { s.touch(keys4, keys6) }

// touch is Prefetch, returning the sum of the words it loaded (see touch4).
func (s *Snapshot) touch(keys4 [][4]byte, keys6 [][16]byte) uint64 {
	sum := uint64(s.table.touch4(keys4))
	if !s.prefix.Valid() {
		return sum + s.table.touch6(keys6)
	}
	for i := range keys6 {
		if v4, _, ok := s.prefix.extract(keys6[i]); ok {
			sum += uint64(s.table.touch4([][4]byte{v4}))
		} else {
			sum += s.table.touch6(keys6[i : i+1])
		}
	}
	return sum
}
