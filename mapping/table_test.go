package mapping

import (
	"errors"
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
	v6 = entries[best].IPv6.Addr().As16()
	for i := 0; i < 4; i++ { // copy the suffix bits (RFC 7757 section 3)
		hostByte := byte(0xff)
		if b := entries[best].IPv4.Bits() - 8*i; b >= 8 {
			hostByte = 0
		} else if b > 0 {
			hostByte = 0xff >> b
		}
		v6[12+i] |= a[i] & hostByte
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
	v4 = entries[best].IPv4.Addr().As4()
	for i := 0; i < 4; i++ {
		hostByte := byte(0xff)
		if b := entries[best].IPv4.Bits() - 8*i; b >= 8 {
			hostByte = 0
		} else if b > 0 {
			hostByte = 0xff >> b
		}
		v4[i] |= a[12+i] & hostByte
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
		{"suffix lengths", []Entry{ok1, e("192.0.2.0/24", "2001:db8:aaaa::/64")}, ErrSuffixLength, 1, -1, "8 suffix bits"},
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
		{"nested v4, container later", []Entry{ok1, e("198.51.100.0/24", "2001:db8:7::/120")}, ErrOverlap, 1, 0, "contains"},
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
