package daemon

import (
	"net/netip"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/netsetup"
	"github.com/map646/map646/mapping"
)

// plan is the kernel state one configuration asks for.
type plan struct {
	routes []netsetup.Route
	addrs  []netsetup.Addr
	links  []config.Interface
	ann    Announcement // without Healthy
}

// makePlan derives the routes, addresses and announcement of cfg with the
// tun named tunName: the mapped IPv4 prefixes aggregated (RFC 7757 entries
// that are adjacent merge, so a million mappings in a few /16s are a few
// routes) and the RFC 6052 prefix into the tun when tun.routes is on, then
// the appliance's own route and interface blocks. The fd and nic modes
// route nothing into a tun: whoever handed the fd over routes into it, and
// in NIC mode the translator reads the NICs itself.
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
			p.routes = append(p.routes, netsetup.Route{Dst: pfx, Dev: tunName})
		}
		for _, pfx := range v6 {
			p.routes = append(p.routes, netsetup.Route{Dst: pfx, Dev: tunName})
		}
	case cfg.Translator.Link == config.LinkNIC:
		// The kernel sees a copy of every packet the translator reads.
		// With forwarding off it drops IPv4 transit silently, but an
		// IPv6 packet to the prefix that no route matches would get an
		// ICMPv6 "no route" back from it; a blackhole drops it quietly.
		for _, pfx := range v6 {
			p.routes = append(p.routes, netsetup.Route{Dst: pfx, Blackhole: true})
		}
	}
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
