package daemon

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/stack/xlat"
)

// hostAddrState is what host mode knows of the host's own IPv4 addresses
// (every interface's, not only those of the file's interface blocks: a
// DHCP or cloud address, docker0, a CGN or private address behind the
// host). They join the engine's own addresses, so that a server cannot
// reach them through the prefix (prefix::a.b.c.d would be delivered to the
// host's own services, whose replies come back through the policy table:
// a path around the IPv4 side's filters); such packets are dropped as
// own_address, and those to the directed broadcast addresses of their
// subnets as broadcast (RFC 1812 section 5.3.5.2). Only the run loop
// touches it.
type hostAddrState struct {
	// file is the engine configuration of the file in use, without the
	// host's addresses.
	file *xlat.Config
	// addrs are the host's addresses in the engine now, sorted.
	addrs []netip.Prefix
	// stale: an address event (or lost events) since addrs were read,
	// or reading them failed; refreshHostAddrs reads them again.
	stale bool
	// failing: the last refresh failed (logged once).
	failing bool
	// mapped are the host's addresses the engine in use maps, as last
	// warned about (noteMapped).
	mapped []netip.Prefix
}

// tracksHostAddrs: only host mode routes through this namespace's kernel,
// whose local table delivers packets to the host's addresses. NIC mode
// leaves packets to them to the kernel (and routes none of its output to
// a local address); in fd mode whoever handed the link over routes.
func (d *daemon) tracksHostAddrs() bool {
	return d.running.Translator.Link == config.LinkTun
}

// hostAddrsFor splits the host's addresses host (sorted) as c would take
// them: refused are those that join c's own addresses, mapped those c
// maps (an EAM entry, RFC 7757): such an address (a /32 on a dummy
// interface, there for announcing it) belongs to its server, whose
// traffic would otherwise be dropped as own_address both ways; packets
// to it are translated, not delivered to the host. One among c's own
// addresses already (an interface block's) is in neither: it changes
// nothing.
func hostAddrsFor(c *xlat.Config, host []netip.Prefix) (refused, mapped []netip.Prefix) {
	for _, a := range host {
		switch {
		case slices.Contains(c.Policy.OwnAddrs, a):
		case c.Map != nil && mapsAddr(c, a):
			mapped = append(mapped, a)
		default:
			refused = append(refused, a)
		}
	}
	return refused, mapped
}

// mapsAddr reports whether c's table maps a's address.
func mapsAddr(c *xlat.Config, a netip.Prefix) bool {
	_, _, ok := c.Map.Table().Lookup4(a.Addr().As4())
	return ok
}

// withHostAddrs is c with the host's addresses added to its own ones,
// except those c maps (hostAddrsFor). A change in which of them c maps
// is warned about.
func (d *daemon) withHostAddrs(c *xlat.Config) *xlat.Config {
	refused, mapped := hostAddrsFor(c, d.host.addrs)
	d.noteMapped(mapped)
	if len(refused) == 0 {
		return c
	}
	x := *c
	x.Policy.OwnAddrs = append(slices.Clip(c.Policy.OwnAddrs), refused...)
	return &x
}

// noteMapped warns when the host's addresses that are mapped ones change
// to a set that is not empty: once, not at every reload of the engine.
func (d *daemon) noteMapped(mapped []netip.Prefix) {
	if slices.Equal(mapped, d.host.mapped) {
		return
	}
	d.host.mapped = mapped
	if len(mapped) > 0 {
		d.log.Warn("host addresses that are mapped IPv4 addresses are their servers', not the host's: the translator takes their traffic", "addresses", mapped)
	}
}

// refreshHostAddrs reads the host's addresses again when they may have
// changed, and reloads the engine if the ones it refuses did. A failure
// is retried at the next health poll; the engine keeps the addresses it
// had. Only a change to the refused set is logged at info level: a
// namespace where containers come and go (veth pairs, their addresses)
// sends address events all day, most of which change nothing the
// translator does.
func (d *daemon) refreshHostAddrs() error {
	if !d.host.stale || !d.tracksHostAddrs() {
		return nil
	}
	as, err := d.kernel.HostAddrs()
	if err != nil {
		return fmt.Errorf("the host's addresses: %w", err)
	}
	as = ownHostAddrs(as)
	if slices.Equal(as, d.host.addrs) {
		d.host.stale = false
		return nil
	}
	was, _ := hostAddrsFor(d.host.file, d.host.addrs)
	now, mapped := hostAddrsFor(d.host.file, as)
	if slices.Equal(was, now) {
		d.host.stale = false
		d.host.addrs = as
		d.noteMapped(mapped)
		d.log.Debug("the host's addresses changed, not those the translator refuses", "addresses", len(as))
		return nil
	}
	old := d.host.addrs
	d.host.addrs = as
	if err := d.eng.Reload(d.withHostAddrs(d.host.file)); err != nil {
		// Still stale: the next poll reads them and tries again.
		d.host.addrs = old
		return fmt.Errorf("engine with the host's addresses: %w", err)
	}
	d.host.stale = false
	d.log.Info("the host's addresses the translator refuses changed: not reachable through the prefix",
		"added", setMinus(now, was), "removed", setMinus(was, now), "refused", len(now))
	return nil
}

// setMinus is the prefixes of a (sorted) not in b (sorted).
func setMinus(a, b []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range a {
		if _, found := slices.BinarySearchFunc(b, p, comparePrefixes); !found {
			out = append(out, p)
		}
	}
	return out
}

// keepHostAddrs is refreshHostAddrs in the run loop: a failure is logged
// once until it succeeds again, and retried at each health poll.
func (d *daemon) keepHostAddrs() {
	err := d.refreshHostAddrs()
	switch {
	case err != nil && !d.host.failing:
		d.log.Warn("cannot follow the host's addresses: they may be reachable through the prefix until it can", "err", err)
	case err == nil && d.host.failing:
		d.log.Info("following the host's addresses again")
	}
	d.host.failing = err != nil
}

// ownHostAddrs sorts the host's IPv4 addresses and leaves out those the
// engine refuses anyway (loopback, link-local: RFC 7915 sections 4.1 and
// 5.1) and duplicates.
func ownHostAddrs(as []netip.Prefix) []netip.Prefix {
	as = slices.DeleteFunc(slices.Clone(as), func(p netip.Prefix) bool {
		a := p.Addr()
		return !p.IsValid() || !a.Is4() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified()
	})
	slices.SortFunc(as, comparePrefixes)
	return slices.Compact(as)
}

// comparePrefixes orders prefixes by address, then length.
func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
