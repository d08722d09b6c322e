package pid1

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/netsetup"
)

// loopbackUp brings up lo; nothing else does inside the VM.
func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

// setupNetwork applies the interface and route blocks (MTU, link up,
// addresses without duplicate address detection, static routes) and turns
// forwarding on: the appliance routes between its NICs and the tun.
func setupNetwork(cfg *config.Config) error {
	nl, err := netsetup.Open()
	if err != nil {
		return err
	}
	defer nl.Close()
	t := netsetup.NewTracker(nl)
	var errs []error
	for _, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if err := t.Sysctl(k, "1"); err != nil {
			errs = append(errs, err)
		}
	}
	var addrs []netsetup.Addr
	for _, ifc := range cfg.Interfaces {
		if err := t.Link(ifc.Name, ifc.MTU, false); err != nil {
			errs = append(errs, fmt.Errorf("interface %s: %w", ifc.Name, err))
			continue
		}
		for _, a := range ifc.Addresses {
			addrs = append(addrs, netsetup.Addr{Dev: ifc.Name, Prefix: a})
		}
	}
	if err := t.SyncAddrs(addrs); err != nil {
		errs = append(errs, err)
	}
	var routes []netsetup.Route
	for _, r := range cfg.Routes {
		routes = append(routes, netsetup.Route{Dst: r.To, Via: r.Via, Dev: r.Dev})
	}
	if _, _, err := t.SyncRoutes(routes); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
