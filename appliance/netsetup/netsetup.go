// Package netsetup puts the translator's network plumbing into the kernel
// and takes it out again: link MTU and state, addresses (IPv6 without
// duplicate address detection), routes in batches, and forwarding sysctls.
//
// The daemon describes what it wants; a Tracker applies the difference to
// what it installed before and remembers it, so a reload changes only what
// changed and a shutdown removes exactly what this process added. A route
// in the main table is added with NLM_F_EXCL: one that is there already
// belongs to someone else, is reported and left alone, and is never
// deleted. Routes in the translator's own table (PolicyTable) and
// addresses use replace semantics, so a daemon restarted after a crash
// takes over what its predecessor left there instead of failing on it.
package netsetup

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Route is one kernel route: Dst into Dev, through Via when Via is valid,
// in the main table unless Table is set. IPv4 routes may have an IPv6 Via
// (RFC 8950, RTA_VIA).
type Route struct {
	Dst   netip.Prefix
	Dev   string
	Via   netip.Addr
	Table int // 0: the main table
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
	if r.Table != 0 {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	return s
}

// Rule is one policy routing rule (ip rule): packets of family 4 or 6 that
// arrived on Iif (any interface when empty; "lo" means the host's own
// packets) look up Table at priority Priority; or, if Unreachable, are
// refused (FR_ACT_UNREACHABLE: the sender gets an ICMP unreachable).
type Rule struct {
	Family      int // 4 or 6
	Priority    int
	Iif         string
	Table       int
	Unreachable bool
}

// RuleProtocol is the protocol (FRA_PROTOCOL; `ip rule` shows "proto
// 64") of the policy rules AddRule adds, all the daemon holds: unassigned in
// include/uapi/linux/rtnetlink.h and iproute2's rt_protos. The kernel
// matches a delete request on every field the request sets and on no
// other (rule_find): without a protocol, deleting "6460: lookup 646"
// removes the first rule at 6460 that looks up 646, someone else's
// "6460: from 192.0.2.0/24 lookup 646" if it comes first. With it, only
// ours.
const RuleProtocol = 64

// RouteProtocol is the protocol (rtm_protocol; `ip route` shows "proto
// 64") of the routes the daemon installs, the number its policy rules
// carry (RuleProtocol), which include/uapi/linux/rtnetlink.h assigns to
// no one. It tells a route of ours from a look-alike at the same place,
// device and gateway: `ip route prepend ...` (proto boot, ip route's
// default), and also RTPROT_STATIC, which systemd-networkd and
// operators (`proto static`) use and which the daemon used until
// session 11: a networkd route at the place of ours could be taken for
// ours.
const RouteProtocol = RuleProtocol

// canonical is r as the kernel reports it: an unreachable rule looks up
// no table (the kernel stores what the request said, and AddRule says 0).
func (r Rule) canonical() Rule {
	if r.Unreachable {
		r.Table = 0
	}
	return r
}

func (r Rule) String() string {
	s := fmt.Sprintf("ipv%d %d:", r.Family, r.Priority)
	if r.Iif != "" {
		s += " iif " + r.Iif
	}
	if r.Unreachable {
		return s + " unreachable"
	}
	return s + fmt.Sprintf(" lookup %d", r.Table)
}

// AheadRoute is a route of someone else's ahead of ours (Change.Ahead),
// described as far as an RTM_DELROUTE needs to delete it and not ours
// (Kernel.DelRoutesAhead): the kernel deletes the first route at the
// destination whose type, protocol, metric and next hop match those the
// request names.
type AheadRoute struct {
	Route    // Dst, Table; Dev and Via as reported (none for a blackhole)
	Metric   uint32
	Protocol uint8 // RTPROT_*
	Type     uint8 // RTN_*
}

func (a AheadRoute) String() string {
	return fmt.Sprintf("%v type %d proto %d metric %d", a.Route, a.Type, a.Protocol, a.Metric)
}

// ipv6Metric is the metric the kernel gives an IPv6 route added without
// one (IP6_RT_PRIO_USER), as ours are; IPv4 ones get 0, the best.
const ipv6Metric = 1024

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
	// HostAddrs returns the IPv4 addresses of every interface, with
	// their prefix lengths: the host's own addresses.
	HostAddrs() ([]netip.Prefix, error)
	// AddRoutes adds routes that must not exist yet (NLM_F_EXCL),
	// batching the requests; those the kernel already has a route for
	// (same table, destination and metric: EEXIST) are left as they are
	// and returned, and are not errors.
	AddRoutes(rs []Route) (existed []Route, err error)
	// ReplaceRoutes adds or replaces routes, batching the requests.
	ReplaceRoutes(rs []Route) error
	// DelRoutes removes routes; missing ones are not an error.
	DelRoutes(rs []Route) error
	// DelRoutesAhead removes routes of someone else's that the kernel
	// prefers to ours (Change.Ahead), each named by its type, protocol,
	// metric and next hop so that ours, behind it, stays; missing ones
	// are not an error.
	DelRoutesAhead(as []AheadRoute) error
	// ScanRoutes hands each route of table (0: main), of both families,
	// to each, in the order the kernel keeps them (by destination, then
	// TOS and metric, then the order they came in): one dump.
	ScanRoutes(table int, each func(AheadRoute)) error
	// AddRule adds a policy routing rule of protocol RuleProtocol; one
	// of that protocol that is there already is not an error. An
	// identical rule of another protocol is replaced by ours (taken
	// over), so that every rule the daemon holds carries its protocol.
	AddRule(r Rule) error
	// DelRule removes the rule of protocol RuleProtocol; a missing one
	// is not an error. An identical rule of another protocol is never
	// removed.
	DelRule(r Rule) error
	// OwnRules returns the policy rules of both families of protocol
	// RuleProtocol that a Rule describes exactly. Neither an identical
	// rule of another protocol (`ip rule add pref 6460 lookup 646 proto
	// static`) nor a rule with any other selector (from, to, fwmark,
	// not...), an output interface or another action (blackhole,
	// goto...) is listed: none is ours, and one that looks like ours
	// must not hide that ours is missing.
	OwnRules() ([]Rule, error)
	// Sysctl writes value to /proc/sys/<key> and returns the old value.
	Sysctl(key, value string) (old string, err error)
	// Features returns whether each named netdev feature (as `ethtool
	// -k` names it) is on; names the kernel does not know are missing.
	Features(dev string, names []string) (map[string]bool, error)
	// SetFeatures switches netdev features on or off.
	SetFeatures(dev string, want map[string]bool) error
}

// diffRoutes returns the routes in want but not in have (to add) and those
// in have but not in want (to delete), unsorted, and want as a set;
// duplicates collapse. It must stay fast for a million routes.
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
		if c := cmp.Compare(a.Table, b.Table); c != 0 {
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
