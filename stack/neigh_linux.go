package stack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netlinkKernel is neighKernel over rtnetlink. Its handle's sockets are
// opened when it is made, in the network namespace of the calling thread,
// and stay there whichever thread uses them later.
type netlinkKernel struct {
	h *netlink.Handle
}

func (k netlinkKernel) route(dst netip.Addr) (int, netip.Addr, error) {
	rs, err := k.h.RouteGet(net.IP(dst.AsSlice()))
	if err != nil {
		return 0, netip.Addr{}, err
	}
	if len(rs) == 0 {
		return 0, netip.Addr{}, errors.New("no route")
	}
	r := rs[0]
	if r.Type != unix.RTN_UNICAST && r.Type != 0 {
		return 0, netip.Addr{}, fmt.Errorf("route of type %d", r.Type)
	}
	via := dst
	if gw, ok := netip.AddrFromSlice(r.Gw); ok {
		via = gw.Unmap()
	} else if v, ok := r.Via.(*netlink.Via); ok {
		if gw, ok := netip.AddrFromSlice(v.Addr); ok {
			via = gw.Unmap() // an IPv4 route through an IPv6 next hop (RFC 8950)
		}
	}
	return r.LinkIndex, via, nil
}

// usableNUD are the neighbour states whose link address may be used.
const usableNUD = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

func (k netlinkKernel) neighbour(ifindex int, via netip.Addr) ([6]byte, bool, error) {
	ns, err := k.h.NeighList(ifindex, family(via))
	if err != nil {
		return [6]byte{}, false, err
	}
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == via {
			return neighMAC(n)
		}
	}
	return [6]byte{}, false, nil
}

func neighMAC(n netlink.Neigh) ([6]byte, bool, error) {
	if n.State&usableNUD == 0 || len(n.HardwareAddr) != 6 {
		return [6]byte{}, false, nil
	}
	return [6]byte(n.HardwareAddr), true, nil
}

// solicit sets NTF_USE on via's entry (creating it): the kernel starts
// resolution (or re-probes a stale entry) as if it had a packet to send,
// without our sending one. This is `ip neigh replace ADDR dev DEV use`.
func (k netlinkKernel) solicit(ifindex int, via netip.Addr) error {
	return k.h.NeighSet(&netlink.Neigh{
		LinkIndex: ifindex,
		Family:    family(via),
		IP:        net.IP(via.AsSlice()),
		State:     netlink.NUD_PERMANENT, // ignored with NTF_USE, which keeps the entry's state
		Flags:     netlink.NTF_USE,
	})
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// localAddrs is the set of the host's own addresses: packets to them are
// the kernel's (BGP, metrics, ping to the appliance), not the translator's.
// It is replaced whole on every change and read on the packet path without
// a lock.
type localAddrs struct {
	p atomic.Pointer[map[netip.Addr]bool]
}

func (l *localAddrs) has(a netip.Addr) bool {
	m := l.p.Load()
	return m != nil && (*m)[a]
}

func (l *localAddrs) load(h *netlink.Handle) error {
	as, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	m := map[netip.Addr]bool{}
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			m[ip.Unmap()] = true
		}
	}
	l.p.Store(&m)
	return nil
}

// watchKernel keeps r and local in step with the kernel's neighbour,
// route and address tables, and reports links' MTUs and deletions to
// onLink, until done is closed; the channel it returns is closed once it
// has stopped (it sends parked packets: nothing may after the sockets
// close). The subscriptions are opened before it returns, in the calling
// thread's network namespace.
func watchKernel(h *netlink.Handle, r *resolver, local *localAddrs, onLink func(ifindex, mtu int, deleted bool), done <-chan struct{}) (<-chan struct{}, error) {
	links := make(chan netlink.LinkUpdate, 64)
	neighs := make(chan netlink.NeighUpdate, 256)
	routes := make(chan netlink.RouteUpdate, 256)
	addrs := make(chan netlink.AddrUpdate, 64)
	var errs atomic.Pointer[error]
	onErr := func(err error) { errs.Store(&err) }
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return nil, fmt.Errorf("neighbour events: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return nil, fmt.Errorf("route events: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return nil, fmt.Errorf("address events: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return nil, fmt.Errorf("link events: %w", err)
	}
	if err := local.load(h); err != nil {
		return nil, fmt.Errorf("addresses: %w", err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(neighbourRefresh)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case u, ok := <-neighs:
				if !ok {
					neighs = nil
					continue
				}
				ip, ok := netip.AddrFromSlice(u.IP)
				if !ok {
					continue
				}
				mac, valid, _ := neighMAC(u.Neigh)
				if u.Type == unix.RTM_DELNEIGH {
					valid = false
				}
				r.neighbourUpdate(u.LinkIndex, ip.Unmap(), mac, valid)
			case _, ok := <-routes:
				if !ok {
					routes = nil
					continue
				}
				r.routesChanged()
			case _, ok := <-addrs:
				if !ok {
					addrs = nil
					continue
				}
				if err := local.load(h); err != nil {
					r.log.Warn("reloading the host's addresses", "err", err)
				}
			case u, ok := <-links:
				if !ok {
					links = nil
					continue
				}
				if a := u.Attrs(); a != nil {
					onLink(a.Index, a.MTU, u.Header.Type == unix.RTM_DELLINK)
				}
			case <-tick.C:
				r.refresh()
				if e := errs.Swap(nil); e != nil {
					r.log.Warn("netlink events", "err", *e)
				}
			}
		}
	}()
	return stopped, nil
}
