package netsetup

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/internal/netnstest"
	"golang.org/x/sys/unix"
)

// readUntil reads changes until one satisfies ok or 5 s pass.
func readUntil(t *testing.T, w *Watcher, what string, ok func(Change) bool) []Change {
	t.Helper()
	got := make(chan []Change, 1)
	go func() {
		var all []Change
		for {
			cs, err := w.Read(nil)
			if err != nil {
				got <- all
				return
			}
			all = append(all, cs...)
			if slices.ContainsFunc(cs, ok) {
				got <- all
				return
			}
		}
	}()
	select {
	case all := <-got:
		if !slices.ContainsFunc(all, ok) {
			t.Fatalf("no %s among %+v", what, all)
		}
		return all
	case <-time.After(5 * time.Second):
		w.Close()
		t.Fatalf("no %s within 5 s", what)
		return nil
	}
}

// TestWatcherSeesLinksAndDeletedRoutes: a route deleted by hand and a
// link going down and up reach the Watcher, decoded; the RTM_NEWROUTE of
// a thousand routes we add does not (the socket filter drops it).
func TestWatcherSeesLinksAndDeletedRoutes(t *testing.T) {
	ns := netnstest.New(t, "dm-wt")
	ns.MustRun(t, "ip", "link", "add", "dm0", "type", "veth", "peer", "name", "dm1")
	ns.MustRun(t, "ip", "link", "set", "dm1", "up")
	ns.MustRun(t, "ip", "link", "set", "dm0", "up")
	err := ns.Do(func() error {
		k, err := Open()
		if err != nil {
			return err
		}
		defer k.Close()
		w, err := Watch(k.PortID(), 646)
		if err != nil {
			return err
		}
		defer w.Close()
		if err := k.ReplaceRoutes(routes4(1000, "dm0")); err != nil {
			return err
		}
		mapped := Route{Dst: netip.MustParsePrefix("2001:db8:64::/96"), Dev: "dm0", Table: 646}
		if err := k.ReplaceRoutes([]Route{mapped}); err != nil {
			return err
		}
		ns.MustRun(t, "ip", "route", "del", "198.51.100.7/32")
		cs := readUntil(t, w, "deleted route", func(c Change) bool { return c.Route.Dst.IsValid() })
		// The links' carrier coming up may be reported late, on a
		// loaded machine after the deletion: only routes count here.
		cs = slices.DeleteFunc(cs, func(c Change) bool { return c.Link != "" })
		if len(cs) != 1 || cs[0].Route != (Route{Dst: netip.MustParsePrefix("198.51.100.7/32"), Dev: "dm0"}) {
			return fmt.Errorf("changes after one route deletion: %+v", cs)
		}
		if w.msgs > 10 {
			return fmt.Errorf("%d messages reached the socket: the filter let RTM_NEWROUTE through", w.msgs)
		}
		ns.MustRun(t, "ip", "-6", "route", "del", "2001:db8:64::/96", "table", "646")
		readUntil(t, w, "deleted route of table 646", func(c Change) bool { return c.Route == mapped })
		ns.MustRun(t, "ip", "link", "set", "dm0", "down")
		readUntil(t, w, "link down", func(c Change) bool { return c.Link == "dm0" && !c.Up })
		ns.MustRun(t, "ip", "link", "set", "dm0", "up")
		readUntil(t, w, "link up", func(c Change) bool { return c.Link == "dm0" && c.Up })

		// An IPv4 address added or removed anywhere is reported, and
		// HostAddrs lists it while it is there.
		host := netip.MustParsePrefix("203.0.113.5/24")
		ns.MustRun(t, "ip", "addr", "add", host.String(), "dev", "dm1")
		readUntil(t, w, "address added", func(c Change) bool { return c.Addrs })
		if as, err := k.HostAddrs(); err != nil || !slices.Contains(as, host) {
			return fmt.Errorf("host addresses after adding %v: %v, %v", host, as, err)
		}
		ns.MustRun(t, "ip", "addr", "del", host.String(), "dev", "dm1")
		// ... with the address deleted, as the tracker installs it.
		want4 := Addr{Dev: "dm1", Prefix: host}
		readUntil(t, w, "address removed", func(c Change) bool { return c.Addrs && c.Deleted == want4 })
		if as, err := k.HostAddrs(); err != nil || slices.Contains(as, host) {
			return fmt.Errorf("host addresses after removing %v: %v, %v", host, as, err)
		}

		// An IPv6 address deleted from outside is reported with its
		// device and prefix length (an interface block's address).
		want6 := Addr{Dev: "dm0", Prefix: netip.MustParsePrefix("2001:db8:6::1/64")}
		if err := k.ReplaceAddr(want6.Dev, want6.Prefix); err != nil {
			return err
		}
		ns.MustRun(t, "ip", "addr", "del", want6.Prefix.String(), "dev", "dm0")
		readUntil(t, w, "deleted IPv6 address", func(c Change) bool { return c.Deleted == want6 })

		// A policy rule deleted from outside is reported, decoded,
		// whichever the family; adding one is not. A look-alike with
		// the same priority and table but another selector or action
		// (someone else's) is not reported when it is deleted: it is
		// never ours.
		ours := []Rule{{Family: 4, Priority: 6460, Table: 646}, {Family: 6, Priority: 6460, Table: 646}}
		for _, r := range ours {
			if err := k.AddRule(r); err != nil {
				return err
			}
		}
		lookAlikes := [][]string{
			{"-4", "pref", "6460", "from", "192.0.2.0/24", "lookup", "646"},
			{"-4", "pref", "6460", "fwmark", "1", "lookup", "646"},
			{"-4", "pref", "6460", "not", "to", "198.51.100.0/24", "lookup", "646"},
			{"-4", "pref", "6460", "blackhole"},
			{"-6", "pref", "6460", "from", "2001:db8::/32", "lookup", "646"},
		}
		for _, la := range lookAlikes {
			ns.MustRun(t, append([]string{"ip", la[0], "rule", "add"}, la[1:]...)...)
		}
		for _, la := range lookAlikes {
			ns.MustRun(t, append([]string{"ip", la[0], "rule", "del"}, la[1:]...)...)
		}
		ns.MustRun(t, "ip", "-4", "rule", "del", "pref", "6460")
		cs = readUntil(t, w, "deleted IPv4 rule", func(c Change) bool { return c.Rule.Family != 0 })
		ns.MustRun(t, "ip", "-6", "rule", "del", "pref", "6460")
		cs = append(cs, readUntil(t, w, "deleted IPv6 rule", func(c Change) bool { return c.Rule.Family != 0 })...)
		var rules []Rule
		for _, c := range cs {
			if c.Rule.Family != 0 {
				rules = append(rules, c.Rule)
			}
		}
		if !slices.Equal(rules, ours) {
			return fmt.Errorf("rule changes %v after %d look-alikes and then ours %v were deleted; want ours alone", rules, len(lookAlikes), ours)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKernelRoutesOfOthersAndPolicyRules: AddRoutes leaves a route that
// is there already alone and says so; rules and routes in a table of
// their own go in and out.
func TestKernelRoutesOfOthersAndPolicyRules(t *testing.T) {
	ns := netnstest.New(t, "dm-fr")
	ns.MustRun(t, "ip", "link", "add", "dm0", "type", "veth", "peer", "name", "dm1")
	ns.MustRun(t, "ip", "link", "set", "dm1", "up")
	ns.MustRun(t, "ip", "link", "set", "dm0", "up")
	ns.MustRun(t, "ip", "route", "add", "192.0.2.0/24", "dev", "dm0") // the operator's (proto boot, not shown)
	err := ns.Do(func() error {
		k, err := Open()
		if err != nil {
			return err
		}
		defer k.Close()
		mine := Route{Dst: netip.MustParsePrefix("198.51.100.0/24"), Dev: "dm0"}
		theirs := Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Dev: "dm0"}
		existed, err := k.AddRoutes([]Route{mine, theirs})
		if err != nil || !slices.Equal(existed, []Route{theirs}) {
			return fmt.Errorf("AddRoutes: existed %v, %v", existed, err)
		}
		if out := ns.MustRun(t, "ip", "route", "show", "192.0.2.0/24"); strings.Contains(out, "proto 64") || !strings.Contains(out, "dev dm0") {
			return fmt.Errorf("the operator's route was replaced: %q", out)
		}
		rule := Rule{Family: 4, Priority: 6463, Unreachable: true}
		for range 2 { // an identical rule is not an error
			if err := k.AddRule(rule); err != nil {
				return err
			}
		}
		if err := k.AddRule(Rule{Family: 6, Priority: 6462, Iif: "dm0", Table: 254}); err != nil {
			return err
		}
		if out := ns.MustRun(t, "ip", "-4", "rule", "show"); !strings.Contains(out, "6463:\tfrom all unreachable") {
			return fmt.Errorf("IPv4 rules: %q", out)
		}
		if out := ns.MustRun(t, "ip", "-6", "rule", "show"); !strings.Contains(out, "6462:\tfrom all iif dm0 lookup main") {
			return fmt.Errorf("IPv6 rules: %q", out)
		}
		have, err := k.OwnRules()
		if err != nil {
			return err
		}
		for _, r := range []Rule{rule, {Family: 6, Priority: 6462, Iif: "dm0", Table: 254}} {
			if !slices.Contains(have, r) {
				return fmt.Errorf("OwnRules() has no %v: %v", r, have)
			}
		}
		for _, r := range []Rule{rule, {Family: 6, Priority: 6462, Iif: "dm0", Table: 254}} {
			if err := k.DelRule(r); err != nil {
				return err
			}
			if err := k.DelRule(r); err != nil {
				return fmt.Errorf("deleting a missing rule: %w", err)
			}
		}
		for _, fam := range []string{"-4", "-6"} {
			if out := ns.MustRun(t, "ip", fam, "rule", "show"); strings.Contains(out, "646") {
				return fmt.Errorf("rules left: %q", out)
			}
		}
		own := []Route{{Dst: netip.MustParsePrefix("198.51.100.0/24"), Dev: "dm0", Table: 646}, {Dst: netip.MustParsePrefix("2001:db8:64::/96"), Dev: "dm0", Table: 646}}
		if err := k.ReplaceRoutes(own); err != nil {
			return err
		}
		if out := ns.MustRun(t, "ip", "route", "show", "table", "646"); !strings.Contains(out, "198.51.100.0/24 dev dm0") {
			return fmt.Errorf("table 646: %q", out)
		}
		if err := k.DelRoutes(own); err != nil {
			return err
		}
		if out := ns.MustRun(t, "ip", "-6", "route", "show", "table", "646"); out != "" {
			return fmt.Errorf("table 646 after delete: %q", out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWatcherSeesRoutesReplacedByOthers: a route replaced in place (`ip
// route replace`) comes as an RTM_NEWROUTE with NLM_F_REPLACE and no
// RTM_DELROUTE: the watcher reports it as the kernel now has it, with
// its type. Replacements from the daemon's own route socket (a restore
// replaces every route) do not reach the watcher's socket, nor do
// routes added.
func TestWatcherSeesRoutesReplacedByOthers(t *testing.T) {
	ns := netnstest.New(t, "dm-wr")
	ns.MustRun(t, "ip", "link", "add", "dm0", "type", "veth", "peer", "name", "dm1")
	ns.MustRun(t, "ip", "link", "set", "dm1", "up")
	ns.MustRun(t, "ip", "link", "set", "dm0", "up")
	err := ns.Do(func() error {
		k, err := Open()
		if err != nil {
			return err
		}
		defer k.Close()
		if k.PortID() == 0 {
			return fmt.Errorf("no port id")
		}
		w, err := Watch(k.PortID(), 646)
		if err != nil {
			return err
		}
		defer w.Close()
		mapped := Route{Dst: netip.MustParsePrefix("2001:db8:64::/96"), Dev: "dm0", Table: 646}
		for range 2 { // added, then replaced by the daemon itself
			if err := k.ReplaceRoutes(append(routes4(1000, "dm0"), mapped)); err != nil {
				return err
			}
		}
		for _, c := range []struct {
			cmd   []string
			want  Route
			proto uint8
		}{
			{[]string{"ip", "route", "replace", "blackhole", "198.51.100.7/32"}, Route{Dst: netip.MustParsePrefix("198.51.100.7/32"), Blackhole: true}, unix.RTPROT_BOOT},
			{[]string{"ip", "-6", "route", "replace", "2001:db8:64::/96", "dev", "dm1", "table", "646"}, Route{Dst: mapped.Dst, Dev: "dm1", Table: 646}, unix.RTPROT_BOOT},
			{[]string{"ip", "route", "replace", "unreachable", "198.51.100.8/32"}, Route{Dst: netip.MustParsePrefix("198.51.100.8/32")}, unix.RTPROT_BOOT},
			// Identical-looking to ours but for the protocol: the
			// daemon must tell it from ours (its deletion is not
			// reported).
			{[]string{"ip", "route", "replace", "198.51.100.9/32", "dev", "dm0"}, Route{Dst: netip.MustParsePrefix("198.51.100.9/32"), Dev: "dm0"}, unix.RTPROT_BOOT},
		} {
			ns.MustRun(t, c.cmd...)
			cs := readUntil(t, w, strings.Join(c.cmd, " "), func(c Change) bool { return c.Route.Dst.IsValid() })
			cs = slices.DeleteFunc(cs, func(c Change) bool { return c.Link != "" })
			if len(cs) != 1 || cs[0].Route != c.want || !cs[0].Replaced || cs[0].Protocol != c.proto {
				return fmt.Errorf("%v: changes %+v; want %+v replaced, protocol %d", c.cmd, cs, c.want, c.proto)
			}
		}
		if w.msgs > 20 {
			return fmt.Errorf("%d messages reached the socket: the filter let the daemon's own routes through", w.msgs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWatcherSeesRoutesPutAhead: `ip route prepend` at the place of one
// of ours, and an IPv6 route at a lower metric in the translator's
// table, come as RTM_NEWROUTEs without NLM_F_REPLACE, which the
// watcher's filter dropped: the kernel preferred them to ours, a black
// hole nobody saw. They reach the watcher now, with what it takes to
// delete them (DelRoutesAhead) and leave ours, behind them, in place;
// routes appended behind ours, added at a new place elsewhere, or
// installed by the daemon itself do not.
func TestWatcherSeesRoutesPutAhead(t *testing.T) {
	ns := netnstest.New(t, "dm-wa")
	ns.MustRun(t, "ip", "link", "add", "dm0", "type", "veth", "peer", "name", "dm1")
	ns.MustRun(t, "ip", "link", "set", "dm1", "up")
	ns.MustRun(t, "ip", "link", "set", "dm0", "up")
	err := ns.Do(func() error {
		k, err := Open()
		if err != nil {
			return err
		}
		defer k.Close()
		w, err := Watch(k.PortID(), 646)
		if err != nil {
			return err
		}
		defer w.Close()
		v4 := Route{Dst: netip.MustParsePrefix("198.51.100.7/32"), Dev: "dm0", Table: 646}
		v6 := Route{Dst: netip.MustParsePrefix("2001:db8:64::/96"), Dev: "dm0", Table: 646}
		if err := k.ReplaceRoutes(append(routes4(1000, "dm0"), v4, v6)); err != nil {
			return err
		}
		const boot = unix.RTPROT_BOOT // ip route's protocol when none is given
		var ahead []AheadRoute
		for _, c := range []struct {
			cmd  [][]string // the last one is reported
			want AheadRoute
		}{
			{[][]string{
				{"ip", "route", "append", "198.51.100.7/32", "dev", "dm1", "table", "646"},
				{"ip", "route", "add", "192.0.2.0/24", "dev", "dm0"},
				{"ip", "route", "prepend", "blackhole", "198.51.100.7/32", "table", "646"},
			}, AheadRoute{Route: Route{Dst: v4.Dst, Table: 646, Blackhole: true}, Protocol: boot, Type: unix.RTN_BLACKHOLE}},
			{[][]string{
				{"ip", "route", "prepend", "198.51.100.7/32", "dev", "dm1", "table", "646", "proto", "static"},
			}, AheadRoute{Route: Route{Dst: v4.Dst, Dev: "dm1", Table: 646}, Protocol: unix.RTPROT_STATIC, Type: unix.RTN_UNICAST}},
			{[][]string{
				{"ip", "-6", "route", "append", "2001:db8:64::/96", "via", "fe80::1", "dev", "dm0", "table", "646"},
				{"ip", "-6", "route", "add", "2001:db8:65::/96", "dev", "dm0", "table", "646", "metric", "2048"},
				{"ip", "-6", "route", "add", "2001:db8:66::/96", "dev", "dm0", "metric", "100"},
				{"ip", "-6", "route", "add", "blackhole", "2001:db8:64::/96", "table", "646", "metric", "100"},
			}, AheadRoute{Route: Route{Dst: v6.Dst, Table: 646, Blackhole: true}, Metric: 100, Protocol: boot, Type: unix.RTN_BLACKHOLE}},
		} {
			for _, cmd := range c.cmd {
				ns.MustRun(t, cmd...)
			}
			cs := readUntil(t, w, fmt.Sprint(c.cmd), func(c Change) bool { return c.Ahead.Dst.IsValid() })
			cs = slices.DeleteFunc(cs, func(c Change) bool { return c.Link != "" })
			if len(cs) != 1 || cs[0].Ahead != c.want {
				return fmt.Errorf("%v: changes %+v; want %v ahead", c.cmd, cs, c.want)
			}
			ahead = append(ahead, cs[0].Ahead)
		}
		if w.msgs > 20 {
			return fmt.Errorf("%d messages reached the socket: the filter let the daemon's own routes through", w.msgs)
		}
		if err := k.DelRoutesAhead(ahead); err != nil {
			return err
		}
		if err := k.DelRoutesAhead(ahead); err != nil {
			return fmt.Errorf("deleting them again: %w", err)
		}
		for _, c := range [][2]string{
			{"-4", "198.51.100.7 dev dm0 proto 64 scope link \n198.51.100.7 dev dm1 scope link \n"},
			{"-6", "2001:db8:64::/96 dev dm0 proto 64 metric 1024 pref medium\n2001:db8:64::/96 via fe80::1 dev dm0 metric 1024 pref medium\n"},
		} {
			var keep []string
			for _, l := range strings.SplitAfter(ns.MustRun(t, "ip", c[0], "route", "show", "table", "646"), "\n") {
				if strings.HasPrefix(l, "198.51.100.7 ") || strings.HasPrefix(l, "blackhole 198.51.100.7 ") || strings.Contains(l, "2001:db8:64::/96") {
					keep = append(keep, l)
				}
			}
			if got := strings.Join(keep, ""); got != c[1] {
				return fmt.Errorf("ip %s route show table 646 after DelRoutesAhead:\n%s\nwant\n%s", c[0], got, c[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// withType returns a copy of the netlink message m with another type and
// flags.
func withType(m []byte, typ, flags uint16) []byte {
	m = slices.Clone(m)
	binary.NativeEndian.PutUint16(m[4:], typ)
	binary.NativeEndian.PutUint16(m[6:], flags)
	return m
}

// withMetric returns a copy of the netlink message m with an
// RTA_PRIORITY attribute appended, and its length fixed.
func withMetric(m []byte, metric uint32) []byte {
	m = append(slices.Clone(m), 8, 0, unix.RTA_PRIORITY, 0)
	m = binary.NativeEndian.AppendUint32(m, metric)
	binary.NativeEndian.PutUint32(m[0:], uint32(len(m)))
	return m
}

// routeMsgs returns an RTM_DELROUTE of 198.51.100.7/32 and one of
// 2001:db8::7/128, each unicast in table 646 through interface 1,
// without a metric.
func routeMsgs() (v4, v6 []byte) {
	v4 = []byte{
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr, length set below
		2, 32, 0, 0, 0, RouteProtocol, 0, 1, 0, 0, 0, 0, // rtmsg: AF_INET, /32, ours, unicast
		8, 0, 1, 0, 198, 51, 100, 7, // RTA_DST
		8, 0, 15, 0, 0x86, 0x02, 0, 0, // RTA_TABLE 646
		8, 0, 4, 0, 1, 0, 0, 0, // RTA_OIF 1
	}
	binary.NativeEndian.PutUint32(v4, uint32(len(v4)))
	binary.NativeEndian.PutUint16(v4[4:], unix.RTM_DELROUTE)
	v6 = slices.Concat(v4[:16], []byte{
		10, 128, 0, 0, 0, RouteProtocol, 0, 1, 0, 0, 0, 0, // rtmsg: AF_INET6, /128, ours, unicast
		20, 0, 1, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, // RTA_DST
		8, 0, 15, 0, 0x86, 0x02, 0, 0, // RTA_TABLE 646
		8, 0, 4, 0, 1, 0, 0, 0, // RTA_OIF 1
	})
	binary.NativeEndian.PutUint32(v6, uint32(len(v6)))
	return v4, v6
}

// TestWatcherReportsOnlyOurMetric: a route deleted or replaced at a
// metric other than the one the kernel gives ours (0 for IPv4, 1024 for
// IPv6) has a place of its own and is not reported (review H11: a route
// of someone else's replaced at metric 5 was taken for ours).
func TestWatcherReportsOnlyOurMetric(t *testing.T) {
	v4, v6 := routeMsgs()
	rep := func(m []byte) []byte { return withType(m, unix.RTM_NEWROUTE, unix.NLM_F_REPLACE) }
	for _, c := range []struct {
		name string
		msg  []byte
		want bool
	}{
		{"ipv4 delete, no metric", v4, true},
		{"ipv4 delete, metric 0", withMetric(v4, 0), true},
		{"ipv4 delete, metric 5", withMetric(v4, 5), false},
		{"ipv4 replace, no metric", rep(v4), true},
		{"ipv4 replace, metric 5", withMetric(rep(v4), 5), false},
		{"ipv6 delete, metric 1024", withMetric(v6, 1024), true},
		{"ipv6 delete, metric 5", withMetric(v6, 5), false},
		{"ipv6 replace, metric 1024", withMetric(rep(v6), 1024), true},
		{"ipv6 replace, metric 1", withMetric(rep(v6), 1), false},
	} {
		w := &Watcher{names: map[int32]string{1: "lo"}}
		cs := w.parse(nil, c.msg)
		if got := len(cs) == 1 && cs[0].Route.Dst.IsValid(); got != c.want {
			t.Errorf("%s: changes %+v, want a route reported: %v", c.name, cs, c.want)
		}
	}
}

// TestWatcherReportsOnlyOurProtocolDeleted: a route deleted at the place
// of ours is reported only if it is of the protocol of ours
// (RouteProtocol); a look-alike of another protocol, deleted (evicted
// from ahead of ours), is not (review H8: it was taken for ours deleted,
// logged and counted a second time). A replacement of any protocol is
// reported: it took the place of ours.
func TestWatcherReportsOnlyOurProtocolDeleted(t *testing.T) {
	v4, v6 := routeMsgs()
	proto := func(m []byte, p uint8) []byte {
		m = slices.Clone(m)
		m[unix.NLMSG_HDRLEN+5] = p
		return m
	}
	rep := func(m []byte) []byte { return withType(m, unix.RTM_NEWROUTE, unix.NLM_F_REPLACE) }
	for _, c := range []struct {
		name string
		msg  []byte
		want bool
	}{
		{"ipv4 delete, ours", proto(v4, RouteProtocol), true},
		// systemd-networkd's and an operator's `ip route add ... proto static`.
		{"ipv4 delete, proto static", proto(v4, unix.RTPROT_STATIC), false},
		{"ipv4 delete, proto boot", proto(v4, unix.RTPROT_BOOT), false},
		{"ipv4 delete, proto kernel", proto(v4, unix.RTPROT_KERNEL), false},
		{"ipv6 delete, ours", withMetric(proto(v6, RouteProtocol), 1024), true},
		{"ipv6 delete, proto static", withMetric(proto(v6, unix.RTPROT_STATIC), 1024), false},
		{"ipv6 delete, proto boot", withMetric(proto(v6, unix.RTPROT_BOOT), 1024), false},
		{"ipv4 replace, proto boot", rep(proto(v4, unix.RTPROT_BOOT)), true},
		{"ipv6 replace, proto boot", withMetric(rep(proto(v6, unix.RTPROT_BOOT)), 1024), true},
	} {
		w := &Watcher{names: map[int32]string{1: "lo"}}
		cs := w.parse(nil, c.msg)
		if got := len(cs) == 1 && cs[0].Route.Dst.IsValid(); got != c.want {
			t.Errorf("%s: changes %+v, want a route reported: %v", c.name, cs, c.want)
		}
	}
}

// TestEvictedLookAlikeIsNotOursDeleted (review H8): a look-alike of a
// route of ours (the same place and device, proto boot) prepended ahead
// of it and evicted produces an RTM_DELROUTE that the tracker took for
// ours deleted. It is not reported; ours stays.
func TestEvictedLookAlikeIsNotOursDeleted(t *testing.T) {
	ns := netnstest.New(t, "dm-wl")
	ns.MustRun(t, "ip", "link", "add", "dm0", "type", "veth", "peer", "name", "dm1")
	ns.MustRun(t, "ip", "link", "set", "dm1", "up")
	ns.MustRun(t, "ip", "link", "set", "dm0", "up")
	err := ns.Do(func() error {
		k, err := Open()
		if err != nil {
			return err
		}
		defer k.Close()
		tr := NewTracker(k)
		ours := Route{Dst: netip.MustParsePrefix("198.51.100.7/32"), Dev: "dm0", Table: 646}
		if _, _, err := tr.SyncRoutes([]Route{ours}); err != nil {
			return err
		}
		w, err := Watch(k.PortID(), 646)
		if err != nil {
			return err
		}
		defer w.Close()
		ns.MustRun(t, "ip", "route", "prepend", "198.51.100.7/32", "dev", "dm0", "table", "646", "proto", "boot")
		cs := readUntil(t, w, "the look-alike ahead", func(c Change) bool { return c.Ahead.Dst.IsValid() })
		i := slices.IndexFunc(cs, func(c Change) bool { return c.Ahead.Dst.IsValid() })
		if err := tr.EvictAhead([]AheadRoute{cs[i].Ahead}); err != nil {
			return err
		}
		// A change after the eviction's, to know it has been read.
		ns.MustRun(t, "ip", "link", "add", "dm2", "type", "veth", "peer", "name", "dm3")
		cs = readUntil(t, w, "dm2 added", func(c Change) bool { return c.Link == "dm2" })
		for _, c := range cs {
			if r, ok := tr.Owned(c.Route); c.Route.Dst.IsValid() && ok {
				return fmt.Errorf("after the eviction of the look-alike, %v was reported deleted, and taken for ours (%v)", c.Route, r)
			}
		}
		if got, want := ns.MustRun(t, "ip", "route", "show", "table", "646"), "198.51.100.7 dev dm0 proto 64 scope link \n"; got != want {
			return fmt.Errorf("ip route show table 646:\n%s\nwant\n%s", got, want)
		}
		return tr.Teardown()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWatcherReportsRoutesAhead: an RTM_NEWROUTE that puts a route
// ahead of ours without replacing it is reported as Ahead, with what a
// delete needs (type, protocol, metric): IPv4 prepended at our metric
// (NLM_F_CREATE alone), IPv6 at a lower metric in the translator's
// table (a new place, NLM_F_CREATE|NLM_F_EXCL). Not reported: a route
// appended (behind ours), IPv6 added at our metric (fib6 puts it
// behind), IPv6 at a higher metric, in another table, or when the
// watcher has no table, IPv4 at a new place (ours is at metric 0, the
// best), IPv4 prepended at another metric.
func TestWatcherReportsRoutesAhead(t *testing.T) {
	v4, v6 := routeMsgs()
	add := func(m []byte, flags uint16) []byte { return withType(m, unix.RTM_NEWROUTE, flags) }
	blackhole := func(m []byte) []byte {
		m = slices.Clone(m)
		m[unix.NLMSG_HDRLEN+7] = unix.RTN_BLACKHOLE
		return m
	}
	const create, excl, appnd = unix.NLM_F_CREATE, unix.NLM_F_EXCL, unix.NLM_F_APPEND
	dst4, dst6 := netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("2001:db8::7/128")
	for _, c := range []struct {
		name  string
		msg   []byte
		table uint32
		want  *AheadRoute
	}{
		{"ipv4 prepended", add(v4, create), 646,
			&AheadRoute{Route: Route{Dst: dst4, Dev: "lo", Table: 646}, Protocol: RouteProtocol, Type: unix.RTN_UNICAST}},
		{"ipv4 blackhole prepended, metric 0", withMetric(add(blackhole(v4), create), 0), 0,
			&AheadRoute{Route: Route{Dst: dst4, Table: 646, Blackhole: true}, Protocol: RouteProtocol, Type: unix.RTN_BLACKHOLE}},
		{"ipv4 prepended, metric 5", withMetric(add(v4, create), 5), 646, nil},
		{"ipv4 appended", add(v4, create|appnd), 646, nil},
		{"ipv4 new place", add(v4, create|excl), 646, nil},
		{"ipv6 lower metric, our table", withMetric(add(blackhole(v6), create|excl), 100), 646,
			&AheadRoute{Route: Route{Dst: dst6, Table: 646, Blackhole: true}, Metric: 100, Protocol: RouteProtocol, Type: unix.RTN_BLACKHOLE}},
		{"ipv6 lower metric, no table given", withMetric(add(blackhole(v6), create|excl), 100), 0, nil},
		{"ipv6 lower metric, another table", withMetric(add(blackhole(v6), create|excl), 100), 647, nil},
		{"ipv6 higher metric", withMetric(add(v6, create|excl), 2048), 646, nil},
		{"ipv6 our metric, created alone", withMetric(add(v6, create), 1024), 646, nil},
		{"ipv6 our metric, appended", withMetric(add(v6, create|appnd), 1024), 646, nil},
	} {
		w := &Watcher{names: map[int32]string{1: "lo"}, table: c.table}
		cs := w.parse(nil, c.msg)
		switch {
		case c.want == nil && len(cs) != 0:
			t.Errorf("%s: changes %+v, want none", c.name, cs)
		case c.want != nil && (len(cs) != 1 || cs[0].Ahead != *c.want || cs[0].Route.Dst.IsValid()):
			t.Errorf("%s: changes %+v, want one ahead: %v", c.name, cs, *c.want)
		}
	}
}

// FuzzWatcherParse: whatever bytes a netlink socket hands over, parse
// neither panics nor reports a route without a valid destination.
func FuzzWatcherParse(f *testing.F) {
	// An RTM_DELROUTE for 198.51.100.7/32 table 646 oif 1, and truncations.
	msg := []byte{
		0, 0, 0, 0, 25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr, length set below
		2, 32, 0, 0, 0, 4, 0, 1, 0, 0, 0, 0, // rtmsg: AF_INET, /32, table unspec
		8, 0, 1, 0, 198, 51, 100, 7, // RTA_DST
		8, 0, 15, 0, 0x86, 0x02, 0, 0, // RTA_TABLE 646 (little-endian)
		8, 0, 4, 0, 1, 0, 0, 0, // RTA_OIF 1
	}
	msg[0] = byte(len(msg))
	f.Add(msg)
	f.Add(msg[:20])
	f.Add(append(msg[:16:16], 0xff, 0xff))
	// The same as an RTM_NEWROUTE with NLM_F_REPLACE (ip route replace),
	// unicast, blackhole and unreachable, and one without the flag.
	for _, typ := range []byte{unix.RTN_UNICAST, unix.RTN_BLACKHOLE, unix.RTN_UNREACHABLE} {
		rep := slices.Clone(msg)
		binary.NativeEndian.PutUint16(rep[4:], unix.RTM_NEWROUTE)
		binary.NativeEndian.PutUint16(rep[6:], unix.NLM_F_REPLACE|unix.NLM_F_CREATE)
		rep[16+7] = typ
		f.Add(rep)
		if typ == unix.RTN_UNICAST {
			binary.NativeEndian.PutUint16(rep[6:], unix.NLM_F_CREATE)
			f.Add(rep)
		}
	}
	// The delete and the replace with an RTA_PRIORITY: 0 (ours, for
	// IPv4), 5 (someone else's place), and one cut short.
	for _, metric := range []uint32{0, 5} {
		for _, m := range [][]byte{msg, withType(msg, unix.RTM_NEWROUTE, unix.NLM_F_REPLACE)} {
			f.Add(withMetric(m, metric))
		}
	}
	f.Add(append(slices.Clone(msg), 6, 0, unix.RTA_PRIORITY, 0, 5, 0))
	// RTM_DELRULEs with each body of ruleMsgs: ours, look-alikes and
	// malformed ones.
	for _, c := range ruleMsgs {
		body, _ := hex.DecodeString(c.hex)
		del := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(body)))
		del = binary.NativeEndian.AppendUint16(del, unix.RTM_DELRULE)
		del = append(del, make([]byte, 10)...)
		f.Add(append(del, body...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		w := &Watcher{names: map[int32]string{1: "lo"}, table: 646}
		for _, c := range w.parse(nil, b) {
			if c.Rule.Family != 0 && c.Rule.Family != 4 && c.Rule.Family != 6 {
				t.Fatalf("deleted rule of family %d: %+v", c.Rule.Family, c)
			}
			if c.Link == "" && !c.Route.Dst.IsValid() && !c.Ahead.Dst.IsValid() && !c.Addrs && !c.Deleted.Prefix.IsValid() && c.Rule.Family == 0 {
				t.Fatalf("change without link, route, address or rule: %+v", c)
			}
			if c.Ahead.Dst.IsValid() && (c.Route.Dst.IsValid() || c.Replaced) {
				t.Fatalf("a route both ahead of ours and deleted or replaced: %+v", c)
			}
			if c.Ahead.Blackhole && (c.Ahead.Dev != "" || c.Ahead.Via.IsValid()) {
				t.Fatalf("blackhole route ahead with a device or gateway: %+v", c)
			}
			if c.Replaced && !c.Route.Dst.IsValid() {
				t.Fatalf("replaced route without a destination: %+v", c)
			}
			if c.Route.Blackhole && (c.Route.Dev != "" || c.Route.Via.IsValid()) {
				t.Fatalf("blackhole route with a device or gateway: %+v", c)
			}
			if c.Deleted.Prefix.IsValid() && c.Deleted.Dev == "" {
				t.Fatalf("deleted address without its device: %+v", c)
			}
		}
	})
}
