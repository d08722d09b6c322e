package mapping

import (
	"fmt"
	"net/netip"
	"testing"
)

// bucketProbes6 is the number of buckets a lookup of hi:lo reads in l.
func bucketProbes6(l *level6, hi, lo, seed uint64) int {
	lo &= l.mask
	n := len(l.buckets)
	probes := 1
	for b := slotOf(hash6(hi, lo, seed), n); ; b = next(b, n) {
		bk := &l.buckets[b]
		for i := range bucketSlots6 {
			if bk.lo[i] == lo && bk.hi[i] == hi && bk.meta[i] != 0 {
				return probes
			}
		}
		if !bk.over {
			return probes
		}
		probes++
	}
}

// TestBucket6Overflow: at the load factor of bucketCount6 a lookup reads
// one cache line, rarely two, and most hits are in their bucket's first
// slot, for the keys of the benchmarks (dense servers) and random ones.
// The fill depends on the table's seed (for dense keys, buckets read per
// hit range from 1.003 to 1.09 over 60 random seeds), so the test fixes
// eight seeds and bounds their mean and their worst: with a random seed
// it failed about one run in seven.
func TestBucket6Overflow(t *testing.T) {
	random := func(n int) []Entry {
		rnd := newRand(uint64(n))
		out := make([]Entry, n)
		for i := range out {
			var v6 [16]byte
			rnd.fill(v6[:])
			v6[0], v6[1] = 0x20, 0x01
			out[i] = Entry{IPv4: netip.PrefixFrom(netip.AddrFrom4([4]byte{20, byte(i >> 16), byte(i >> 8), byte(i)}), 32), IPv6: netip.PrefixFrom(netip.AddrFrom16(v6), 128)}
		}
		return out
	}
	saved := randomSeed
	defer func() { randomSeed = saved }()
	seeds := newRand(646)
	for _, tc := range []struct {
		name    string
		entries []Entry
	}{
		{"dense/1000", benchEntries(1000)},
		{"dense/200000", benchEntries(200_000)},
		{"random/200000", random(200_000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const runs = 8
			var sumHit, sumMiss, sumFirst, worst float64
			for range runs {
				seed := seeds.Uint64()
				randomSeed = func() uint64 { return seed }
				tab, err := NewTable(tc.entries)
				if err != nil {
					t.Fatal(err)
				}
				l := &tab.levels6[0]
				var hitProbes, missProbes, maxProbes, first int
				for _, en := range tc.entries {
					hi, lo := split6(en.IPv6.Addr().As16())
					if b, i := l.find(hi, lo, tab.seed); b == slotOf(hash6(hi, lo, tab.seed), len(l.buckets)) && i == 0 {
						first++
					}
					p := bucketProbes6(l, hi, lo, tab.seed)
					hitProbes += p
					maxProbes = max(maxProbes, p)
					missProbes += bucketProbes6(l, hi, lo^1<<40, tab.seed)
				}
				n := float64(len(tc.entries))
				perHit, perMiss := float64(hitProbes)/n, float64(missProbes)/n
				t.Logf("seed %#x: %d buckets; buckets read per hit %.3f, per miss %.3f, at most %d; hits in the first slot %.2f", seed, len(l.buckets), perHit, perMiss, maxProbes, float64(first)/n)
				sumHit, sumMiss, sumFirst = sumHit+perHit, sumMiss+perMiss, sumFirst+float64(first)/n
				worst = max(worst, perHit, perMiss)
			}
			perHit, perMiss, inFirst := sumHit/runs, sumMiss/runs, sumFirst/runs
			if perHit > 1.05 || perMiss > 1.05 || inFirst < 0.55 || worst > 1.12 {
				t.Errorf("over %d seeds: buckets read per hit %.3f, per miss %.3f, hits in the first slot %.2f, worst seed %.3f: want at most 1.05, 1.05, at least 0.55, at most 1.12", runs, perHit, perMiss, inFirst, worst)
			}
		})
	}
}

// TestDelta6 compares delta6 with Delta on edge and random inputs.
func TestDelta6(t *testing.T) {
	rnd := newRand(6)
	check := func(v4 [4]byte, v6 [16]byte) {
		t.Helper()
		hi, lo := split6(v6)
		if got, want := delta6(be32(v4), hi, lo), Delta(v4, v6); got != want {
			t.Fatalf("delta6(%v, %v) = %#04x, Delta = %#04x", netip.AddrFrom4(v4), netip.AddrFrom16(v6), got, want)
		}
	}
	ones6 := [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	for _, v4 := range [][4]byte{{0, 0, 0, 0}, {0xff, 0xff, 0xff, 0xff}, {0, 0, 0, 1}, {0xff, 0xff, 0, 0}, {192, 0, 2, 1}} {
		for _, v6 := range [][16]byte{ones6, {15: 1}, {0: 0x80}, {0xff, 0xff}, {14: 0xff, 15: 0xff}, netip.MustParseAddr("2001:db8::1").As16()} {
			check(v4, v6)
		}
	}
	for range 1_000_000 {
		var v4 [4]byte
		var v6 [16]byte
		rnd.fill(v4[:])
		rnd.fill(v6[:])
		if v6 == ([16]byte{}) {
			continue
		}
		check(v4, v6)
	}
}

// TestLookup6Differential: random tables with many prefix lengths,
// nested on both sides, and large enough that buckets overflow; Lookup6
// and Entry6 agree with a reference that probes a map for every prefix
// length, longest first (RFC 7757 section 3), for hits at every length,
// their neighbours, and random addresses around them.
func TestLookup6Differential(t *testing.T) {
	lengths := []int{128, 127, 124, 120, 116, 112, 104, 96, 80, 64}
	short := map[int]bool{80: true, 64: true} // only under the last base: elsewhere they would cover every key
	for _, n := range []int{50, 3000, 60_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			rnd := newRand(uint64(n) + 646)
			bases := [][16]byte{
				netip.MustParseAddr("2001:db8:1::").As16(),
				netip.MustParseAddr("2001:db8:1:0:8000::").As16(),
				netip.MustParseAddr("2001:db8:ffff:1::").As16(),
			}
			var entries []Entry
			seen := map[netip.Prefix]bool{}
			for i := 0; len(entries) < n; i++ {
				bits6 := 128 // mostly single addresses, as in real tables
				if rnd.intn(4) == 0 {
					bits6 = lengths[rnd.intn(len(lengths))]
				}
				v6 := bases[rnd.intn(len(bases)-1)]
				if short[bits6] {
					v6 = bases[len(bases)-1]
				}
				var r [8]byte
				rnd.fill(r[:])
				if rnd.intn(2) == 0 {
					r[2], r[3], r[4] = 0, 0, 0 // crowd some addresses: more nesting
				}
				copy(v6[8:], r[:])
				p6 := netip.PrefixFrom(netip.AddrFrom16(v6), bits6).Masked()
				if seen[p6] || p6.Addr().IsUnspecified() {
					continue
				}
				seen[p6] = true
				bits4 := max(32-(128-bits6), 32-rnd.intn(9))
				x := uint32(20<<24) + uint32(i)<<8 // every entry in its own IPv4 /24
				p4 := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}), bits4)
				entries = append(entries, Entry{IPv4: p4, IPv6: p6})
			}
			tab, err := NewTableWith(entries, TableOptions{AllowNested: true})
			if err != nil {
				t.Fatal(err)
			}
			idx := tab.EntryIndex()
			ref := map[netip.Prefix]int{}
			for i, en := range entries {
				ref[en.IPv6] = i
			}
			refLookup := func(a [16]byte) (int, bool) {
				for _, b := range lengths {
					if i, ok := ref[netip.PrefixFrom(netip.AddrFrom16(a), b).Masked()]; ok {
						return i, true
					}
				}
				return 0, false
			}
			hits, overflowed := 0, 0
			for k := range 20 * n {
				a := entries[rnd.intn(n)].IPv6.Addr().As16()
				switch k % 4 {
				case 0: // inside the entry, or a longer one within it
					var r [8]byte
					rnd.fill(r[:])
					for j := range r {
						a[8+j] |= r[j] & byte(rnd.intn(256))
					}
				case 1: // a neighbour
					a[15-rnd.intn(8)] ^= 1 << rnd.intn(8)
				case 2: // random in the base /64
					rnd.fill(a[8:])
				}
				want4, wantOK := [4]byte{}, false
				i, ok := refLookup(a)
				if ok {
					want4, wantOK = refLookup6(entries[i:i+1], a)
				}
				v4, delta, got := tab.Lookup6(a)
				if got != wantOK || v4 != want4 || (got && delta != Delta(v4, a)) {
					t.Fatalf("Lookup6(%v) = %v, %#x, %v; want %v, %v (entry %v)", netip.AddrFrom16(a), netip.AddrFrom4(v4), delta, got,
						netip.AddrFrom4(want4), wantOK, entries[i])
				}
				if e, got := idx.Entry6(a); got != ok || (ok && e != i) {
					t.Fatalf("Entry6(%v) = %d, %v; want %d, %v", netip.AddrFrom16(a), e, got, i, ok)
				}
				hits += btoi(ok)
				hi, lo := split6(a)
				for l := range tab.levels6 {
					if bucketProbes6(&tab.levels6[l], hi, lo, tab.seed) > 1 {
						overflowed++
						break
					}
				}
			}
			t.Logf("%d entries, %d IPv6 lengths; %d of %d lookups hit, %d read an overflowed bucket", n, len(tab.levels6), hits, 20*n, overflowed)
			if hits < 20*n/5 || hits > 20*n*9/10 {
				t.Errorf("%d hits in %d lookups: the keys do not mix hits and misses", hits, 20*n)
			}
			if n >= 3000 && overflowed == 0 {
				t.Errorf("no lookup read an overflowed bucket: the chains are untested")
			}
		})
	}
}
