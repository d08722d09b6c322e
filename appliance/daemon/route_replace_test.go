package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/appliance/netsetup"
	"golang.org/x/sys/unix"
)

// TestRouteReplacedInPlaceIsPutBack: `ip route replace` of a route of the
// translator (a blackhole in its place, the /96 through another device)
// comes as a replacement without a deletion; the route is put back and
// counted (map646_kernel_repairs_total{what="route"}). Before, only
// deletions were seen: the replaced route stayed, a black hole, healthy.
// A replacement with a route the same as ours, and one of a destination
// that is not ours, change nothing; the same route of another protocol
// (proto boot, iproute2's default) is not ours and is replaced by ours.
func TestRouteReplacedInPlaceIsPutBack(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	defer h.stop()
	ours4 := netsetup.Route{Dst: netip.MustParsePrefix("198.51.100.10/32"), Dev: "dmtest0", Table: PolicyTable}
	ours6 := netsetup.Route{Dst: netip.MustParsePrefix("2001:db8:64::/96"), Dev: "dmtest0", Table: PolicyTable}
	for i, c := range []struct {
		name       string
		ours, them netsetup.Route
	}{
		{"blackhole in place of a /32", ours4, netsetup.Route{Dst: ours4.Dst, Table: PolicyTable, Blackhole: true}},
		{"the /96 through another device", ours6, netsetup.Route{Dst: ours6.Dst, Dev: "eth0", Table: PolicyTable}},
		{"unreachable in place of a /32", ours4, netsetup.Route{Dst: ours4.Dst, Table: PolicyTable}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h.k.mu.Lock()
			delete(h.k.routes, c.ours)
			h.k.routes[c.them] = true
			h.k.mu.Unlock()
			h.w.events <- []netsetup.Change{{Route: c.them, Replaced: true}}
			waitFor(t, "ours back", func() bool { return slices.Contains(h.k.routeSet(), c.ours.String()) })
			waitFor(t, "the repair counted", func() bool { return repairCount(h, "route") == i+1 })
		})
	}
	h.k.mu.Lock()
	n := len(h.k.log)
	h.k.mu.Unlock()
	h.w.events <- []netsetup.Change{
		{Route: ours4, Replaced: true, Protocol: netsetup.RouteProtocol}, // the same as ours
		{Route: netsetup.Route{Dst: netip.MustParsePrefix("198.51.100.99/32"), Table: PolicyTable, Blackhole: true}, Replaced: true},
	}
	time.Sleep(10 * testHealthInterval)
	h.k.mu.Lock()
	after := slices.Clone(h.k.log[n:])
	h.k.mu.Unlock()
	if slices.ContainsFunc(after, func(s string) bool { return strings.HasPrefix(s, "routes") }) || repairCount(h, "route") != 3 {
		t.Errorf("replacements that change nothing of ours: kernel calls %v, %d route repairs", after, repairCount(h, "route"))
	}
	// The same route of another protocol (`ip route replace` defaults
	// to proto boot) is someone else's: its deletion would not be
	// reported, so ours is put back (RouteProtocol) at once.
	h.w.events <- []netsetup.Change{{Route: ours4, Replaced: true, Protocol: unix.RTPROT_BOOT}}
	waitFor(t, "the look-alike replaced by ours", func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return slices.ContainsFunc(h.k.log[n:], func(s string) bool { return strings.HasPrefix(s, "routes+") && strings.Contains(s, ours4.Dst.String()) })
	})
	waitFor(t, "the repair counted", func() bool { return repairCount(h, "route") == 4 })
}
