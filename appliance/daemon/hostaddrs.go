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
}

// tracksHostAddrs: only host mode routes through this namespace's kernel,
// whose local table delivers packets to the host's addresses. NIC mode
// leaves packets to them to the kernel (and routes none of its output to
// a local address); in fd mode whoever handed the link over routes.
func (d *daemon) tracksHostAddrs() bool {
	return d.running.Translator.Link == config.LinkTun
}

// withHostAddrs is c with the host's addresses added to its own ones,
// except those c maps (an EAM entry, RFC 7757): such an address (a /32 on
// a dummy interface, there for announcing it) belongs to its server, whose
// traffic would otherwise be dropped as own_address both ways; packets to
// it are translated, not delivered to the host.
func (d *daemon) withHostAddrs(c *xlat.Config) *xlat.Config {
	if len(d.host.addrs) == 0 {
		return c
	}
	x := *c
	x.Policy.OwnAddrs = slices.Clip(c.Policy.OwnAddrs)
	var mapped []netip.Prefix
	for _, a := range d.host.addrs {
		if c.Map != nil {
			if _, _, ok := c.Map.Table().Lookup4(a.Addr().As4()); ok {
				mapped = append(mapped, a)
				continue
			}
		}
		x.Policy.OwnAddrs = append(x.Policy.OwnAddrs, a)
	}
	if len(mapped) > 0 {
		d.log.Warn("host addresses that are mapped IPv4 addresses are their servers', not the host's: the translator takes their traffic", "addresses", mapped)
	}
	return &x
}

// refreshHostAddrs reads the host's addresses again when they may have
// changed, and reloads the engine if they did. A failure is retried at
// the next health poll; the engine keeps the addresses it had.
func (d *daemon) refreshHostAddrs() error {
	if !d.host.stale || !d.tracksHostAddrs() {
		return nil
	}
	as, err := d.kernel.HostAddrs()
	if err != nil {
		return fmt.Errorf("the host's addresses: %w", err)
	}
	as = ownHostAddrs(as)
	d.host.stale = false
	if slices.Equal(as, d.host.addrs) {
		return nil
	}
	old := d.host.addrs
	d.host.addrs = as
	if err := d.eng.Reload(d.withHostAddrs(d.host.file)); err != nil {
		d.host.addrs = old
		return fmt.Errorf("engine with the host's addresses: %w", err)
	}
	d.log.Info("the host's addresses are the translator's own: not reachable through the prefix", "addresses", len(as))
	return nil
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
	slices.SortFunc(as, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(as)
}
