package mapping

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func mustPrefix(t testing.TB, s string) Prefix {
	t.Helper()
	p, err := NewPrefix(netip.MustParsePrefix(s))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustTable(t testing.TB, entries ...Entry) *Table {
	t.Helper()
	tab, err := NewTable(entries)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// TestSnapshotPrecedence: EAM entries are consulted before the RFC 6052
// prefix in both directions (RFC 7757 section 3.3).
func TestSnapshotPrecedence(t *testing.T) {
	s, err := NewSnapshot(mustPrefix(t, "2001:db8:64::/96"),
		mustTable(t, e("198.51.100.10", "2001:db8:6::10"), e("192.0.2.1", "2001:db8:7::1")))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		v4, v6 string
		o      Origin
	}{
		{"198.51.100.10", "2001:db8:6::10", ByEAM},
		{"192.0.2.1", "2001:db8:7::1", ByEAM}, // would otherwise embed in the prefix
		{"192.0.2.2", "2001:db8:64::192.0.2.2", ByPrefix},
		{"198.51.100.99", "2001:db8:64::198.51.100.99", ByPrefix},
	} {
		a4 := netip.MustParseAddr(tc.v4).As4()
		a6 := netip.MustParseAddr(tc.v6).As16()
		v6, d6, o := s.To6(a4)
		if v6 != a6 || o != tc.o || d6 != Delta(a4, a6) {
			t.Errorf("To6(%s) = %v, %#x, %v; want %s, %v", tc.v4, netip.AddrFrom16(v6), d6, o, tc.v6, tc.o)
		}
		v4, d4, o := s.To4(a6)
		if v4 != a4 || o != tc.o || d4 != d6 {
			t.Errorf("To4(%s) = %v, %#x, %v; want %s, %v", tc.v6, netip.AddrFrom4(v4), d4, o, tc.v4, tc.o)
		}
	}
	// The RFC 6052 form of an EAM address still extracts: RFC 7757
	// section 4.2 hairpinning depends on it.
	if v4, _, o := s.To4(netip.MustParseAddr("2001:db8:64::198.51.100.10").As16()); o != ByPrefix || v4 != [4]byte{198, 51, 100, 10} {
		t.Errorf("To4(prefix+EAM address) = %v, %v", v4, o)
	}
	if _, _, o := s.To4(netip.MustParseAddr("2001:db8:6::99").As16()); o != NotTranslatable {
		t.Errorf("To4(unmapped server) origin %v", o)
	}
	if s.Prefix() != mustPrefix(t, "2001:db8:64::/96") || s.Table().Len() != 2 {
		t.Error("Prefix or Table accessor wrong")
	}
}

func TestSnapshotWithoutPrefix(t *testing.T) {
	s, err := NewSnapshot(Prefix{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, o := s.To6([4]byte{8, 8, 8, 8}); o != NotTranslatable {
		t.Errorf("To6 without prefix or table: %v", o)
	}
	if _, _, o := s.To4([16]byte{0x20, 0x01}); o != NotTranslatable {
		t.Errorf("To4 without prefix or table: %v", o)
	}
}

// TestSnapshotWellKnownPrefix: RFC 6052 section 3.1. With 64:ff9b::/96,
// non-global IPv4 is never represented with the prefix: such client
// addresses are not translatable, and EAM entries with non-global IPv4 are
// refused (hairpinning would represent them). With a network-specific
// prefix the same entries are fine.
func TestSnapshotWellKnownPrefix(t *testing.T) {
	wkp := mustPrefix(t, "64:ff9b::/96")
	s, err := NewSnapshot(wkp, mustTable(t, e("8.8.4.0/24", "2001:db8:6::/120")))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		v4 string
		o  Origin
	}{
		{"8.8.8.8", ByPrefix},
		{"8.8.4.4", ByEAM},
		{"192.0.2.1", NotTranslatable},
		{"10.0.0.1", NotTranslatable},
		{"100.64.0.1", NotTranslatable},
		{"192.0.0.9", ByPrefix},
	} {
		a4 := netip.MustParseAddr(tc.v4).As4()
		if _, _, o := s.To6(a4); o != tc.o {
			t.Errorf("To6(%s) origin %v, want %v", tc.v4, o, tc.o)
		}
		if tc.o == ByEAM {
			continue
		}
		v6, _ := wkp.Embed(a4)
		if _, _, o := s.To4(v6); o != tc.o {
			t.Errorf("To4(%v) origin %v, want %v", netip.AddrFrom16(v6), o, tc.o)
		}
	}

	nonGlobal := mustTable(t, e("8.8.8.8", "2001:db8:6::8"), e("198.51.100.0/28", "2001:db8:6::100/124"))
	_, err = NewSnapshot(wkp, nonGlobal)
	var ee *EntryError
	if !errors.As(err, &ee) || !errors.Is(err, ErrWellKnownNonGlobal) || ee.Index != 1 {
		t.Fatalf("NewSnapshot(WKP, documentation EAM) error %v, want ErrWellKnownNonGlobal at index 1", err)
	}
	if !strings.Contains(err.Error(), "64:ff9b::c633:6400") {
		t.Errorf("error %q does not show the forbidden address", err)
	}
	if _, err := NewSnapshot(mustPrefix(t, "2001:db8:64::/96"), nonGlobal); err != nil {
		t.Errorf("network-specific prefix with documentation EAM refused: %v", err)
	}
	// RFC 8215's local-use prefix is not the well-known prefix.
	if _, err := NewSnapshot(mustPrefix(t, "64:ff9b:1::/96"), nonGlobal); err != nil {
		t.Errorf("64:ff9b:1::/96 with documentation EAM refused: %v", err)
	}
}

func TestSnapshotEntryInsidePrefix(t *testing.T) {
	tab := mustTable(t, e("198.51.100.10", "2001:db8:6::10"), e("198.51.100.11", "2001:db8:64::1"))
	_, err := NewSnapshot(mustPrefix(t, "2001:db8:64::/96"), tab)
	var ee *EntryError
	if !errors.As(err, &ee) || !errors.Is(err, ErrInsidePrefix) || ee.Index != 1 {
		t.Fatalf("error %v, want ErrInsidePrefix at index 1", err)
	}
	if !strings.Contains(err.Error(), "2001:db8:64::1/128") || !strings.Contains(err.Error(), "2001:db8:64::/96") {
		t.Errorf("error %q does not name the entry and the prefix", err)
	}
	// A /32 translation prefix covers far more.
	_, err = NewSnapshot(mustPrefix(t, "2001:db8::/32"), tab)
	if !errors.Is(err, ErrInsidePrefix) {
		t.Errorf("entry inside a /32 prefix: %v", err)
	}
}
