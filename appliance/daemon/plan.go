package daemon

import (
	"net/netip"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/netsetup"
	"github.com/map646/map646/mapping"
)

// PolicyTable is the routing table that holds the routes into the tun
// (the mapped IPv4 prefixes and the RFC 6052 /96), and RulePriority the
// priority of the first of the policy rules around it. See policyRules.
const (
	PolicyTable  = 646
	RulePriority = 6460
	// SideRulePriority is the priority of the rules that refuse a packet
	// of one family from an interface of the other side (policyRules).
	SideRulePriority = RulePriority - 1
)

// plan is the kernel state one configuration asks for.
type plan struct {
	routes []netsetup.Route
	// prefixN: the first prefixN routes carry the announced prefixes
	// (into the tun, or NIC mode's blackhole); route blocks follow.
	prefixN int
	rules   []netsetup.Rule
	addrs   []netsetup.Addr
	links   []config.Interface
	ann     Announcement // without Healthy
}

// makePlan derives the routes, addresses and announcement of cfg with the
// tun named tunName: the mapped IPv4 prefixes aggregated (RFC 7757 entries
// that are adjacent merge, so a million mappings in a few /16s are a few
// routes) and the RFC 6052 prefix into the tun, in PolicyTable with the
// policy rules, when tun.routes is on; then the appliance's own route and
// interface blocks (main table). The fd and nic modes route nothing into a
// tun: whoever handed the fd over routes into it, and in NIC mode the
// translator reads the NICs itself.
func makePlan(cfg *config.Config, tunName string) plan {
	var p plan
	var v4 []netip.Prefix
	if snap := cfg.Snapshot(); snap != nil {
		v4 = mapping.Aggregate4(snap.Table())
	} else if t, err := mapping.NewTable(cfg.Translator.Mappings); err == nil {
		v4 = mapping.Aggregate4(t)
	}
	var v6 []netip.Prefix
	if cfg.Translator.Prefix.IsValid() {
		v6 = []netip.Prefix{cfg.Translator.Prefix.Masked()}
	}
	p.ann = Announcement{IPv4: v4, IPv6: v6}
	switch {
	case cfg.Translator.Link == config.LinkTun && cfg.Translator.Tun.Routes:
		for _, pfx := range v4 {
			p.routes = append(p.routes, netsetup.Route{Dst: pfx, Dev: tunName, Table: PolicyTable})
		}
		for _, pfx := range v6 {
			p.routes = append(p.routes, netsetup.Route{Dst: pfx, Dev: tunName, Table: PolicyTable})
		}
		v4, v6 := cfg.Sides()
		p.rules = policyRules(tunName, v4, v6)
	case cfg.Translator.Link == config.LinkNIC:
		// The kernel sees a copy of every packet the translator reads.
		// With forwarding off it drops IPv4 transit silently, but an
		// IPv6 packet to the prefix that no route matches would get an
		// ICMPv6 "no route" back from it; a blackhole drops it quietly.
		for _, pfx := range v6 {
			p.routes = append(p.routes, netsetup.Route{Dst: pfx, Blackhole: true})
		}
	}
	p.prefixN = len(p.routes)
	for _, r := range cfg.Routes {
		p.routes = append(p.routes, netsetup.Route{Dst: r.To, Via: r.Via, Dev: r.Dev})
	}
	for _, ifc := range cfg.Interfaces {
		p.links = append(p.links, ifc)
		for _, a := range ifc.Addresses {
			p.addrs = append(p.addrs, netsetup.Addr{Dev: ifc.Name, Prefix: a})
		}
	}
	return p
}

// prefixRoutes are the routes of p that carry the announced prefixes.
func (p plan) prefixRoutes() []netsetup.Route { return p.routes[:p.prefixN:p.prefixN] }

// policyRules keep the appliance from forwarding anything untranslated
// while forwarding is on (it must be, for the kernel to route into the
// tun): without them a packet from one interface to an unmapped address
// behind another would be routed natively, past the EAM table (RFC 7757)
// and deny_ipv4. For each family, in priority order:
//
//	6459  iif <other side> unreachable  IPv6 from each IPv4-side interface, IPv4 from each IPv6-side one (v4, v6)
//	6460  lookup 646              mapped prefixes and the /96 go into the tun, from anywhere else
//	6461  iif lo lookup main      the appliance's own packets (BGP, RA, ICMP errors) route normally
//	6462  iif <tun> lookup main   translated packets leave through the main table
//	6463  unreachable             everything else is refused with an ICMP unreachable
//
// (An unreachable default route in the policy table would not do: a
// lookup that ends on it is an error, which stops the rule walk before
// any later rule; fib_rules_lookup.)
//
// The 6459 rules keep the tun from taking a packet from the wrong side
// (config.Config.Sides): RFC 7915 translates IPv6 that comes from the
// IPv6 side. Without them a neighbour on the IPv4 link could route the
// /96 to the appliance's link-local address there and send IPv6 from a
// mapped server's address, which the translator would send on as IPv4
// from that server's public address to any IPv4 host; a host on the IPv6
// link could likewise send IPv4 from any source and have it reach the
// servers as prefix::<that source>, an IPv4 client it is not.
//
// The local table (priority 0) still comes first, so packets to the
// appliance's own addresses (link-local, neighbour discovery, BGP) are
// delivered whatever interface they come from. No netfilter is needed,
// which the image's kernel may lack.
func policyRules(tunName string, v4, v6 []string) []netsetup.Rule {
	var rs []netsetup.Rule
	for _, fam := range []int{4, 6} {
		other := v6 // IPv4 from the IPv6 side
		if fam == 6 {
			other = v4
		}
		for _, ifc := range other {
			rs = append(rs, netsetup.Rule{Family: fam, Priority: SideRulePriority, Iif: ifc, Unreachable: true})
		}
		rs = append(rs,
			netsetup.Rule{Family: fam, Priority: RulePriority, Table: PolicyTable},
			netsetup.Rule{Family: fam, Priority: RulePriority + 1, Iif: "lo", Table: mainTable},
			netsetup.Rule{Family: fam, Priority: RulePriority + 2, Iif: tunName, Table: mainTable},
			netsetup.Rule{Family: fam, Priority: RulePriority + 3, Unreachable: true})
	}
	return rs
}

// mainTable is RT_TABLE_MAIN.
const mainTable = 254

// unguardedSides lists what the policy rules of cfg cannot refuse because
// no interface of that side is known (config.Config.Sides): "IPv6 from
// the IPv4 side" when no interface is IPv4-side, "IPv4 from the IPv6
// side" when none is IPv6-side. Nothing without rules (fd and NIC mode,
// tun.routes = false).
func unguardedSides(cfg *config.Config) []string {
	if cfg.Translator.Link != config.LinkTun || !cfg.Translator.Tun.Routes {
		return nil
	}
	v4, v6 := cfg.Sides()
	var s []string
	if len(v4) == 0 {
		s = append(s, "IPv6 to the prefix from every interface")
	}
	if len(v6) == 0 {
		s = append(s, "IPv4 to the mapped addresses from every interface")
	}
	return s
}
