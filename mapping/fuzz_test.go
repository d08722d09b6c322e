package mapping

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

var (
	fuzzBases4 = [2][4]byte{{198, 51, 100, 0}, {203, 0, 113, 0}}
	fuzzBases6 = [2][16]byte{
		netip.MustParseAddr("2001:db8:1::").As16(),
		netip.MustParseAddr("2001:db8:2::").As16(),
	}
)

// fuzzEntries turns bytes into entries: 3 bytes each (length and base
// choice, IPv4 low byte, IPv6 low byte), all inside two /24s and two /120s.
// Bit 5 of the first byte (when the IPv4 side is shorter than /32) gives
// the IPv6 side one bit more suffix than the IPv4 side (RFC 7757 section
// 3.2).
func fuzzEntries(data []byte) []Entry {
	var out []Entry
	for ; len(data) >= 3 && len(out) < 64; data = data[3:] {
		bits := 24 + int(data[0]%9)
		bits6 := 96 + bits
		if bits < 32 && data[0]&0x20 != 0 {
			bits6--
		}
		mask := byte(0xff << (32 - bits))
		mask6 := byte(0xff << (128 - bits6))
		a4, a6 := fuzzBases4[data[0]>>6&1], fuzzBases6[data[0]>>7]
		a4[3] = data[1] & mask
		a6[15] = data[2] & mask6
		out = append(out, Entry{IPv4: netip.PrefixFrom(netip.AddrFrom4(a4), bits), IPv6: netip.PrefixFrom(netip.AddrFrom16(a6), bits6)})
	}
	return out
}

// FuzzTable checks the indexed table against the linear reference
// (refLookup4/6) for every address of the universe, in both build modes,
// and that NewTable refuses exactly the tables with equal prefixes on one
// side or nested ones whose inner entry did not opt in (optIn has bit i%64
// set for entry i's TableOptions.Nested).
func FuzzTable(f *testing.F) {
	f.Add([]byte{8, 10, 10, 8, 11, 11}, false, uint64(0))
	f.Add([]byte{0, 0, 0, 5, 8, 16, 8, 9, 9}, true, uint64(0))
	f.Add([]byte{0x48, 1, 1, 0x88, 1, 1, 0xc8, 1, 1, 8, 1, 1}, false, uint64(0))
	// A /24 and two /32s inside it, on both sides: both inner ones opt in,
	// then only one.
	f.Add([]byte{0, 0, 0, 8, 10, 10, 8, 11, 11}, false, uint64(6))
	f.Add([]byte{0, 0, 0, 8, 10, 10, 8, 11, 11}, false, uint64(2))
	// The inner entry first, the outer one (opting in, which is not enough) later.
	f.Add([]byte{8, 10, 10, 0, 0, 0}, false, uint64(2))
	// Longer IPv6 suffixes (bit 5): a /30 <-> /125 and a /31 <-> /126.
	f.Add([]byte{0x26, 4, 8, 0x27, 8, 16}, false, uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, nested bool, optIn uint64) {
		entries := fuzzEntries(data)
		tab, err := NewTableWith(entries, TableOptions{AllowNested: nested, Nested: func(i int) bool { return optIn>>(i%64)&1 != 0 }})

		dup, overlap := false, false
		for i := range entries {
			for j := range i {
				a, b := entries[i], entries[j]
				dup = dup || a.IPv4 == b.IPv4 || a.IPv6 == b.IPv6
				// The entry with the longer prefix on an overlapping side
				// must opt in (the sides can disagree on which is inner).
				if a.IPv4.Overlaps(b.IPv4) && a.IPv4 != b.IPv4 {
					inner := i
					if b.IPv4.Bits() > a.IPv4.Bits() {
						inner = j
					}
					overlap = overlap || optIn>>(inner%64)&1 == 0
				}
				if a.IPv6.Overlaps(b.IPv6) && a.IPv6 != b.IPv6 {
					inner := i
					if b.IPv6.Bits() > a.IPv6.Bits() {
						inner = j
					}
					overlap = overlap || optIn>>(inner%64)&1 == 0
				}
			}
		}
		switch {
		case dup:
			if !errors.Is(err, ErrDuplicate) {
				t.Fatalf("duplicate prefixes accepted or misreported: %v", err)
			}
			return
		case overlap && !nested:
			if !errors.Is(err, ErrOverlap) {
				t.Fatalf("nested prefixes accepted or misreported: %v", err)
			}
			return
		case err != nil:
			t.Fatalf("valid table refused: %v", err)
		}
		for b := range 2 {
			for x := range 256 {
				a4 := fuzzBases4[b]
				a4[3] = byte(x)
				want6, wantOK := refLookup4(entries, a4)
				v6, delta, ok := tab.Lookup4(a4)
				if ok != wantOK || v6 != want6 || (ok && delta != Delta(a4, v6)) {
					t.Fatalf("Lookup4(%v) = %v, %#x, %v; want %v, %v", netip.AddrFrom4(a4), netip.AddrFrom16(v6), delta, ok, netip.AddrFrom16(want6), wantOK)
				}
				a6 := fuzzBases6[b]
				a6[15] = byte(x)
				want4, wantOK := refLookup6(entries, a6)
				v4, delta, ok := tab.Lookup6(a6)
				if ok != wantOK || v4 != want4 || (ok && delta != Delta(v4, a6)) {
					t.Fatalf("Lookup6(%v) = %v, %#x, %v; want %v, %v", netip.AddrFrom16(a6), netip.AddrFrom4(v4), delta, ok, netip.AddrFrom4(want4), wantOK)
				}
			}
		}

		// Batches agree with single lookups over the same universe.
		var keys4 [][4]byte
		var keys6 [][16]byte
		for b := range 2 {
			for x := range 256 {
				a4, a6 := fuzzBases4[b], fuzzBases6[b]
				a4[3], a6[15] = byte(x), byte(x)
				keys4, keys6 = append(keys4, a4), append(keys6, a6)
			}
		}
		checkBatch(t, tab, keys4, keys6)

		// The snapshot with a prefix equal to the second IPv6 base: EAM
		// first, then the prefix (RFC 7757 section 3.3), in both directions.
		p, err := NewPrefix(netip.PrefixFrom(netip.AddrFrom16(fuzzBases6[1]), 96))
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewSnapshot(p, tab)
		inside := false
		for _, en := range entries {
			inside = inside || p.Prefix().Overlaps(en.IPv6)
		}
		if inside {
			if !errors.Is(err, ErrInsidePrefix) {
				t.Fatalf("entry inside the prefix: error %v", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		for b := range 2 {
			for x := range 256 {
				a4 := fuzzBases4[b]
				a4[3] = byte(x)
				want6, eam := refLookup4(entries, a4)
				wantO := ByEAM
				if !eam {
					want6, _ = p.Embed(a4)
					wantO = ByPrefix
				}
				if v6, _, o := s.To6(a4); v6 != want6 || o != wantO {
					t.Fatalf("To6(%v) = %v, %v; want %v, %v", netip.AddrFrom4(a4), netip.AddrFrom16(v6), o, netip.AddrFrom16(want6), wantO)
				}
				a6 := fuzzBases6[b]
				a6[15] = byte(x)
				want4, eam := refLookup6(entries, a6)
				wantO = ByEAM
				if !eam {
					var inPrefix bool
					want4, _, inPrefix = p.Extract(a6)
					wantO = map[bool]Origin{true: ByPrefix, false: NotTranslatable}[inPrefix]
				}
				if v4, _, o := s.To4(a6); v4 != want4 || o != wantO {
					t.Fatalf("To4(%v) = %v, %v; want %v, %v", netip.AddrFrom16(a6), netip.AddrFrom4(v4), o, netip.AddrFrom4(want4), wantO)
				}
			}
		}
	})
}

// FuzzParseCSV: any input gives entries that pass the per-entry checks or
// a *CSVError with a position inside the input; never a panic.
func FuzzParseCSV(f *testing.F) {
	f.Add("198.51.100.10,2001:db8:6::10\n# c\n\n192.0.2.0/24 , 2001:db8:a::/120 # x\r\n")
	f.Add("\uFEFF1.2.3.4,::1,\n")
	f.Add("a,b\n,,\n/,/")
	f.Add("198.51.100.1,2001:db8:6::1\nx\n198.51.100.2/24,2001:db8:6::/120\n\ny")
	f.Fuzz(func(t *testing.T, src string) {
		entries, lines, err := ParseCSVLines(strings.NewReader(src), "f.csv")
		if err != nil {
			var ce *CSVError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *CSVError", err)
			}
			if ce.Line < 1 || ce.Line > strings.Count(src, "\n")+1 || ce.Col < 1 {
				t.Fatalf("error position %d:%d outside the input", ce.Line, ce.Col)
			}
			// Several bad lines: each reported once, in line order.
			var all *CSVErrors
			if errors.As(err, &all) {
				if len(all.Errs) < 2 || len(all.Errs) > MaxReported || (all.More > 0 && len(all.Errs) != MaxReported) {
					t.Fatalf("%d errors and %d more", len(all.Errs), all.More)
				}
				for i, ce := range all.Errs {
					if ce.Line > strings.Count(src, "\n")+1 || ce.Col < 1 || i > 0 && ce.Line <= all.Errs[i-1].Line {
						t.Fatalf("error %d at %d:%d after line %d", i, ce.Line, ce.Col, all.Errs[max(i-1, 0)].Line)
					}
				}
			}
			return
		}
		if len(lines) != len(entries) {
			t.Fatalf("%d lines for %d entries", len(lines), len(entries))
		}
		for i, e := range entries {
			if err := checkEntry(e); err != nil {
				t.Fatalf("entry %d (line %d) passed the parser but not checkEntry: %v", i, lines[i], err)
			}
			if i > 0 && lines[i] <= lines[i-1] {
				t.Fatalf("lines not increasing: %v", lines)
			}
		}
	})
}
