package mapping

import (
	"net/netip"
	"slices"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestAggregateExamples(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []Entry
		want4   []netip.Prefix
	}{
		{"pair", []Entry{e("198.51.100.11", "2001:db8:6::11"), e("198.51.100.10", "2001:db8:6::10")},
			prefixes("198.51.100.10/31")},
		{"unaligned pair", []Entry{e("198.51.100.9", "2001:db8:6::9"), e("198.51.100.10", "2001:db8:6::a")},
			prefixes("198.51.100.9/32", "198.51.100.10/32")},
		{"run of 7", []Entry{
			e("192.0.2.1", "2001:db8::1"), e("192.0.2.2", "2001:db8::2"), e("192.0.2.3", "2001:db8::3"),
			e("192.0.2.4", "2001:db8::4"), e("192.0.2.5", "2001:db8::5"), e("192.0.2.6", "2001:db8::6"),
			e("192.0.2.7", "2001:db8::7")},
			prefixes("192.0.2.1/32", "192.0.2.2/31", "192.0.2.4/30")},
		{"prefix and addresses", []Entry{e("192.0.2.0/25", "2001:db8:1::/121"), e("192.0.2.128", "2001:db8:2::1"),
			e("192.0.3.0/24", "2001:db8:1::100/120")},
			prefixes("192.0.2.0/25", "192.0.2.128/32", "192.0.3.0/24")},
		{"top of the IPv4 space", []Entry{e("248.0.0.0/5", "2001:db8:0:1::/101"), e("240.0.0.0/5", "2001:db8::/101")},
			prefixes("240.0.0.0/4")},
		{"across a /96 boundary", []Entry{e("192.0.2.1", "2001:db8::ffff:ffff"), e("192.0.2.2", "2001:db8::1:0:0")},
			prefixes("192.0.2.1/32", "192.0.2.2/32")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := mustTable(t, tc.entries...)
			if got := Aggregate4(tab); !slices.Equal(got, tc.want4) {
				t.Errorf("Aggregate4 = %v, want %v", got, tc.want4)
			}
		})
	}
}

func putU128(b []byte, a u128) {
	for i := 0; i < 8; i++ {
		b[i] = byte(a.hi >> (56 - 8*i))
		b[8+i] = byte(a.lo >> (56 - 8*i))
	}
}

// TestCoverWholeSpace exercises the 128-bit carry paths.
func TestCoverWholeSpace(t *testing.T) {
	var got []string
	emit := func(start u128, bits int) {
		var a [16]byte
		putU128(a[:], start)
		got = append(got, netip.PrefixFrom(netip.AddrFrom16(a), bits).String())
	}
	max := u128{^uint64(0), ^uint64(0)}
	cover([]u128Range{{u128{}, max}}, 128, emit)
	cover([]u128Range{{u128{^uint64(0), ^uint64(0) - 1}, max}, {u128{^uint64(0), 0}, u128{^uint64(0), 5}}}, 128, emit)
	want := []string{"::/0", "ffff:ffff:ffff:ffff::/126", "ffff:ffff:ffff:ffff::4/127", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// TestAggregateExact checks, on random tables in a small universe, that the
// aggregate covers exactly the table's addresses, with disjoint prefixes
// that are each maximal (their parent is not covered), which makes the set
// the unique minimal one.
func TestAggregateExact(t *testing.T) {
	rnd := newRand(3)
	base4 := netip.MustParseAddr("198.51.100.0").As4()
	base6 := netip.MustParseAddr("2001:db8:1::").As16()
	for round := range 300 {
		entries := randomTable(rnd, base4, base6, 1+rnd.intn(40), false)
		tab, err := NewTable(entries)
		if err != nil {
			t.Fatal(err)
		}
		var in4, in6 [256]bool
		for _, en := range entries {
			for x := range 256 {
				a4 := base4
				a4[3] = byte(x)
				a6 := base6
				a6[15] = byte(x)
				in4[x] = in4[x] || en.IPv4.Contains(netip.AddrFrom4(a4))
				in6[x] = in6[x] || en.IPv6.Contains(netip.AddrFrom16(a6))
			}
		}
		check := func(side string, agg []netip.Prefix, in *[256]bool, last func(netip.Addr) int, width int) {
			var covered [256]int
			for i, p := range agg {
				if i > 0 && !agg[i-1].Addr().Less(p.Addr()) {
					t.Fatalf("round %d: %s aggregate not sorted: %v", round, side, agg)
				}
				lo := last(p.Addr())
				n := 1 << (width - p.Bits())
				if width-p.Bits() > 8 || lo+n > 256 {
					t.Fatalf("round %d: %s prefix %v leaves the universe", round, side, p)
				}
				for x := lo; x < lo+n; x++ {
					covered[x]++
				}
				if n < 256 {
					parentFull := true
					plo := lo &^ (2*n - 1)
					for x := plo; x < plo+2*n; x++ {
						parentFull = parentFull && in[x]
					}
					if parentFull {
						t.Errorf("round %d: %s prefix %v is not maximal", round, side, p)
					}
				}
			}
			for x := range 256 {
				if want := map[bool]int{true: 1, false: 0}[in[x]]; covered[x] != want {
					t.Fatalf("round %d: %s address %d covered %d times, want %d (agg %v)", round, side, x, covered[x], want, agg)
				}
			}
		}
		check("IPv4", Aggregate4(tab), &in4, func(a netip.Addr) int { return int(a.As4()[3]) }, 32)
	}
}

// randomTable makes n entries (fewer if they collide) inside base4/24 and
// base6/120, with random lengths /24../32, pairing IPv4 and IPv6 prefixes
// of the same size at unrelated positions. Without nested, entries that
// overlap an earlier one on either side are skipped.
func randomTable(rnd testRand, base4 [4]byte, base6 [16]byte, n int, nested bool) []Entry {
	var out []Entry
	for range n {
		bits := 24 + rnd.intn(9)
		if rnd.intn(2) == 0 {
			bits = 32
		}
		mask := byte(0xff << (32 - bits))
		a4, a6 := base4, base6
		a4[3] = byte(rnd.Uint32()) & mask
		a6[15] = byte(rnd.Uint32()) & mask
		en := Entry{IPv4: netip.PrefixFrom(netip.AddrFrom4(a4), bits), IPv6: netip.PrefixFrom(netip.AddrFrom16(a6), 96+bits)}
		ok := true
		for _, o := range out {
			if o.IPv4 == en.IPv4 || o.IPv6 == en.IPv6 || (!nested && (o.IPv4.Overlaps(en.IPv4) || o.IPv6.Overlaps(en.IPv6))) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, en)
		}
	}
	return out
}
