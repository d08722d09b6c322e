package mapping

import (
	"errors"
	"fmt"
	"net/netip"
)

// Reasons an EAM entry is refused. An *EntryError wraps exactly one of them,
// so callers can test with errors.Is.
var (
	// ErrFamily: the IPv4 side is not an IPv4 prefix or the IPv6 side is
	// not an IPv6 prefix (IPv4-mapped IPv6 counts as IPv4).
	ErrFamily = errors.New("wrong address family")
	// ErrSuffixLength: the IPv6 suffix (128-len(IPv6)) is shorter than the
	// IPv4 one (32-len(IPv4)), so some IPv4 addresses would have no IPv6
	// counterpart, or the IPv6 prefix is shorter than /64. RFC 7757 section
	// 3.2 permits a longer IPv6 suffix: the IPv4 suffix goes into its most
	// significant bits. The /64 limit keeps every entry inside one /64,
	// which the lookup's miss filter relies on.
	ErrSuffixLength = errors.New("suffix lengths differ")
	// ErrHostBits: a prefix has bits set after its length.
	ErrHostBits = errors.New("host bits set")
	// ErrSpecial: a side lies inside space a translator never forwards
	// (unspecified, loopback, link-local, multicast, limited broadcast).
	ErrSpecial = errors.New("not a forwardable unicast address")
	// ErrDuplicate: two entries have the same prefix on one side.
	ErrDuplicate = errors.New("duplicate")
	// ErrOverlap: one entry's prefix lies inside another's on one side.
	ErrOverlap = errors.New("overlapping")
	// ErrInsidePrefix: the IPv6 side lies inside the RFC 6052 translation
	// prefix, so an address would have two translations.
	ErrInsidePrefix = errors.New("inside the translation prefix")
	// ErrWellKnownNonGlobal: the configuration would make the well-known
	// prefix 64:ff9b::/96 represent non-global IPv4 (RFC 6052 section 3.1).
	ErrWellKnownNonGlobal = errors.New("well-known prefix with non-global IPv4")
)

// EntryError says which EAM entry was refused and why. Index is the
// entry's position in the slice given to NewTable (and so in Table.All),
// which a configuration layer maps back to a file, line and column.
// Other is the index of the entry it conflicts with, or -1.
type EntryError struct {
	Index      int
	Entry      Entry
	Other      int
	OtherEntry Entry
	Err        error // wraps one of the Err* reasons above
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("EAM entry %s (index %d): %v", formatEntry(e.Entry), e.Index, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

func formatEntry(e Entry) string {
	return e.IPv4.String() + " = " + e.IPv6.String()
}

// errorf wraps reason with detail.
func errorf(reason error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{reason}, args...)...)
}

// wellKnownBase is 64:ff9b::/96 as a 12-byte array (the high 96 bits).
var wellKnownBase = [12]byte{0x00, 0x64, 0xff, 0x9b}

// checkEntry applies the rules that concern one entry alone:
//
//   - the IPv4 side is an IPv4 prefix, the IPv6 side an IPv6 prefix;
//   - no host bits on either side;
//   - an IPv6 suffix at least as long as the IPv4 one, and an IPv6 prefix
//     of /64 or longer (see ErrSuffixLength);
//   - neither side inside "this network" 0.0.0.0/8, unspecified, loopback,
//     link-local, multicast or limited-broadcast space, which a translator
//     never forwards;
//   - the IPv6 side is not an address built from the well-known prefix
//     64:ff9b::/96 and a non-global IPv4 address: RFC 6052 section 3.1 says
//     translators MUST drop packets with such addresses, so a mapping to one
//     could never carry traffic. An IPv6 side shorter than /96 that contains
//     64:ff9b::/96 is refused too: it holds every such address.
func checkEntry(e Entry) error {
	err, _ := checkEntrySide(e)
	return err
}

// Sides of an entry, for pointing at the field that is wrong.
const (
	sideIPv4 = iota
	sideIPv6
)

// checkEntrySide is checkEntry that also says which side is at fault.
func checkEntrySide(e Entry) (err error, side int) {
	v4, v6 := e.IPv4, e.IPv6
	switch {
	case !v4.IsValid() || !v4.Addr().Is4():
		return fmt.Errorf("%w: the IPv4 side %v is not an IPv4 prefix", ErrFamily, v4), sideIPv4
	case !v6.IsValid() || !v6.Addr().Is6() || v6.Addr().Is4In6():
		return fmt.Errorf("%w: the IPv6 side %v is not an IPv6 prefix", ErrFamily, v6), sideIPv6
	case v6.Addr().Zone() != "":
		return fmt.Errorf("%w: the IPv6 side %v has a zone", ErrFamily, v6), sideIPv6
	case v4.Masked() != v4:
		return fmt.Errorf("%w: %v (did you mean %v?)", ErrHostBits, v4, v4.Masked()), sideIPv4
	case v6.Masked() != v6:
		return fmt.Errorf("%w: %v (did you mean %v?)", ErrHostBits, v6, v6.Masked()), sideIPv6
	case 128-v6.Bits() < 32-v4.Bits():
		return fmt.Errorf("%w: %v has %d suffix bits, %v has %d; the IPv6 side needs at least as many (RFC 7757 section 3.2)",
			ErrSuffixLength, v4, 32-v4.Bits(), v6, 128-v6.Bits()), sideIPv6
	case v6.Bits() < 64:
		return fmt.Errorf("%w: %v is shorter than /64; an IPv6 side must be /64 or longer", ErrSuffixLength, v6), sideIPv6
	}
	if a := v4.Addr(); a.As4()[0] == 0 || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() ||
		a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return fmt.Errorf("%w: %v", ErrSpecial, v4), sideIPv4
	}
	if a := v6.Addr(); a.IsUnspecified() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() {
		return fmt.Errorf("%w: %v", ErrSpecial, v6), sideIPv6
	}
	if v6.Bits() < 96 && v6.Overlaps(WellKnown) {
		return fmt.Errorf("%w: %v contains the well-known prefix 64:ff9b::/96, whose non-global IPv4 addresses translators must drop (RFC 6052 section 3.1)",
			ErrWellKnownNonGlobal, v6), sideIPv6
	}
	if raw := v6.Addr().As16(); v6.Bits() >= 96 && [12]byte(raw[:12]) == wellKnownBase {
		lo := ip4(raw[12], raw[13], raw[14], raw[15])
		if overlapsNonGlobal4(lo, lo|hostMask4(v6.Bits()-96)) {
			return fmt.Errorf("%w: %v is the well-known prefix 64:ff9b::/96 with non-global IPv4 addresses, which translators must drop (RFC 6052 section 3.1)",
				ErrWellKnownNonGlobal, v6), sideIPv6
		}
	}
	return nil, 0
}
