package mapping

// Batched lookups. At a million entries every index slot a lookup reads is
// a cache miss, and a lone lookup waits for its miss before the next can
// start. A batch first computes every key's slot and loads one word of it
// (independent loads, so the CPU keeps several misses in flight, as vector
// routers do with prefetch instructions, which Go does not expose), then
// does the lookups, which now find their slots in cache. Prefetching a
// batch costs one pass over the keys; it pays when the keys' slots are not
// already cached, that is for large tables. Batches of a few dozen keys
// keep the touched lines (one or two per key and prefix length) in the
// first-level caches until they are used.

// Result4 is one Lookup4 answer in a batch.
type Result4 struct {
	V6    [16]byte
	Delta uint16
	OK    bool
}

// Result6 is one Lookup6 answer in a batch.
type Result6 struct {
	V4    [4]byte
	Delta uint16
	OK    bool
}

// Lookup4Batch is Lookup4 for each of keys: out[i] is the answer for
// keys[i]. It panics if out is shorter than keys. It does not allocate.
func (t *Table) Lookup4Batch(keys [][4]byte, out []Result4) {
	out = out[:len(keys)]
	t.Prefetch4(keys)
	for i, a := range keys {
		r := &out[i]
		r.V6, r.Delta, r.OK = t.Lookup4(a)
	}
}

// Lookup6Batch is Lookup6 for each of keys: out[i] is the answer for
// keys[i]. It panics if out is shorter than keys. It does not allocate.
func (t *Table) Lookup6Batch(keys [][16]byte, out []Result6) {
	out = out[:len(keys)]
	t.Prefetch6(keys)
	for i, a := range keys {
		r := &out[i]
		r.V4, r.Delta, r.OK = t.Lookup6(a)
	}
}

// Prefetch4 brings into cache the index slots that Lookup4 of each key
// reads first, so that lookups done soon after, for instance while
// translating the packets of one batch, do not each wait for memory. It
// only reads the table; its effect is on time alone.
func (t *Table) Prefetch4(keys [][4]byte) { t.touch4(keys) }

// Prefetch6 is Prefetch4 for Lookup6.
func (t *Table) Prefetch6(keys [][16]byte) { t.touch6(keys) }

// touch4 loads the first slot Lookup4 probes for each key at every prefix
// length, skipping keys the /16 filter rejects (Lookup4 reads nothing
// else for them). The loaded words are summed and returned so that the
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

// touch6 is touch4 for Lookup6 and its /64 filter.
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
			sum += l.slots[slotOf(hash6(hi, lo&l.mask, t.seed), len(l.slots))].lo
		}
	}
	return sum
}

// Prefetch warms the table slots that To6 of each of keys4 and To4 of
// each of keys6 will read. To4 reads no slot for an address inside the
// RFC 6052 prefix; the translator then looks up the embedded IPv4 address
// (an RFC 7757 section 4.2 hairpin check), which is warmed instead. See
// Table.Prefetch4.
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
