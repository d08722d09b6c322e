// Package netsetup puts the translator's network plumbing into the kernel
// and takes it out again: link MTU and state, addresses (IPv6 without
// duplicate address detection), routes in batches, and forwarding sysctls.
//
// The daemon describes what it wants; a Tracker applies the difference to
// what it installed before and remembers it, so a reload changes only what
// changed and a shutdown removes exactly what this process added. Every
// kernel operation uses replace semantics (RTM_NEWROUTE with NLM_F_REPLACE,
// RTM_NEWADDR with NLM_F_REPLACE), so a daemon restarted after a crash takes
// over whatever its predecessor left instead of failing on it.
package netsetup

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Route is one kernel route in the main table: Dst into Dev, through Via
// when Via is valid. IPv4 routes may have an IPv6 Via (RFC 8950, RTA_VIA).
type Route struct {
	Dst netip.Prefix
	Dev string
	Via netip.Addr
	// Blackhole: the kernel drops what matches, silently (no ICMP
	// unreachable); Dev and Via are not used.
	Blackhole bool
}

func (r Route) String() string {
	if r.Blackhole {
		return "blackhole " + r.Dst.String()
	}
	s := r.Dst.String()
	if r.Via.IsValid() {
		s += " via " + r.Via.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	return s
}

// Kernel is the seam between the daemon's plan and the kernel. *Netlink
// implements it with rtnetlink and /proc/sys; tests use a fake.
type Kernel interface {
	// Link returns the current MTU and whether the link is up.
	Link(name string) (mtu int, up bool, err error)
	// SetLink sets the MTU (0 keeps it) and the administrative state.
	SetLink(name string, mtu int, up bool) error
	// ReplaceAddr adds an address, or updates it if present. IPv6
	// addresses get IFA_F_NODAD: a translator must answer at once.
	ReplaceAddr(dev string, p netip.Prefix) error
	// DelAddr removes an address; a missing one is not an error.
	DelAddr(dev string, p netip.Prefix) error
	// ReplaceRoutes adds or replaces routes, batching the requests.
	ReplaceRoutes(rs []Route) error
	// DelRoutes removes routes; missing ones are not an error.
	DelRoutes(rs []Route) error
	// Sysctl writes value to /proc/sys/<key> and returns the old value.
	Sysctl(key, value string) (old string, err error)
}

// DiffRoutes returns the routes in want but not in have (to add) and those
// in have but not in want (to delete), each sorted. Duplicates collapse.
func DiffRoutes(have, want []Route) (add, del []Route) {
	h := make(map[Route]struct{}, len(have))
	for _, r := range have {
		h[r] = struct{}{}
	}
	_, add, del = diffRoutes(h, want)
	SortRoutes(add)
	SortRoutes(del)
	return add, del
}

// diffRoutes is DiffRoutes against a set, unsorted, also returning want
// as a set: the tracker's path, which must stay fast for a million routes.
func diffRoutes(have map[Route]struct{}, want []Route) (w map[Route]struct{}, add, del []Route) {
	w = make(map[Route]struct{}, len(want))
	for _, r := range want {
		if _, dup := w[r]; dup {
			continue
		}
		w[r] = struct{}{}
		if _, ok := have[r]; !ok {
			add = append(add, r)
		}
	}
	for r := range have {
		if _, ok := w[r]; !ok {
			del = append(del, r)
		}
	}
	return w, add, del
}

// SortRoutes orders routes by destination, then device, then gateway, so
// that plans and logs are deterministic.
func SortRoutes(rs []Route) {
	slices.SortFunc(rs, func(a, b Route) int {
		if c := a.Dst.Addr().Compare(b.Dst.Addr()); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Dst.Bits(), b.Dst.Bits()); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Dev, b.Dev); c != 0 {
			return c
		}
		return a.Via.Compare(b.Via)
	})
}

// Addr is one address on one interface.
type Addr struct {
	Dev    string
	Prefix netip.Prefix
}

func (a Addr) String() string { return fmt.Sprintf("%v dev %s", a.Prefix, a.Dev) }
