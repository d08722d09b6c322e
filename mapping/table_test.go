package mapping

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func e(v4, v6 string) Entry {
	return Entry{IPv4: pfx(v4), IPv6: pfx(v6)}
}

// pfx parses a prefix or a single address (as /32 or /128).
func pfx(s string) netip.Prefix {
	if strings.Contains(s, "/") {
		return netip.MustParsePrefix(s)
	}
	a := netip.MustParseAddr(s)
	return netip.PrefixFrom(a, a.BitLen())
}

// refLookup4 is the obvious longest-prefix match over a list: the
// reference the indexed Table must agree with.
func refLookup4(entries []Entry, a [4]byte) (v6 [16]byte, ok bool) {
	addr := netip.AddrFrom4(a)
	best := -1
	for i, e := range entries {
		if e.IPv4.Contains(addr) && (best < 0 || e.IPv4.Bits() > entries[best].IPv4.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return v6, false
	}
	// RFC 7757 section 3.2: the IPv4 suffix, then zeros, after the IPv6
	// prefix; done bit by bit, unlike the table.
	e := entries[best]
	v6 = e.IPv6.Addr().As16()
	s4, s6 := 32-e.IPv4.Bits(), 128-e.IPv6.Bits()
	for k := range s4 { // bit k of the IPv4 suffix, from its least significant
		if a[3-k/8]>>(k%8)&1 != 0 {
			pos := k + s6 - s4 // from the least significant bit of v6
			v6[15-pos/8] |= 1 << (pos % 8)
		}
	}
	return v6, true
}

func refLookup6(entries []Entry, a [16]byte) (v4 [4]byte, ok bool) {
	addr := netip.AddrFrom16(a)
	best := -1
	for i, e := range entries {
		if e.IPv6.Contains(addr) && (best < 0 || e.IPv6.Bits() > entries[best].IPv6.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return v4, false
	}
	e := entries[best]
	v4 = e.IPv4.Addr().As4()
	s4, s6 := 32-e.IPv4.Bits(), 128-e.IPv6.Bits()
	for k := range s4 {
		if pos := k + s6 - s4; a[15-pos/8]>>(pos%8)&1 != 0 {
			v4[3-k/8] |= 1 << (k % 8)
		}
	}
	return v4, true
}

// TestLookup checks both directions on a table mixing /32 entries and
// prefixes (RFC 7757 section 3: suffix bits are copied across).
func TestLookup(t *testing.T) {
	entries := []Entry{
		e("198.51.100.10", "2001:db8:6::10"),
		e("198.51.100.11", "2001:db8:6::11"),
		e("192.0.2.0/24", "2001:db8:aaaa::/120"),
		e("203.0.113.16/28", "2001:db8:bbbb::1:0/124"),
		e("198.51.100.128/25", "2001:db8:6::8000:0/121"),
	}
	tab, err := NewTable(entries)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Len() != len(entries) {
		t.Errorf("Len = %d", tab.Len())
	}
	if got := slices.Collect(tab.All()); !slices.Equal(got, entries) {
		t.Errorf("All = %v, want %v", got, entries)
	}
	if got := tab.PrefixLengths(); !slices.Equal(got, []int{32, 28, 25, 24}) {
		t.Errorf("PrefixLengths = %v", got)
	}
	for _, tc := range []struct {
		v4, v6 string
		ok     bool
	}{
		{"198.51.100.10", "2001:db8:6::10", true},
		{"198.51.100.11", "2001:db8:6::11", true},
		{"192.0.2.0", "2001:db8:aaaa::", true},
		{"192.0.2.77", "2001:db8:aaaa::4d", true},
		{"192.0.2.255", "2001:db8:aaaa::ff", true},
		{"203.0.113.16", "2001:db8:bbbb::1:0", true},
		{"203.0.113.31", "2001:db8:bbbb::1:f", true},
		{"198.51.100.200", "2001:db8:6::8000:48", true},
		{"198.51.100.12", "", false},
		{"198.51.100.127", "", false},
		{"203.0.113.15", "", false},
		{"203.0.113.32", "", false},
		{"192.0.3.0", "", false},
		{"8.8.8.8", "", false},
	} {
		a4 := netip.MustParseAddr(tc.v4).As4()
		v6, delta, ok := tab.Lookup4(a4)
		if ok != tc.ok {
			t.Errorf("Lookup4(%s) ok = %v", tc.v4, ok)
			continue
		}
		if !ok {
			if v6 != [16]byte{} || delta != 0 {
				t.Errorf("Lookup4(%s) missed but returned %v, %#x", tc.v4, v6, delta)
			}
			continue
		}
		want6 := netip.MustParseAddr(tc.v6).As16()
		if v6 != want6 || delta != Delta(a4, want6) {
			t.Errorf("Lookup4(%s) = %v, %#04x; want %s, %#04x", tc.v4, netip.AddrFrom16(v6), delta, tc.v6, Delta(a4, want6))
		}
		back, delta6, ok := tab.Lookup6(want6)
		if !ok || back != a4 || delta6 != delta {
			t.Errorf("Lookup6(%s) = %v, %#04x, %v; want %s, %#04x", tc.v6, netip.AddrFrom4(back), delta6, ok, tc.v4, delta)
		}
	}
	for _, miss := range []string{"2001:db8:6::12", "2001:db8:aaaa::100", "2001:db8:bbbb::2:0", "2001:db8:6::7fff:ffff", "64:ff9b::c633:640a"} {
		if _, _, ok := tab.Lookup6(netip.MustParseAddr(miss).As16()); ok {
			t.Errorf("Lookup6(%s) matched", miss)
		}
	}
}

// TestLookupNested: with AllowNested the longest prefix wins in both
// directions (RFC 7757 section 3), including the asymmetry the RFC warns
// about.
func TestLookupNested(t *testing.T) {
	entries := []Entry{
		e("192.0.2.0/24", "2001:db8:aaaa::/120"),
		e("192.0.2.8/29", "2001:db8:bbbb::/125"),
		e("192.0.2.9", "2001:db8:cccc::9"),
	}
	if _, err := NewTable(entries); !errors.Is(err, ErrOverlap) {
		t.Fatalf("NewTable accepted nested entries: %v", err)
	}
	tab, err := NewTableWith(entries, TableOptions{AllowNested: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ v4, v6 string }{
		{"192.0.2.1", "2001:db8:aaaa::1"},
		{"192.0.2.10", "2001:db8:bbbb::2"},
		{"192.0.2.9", "2001:db8:cccc::9"},
		{"192.0.2.16", "2001:db8:aaaa::10"},
	} {
		v6, _, ok := tab.Lookup4(netip.MustParseAddr(tc.v4).As4())
		if !ok || netip.AddrFrom16(v6) != netip.MustParseAddr(tc.v6) {
			t.Errorf("Lookup4(%s) = %v, %v; want %s", tc.v4, netip.AddrFrom16(v6), ok, tc.v6)
		}
	}
	// 2001:db8:aaaa::9 -> 192.0.2.9, which maps forward to 2001:db8:cccc::9.
	v4, _, ok := tab.Lookup6(netip.MustParseAddr("2001:db8:aaaa::9").As16())
	if !ok || netip.AddrFrom4(v4) != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("Lookup6(2001:db8:aaaa::9) = %v, %v", netip.AddrFrom4(v4), ok)
	}
}

// TestNewTableRejects: every refused entry is named by index, with the
// entry it conflicts with, and the reason is testable with errors.Is.
func TestNewTableRejects(t *testing.T) {
	ok1 := e("198.51.100.10", "2001:db8:6::10")
	for _, tc := range []struct {
		name    string
		entries []Entry
		reason  error
		index   int
		other   int
		msg     string
	}{
		{"v6 on the v4 side", []Entry{ok1, e("2001:db8::1", "2001:db8:6::1")}, ErrFamily, 1, -1, "not an IPv4 prefix"},
		{"v4-mapped v6 side", []Entry{e("198.51.100.1", "::ffff:198.51.100.1")}, ErrFamily, 0, -1, "not an IPv6 prefix"},
		{"zero entry", []Entry{{}}, ErrFamily, 0, -1, "not an IPv4 prefix"},
		{"IPv6 suffix shorter", []Entry{ok1, e("192.0.2.0/24", "2001:db8:aaaa::/124")}, ErrSuffixLength, 1, -1, "8 suffix bits"},
		{"IPv6 side shorter than /64", []Entry{e("192.0.2.0/24", "2001:db8:aaaa::/60")}, ErrSuffixLength, 0, -1, "shorter than /64"},
		{"contains the wkp", []Entry{e("192.0.2.0/24", "64:ff9b::/64")}, ErrWellKnownNonGlobal, 0, -1, "contains the well-known prefix"},
		{"v4 host bits", []Entry{e("192.0.2.1/24", "2001:db8:aaaa::/120")}, ErrHostBits, 0, -1, "did you mean 192.0.2.0/24"},
		{"v6 host bits", []Entry{e("192.0.2.0/24", "2001:db8:aaaa::1/120")}, ErrHostBits, 0, -1, "did you mean 2001:db8:aaaa::/120"},
		{"loopback", []Entry{e("127.0.0.1", "2001:db8::1")}, ErrSpecial, 0, -1, "127.0.0.1/32"},
		{"this network", []Entry{e("0.0.0.0/24", "2001:db8::/120")}, ErrSpecial, 0, -1, "0.0.0.0/24"},
		{"v4 multicast", []Entry{e("224.0.0.1", "2001:db8::1")}, ErrSpecial, 0, -1, "224.0.0.1"},
		{"broadcast", []Entry{e("255.255.255.255", "2001:db8::1")}, ErrSpecial, 0, -1, "255.255.255.255"},
		{"v6 link-local", []Entry{e("192.0.2.1", "fe80::1")}, ErrSpecial, 0, -1, "fe80::1"},
		{"v6 multicast", []Entry{e("192.0.2.1", "ff02::1")}, ErrSpecial, 0, -1, "ff02::1"},
		{"wkp non-global", []Entry{e("198.51.100.1", "64:ff9b::c633:6401")}, ErrWellKnownNonGlobal, 0, -1, "RFC 6052 section 3.1"},
		{"wkp non-global range", []Entry{e("8.8.8.0/24", "64:ff9b::a00:0/120")}, ErrWellKnownNonGlobal, 0, -1, "64:ff9b::a00:0/120"},
		{"duplicate v4", []Entry{ok1, e("198.51.100.11", "2001:db8:6::11"), e("198.51.100.10", "2001:db8:6::12")}, ErrDuplicate, 2, 0, "IPv4 side 198.51.100.10/32 equals that of entry 198.51.100.10/32 = 2001:db8:6::10/128 (index 0)"},
		{"duplicate v6", []Entry{ok1, e("198.51.100.12", "2001:db8:6::10")}, ErrDuplicate, 1, 0, "IPv6 side"},
		{"identical", []Entry{ok1, ok1}, ErrDuplicate, 1, 0, "equals"},
		{"nested v4", []Entry{e("198.51.100.0/24", "2001:db8:7::/120"), ok1}, ErrOverlap, 1, 0, "IPv4 side 198.51.100.10/32 lies inside"},
		// The inner entry is the one refused: it is where an opt-in
		// (TableOptions.Nested) would go.
		{"nested v4, container later", []Entry{ok1, e("198.51.100.0/24", "2001:db8:7::/120")}, ErrOverlap, 0, 1, "IPv4 side 198.51.100.10/32 lies inside that of entry 198.51.100.0/24"},
		{"nested v6", []Entry{e("192.0.2.0/24", "2001:db8:6::/120"), ok1}, ErrOverlap, 1, 0, "IPv6 side 2001:db8:6::10/128 lies inside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewTable(tc.entries)
			var ee *EntryError
			if !errors.As(err, &ee) {
				t.Fatalf("error %v (%T), want an *EntryError", err, err)
			}
			if !errors.Is(err, tc.reason) {
				t.Errorf("error %v is not %v", err, tc.reason)
			}
			if ee.Index != tc.index || ee.Other != tc.other {
				t.Errorf("Index, Other = %d, %d; want %d, %d", ee.Index, ee.Other, tc.index, tc.other)
			}
			if ee.Entry != tc.entries[tc.index] {
				t.Errorf("Entry = %v", ee.Entry)
			}
			if tc.other >= 0 && ee.OtherEntry != tc.entries[tc.other] {
				t.Errorf("OtherEntry = %v", ee.OtherEntry)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

func TestNewTableAccepts(t *testing.T) {
	for _, entries := range [][]Entry{
		nil,
		{e("8.8.8.8", "64:ff9b::808:808")}, // global IPv4 in the WKP: allowed
		{e("10.0.0.1", "2001:db8::1"), e("10.0.0.2", "2001:db8::2")}, // private EAM space
		{e("192.0.2.0/24", "2001:db8::/120"), e("192.0.3.0/24", "2001:db8::100/120")},
		{e("240.0.0.1", "2001:db8::1")},
	} {
		if _, err := NewTable(entries); err != nil {
			t.Errorf("NewTable(%v): %v", entries, err)
		}
	}
}

// TestLookupShortPrefix covers entries shorter than the /16 miss filter's
// granularity, at their edges.
func TestLookupShortPrefix(t *testing.T) {
	tab := mustTable(t, e("20.0.0.0/12", "2001:db8:1::/108"), e("240.0.0.0/4", "2001:db8:2::/100"))
	for _, tc := range []struct {
		v4, v6 string
		ok     bool
	}{
		{"20.0.0.0", "2001:db8:1::", true},
		{"20.15.255.255", "2001:db8:1::f:ffff", true},
		{"20.16.0.0", "", false},
		{"19.255.255.255", "", false},
		{"255.255.255.255", "2001:db8:2::fff:ffff", true},
		{"239.255.255.255", "", false},
	} {
		a4 := netip.MustParseAddr(tc.v4).As4()
		v6, _, ok := tab.Lookup4(a4)
		if ok != tc.ok || (ok && netip.AddrFrom16(v6) != netip.MustParseAddr(tc.v6)) {
			t.Errorf("Lookup4(%s) = %v, %v; want %s, %v", tc.v4, netip.AddrFrom16(v6), ok, tc.v6, tc.ok)
		}
		if ok {
			if v4, _, ok := tab.Lookup6(v6); !ok || v4 != a4 {
				t.Errorf("Lookup6(%v) = %v, %v", netip.AddrFrom16(v6), netip.AddrFrom4(v4), ok)
			}
		}
	}
	if got := Aggregate4(tab); !slices.Equal(got, prefixes("20.0.0.0/12", "240.0.0.0/4")) {
		t.Errorf("Aggregate4 = %v", got)
	}
}

func TestEmptyTable(t *testing.T) {
	tab, err := NewTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := tab.Lookup4([4]byte{192, 0, 2, 1}); ok {
		t.Error("empty table matched")
	}
	if _, _, ok := tab.Lookup6([16]byte{0x20, 0x01, 0x0d, 0xb8}); ok {
		t.Error("empty table matched")
	}
	if tab.Len() != 0 || len(Aggregate4(tab)) != 0 {
		t.Error("empty table is not empty")
	}
}

// TestLookupNoAlloc: the per-packet path must not allocate.
func TestLookupNoAlloc(t *testing.T) {
	tab := mustTable(t, e("198.51.100.10", "2001:db8:6::10"), e("192.0.2.0/24", "2001:db8:aaaa::/120"))
	p := mustPrefix(t, "64:ff9b::/96")
	s, err := NewSnapshot(Prefix{}, tab)
	if err != nil {
		t.Fatal(err)
	}
	a4 := [4]byte{192, 0, 2, 7}
	a6 := netip.MustParseAddr("2001:db8:6::10").As16()
	if n := testing.AllocsPerRun(100, func() {
		tab.Lookup4(a4)
		tab.Lookup4([4]byte{8, 8, 8, 8})
		tab.Lookup6(a6)
		s.To6(a4)
		s.To4(a6)
		v6, _ := p.Embed([4]byte{8, 8, 8, 8})
		p.Extract(v6)
	}); n != 0 {
		t.Errorf("%v allocations per lookup round", n)
	}
}

// TestNewTableReportsAll: every refused entry is reported, in entry order,
// the first MaxReported in full and the rest counted.
func TestNewTableReportsAll(t *testing.T) {
	outer := e("198.51.100.0/24", "2001:db8:7::/120")
	entries := []Entry{
		e("198.51.100.10", "2001:db8:6::10"), // 0: inside 3
		e("192.0.2.1", "2001:db8:6::1"),      // 1
		e("192.0.2.1", "2001:db8:6::2"),      // 2: duplicate of 1
		outer,                                // 3
		e("192.0.2.3", "2001:db8:6::1"),      // 4: duplicate of 1 (IPv6)
	}
	_, err := NewTable(entries)
	var te *TableError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T), want a *TableError", err, err)
	}
	var got []string
	for _, ee := range te.Errs {
		got = append(got, fmt.Sprintf("%d/%d %v", ee.Index, ee.Other, errors.Is(ee, ErrOverlap)))
	}
	if want := []string{"0/3 true", "2/1 false", "4/1 false"}; !slices.Equal(got, want) || te.More != 0 {
		t.Errorf("refusals %v (+%d more), want %v", got, te.More, want)
	}
	var first *EntryError
	if !errors.As(err, &first) || first.Index != 0 {
		t.Errorf("errors.As finds %v, want entry 0", first)
	}

	// Past MaxReported only a count.
	many := []Entry{e("192.0.2.1", "2001:db8:6::1")}
	for i := range MaxReported + 7 {
		many = append(many, e("192.0.2.1", fmt.Sprintf("2001:db8:6::1:%x", i)))
	}
	_, err = NewTable(many)
	if !errors.As(err, &te) || len(te.Errs) != MaxReported || te.More != 7 {
		t.Fatalf("error with %d+%d refusals, want %d+7: %.200v", len(te.Errs), te.More, MaxReported, err)
	}
	if !strings.HasSuffix(err.Error(), "\nand 7 more") {
		t.Errorf("error does not end with the count: ...%s", err.Error()[len(err.Error())-40:])
	}
	for i, ee := range te.Errs {
		if ee.Index != i+1 || ee.Other != 0 {
			t.Fatalf("refusal %d is entry %d against %d", i, ee.Index, ee.Other)
		}
	}
}

// TestNewTableNestedOptIn: an inner entry that opts in may lie inside
// another (longest match wins, RFC 7757 section 3); one that does not is
// still refused, and the outer entry's opt-in does not cover it.
func TestNewTableNestedOptIn(t *testing.T) {
	entries := []Entry{
		e("198.51.100.0/24", "2001:db8:7::/120"),
		e("198.51.100.10", "2001:db8:6::10"),
		e("198.51.100.11", "2001:db8:6::11"),
	}
	optIn := func(set ...int) func(int) bool {
		return func(i int) bool { return slices.Contains(set, i) }
	}
	tab, err := NewTableWith(entries, TableOptions{Nested: optIn(1, 2)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ v4, v6 string }{
		{"198.51.100.10", "2001:db8:6::10"},
		{"198.51.100.11", "2001:db8:6::11"},
		{"198.51.100.12", "2001:db8:7::c"},
	} {
		v6, _, ok := tab.Lookup4(netip.MustParseAddr(tc.v4).As4())
		if !ok || netip.AddrFrom16(v6) != netip.MustParseAddr(tc.v6) {
			t.Errorf("Lookup4(%s) = %v, %v; want %s", tc.v4, netip.AddrFrom16(v6), ok, tc.v6)
		}
		v4, _, ok := tab.Lookup6(netip.MustParseAddr(tc.v6).As16())
		if !ok || netip.AddrFrom4(v4) != netip.MustParseAddr(tc.v4) {
			t.Errorf("Lookup6(%s) = %v, %v; want %s", tc.v6, netip.AddrFrom4(v4), ok, tc.v4)
		}
	}
	for _, set := range [][]int{{1}, {0, 2}, {0}} {
		_, err := NewTableWith(entries, TableOptions{Nested: optIn(set...)})
		var ee *EntryError
		if !errors.As(err, &ee) || !errors.Is(err, ErrOverlap) || slices.Contains(set, ee.Index) || ee.Other != 0 {
			t.Errorf("opt-in %v: error %v", set, err)
		}
	}
}

// TestFind: Find4 and Find6 name the entry the lookups use (the longest
// match), and agree with them on every address of a nested table.
func TestFind(t *testing.T) {
	entries := []Entry{
		e("198.51.100.0/24", "2001:db8:7::/120"),
		e("198.51.100.8/30", "2001:db8:8::/126"),
		e("198.51.100.9", "2001:db8:6::9"),
	}
	tab, err := NewTableWith(entries, TableOptions{AllowNested: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		want int
	}{
		{"198.51.100.9", 2}, {"198.51.100.10", 1}, {"198.51.100.200", 0}, {"192.0.2.1", -1},
		{"2001:db8:6::9", 2}, {"2001:db8:8::3", 1}, {"2001:db8:7::ff", 0}, {"2001:db8:6::8", -1}, {"2001:db8:7:1::1", -1},
	} {
		a := netip.MustParseAddr(tc.addr)
		var i int
		var ok bool
		if a.Is4() {
			i, ok = tab.Find4(a.As4())
		} else {
			i, ok = tab.Find6(a.As16())
		}
		if ok != (tc.want >= 0) || ok && i != tc.want {
			t.Errorf("Find(%s) = %d, %v; want %d", tc.addr, i, ok, tc.want)
		}
		if ok && tab.Entry(i) != entries[i] {
			t.Errorf("Entry(%d) = %v", i, tab.Entry(i))
		}
	}
}

// TestLongerIPv6Suffix: RFC 7757 section 3.2 entries whose IPv6 suffix is
// longer than the IPv4 one, both directions: the IPv4 suffix fills the
// most significant bits of the IPv6 suffix, the rest is zero one way and
// ignored the other.
func TestLongerIPv6Suffix(t *testing.T) {
	entries := []Entry{
		e("198.51.100.0/30", "2001:db8:6::/124"),        // 2 bits into 4
		e("203.0.113.0/24", "2001:db8:7::/64"),          // 8 bits into 64
		e("192.0.2.7", "2001:db8:8::/120"),              // a /32 for a whole /120
		e("198.51.100.128/25", "2001:db8:9::100:0/104"), // 7 bits into 24
	}
	tab, err := NewTable(entries)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ v4, v6 string }{
		{"198.51.100.0", "2001:db8:6::"},
		{"198.51.100.1", "2001:db8:6::4"},
		{"198.51.100.3", "2001:db8:6::c"},
		{"203.0.113.1", "2001:db8:7:0:100::"},
		{"203.0.113.255", "2001:db8:7:0:ff00::"},
		{"192.0.2.7", "2001:db8:8::"},
		{"198.51.100.129", "2001:db8:9::102:0"},
		{"198.51.100.255", "2001:db8:9::1fe:0"},
	} {
		a4, a6 := netip.MustParseAddr(tc.v4), netip.MustParseAddr(tc.v6)
		v6, delta, ok := tab.Lookup4(a4.As4())
		if !ok || netip.AddrFrom16(v6) != a6 || delta != Delta(a4.As4(), v6) {
			t.Errorf("Lookup4(%s) = %v, %#x, %v; want %s", tc.v4, netip.AddrFrom16(v6), delta, ok, tc.v6)
		}
		v4, delta, ok := tab.Lookup6(a6.As16())
		if !ok || netip.AddrFrom4(v4) != a4 || delta != Delta(v4, a6.As16()) {
			t.Errorf("Lookup6(%s) = %v, %v; want %s", tc.v6, netip.AddrFrom4(v4), ok, tc.v4)
		}
	}
	// The low bits the IPv4 suffix does not fill are ignored towards IPv4.
	for v6, want := range map[string]string{
		"2001:db8:6::7":                   "198.51.100.1",
		"2001:db8:6::f":                   "198.51.100.3",
		"2001:db8:7:0:1ff:ffff:ffff:ffff": "203.0.113.1",
		"2001:db8:8::ff":                  "192.0.2.7",
		"2001:db8:9::1ff:ffff":            "198.51.100.255",
	} {
		v4, delta, ok := tab.Lookup6(netip.MustParseAddr(v6).As16())
		if !ok || netip.AddrFrom4(v4) != netip.MustParseAddr(want) || delta != Delta(v4, netip.MustParseAddr(v6).As16()) {
			t.Errorf("Lookup6(%s) = %v, %v; want %s", v6, netip.AddrFrom4(v4), ok, want)
		}
	}
	// The entries come back as given.
	if got := slices.Collect(tab.All()); !slices.Equal(got, entries) {
		t.Errorf("All() = %v", got)
	}
	// An EAM /64 that contains the translation prefix is refused.
	p, _ := NewPrefix(netip.MustParsePrefix("2001:db8:7::/96"))
	if _, err := NewSnapshot(p, tab); !errors.Is(err, ErrInsidePrefix) || !strings.Contains(err.Error(), "contains the RFC 6052 prefix") {
		t.Errorf("NewSnapshot with the prefix inside an EAM /64: %v", err)
	}
}
