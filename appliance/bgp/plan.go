package bgp

import (
	"fmt"
	"net/netip"
	"slices"
)

// Family is a BGP address family (AFI/SAFI) this speaker can carry.
type Family int

const (
	// IPv4Unicast is AFI 1 / SAFI 1: the mapped IPv4 prefixes.
	IPv4Unicast Family = iota + 1
	// IPv6Unicast is AFI 2 / SAFI 1: the RFC 6052 translation prefix.
	IPv6Unicast
)

// Families returns the address families negotiated with a neighbor. A
// translator sits between an IPv4 network and an IPv6 network, so the mapped
// IPv4 prefixes go to neighbors reached over IPv4 and the translation prefix
// to neighbors reached over IPv6. With ipv4NextHopIPv6, IPv6 neighbors also
// receive the IPv4 prefixes with the session's IPv6 address as next hop
// (RFC 8950, extended next hop), for backbones that run IPv6 only.
func Families(neighbor netip.Addr, ipv4NextHopIPv6 bool) []Family {
	if neighbor.Unmap().Is4() {
		return []Family{IPv4Unicast}
	}
	if ipv4NextHopIPv6 {
		return []Family{IPv4Unicast, IPv6Unicast}
	}
	return []Family{IPv6Unicast}
}

// Desired returns the prefixes to announce for an announcement: all of them,
// masked, sorted and without duplicates, or none while the translator is
// unhealthy (a translator that cannot translate must draw no traffic).
// Prefixes of the wrong family in either list are an error, so that a
// mistake upstream is reported rather than announced.
func Desired(ipv4, ipv6 []netip.Prefix, healthy bool) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ipv4)+len(ipv6))
	for _, p := range ipv4 {
		if !p.IsValid() || !p.Addr().Is4() {
			return nil, fmt.Errorf("bgp: %v is not an IPv4 prefix", p)
		}
		out = append(out, p.Masked())
	}
	for _, p := range ipv6 {
		if !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() {
			return nil, fmt.Errorf("bgp: %v is not an IPv6 prefix", p)
		}
		out = append(out, p.Masked())
	}
	if !healthy {
		return nil, nil
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out), nil
}

// Diff returns what to announce and what to withdraw to go from the sorted
// set cur to the sorted set want, so that a reload touches only the routes
// that changed and the others never flap.
func Diff(cur, want []netip.Prefix) (add, del []netip.Prefix) {
	i, j := 0, 0
	for i < len(cur) || j < len(want) {
		switch {
		case i == len(cur):
			add = append(add, want[j])
			j++
		case j == len(want):
			del = append(del, cur[i])
			i++
		default:
			switch c := comparePrefix(cur[i], want[j]); {
			case c == 0:
				i++
				j++
			case c < 0:
				del = append(del, cur[i])
				i++
			default:
				add = append(add, want[j])
				j++
			}
		}
	}
	return add, del
}

// comparePrefix orders IPv4 before IPv6, then by address, then by length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
