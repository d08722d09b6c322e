package mapping

import "unsafe"

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

// touchRun is how many table lines a prefetch pass finds the addresses of
// before it loads them, all together. The loads are kept apart from the
// hashing: a load that misses cannot retire until its line arrives, so
// everything behind it waits in the CPU's reorder buffer, and with the
// hashing of each key between two loads the buffer filled after a dozen
// or so IPv6 keys (whose hash takes two 64-bit halves, a filter check and
// three multiplies), the rest of the batch's misses waiting for the first
// ones. A run of back-to-back loads puts the whole run's misses in flight
// at once (docs/benchmarks.md, "Prefetch in two passes").
const touchRun = 32

// touch4 brings into cache the slot Lookup4 probes first for each key at
// every prefix length, by loading its key and the first word of its IPv6
// address; it skips keys the /16
// filter rejects (Lookup4 reads nothing else for them). It hashes up to
// touchRun keys' slots, then loads them (see touchRun). The loaded words are summed and returned so that the
// compiler keeps the loads; noinline keeps the call, whose result the
// callers drop.
//
//go:noinline
func (t *Table) touch4(keys [][4]byte) (sum uint32) {
	var run [touchRun]*uint32
	n := 0
	for _, a := range keys {
		x := be32(a)
		if t.any16[x>>22]&(1<<(x>>16&63)) == 0 {
			continue
		}
		for i := range t.levels4 {
			l := &t.levels4[i]
			s := &l.slots[slotOf(hash4(x&l.mask, t.seed), len(l.slots))]
			// Both ends of the slot: a 24-byte slot4 lies across two cache
			// lines one time in four, and Lookup4 reads all of it.
			run[n], run[n+1] = &s.key, (*uint32)(unsafe.Pointer(&s.v6))
			if n += 2; n == touchRun {
				for _, p := range run {
					sum += *p
				}
				n = 0
			}
		}
	}
	for _, p := range run[:n] {
		sum += *p
	}
	return sum
}

// touch6 is touch4 for Lookup6 and its /64 filter; it loads the first
// bucket Lookup6 reads at each prefix length, one cache line, which holds
// everything a hit returns (a second line only where the bucket
// overflowed, for about one key in fifty).
//
//go:noinline
func (t *Table) touch6(keys [][16]byte) (sum uint64) {
	var run [touchRun]*uint64
	n := 0
	for _, a := range keys {
		hi, lo := split6(a)
		if b := bucket64(hi); t.any64[b>>6]&(1<<(b&63)) == 0 {
			continue
		}
		for i := range t.levels6 {
			l := &t.levels6[i]
			run[n] = &l.buckets[slotOf(hash6(hi, lo&l.mask, t.seed), len(l.buckets))].lo[0]
			if n++; n == touchRun {
				for _, p := range run {
					sum += *p
				}
				n = 0
			}
		}
	}
	for _, p := range run[:n] {
		sum += *p
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
// With a prefix, the IPv6 keys are sorted into embedded IPv4 addresses and
// others, up to touchRun at a time, so that each kind is warmed in one
// pass (a pass per key would load its line at once, as a lone lookup
// does).
func (s *Snapshot) touch(keys4 [][4]byte, keys6 [][16]byte) uint64 {
	sum := uint64(s.table.touch4(keys4))
	if !s.prefix.Valid() {
		return sum + s.table.touch6(keys6)
	}
	var embedded [touchRun][4]byte
	var own [touchRun][16]byte
	for len(keys6) > 0 {
		chunk := keys6[:min(len(keys6), touchRun)]
		keys6 = keys6[len(chunk):]
		n4, n6 := 0, 0
		for i := range chunk {
			if v4, _, ok := s.prefix.extract(chunk[i]); ok {
				embedded[n4], n4 = v4, n4+1
			} else {
				own[n6], n6 = chunk[i], n6+1
			}
		}
		sum += uint64(s.table.touch4(embedded[:n4])) + s.table.touch6(own[:n6])
	}
	return sum
}
