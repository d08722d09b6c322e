package mapping

import (
	"net/netip"
	"strings"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// TestPrefixRFC6052Examples checks every prefix length against the table
// of RFC 6052 section 2.4, plus the well-known prefix of section 2.1.
func TestPrefixRFC6052Examples(t *testing.T) {
	v4 := [4]byte{192, 0, 2, 33}
	for _, tc := range []struct{ prefix, want string }{
		{"2001:db8::/32", "2001:db8:c000:221::"},
		{"2001:db8:100::/40", "2001:db8:1c0:2:21::"},
		{"2001:db8:122::/48", "2001:db8:122:c000:2:2100::"},
		{"2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"},
		{"2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"},
		{"2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"},
		{"64:ff9b::/96", "64:ff9b::192.0.2.33"},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			p, err := NewPrefix(netip.MustParsePrefix(tc.prefix))
			if err != nil {
				t.Fatal(err)
			}
			want := netip.MustParseAddr(tc.want).As16()
			got, delta := p.Embed(v4)
			if got != want {
				t.Fatalf("Embed(192.0.2.33) = %v, want %v", netip.AddrFrom16(got), tc.want)
			}
			if delta != Delta(v4, want) {
				t.Errorf("Embed delta %#04x, want %#04x", delta, Delta(v4, want))
			}
			if !p.Contains(want) {
				t.Errorf("Contains(%v) = false", tc.want)
			}
			back, delta2, ok := p.Extract(want)
			if !ok || back != v4 || delta2 != delta {
				t.Errorf("Extract = %v, %#04x, %v; want 192.0.2.33, %#04x, true", back, delta2, ok, delta)
			}
			// RFC 6052 section 2.2: the suffix is ignored when extracting.
			withSuffix := want
			withSuffix[15] ^= 0x5a
			if p.Prefix().Bits() < 96 {
				if back, _, ok := p.Extract(withSuffix); !ok || back != v4 {
					t.Errorf("Extract with a non-zero suffix = %v, %v", back, ok)
				}
			}
			outside := want
			outside[0] ^= 0x80
			if _, _, ok := p.Extract(outside); ok || p.Contains(outside) {
				t.Errorf("Extract/Contains accepted %v outside the prefix", netip.AddrFrom16(outside))
			}
			if p.IsWellKnown() != (tc.prefix == "64:ff9b::/96") {
				t.Errorf("IsWellKnown = %v", p.IsWellKnown())
			}
		})
	}
}

func TestNewPrefixRejects(t *testing.T) {
	for _, tc := range []struct{ prefix, want string }{
		{"2001:db8::/33", "only /32, /40"},
		{"2001:db8::/128", "only /32, /40"},
		{"2001:db8::1/96", "host bits set"},
		{"2001:db8:0:0:ff00::/96", "bits 64-71"},
		{"192.0.2.0/24", "not an IPv6 prefix"},
		{"::ffff:0:0/96", "not an IPv6 prefix"},
	} {
		_, err := NewPrefix(netip.MustParsePrefix(tc.prefix))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewPrefix(%s) error %v, want one containing %q", tc.prefix, err, tc.want)
		}
	}
	if _, err := NewPrefix(netip.Prefix{}); err == nil {
		t.Error("NewPrefix(zero) succeeded")
	}
	var zero Prefix
	if zero.Valid() || zero.Contains([16]byte{}) {
		t.Error("the zero Prefix is valid or contains ::")
	}
	if _, _, ok := zero.Extract([16]byte{}); ok {
		t.Error("the zero Prefix extracted an address")
	}
}

// TestDeltaMovesChecksums checks the RFC 1624 property the engine relies
// on: a ones' complement sum over data containing the IPv4 address, plus
// delta, equals the sum over the same data with the IPv6 address.
func TestDeltaMovesChecksums(t *testing.T) {
	rnd := newRand(1)
	payload := []byte("any transport header and payload!")
	for range 10000 {
		var v4 [4]byte
		var v6 [16]byte
		rnd.fill(v4[:])
		rnd.fill(v6[:])
		if rnd.intn(4) == 0 {
			v4 = [4]byte{} // zero sums are the corner case of ones' complement
		}
		s4 := checksum.Checksum(payload, checksum.Checksum(v4[:], 0))
		s6 := checksum.Checksum(payload, checksum.Checksum(v6[:], 0))
		got := checksum.Combine(s4, Delta(v4, v6))
		if !onesEqual(got, s6) {
			t.Fatalf("v4 %v v6 %v: sum4 %#04x + delta %#04x = %#04x, want %#04x",
				v4, v6, s4, Delta(v4, v6), got, s6)
		}
	}
}

// onesEqual compares ones' complement numbers, where 0 and 0xffff are both
// zero.
func onesEqual(a, b uint16) bool {
	if a == 0xffff {
		a = 0
	}
	if b == 0xffff {
		b = 0
	}
	return a == b
}

// TestPrefixDeltaAllLengths: Embed and Extract return Delta(v4, v6) for
// random addresses at every length (the /32 and /96 ones use a
// precomputed value), also with a suffix and for prefixes whose own sum
// is special.
func TestPrefixDeltaAllLengths(t *testing.T) {
	rnd := newRand(5)
	for _, s := range []string{"2001:db8::/32", "2001:db8:100::/40", "2001:db8:122::/48", "2001:db8:122:300::/56",
		"2001:db8:122:344::/64", "2001:db8:122:344::/96", "64:ff9b::/96", "::/96", "ffff:ffff::/32", "0:1::/32", "ffff:0:0:ffff::/96"} {
		p := mustPrefix(t, s)
		for range 5000 {
			var a [4]byte
			rnd.fill(a[:])
			if rnd.intn(8) == 0 {
				a = [4]byte{}
			}
			v6, d := p.Embed(a)
			if d != Delta(a, v6) {
				t.Fatalf("%s: Embed(%v) delta %#04x, want %#04x", s, a, d, Delta(a, v6))
			}
			if rnd.intn(2) == 0 && p.Prefix().Bits() < 96 {
				// Set the u octet or a suffix byte (after the IPv4 octets).
				free := []int{8}
				for i := int(p.pos[3]) + 1; i < 16; i++ {
					free = append(free, i)
				}
				v6[free[rnd.intn(len(free))]] |= byte(1 + rnd.intn(255))
			}
			back, d, ok := p.Extract(v6)
			if !ok || back != a || d != Delta(a, v6) {
				t.Fatalf("%s: Extract(%v) = %v, %#04x, %v; want %v, %#04x", s, netip.AddrFrom16(v6), back, d, ok, a, Delta(a, v6))
			}
		}
	}
}
