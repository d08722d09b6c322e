package mapping

import (
	"net/netip"
	"testing"
)

// TestIsGlobal4AgreesWithList checks the packet-path switch against the
// documented list at every range boundary and at random addresses.
func TestIsGlobal4AgreesWithList(t *testing.T) {
	inList := func(x uint32) bool { return overlapsNonGlobal4(x, x) }
	check := func(x uint32) {
		a := [4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}
		if IsGlobal4(a) == inList(x) {
			t.Fatalf("IsGlobal4(%v) = %v, but the list says non-global = %v", netip.AddrFrom4(a), IsGlobal4(a), inList(x))
		}
	}
	for _, r := range nonGlobal4 {
		for _, x := range []uint32{r.lo - 1, r.lo, r.lo + 1, r.hi - 1, r.hi, r.hi + 1} {
			check(x)
		}
	}
	rnd := newRand(2)
	for range 1 << 20 {
		check(rnd.Uint32())
	}
}

func TestIsGlobal4Examples(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		global bool
	}{
		{"8.8.8.8", true},
		{"192.0.2.33", false},     // TEST-NET-1
		{"198.51.100.10", false},  // TEST-NET-2
		{"203.0.113.1", false},    // TEST-NET-3
		{"10.1.2.3", false},       // RFC 1918
		{"172.31.255.255", false}, // RFC 1918
		{"172.32.0.0", true},
		{"192.168.0.1", false},
		{"100.64.0.1", false}, // RFC 6598
		{"100.128.0.1", true},
		{"169.254.1.1", false},
		{"127.0.0.1", false},
		{"0.1.2.3", false},
		{"192.0.0.8", false},
		{"192.0.0.9", true},  // PCP anycast, globally reachable
		{"192.0.0.10", true}, // TURN anycast, globally reachable
		{"192.0.0.170", false},
		{"198.18.0.1", false},
		{"198.19.255.255", false},
		{"198.20.0.0", true},
		{"224.0.0.1", false},
		{"240.0.0.1", false},
		{"255.255.255.255", false},
		{"223.255.255.255", true},
		{"192.88.99.1", true},
	} {
		if got := IsGlobal4(netip.MustParseAddr(tc.addr).As4()); got != tc.global {
			t.Errorf("IsGlobal4(%s) = %v, want %v", tc.addr, got, tc.global)
		}
	}
}
