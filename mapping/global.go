package mapping

// nonGlobal4 lists the IPv4 address space that RFC 6052 section 3.1 calls
// non-global: the blocks of the IANA IPv4 Special-Purpose Address Registry
// (RFC 6890 section 2.2.2, which obsoletes the RFC 5735 section 3 list that
// RFC 6052 cites) whose "Globally Reachable" attribute is False, plus
// multicast, which RFC 5735 section 3 lists and which is never a unicast
// destination for a translator. 192.0.0.9 (PCP anycast, RFC 7723) and
// 192.0.0.10 (TURN anycast, RFC 8155) are globally reachable exceptions
// inside 192.0.0.0/24. The deprecated 6to4 relay anycast block
// 192.88.99.0/24 (RFC 7526) was globally routed and is not listed.
//
// The ranges are inclusive, sorted and disjoint; IsGlobal4 is the same set
// written as a switch for the packet path, and a test checks they agree.
var nonGlobal4 = [...]struct{ lo, hi uint32 }{
	{ip4(0, 0, 0, 0), ip4(0, 255, 255, 255)},       // 0.0.0.0/8 "this network" (RFC 791)
	{ip4(10, 0, 0, 0), ip4(10, 255, 255, 255)},     // 10.0.0.0/8 private (RFC 1918)
	{ip4(100, 64, 0, 0), ip4(100, 127, 255, 255)},  // 100.64.0.0/10 shared CGN space (RFC 6598)
	{ip4(127, 0, 0, 0), ip4(127, 255, 255, 255)},   // 127.0.0.0/8 loopback (RFC 1122)
	{ip4(169, 254, 0, 0), ip4(169, 254, 255, 255)}, // 169.254.0.0/16 link local (RFC 3927)
	{ip4(172, 16, 0, 0), ip4(172, 31, 255, 255)},   // 172.16.0.0/12 private (RFC 1918)
	{ip4(192, 0, 0, 0), ip4(192, 0, 0, 8)},         // 192.0.0.0/24 IETF protocol assignments (RFC 6890) ...
	{ip4(192, 0, 0, 11), ip4(192, 0, 0, 255)},      // ... except 192.0.0.9 and 192.0.0.10
	{ip4(192, 0, 2, 0), ip4(192, 0, 2, 255)},       // 192.0.2.0/24 TEST-NET-1 (RFC 5737)
	{ip4(192, 168, 0, 0), ip4(192, 168, 255, 255)}, // 192.168.0.0/16 private (RFC 1918)
	{ip4(198, 18, 0, 0), ip4(198, 19, 255, 255)},   // 198.18.0.0/15 benchmarking (RFC 2544)
	{ip4(198, 51, 100, 0), ip4(198, 51, 100, 255)}, // 198.51.100.0/24 TEST-NET-2 (RFC 5737)
	{ip4(203, 0, 113, 0), ip4(203, 0, 113, 255)},   // 203.0.113.0/24 TEST-NET-3 (RFC 5737)
	{ip4(224, 0, 0, 0), ip4(255, 255, 255, 255)},   // 224.0.0.0/4 multicast, 240.0.0.0/4 reserved, 255.255.255.255
}

func ip4(a, b, c, d byte) uint32 {
	return uint32(a)<<24 | uint32(b)<<16 | uint32(c)<<8 | uint32(d)
}

// IsGlobal4 reports whether a is a global IPv4 address in the sense of
// RFC 6052 section 3.1: one the well-known prefix 64:ff9b::/96 may
// represent. See nonGlobal4 for the exact list.
func IsGlobal4(a [4]byte) bool {
	switch a[0] {
	case 0, 10, 127:
		return false
	case 100:
		return a[1]&0xc0 != 64
	case 169:
		return a[1] != 254
	case 172:
		return a[1]&0xf0 != 16
	case 192:
		switch {
		case a[1] == 0 && a[2] == 0:
			return a[3] == 9 || a[3] == 10
		case a[1] == 0 && a[2] == 2, a[1] == 168:
			return false
		}
		return true
	case 198:
		return a[1]&0xfe != 18 && !(a[1] == 51 && a[2] == 100)
	case 203:
		return !(a[1] == 0 && a[2] == 113)
	}
	return a[0] < 224
}

// overlapsNonGlobal4 reports whether any address in [lo, hi] is non-global.
func overlapsNonGlobal4(lo, hi uint32) bool {
	for _, r := range nonGlobal4 {
		if lo <= r.hi && r.lo <= hi {
			return true
		}
	}
	return false
}

// hostMask4 is the mask of the host (suffix) bits of an IPv4 /bits.
func hostMask4(bits int) uint32 {
	if bits >= 32 {
		return 0
	}
	return ^uint32(0) >> bits
}
