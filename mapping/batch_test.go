package mapping

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

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

// lookup4Batch is how a batch is looked up: prefetch every key's slot,
// then look each up. out[i] is the answer for keys[i].
func lookup4Batch(t *Table, keys [][4]byte, out []Result4) {
	out = out[:len(keys)]
	t.touch4(keys)
	for i, a := range keys {
		r := &out[i]
		r.V6, r.Delta, r.OK = t.Lookup4(a)
	}
}

// lookup6Batch is lookup4Batch for Lookup6.
func lookup6Batch(t *Table, keys [][16]byte, out []Result6) {
	out = out[:len(keys)]
	t.touch6(keys)
	for i, a := range keys {
		r := &out[i]
		r.V4, r.Delta, r.OK = t.Lookup6(a)
	}
}

// checkBatch compares batched lookups (prefetch, then lookups) with Lookup4 and
// Lookup6 key by key, for the whole key list and for every batch size up
// to 9 (partial last batches included).
func checkBatch(t *testing.T, tab *Table, keys4 [][4]byte, keys6 [][16]byte) {
	t.Helper()
	out4 := make([]Result4, len(keys4)+1)
	out6 := make([]Result6, len(keys6)+1)
	for _, size := range []int{len(keys4) + len(keys6), 1, 2, 3, 8, 9} {
		if size == 0 {
			continue
		}
		for from := 0; from < len(keys4); from += size {
			batch := keys4[from:min(from+size, len(keys4))]
			for i := range out4 {
				out4[i] = Result4{V6: [16]byte{0xff}, Delta: 0xffff, OK: true} // stale results must be overwritten
			}
			lookup4Batch(tab, batch, out4)
			for i, a := range batch {
				v6, delta, ok := tab.Lookup4(a)
				if got := out4[i]; got != (Result4{v6, delta, ok}) {
					t.Fatalf("batch of %d: batch[%d] (%v) = %v, %#x, %v; Lookup4 = %v, %#x, %v", size, i, netip.AddrFrom4(a),
						netip.AddrFrom16(got.V6), got.Delta, got.OK, netip.AddrFrom16(v6), delta, ok)
				}
			}
			if out4[len(batch)].Delta != 0xffff {
				t.Fatalf("lookup4Batch wrote past its %d keys", len(batch))
			}
		}
		for from := 0; from < len(keys6); from += size {
			batch := keys6[from:min(from+size, len(keys6))]
			for i := range out6 {
				out6[i] = Result6{V4: [4]byte{0xff}, Delta: 0xffff, OK: true}
			}
			lookup6Batch(tab, batch, out6)
			for i, a := range batch {
				v4, delta, ok := tab.Lookup6(a)
				if got := out6[i]; got != (Result6{v4, delta, ok}) {
					t.Fatalf("batch of %d: batch[%d] (%v) = %v, %#x, %v; Lookup6 = %v, %#x, %v", size, i, netip.AddrFrom16(a),
						netip.AddrFrom4(got.V4), got.Delta, got.OK, netip.AddrFrom4(v4), delta, ok)
				}
			}
			if out6[len(batch)].Delta != 0xffff {
				t.Fatalf("lookup6Batch wrote past its %d keys", len(batch))
			}
		}
	}
}

func TestLookupBatch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []Entry
		nested  bool
		keys4   []string
		keys6   []string
	}{
		{"empty", nil, false, []string{"198.51.100.10", "8.8.8.8"}, []string{"2001:db8:6::10"}},
		{
			"single addresses",
			[]Entry{e("198.51.100.10", "2001:db8:6::10"), e("198.51.100.11", "2001:db8:6::11")},
			false,
			[]string{"198.51.100.10", "198.51.100.12", "198.51.100.11", "8.8.8.8", "198.51.100.10"},
			[]string{"2001:db8:6::11", "2001:db8:6::12", "2001:db8:7::10", "2001:db8:6::10"},
		},
		{
			"prefixes and longer IPv6 suffixes",
			[]Entry{
				e("192.0.2.0/24", "2001:db8:aaaa::/120"),
				e("203.0.113.16/28", "2001:db8:bbbb::1:0/124"),
				e("198.51.100.0/30", "2001:db8:cccc::/125"),
			},
			false,
			[]string{"192.0.2.77", "203.0.113.31", "203.0.113.32", "198.51.100.3", "198.51.100.4"},
			[]string{"2001:db8:aaaa::4d", "2001:db8:bbbb::1:f", "2001:db8:cccc::7", "2001:db8:cccc::8", "2001:db8:aaaa::100"},
		},
		{
			"nested",
			[]Entry{e("192.0.2.0/24", "2001:db8:a::/120"), e("192.0.2.9", "2001:db8:b::9")},
			true,
			[]string{"192.0.2.9", "192.0.2.8", "192.0.3.9"},
			[]string{"2001:db8:a::9", "2001:db8:b::9", "2001:db8:b::8"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := NewTableWith(tc.entries, TableOptions{AllowNested: tc.nested})
			if err != nil {
				t.Fatal(err)
			}
			var keys4 [][4]byte
			var keys6 [][16]byte
			for _, s := range tc.keys4 {
				keys4 = append(keys4, netip.MustParseAddr(s).As4())
			}
			for _, s := range tc.keys6 {
				keys6 = append(keys6, netip.MustParseAddr(s).As16())
			}
			checkBatch(t, tab, keys4, keys6)
		})
	}
}

// TestLookupBatchRandom: random tables of /32 <-> /128 entries and of
// RFC 7757 section 3.2 prefixes, looked up with a mix of hits, unmapped
// neighbours and unrelated addresses, agree batch for batch.
func TestLookupBatchRandom(t *testing.T) {
	for _, n := range []int{1, 100, 5000} {
		for _, bits4 := range []int{32, 30} {
			t.Run(fmt.Sprintf("n=%d/bits4=%d", n, bits4), func(t *testing.T) {
				rnd := newRand(uint64(n*bits4) + 7)
				entries := make([]Entry, n)
				for i := range entries {
					x := uint32(20<<24) + uint32(i)<<(32-bits4)
					v6 := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 6, 12: byte(i >> 16), 13: byte(i >> 8), 14: byte(i)}
					entries[i] = Entry{
						IPv4: netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}), bits4),
						IPv6: netip.PrefixFrom(netip.AddrFrom16(v6), 96+bits4+(32-bits4)-8), // an 8-bit IPv6 suffix
					}
				}
				tab, err := NewTable(entries)
				if err != nil {
					t.Fatal(err)
				}
				var keys4 [][4]byte
				var keys6 [][16]byte
				for range 3000 {
					en := entries[rnd.intn(n)]
					a4, a6 := en.IPv4.Addr().As4(), en.IPv6.Addr().As16()
					switch rnd.intn(4) {
					case 0: // a hit, anywhere in the entry
						a4[3] |= byte(rnd.intn(256)) &^ byte(0xff<<(32-bits4))
						a6[15] = byte(rnd.intn(256))
					case 1: // an unmapped neighbour
						a4[1] ^= 0x40
						a6[11] ^= 1
					case 2: // random
						rnd.fill(a4[:])
						rnd.fill(a6[:])
					}
					keys4 = append(keys4, a4)
					keys6 = append(keys6, a6)
				}
				hits := 0
				for i := range keys4 {
					_, _, ok4 := tab.Lookup4(keys4[i])
					_, _, ok6 := tab.Lookup6(keys6[i])
					hits += btoi(ok4) + btoi(ok6)
				}
				if hits < len(keys4)/2 {
					t.Fatalf("only %d hits in %d lookups: the keys do not exercise the table", hits, 2*len(keys4))
				}
				checkBatch(t, tab, keys4, keys6)
			})
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// slotWords4 is what touch4 loads from the slot of en: its IPv4 key and
// the first word of its IPv6 address, the slot's two ends.
func slotWords4(en Entry) uint32 {
	v6 := en.IPv6.Addr().As16()
	return be32(en.IPv4.Addr().As4()) + binary.NativeEndian.Uint32(v6[:4])
}

// TestTouchReadsTheLookupSlot: Prefetch loads the slot Lookup probes
// first, which for a table of one entry holds that entry's masked key.
// A prefetch of the wrong slot would not fail any other test.
func TestTouchReadsTheLookupSlot(t *testing.T) {
	for _, en := range []Entry{
		e("198.51.100.10", "2001:db8:6::10"),
		e("192.0.2.0/24", "2001:db8:aaaa::/120"),
		e("203.0.113.16/28", "2001:db8:bbbb::1:0/124"),
	} {
		tab := mustTable(t, en)
		key4 := en.IPv4.Addr().As4()
		in4 := key4
		in4[3] |= 7 &^ byte(0xff<<(32-en.IPv4.Bits()))
		if got, want := tab.touch4([][4]byte{in4}), slotWords4(en); got != want {
			t.Errorf("%v: touch4(%v) read %#x, want the entry's key and IPv6 word %#x", en, netip.AddrFrom4(in4), got, want)
		}
		if got := tab.touch4([][4]byte{{8, 8, 8, 8}}); got != 0 {
			t.Errorf("%v: touch4(8.8.8.8) read %#x past the /16 filter", en, got)
		}
		key6 := en.IPv6.Addr().As16()
		in6 := key6
		in6[15] |= 7 &^ byte(0xff<<(128-en.IPv6.Bits()))
		_, lo := split6(key6)
		if got := tab.touch6([][16]byte{in6, in6}); got != 2*lo {
			t.Errorf("%v: touch6(2 x %v) read %#x, want twice the entry's low half %#x", en, netip.AddrFrom16(in6), got, lo)
		}
	}
}

// TestBatchNoAlloc: batches are for the packet path.
func TestBatchNoAlloc(t *testing.T) {
	tab := mustTable(t, e("198.51.100.10", "2001:db8:6::10"), e("192.0.2.0/24", "2001:db8:aaaa::/120"))
	s, err := NewSnapshot(mustPrefix(t, "2001:db8:64::/96"), tab)
	if err != nil {
		t.Fatal(err)
	}
	keys4 := [][4]byte{{192, 0, 2, 7}, {8, 8, 8, 8}, {198, 51, 100, 10}}
	keys6 := [][16]byte{netip.MustParseAddr("2001:db8:6::10").As16(), netip.MustParseAddr("2001:db8:64::c000:207").As16()}
	out4 := make([]Result4, len(keys4))
	out6 := make([]Result6, len(keys6))
	if n := testing.AllocsPerRun(100, func() {
		lookup4Batch(tab, keys4, out4)
		lookup6Batch(tab, keys6, out6)
		s.Prefetch(keys4, keys6)
	}); n != 0 {
		t.Errorf("%v allocations per batch round", n)
	}
}

// TestSnapshotPrefetch: Prefetch warms the slots To6 and To4 read, and
// for an address in the RFC 6052 prefix, where To4 reads none, those of
// the embedded IPv4 address (the translator's hairpin check); it
// tolerates snapshots without a prefix or a table.
func TestSnapshotPrefetch(t *testing.T) {
	server := e("198.51.100.10", "2001:db8:6::10")
	tab := mustTable(t, server)
	p := mustPrefix(t, "2001:db8:64::/96")
	server4 := [4]byte{198, 51, 100, 10}
	server6 := netip.MustParseAddr("2001:db8:6::10").As16()
	hairpin := netip.MustParseAddr("2001:db8:64::c633:640a").As16() // the prefix and 198.51.100.10
	_, lo6 := split6(server6)
	for _, tc := range []struct {
		name  string
		p     Prefix
		tab   *Table
		keys4 [][4]byte
		keys6 [][16]byte
		want  uint64
	}{
		{"server both ways", p, tab, [][4]byte{server4}, [][16]byte{server6}, uint64(slotWords4(server)) + lo6},
		{"hairpin", p, tab, nil, [][16]byte{hairpin}, uint64(slotWords4(server))},
		{"no prefix", Prefix{}, tab, nil, [][16]byte{hairpin, server6}, lo6},
		{"no table", p, nil, [][4]byte{server4}, [][16]byte{hairpin, server6}, 0},
		{"neither", Prefix{}, nil, [][4]byte{server4}, [][16]byte{server6}, 0},
		{"no keys", p, tab, nil, nil, 0},
	} {
		s, err := NewSnapshot(tc.p, tc.tab)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.touch(tc.keys4, tc.keys6); got != tc.want {
			t.Errorf("%s: touch read %#x, want %#x", tc.name, got, tc.want)
		}
		s.Prefetch(tc.keys4, tc.keys6)
	}
}

// TestTouchRuns: a prefetch loads its lines in runs of touchRun; every
// key of a batch longer than a run (runs full and partial, keys filtered
// out between them, several prefix lengths per key) is still warmed once
// per length, and Snapshot.touch sorts IPv6 keys into embedded IPv4 and
// own ones across its chunks without losing any.
func TestTouchRuns(t *testing.T) {
	server, net := e("198.51.100.10", "2001:db8:6::10"), e("198.51.100.0/24", "2001:db8:6::100/120")
	tab := mustTable(t, server)
	nested, err := NewTableWith([]Entry{server, net}, TableOptions{AllowNested: true})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSnapshot(mustPrefix(t, "2001:db8:64::/96"), tab)
	if err != nil {
		t.Fatal(err)
	}
	server4 := [4]byte{198, 51, 100, 10}
	server6 := netip.MustParseAddr("2001:db8:6::10").As16()
	hairpin := netip.MustParseAddr("2001:db8:64::c633:640a").As16()
	_, lo6 := split6(server6)
	for _, n := range []int{1, touchRun - 1, touchRun, touchRun + 1, 2*touchRun + 3, 100} {
		var keys4 [][4]byte
		var keys6, mixed [][16]byte
		for i := range n {
			keys4 = append(keys4, server4, [4]byte{8, 8, 8, 8}) // the second is filtered out
			keys6 = append(keys6, server6, netip.MustParseAddr("2001:db8:7::1").As16())
			mixed = append(mixed, server6)
			if i%3 == 0 {
				mixed = append(mixed, hairpin)
			}
		}
		hairpins := (n + 2) / 3
		if got, want := tab.touch4(keys4), uint32(n)*slotWords4(server); got != want {
			t.Errorf("%d keys: touch4 read %#x, want %#x", n, got, want)
		}
		if got, want := tab.touch6(keys6), uint64(n)*lo6; got != want {
			t.Errorf("%d keys: touch6 read %#x, want %#x", n, got, want)
		}
		// Two IPv4 lengths, each holding one entry at the slot probed first:
		// every key loads the /32 entry's key and the /24 entry's.
		if got, want := nested.touch4(keys4), uint32(n)*(slotWords4(server)+slotWords4(net)); got != want {
			t.Errorf("%d keys: touch4 over two prefix lengths read %#x, want %#x", n, got, want)
		}
		// touch4 sums in 32 bits, once per chunk of touchRun IPv6 keys.
		want := uint64(n) * lo6
		for from := 0; from < len(mixed); from += touchRun {
			h := 0
			for _, k := range mixed[from:min(from+touchRun, len(mixed))] {
				if k == hairpin {
					h++
				}
			}
			want += uint64(uint32(h) * slotWords4(server))
		}
		if got := s.touch(nil, mixed); got != want {
			t.Errorf("%d keys: Snapshot.touch of %d servers and %d hairpins read %#x, want %#x", n, n, hairpins, got, want)
		}
	}
}
