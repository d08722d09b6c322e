package mapping

import (
	"net/netip"
	"testing"
)

// TestEntryIndex: Entry4 and Entry6 name the entry the lookups use (the
// longest match), as Find4 and Find6 (linear scans) do, for the addresses
// inside, around and outside every entry of a nested table, and Exact
// finds an entry only when both of its prefixes are equal.
func TestEntryIndex(t *testing.T) {
	entries := []Entry{
		e("198.51.100.0/24", "2001:db8:7::/120"),
		e("198.51.100.8/30", "2001:db8:8::/126"),
		e("198.51.100.9", "2001:db8:6::9"),
		e("203.0.113.7", "2001:db8:6::7"),
		e("192.0.2.0/28", "2001:db8:9::/120"), // longer IPv6 suffix (RFC 7757 section 3.2)
	}
	tab, err := NewTableWith(entries, TableOptions{AllowNested: true})
	if err != nil {
		t.Fatal(err)
	}
	x := tab.EntryIndex()
	if x.Table() != tab {
		t.Fatal("Table() is not the table indexed")
	}
	rnd := newRand(7)
	var probes4 [][4]byte
	var probes6 [][16]byte
	for _, en := range entries {
		a4, a6 := en.IPv4.Addr().As4(), en.IPv6.Addr().As16()
		for range 64 {
			b4, b6 := a4, a6
			b4[3] += byte(rnd.intn(256))
			b6[15] += byte(rnd.intn(256))
			b6[14] += byte(rnd.intn(2))
			probes4 = append(probes4, b4)
			probes6 = append(probes6, b6)
		}
	}
	probes4 = append(probes4, [4]byte{192, 0, 2, 200}, [4]byte{8, 8, 8, 8})
	probes6 = append(probes6, [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 6, 15: 8})
	for _, a := range probes4 {
		gi, gok := x.Entry4(a)
		wi, wok := tab.Find4(a)
		if gok != wok || gok && gi != wi {
			t.Errorf("Entry4(%v) = %d, %v; Find4 says %d, %v", netip.AddrFrom4(a), gi, gok, wi, wok)
		}
	}
	for _, a := range probes6 {
		gi, gok := x.Entry6(a)
		wi, wok := tab.Find6(a)
		if gok != wok || gok && gi != wi {
			t.Errorf("Entry6(%v) = %d, %v; Find6 says %d, %v", netip.AddrFrom16(a), gi, gok, wi, wok)
		}
	}
	for i, en := range entries {
		if got, ok := x.Exact(en); !ok || got != i {
			t.Errorf("Exact(%v) = %d, %v; want %d", en, got, ok, i)
		}
	}
	for _, en := range []Entry{
		e("198.51.100.9", "2001:db8:6::10"),      // same IPv4 side, other IPv6 side
		e("198.51.100.10", "2001:db8:6::9"),      // other IPv4 side
		e("198.51.100.0/25", "2001:db8:7::/121"), // a length the table lacks
		{},
	} {
		if i, ok := x.Exact(en); ok {
			t.Errorf("Exact(%v) = %d, want none", en, i)
		}
	}
}

// TestEntryIndexLarge: at a size where probes collide, every entry's own
// addresses find it.
func TestEntryIndexLarge(t *testing.T) {
	entries := benchEntries(50000)
	tab, err := NewTable(entries)
	if err != nil {
		t.Fatal(err)
	}
	x := tab.EntryIndex()
	for i, en := range entries {
		if j, ok := x.Entry4(en.IPv4.Addr().As4()); !ok || j != i {
			t.Fatalf("Entry4(%v) = %d, %v; want %d", en.IPv4, j, ok, i)
		}
		if j, ok := x.Entry6(en.IPv6.Addr().As16()); !ok || j != i {
			t.Fatalf("Entry6(%v) = %d, %v; want %d", en.IPv6, j, ok, i)
		}
	}
	if _, ok := emptyTable.EntryIndex().Entry4([4]byte{198, 51, 100, 1}); ok {
		t.Error("the empty table has an entry")
	}
}

func TestEntryIndexNoAlloc(t *testing.T) {
	entries := benchEntries(1000)
	tab, err := NewTable(entries)
	if err != nil {
		t.Fatal(err)
	}
	x := tab.EntryIndex()
	a4, a6 := entries[500].IPv4.Addr().As4(), entries[500].IPv6.Addr().As16()
	if n := testing.AllocsPerRun(1000, func() {
		x.Entry4(a4)
		x.Entry6(a6)
	}); n != 0 {
		t.Errorf("%v allocations per lookup", n)
	}
}
