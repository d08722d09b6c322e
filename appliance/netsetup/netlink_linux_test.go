package netsetup

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/internal/netnstest"
	"golang.org/x/sys/unix"
)

// routes4 returns n /32 routes into dev from 198.51.100.0 upwards
// (documentation space, wrapping into 203.0.113.0/24 and beyond only in
// the namespace's own table: nothing is sent).
func routes4(n int, dev string) []Route {
	rs := make([]Route, n)
	base := binary.BigEndian.Uint32([]byte{198, 51, 100, 0})
	for i := range rs {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], base+uint32(i))
		rs[i] = Route{Dst: netip.PrefixFrom(netip.AddrFrom4(a), 32), Dev: dev}
	}
	return rs
}

func countRoutes(t *testing.T, ns *netnstest.NS, family, match string) int {
	t.Helper()
	out := ns.MustRun(t, "ip", family, "route", "show", "dev", "dm0")
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, match) {
			n++
		}
	}
	return n
}

func TestNetlinkAgainstTheKernel(t *testing.T) {
	ns := netnstest.New(t, "dm-ns")
	ns.MustRun(t, "ip", "link", "add", "dm0", "type", "veth", "peer", "name", "dm1")
	ns.MustRun(t, "ip", "link", "set", "dm1", "up")
	err := ns.Do(func() error {
		k, err := Open()
		if err != nil {
			return err
		}
		defer k.Close()
		tr := NewTracker(k)
		if err := tr.Sysctl("net.ipv6.conf.all.forwarding", "1"); err != nil {
			return err
		}
		if err := tr.Link("dm0", 1520, false); err != nil {
			return err
		}
		if err := tr.SyncAddrs([]Addr{
			{"dm0", netip.MustParsePrefix("2001:db8:ffff::1/64")},
			{"dm0", netip.MustParsePrefix("203.0.113.1/28")},
		}); err != nil {
			return err
		}
		want := append(routes4(1000, "dm0"),
			Route{Dst: netip.MustParsePrefix("2001:db8:64::/96"), Dev: "dm0"},
			Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Via: netip.MustParseAddr("203.0.113.14")},
			// An IPv4 route through an IPv6 next hop (RFC 8950).
			Route{Dst: netip.MustParsePrefix("198.18.0.0/15"), Via: netip.MustParseAddr("2001:db8:ffff::2"), Dev: "dm0"},
		)
		if _, _, err := tr.SyncRoutes(want); err != nil {
			return err
		}
		// Replace semantics: a second tracker (a restarted daemon) takes
		// the same routes over without an error.
		if err := NewTracker(k).Sysctl("net.ipv6.conf.all.forwarding", "1"); err != nil {
			return err
		}
		if err := k.ReplaceRoutes(want[:10]); err != nil {
			return fmt.Errorf("replacing existing routes: %w", err)
		}

		if n := countRoutes(t, ns, "-4", "proto 64 scope link"); n != 1000 {
			return fmt.Errorf("%d /32 routes in the kernel, want 1000", n)
		}
		out := ns.MustRun(t, "ip", "-6", "route", "show", "2001:db8:64::/96")
		if !strings.Contains(out, "dev dm0") {
			return fmt.Errorf("IPv6 prefix route missing: %q", out)
		}
		if out := ns.MustRun(t, "ip", "route", "show", "198.18.0.0/15"); !strings.Contains(out, "via inet6 2001:db8:ffff::2") {
			return fmt.Errorf("RFC 8950 route: %q", out)
		}
		if out := ns.MustRun(t, "ip", "-6", "addr", "show", "dev", "dm0"); !strings.Contains(out, "2001:db8:ffff::1/64") || !strings.Contains(out, "nodad") {
			return fmt.Errorf("IPv6 address without nodad: %q", out)
		}
		if out := ns.MustRun(t, "ip", "link", "show", "dm0"); !strings.Contains(out, "mtu 1520") || !strings.Contains(out, "UP") {
			return fmt.Errorf("link not set: %q", out)
		}

		// A reload that drops 500 routes and adds 500 others.
		next := append(routes4(1500, "dm0")[500:], want[1000:]...)
		if added, removed, err := tr.SyncRoutes(next); err != nil || added != 500 || removed != 500 {
			return fmt.Errorf("sync: +%d -%d %v", added, removed, err)
		}
		if n := countRoutes(t, ns, "-4", "proto 64 scope link"); n != 1000 {
			return fmt.Errorf("%d /32 routes after sync, want 1000", n)
		}
		if out := ns.MustRun(t, "ip", "route", "show", "198.51.100.0/32"); out != "" {
			return fmt.Errorf("stale route left: %q", out)
		}

		// Errors name the route.
		err = k.ReplaceRoutes([]Route{{Dst: netip.MustParsePrefix("192.0.2.128/25"), Via: netip.MustParseAddr("198.51.100.200")}})
		if err == nil || !strings.Contains(err.Error(), "192.0.2.128/25") {
			return fmt.Errorf("unreachable gateway: error %v should name the route", err)
		}

		if err := tr.Teardown(); err != nil {
			return err
		}
		if out := ns.MustRun(t, "ip", "route", "show", "dev", "dm0"); out != "" {
			return fmt.Errorf("routes left after teardown: %q", out)
		}
		if out := ns.MustRun(t, "ip", "addr", "show", "dev", "dm0"); strings.Contains(out, "203.0.113.1") || strings.Contains(out, "2001:db8:ffff::1/64") {
			return fmt.Errorf("addresses left after teardown: %q", out)
		}
		if out := ns.MustRun(t, "ip", "link", "show", "dm0"); !strings.Contains(out, "mtu 1500") {
			return fmt.Errorf("MTU not restored: %q", out)
		}
		if out := ns.MustRun(t, "sysctl", "-n", "net.ipv6.conf.all.forwarding"); strings.TrimSpace(out) != "0" {
			return fmt.Errorf("forwarding not restored: %q", out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLookAlikeRulesHideNoneOfOurs: rules of someone else's with our
// priority, input interface and table but another selector (from, fwmark),
// or our priority and another action (blackhole for unreachable), neither
// pass for ours in the dump (MissingRules finds ours gone) nor keep ours
// from being put back: the kernel's EEXIST, which ignores the source
// prefix the request leaves out, is not taken for ours being there. Put
// back twice, ours is there once.
func TestLookAlikeRulesHideNoneOfOurs(t *testing.T) {
	ns := netnstest.New(t, "dm-la")
	err := ns.Do(func() error {
		k, err := Open()
		if err != nil {
			return err
		}
		defer k.Close()
		tr := NewTracker(k)
		ours := []Rule{
			{Family: 4, Priority: 6460, Table: 646},
			{Family: 4, Priority: 6461, Iif: "lo", Table: 254},
			{Family: 4, Priority: 6463, Unreachable: true},
			{Family: 6, Priority: 6460, Table: 646},
		}
		if err := tr.SyncRules(ours); err != nil {
			return err
		}
		// Added after ours: `ip rule del` without selectors takes the
		// first rule that matches, ours.
		for _, la := range [][]string{
			{"-4", "pref", "6460", "from", "192.0.2.0/24", "lookup", "646"},
			{"-4", "pref", "6461", "fwmark", "1", "iif", "lo", "lookup", "main"},
			{"-4", "pref", "6463", "blackhole"},
			{"-6", "pref", "6460", "from", "2001:db8::/32", "lookup", "646"},
		} {
			ns.MustRun(t, append([]string{"ip", la[0], "rule", "add"}, la[1:]...)...)
		}
		if m, err := tr.MissingRules(); err != nil || len(m) != 0 {
			return fmt.Errorf("nothing of ours deleted yet: missing %v, %v", m, err)
		}
		for _, del := range [][]string{
			{"-4", "pref", "6460", "lookup", "646"},
			{"-4", "pref", "6461", "iif", "lo", "lookup", "main"},
			{"-4", "pref", "6463", "unreachable"},
			{"-6", "pref", "6460", "lookup", "646"},
		} {
			ns.MustRun(t, append([]string{"ip", del[0], "rule", "del"}, del[1:]...)...)
		}
		show := func() string {
			return ns.MustRun(t, "ip", "-4", "rule", "show") + ns.MustRun(t, "ip", "-6", "rule", "show")
		}
		want := []string{
			"6460:\tfrom 192.0.2.0/24 lookup 646", "6461:\tfrom all fwmark 0x1 iif lo lookup main",
			"6463:\tfrom all blackhole", "6460:\tfrom 2001:db8::/32 lookup 646",
		}
		for _, la := range want {
			if strings.Count(show(), la) != 1 {
				return fmt.Errorf("set-up: look-alike %q not there once:\n%s", la, show())
			}
		}
		m, err := tr.MissingRules()
		if err != nil || !slices.Equal(m, ours) {
			return fmt.Errorf("ours deleted, look-alikes there: missing %v, %v; want %v\n%s", m, err, ours, show())
		}
		for range 2 {
			if err := tr.RestoreRules(); err != nil {
				return err
			}
		}
		if m, err := tr.MissingRules(); err != nil || len(m) != 0 {
			return fmt.Errorf("after RestoreRules: missing %v, %v\n%s", m, err, show())
		}
		for _, fr := range [][2]string{
			{"-4", "6460:\tfrom all lookup 646"}, {"-4", "6461:\tfrom all iif lo lookup main"},
			{"-4", "6463:\tfrom all unreachable"}, {"-6", "6460:\tfrom all lookup 646"},
		} {
			if out := ns.MustRun(t, "ip", fr[0], "rule", "show"); strings.Count(out, fr[1]) != 1 {
				return fmt.Errorf("ip %s rule: %q not there once after two restores:\n%s", fr[0], fr[1], out)
			}
		}
		// Ours now come after the look-alikes, and a delete request
		// that names priority, action, table and input interface
		// matches the first of them (rule_find leaves out what the
		// request does not set): only the protocol tells ours apart.
		if err := tr.Teardown(); err != nil {
			return err
		}
		for _, la := range want {
			if strings.Count(show(), la) != 1 {
				return fmt.Errorf("after Teardown: look-alike %q not there once:\n%s", la, show())
			}
		}
		for _, fr := range [][2]string{
			{"-4", "6460:\tfrom all lookup 646"}, {"-4", "6461:\tfrom all iif lo lookup main"},
			{"-4", "6463:\tfrom all unreachable"}, {"-6", "6460:\tfrom all lookup 646"},
		} {
			if out := ns.MustRun(t, "ip", fr[0], "rule", "show"); strings.Contains(out, fr[1]) {
				return fmt.Errorf("after Teardown: ip %s rule still has %q:\n%s", fr[0], fr[1], out)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRulesOfAnEarlierRunAreTakenOver: rules identical to ours that the
// kernel has already, without our protocol (left by a map646 older than
// the protocol that crashed, or added by hand, of protocol 0 or static),
// are taken over by replacing them: afterwards each of ours is there
// once, with protocol 64, and at Teardown it goes. One of our protocol
// (a crashed map646's) is taken as it is.
func TestRulesOfAnEarlierRunAreTakenOver(t *testing.T) {
	ns := netnstest.New(t, "dm-to")
	ns.MustRun(t, "ip", "-4", "rule", "add", "pref", "6463", "unreachable")
	ns.MustRun(t, "ip", "-6", "rule", "add", "pref", "6460", "lookup", "646", "proto", "static")
	ns.MustRun(t, "ip", "-6", "rule", "add", "pref", "6463", "unreachable", "proto", "64")
	err := ns.Do(func() error {
		k, err := Open()
		if err != nil {
			return err
		}
		defer k.Close()
		tr := NewTracker(k)
		if err := tr.SyncRules([]Rule{
			{Family: 4, Priority: 6463, Unreachable: true},
			{Family: 6, Priority: 6460, Table: 646},
			{Family: 4, Priority: 6460, Table: 646},
			{Family: 6, Priority: 6463, Unreachable: true},
		}); err != nil {
			return err
		}
		for _, c := range [][2]string{
			{"-4", "6463:\tfrom all unreachable proto 64\n"},
			{"-6", "6460:\tfrom all lookup 646 proto 64\n"},
			{"-4", "6460:\tfrom all lookup 646 proto 64\n"},
			{"-6", "6463:\tfrom all unreachable proto 64\n"},
		} {
			if out := ns.MustRun(t, "ip", c[0], "rule", "show"); strings.Count(out, "\n"+c[1]) != 1 || strings.Count(out, c[1][:6]) != 1 {
				return fmt.Errorf("ip %s rule: want %q alone at its priority:\n%s", c[0], c[1], out)
			}
		}
		if err := tr.Teardown(); err != nil {
			return err
		}
		for _, fam := range []string{"-4", "-6"} {
			if out := ns.MustRun(t, "ip", fam, "rule", "show"); strings.Contains(out, "646") {
				return fmt.Errorf("ip %s rule after Teardown:\n%s", fam, out)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTakeOverBehindALookAlike: a look-alike of someone else's ahead of
// an identical rule to take over, at the same priority ("6460: from
// 192.0.2.0/24 lookup 646", then "6460: lookup 646"), is what a delete
// request without the identical rule's protocol removes (the kernel
// deletes the first rule whose fields the request names match). Deleted
// at Teardown without a protocol, as taken-over rules were, the
// look-alike went and the taken-over rule stayed. Now one of protocol
// static is replaced at start, by its protocol; one of protocol 0,
// which no request can single out there, is left as it is, never
// deleted; and at Teardown ours goes and the look-alikes stay.
func TestTakeOverBehindALookAlike(t *testing.T) {
	ns := netnstest.New(t, "dm-tl")
	for _, r := range [][]string{
		{"-4", "pref", "6460", "from", "192.0.2.0/24", "lookup", "646"},
		{"-4", "pref", "6460", "lookup", "646", "proto", "static"},
		// ip rule add asks for NLM_F_EXCL, and the kernel's
		// rule_exists would take "lookup 646" for the look-alike if
		// both were of protocol 0.
		{"-6", "pref", "6460", "from", "2001:db8::/32", "lookup", "646", "proto", "boot"},
		{"-6", "pref", "6460", "lookup", "646"},
	} {
		ns.MustRun(t, append([]string{"ip", r[0], "rule", "add"}, r[1:]...)...)
	}
	rules := func(fam string) string {
		var at []string
		for _, l := range strings.Split(ns.MustRun(t, "ip", fam, "rule", "show"), "\n") {
			if strings.HasPrefix(l, "6460:") {
				at = append(at, l)
			}
		}
		return strings.Join(at, "\n")
	}
	err := ns.Do(func() error {
		k, err := Open()
		if err != nil {
			return err
		}
		defer k.Close()
		tr := NewTracker(k)
		if err := tr.SyncRules([]Rule{{Family: 4, Priority: 6460, Table: 646}, {Family: 6, Priority: 6460, Table: 646}}); err != nil {
			return err
		}
		for _, c := range [][2]string{
			{"-4", "6460:\tfrom 192.0.2.0/24 lookup 646\n6460:\tfrom all lookup 646 proto 64"},
			{"-6", "6460:\tfrom 2001:db8::/32 lookup 646 proto boot\n6460:\tfrom all lookup 646\n6460:\tfrom all lookup 646 proto 64"},
		} {
			if got := rules(c[0]); got != c[1] {
				return fmt.Errorf("ip %s rule at 6460 after start:\n%s\nwant\n%s", c[0], got, c[1])
			}
		}
		if err := tr.Teardown(); err != nil {
			return err
		}
		for _, c := range [][2]string{
			{"-4", "6460:\tfrom 192.0.2.0/24 lookup 646"},
			{"-6", "6460:\tfrom 2001:db8::/32 lookup 646 proto boot\n6460:\tfrom all lookup 646"},
		} {
			if got := rules(c[0]); got != c[1] {
				return fmt.Errorf("ip %s rule at 6460 after Teardown:\n%s\nwant\n%s", c[0], got, c[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOursDeletedBesideAnIdenticalRule: an identical rule of another
// protocol beside ours ("6460: lookup 646 proto static") hid ours
// deleted from the health poll's dump: a deletion whose event was lost
// (the watcher's socket overflowed) was never put back. Now the poll
// finds ours missing, and RestoreRules puts it back, taking the other
// over as at start: afterwards ours is there once, with protocol 64.
func TestOursDeletedBesideAnIdenticalRule(t *testing.T) {
	ns := netnstest.New(t, "dm-ib")
	err := ns.Do(func() error {
		k, err := Open()
		if err != nil {
			return err
		}
		defer k.Close()
		tr := NewTracker(k)
		ours := []Rule{
			{Family: 4, Priority: 6460, Table: 646},
			{Family: 4, Priority: 6463, Unreachable: true},
			{Family: 6, Priority: 6461, Iif: "lo", Table: 254},
		}
		if err := tr.SyncRules(ours); err != nil {
			return err
		}
		for _, c := range [][]string{
			{"-4", "pref", "6460", "lookup", "646"},
			{"-4", "pref", "6463", "unreachable"},
			{"-6", "pref", "6461", "iif", "lo", "lookup", "main"},
		} {
			ns.MustRun(t, append(append([]string{"ip", c[0], "rule", "add"}, c[1:]...), "proto", "static")...)
			ns.MustRun(t, append(append([]string{"ip", c[0], "rule", "del"}, c[1:]...), "proto", "64")...)
		}
		m, err := tr.MissingRules()
		if err != nil || !slices.Equal(m, ours) {
			return fmt.Errorf("ours deleted beside identical rules of proto static: missing %v, %v; want %v", m, err, ours)
		}
		if err := tr.RestoreRules(); err != nil {
			return err
		}
		if m, err := tr.MissingRules(); err != nil || len(m) != 0 {
			return fmt.Errorf("after RestoreRules: missing %v, %v", m, err)
		}
		for _, c := range [][2]string{
			{"-4", "6460:\tfrom all lookup 646 proto 64\n"},
			{"-4", "6463:\tfrom all unreachable proto 64\n"},
			{"-6", "6461:\tfrom all iif lo lookup main proto 64\n"},
		} {
			if out := ns.MustRun(t, "ip", c[0], "rule", "show"); strings.Count(out, c[1][:6]) != 1 || !strings.Contains(out, c[1]) {
				return fmt.Errorf("after RestoreRules, ip %s rule: want %q alone at its priority:\n%s", c[0], c[1], out)
			}
		}
		return tr.Teardown()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkReplaceRoutes installs b.N /32 routes in batches (one op = one
// route) and removes them again outside the timer.
func BenchmarkReplaceRoutes(b *testing.B) { benchReplaceRoutes(b, false) }

// BenchmarkReplaceRoutesWatched is BenchmarkReplaceRoutes while a Watcher
// (as the daemon runs one) listens: what its subscription costs the
// kernel per installed route, whose notification its filter drops.
func BenchmarkReplaceRoutesWatched(b *testing.B) { benchReplaceRoutes(b, true) }

func benchReplaceRoutes(b *testing.B, watched bool) {
	ns := netnstest.New(b, "dm-bn")
	ns.MustRun(b, "ip", "link", "add", "dm0", "type", "veth", "peer", "name", "dm1")
	ns.MustRun(b, "ip", "link", "set", "dm0", "up")
	err := ns.Do(func() error {
		k, err := Open()
		if err != nil {
			return err
		}
		defer k.Close()
		if watched {
			w, err := Watch(0, 0)
			if err != nil {
				return err
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					if _, err := w.Read(nil); err != nil {
						return
					}
				}
			}()
			defer func() { w.Close(); <-done }()
		}
		rs := routes4(b.N, "dm0")
		b.ResetTimer()
		start := time.Now()
		if err := k.ReplaceRoutes(rs); err != nil {
			return err
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "routes/s")
		return k.DelRoutes(rs)
	})
	if err != nil {
		b.Fatal(err)
	}
}

// TestFeaturesAgainstTheKernel switches GRO and UDP GRO forwarding on a
// veth through SIOCETHTOOL and checks them with ethtool(8), the way an
// operator would, and that the tracker's Teardown puts the veth's
// defaults (both off) back.
func TestFeaturesAgainstTheKernel(t *testing.T) {
	ns := netnstest.New(t, "dm-ft")
	ns.MustRun(t, "ip", "link", "add", "dm0", "type", "veth", "peer", "name", "dm1")
	ethtoolK := func() map[string]string {
		res := map[string]string{}
		for _, l := range strings.Split(ns.MustRun(t, "ethtool", "-k", "dm0"), "\n") {
			name, val, _ := strings.Cut(strings.TrimSpace(l), ":")
			if f := strings.Fields(val); len(f) > 0 {
				res[name] = f[0]
			}
		}
		return res
	}
	if got := ethtoolK(); got["generic-receive-offload"] != "off" || got[FeatureUDPGROForwarding] != "off" {
		t.Fatalf("a new veth has gro %s, udp gro forwarding %s; the test expects both off", got["generic-receive-offload"], got[FeatureUDPGROForwarding])
	}
	var read map[string]bool
	err := ns.Do(func() error {
		k, err := Open()
		if err != nil {
			return err
		}
		defer k.Close()
		tr := NewTracker(k)
		if err := tr.Features("dm0", map[string]bool{FeatureGRO: true, FeatureUDPGROForwarding: true}); err != nil {
			return err
		}
		if read, err = k.Features("dm0", []string{FeatureGRO, FeatureUDPGROForwarding, "rx-warp-drive"}); err != nil {
			return err
		}
		got := ethtoolK()
		if got["generic-receive-offload"] != "on" || got[FeatureUDPGROForwarding] != "on" {
			return fmt.Errorf("after SetFeatures ethtool -k says gro %s, udp gro forwarding %s", got["generic-receive-offload"], got[FeatureUDPGROForwarding])
		}
		if err := k.SetFeatures("dm0", map[string]bool{"rx-warp-drive": true}); err == nil || !strings.Contains(err.Error(), "rx-warp-drive") {
			return fmt.Errorf("an unknown feature: err %v, want one naming it", err)
		}
		if err := k.SetFeatures("dm9", map[string]bool{FeatureGRO: true}); err == nil {
			return fmt.Errorf("a missing link gave no error")
		}
		return tr.Teardown()
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{FeatureGRO: true, FeatureUDPGROForwarding: true}; !maps.Equal(read, want) {
		t.Errorf("Features read %v, want %v (and no unknown name)", read, want)
	}
	if got := ethtoolK(); got["generic-receive-offload"] != "off" || got[FeatureUDPGROForwarding] != "off" {
		t.Errorf("after Teardown ethtool -k says gro %s, udp gro forwarding %s, want both off again", got["generic-receive-offload"], got[FeatureUDPGROForwarding])
	}
}

// TestNetlinkSysctlKeys: a dotted key is a path with dots for slashes; a
// slashed one keeps the dots of an interface's name (a VLAN, eth0.100),
// which the dotted form cannot say.
func TestNetlinkSysctlKeys(t *testing.T) {
	for _, c := range []struct{ key, path string }{
		{"net.ipv4.ip_forward", "net/ipv4/ip_forward"},
		{"net/ipv4/conf/eth0.100/forwarding", "net/ipv4/conf/eth0.100/forwarding"},
	} {
		dir := t.TempDir()
		p := filepath.Join(dir, c.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		n := &Netlink{sysfs: dir}
		old, err := n.Sysctl(c.key, "1")
		b, _ := os.ReadFile(p)
		if err != nil || old != "0" || string(b) != "1" {
			t.Errorf("Sysctl(%s, 1) = %q, %v; %s holds %q", c.key, old, err, c.path, b)
		}
	}
}

// TestEvictAllAheadAfterLostEvents: after lost events nothing says which
// routes were put ahead of ours meanwhile, and an IPv4 route of ours
// behind another at its place cannot be replaced: Restore failed with
// EEXIST, for ever. EvictAllAhead finds them with one dump per table
// and deletes them (IPv4 prepended in the translator's table and in
// main; IPv6 at a lower metric in the translator's table), and only
// them: routes behind ours, at other destinations, and IPv6 at a lower
// metric in main stay. Restore works again.
func TestEvictAllAheadAfterLostEvents(t *testing.T) {
	ns := netnstest.New(t, "dm-ea")
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
		ours := []Route{
			{Dst: netip.MustParsePrefix("198.51.100.7/32"), Dev: "dm0", Table: 646},
			{Dst: netip.MustParsePrefix("2001:db8:64::/96"), Dev: "dm0", Table: 646},
			{Dst: netip.MustParsePrefix("192.0.2.0/24"), Dev: "dm0"},
			{Dst: netip.MustParsePrefix("2001:db8:66::/64"), Dev: "dm0"},
		}
		if _, _, err := tr.SyncRoutes(ours); err != nil {
			return err
		}
		for _, c := range [][]string{
			{"ip", "route", "append", "198.51.100.7/32", "dev", "dm1", "table", "646"},
			{"ip", "route", "prepend", "blackhole", "198.51.100.7/32", "table", "646"},
			{"ip", "route", "prepend", "blackhole", "198.51.100.8/32", "table", "646"},
			{"ip", "route", "prepend", "unreachable", "192.0.2.0/24"},
			{"ip", "-6", "route", "add", "blackhole", "2001:db8:64::/96", "table", "646", "metric", "100"},
			{"ip", "-6", "route", "add", "2001:db8:64::/96", "dev", "dm1", "table", "646", "metric", "2048"},
			{"ip", "-6", "route", "add", "blackhole", "2001:db8:66::/64", "metric", "100"},
		} {
			ns.MustRun(t, c...)
		}
		if err := tr.Restore(); err == nil {
			return fmt.Errorf("Restore with a route ahead of ours at its place: no error; the test expects the kernel's EEXIST")
		}
		evicted, err := tr.EvictAllAhead(646)
		if err != nil {
			return err
		}
		if len(evicted) != 3 {
			return fmt.Errorf("EvictAllAhead deleted %v; want the three routes ahead of ours", evicted)
		}
		if err := tr.Restore(); err != nil {
			return fmt.Errorf("Restore after EvictAllAhead: %w", err)
		}
		for _, c := range []struct{ fam, table, want string }{
			{"-4", "646", "198.51.100.7 dev dm0 proto 64 scope link \n198.51.100.7 dev dm1 scope link \nblackhole 198.51.100.8 \n"},
			{"-6", "646", "2001:db8:64::/96 dev dm0 proto 64 metric 1024 pref medium\n2001:db8:64::/96 dev dm1 metric 2048 pref medium\n"},
			{"-4", "main", "192.0.2.0/24 dev dm0 proto 64 scope link \n"},
			{"-6", "main", "blackhole 2001:db8:66::/64 dev lo metric 100 pref medium\n2001:db8:66::/64 dev dm0 proto 64 metric 1024 pref medium\n"},
		} {
			var keep []string
			for _, l := range strings.SplitAfter(ns.MustRun(t, "ip", c.fam, "route", "show", "table", c.table), "\n") {
				if l != "" && !strings.Contains(l, "fe80::") {
					keep = append(keep, l)
				}
			}
			if got := strings.Join(keep, ""); got != c.want {
				return fmt.Errorf("ip %s route show table %s:\n%s\nwant\n%s", c.fam, c.table, got, c.want)
			}
		}
		return tr.Teardown()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestEvictAllAheadLeavesTheOnlyRoute (review H8): a route of ours
// through a gateway is flushed with the gateway's address, without an
// event, and cannot be put back while the gateway is not on-link; the
// operator routes its destination another way, at the place of ours.
// EvictAllAhead took that route for one ahead of ours and deleted it,
// on each retry of the failing restore: the destination had no route at
// all. Only a route with one of ours behind it in the dump is ahead of
// ours; a look-alike (ours but for its protocol) ahead of ours is not
// ours, and goes.
func TestEvictAllAheadLeavesTheOnlyRoute(t *testing.T) {
	ns := netnstest.New(t, "dm-eo")
	ns.MustRun(t, "ip", "link", "add", "dm0", "type", "veth", "peer", "name", "dm1")
	ns.MustRun(t, "ip", "link", "set", "dm1", "up")
	ns.MustRun(t, "ip", "link", "set", "dm0", "up")
	ns.MustRun(t, "ip", "addr", "add", "198.51.100.2/24", "dev", "dm0")
	err := ns.Do(func() error {
		k, err := Open()
		if err != nil {
			return err
		}
		defer k.Close()
		tr := NewTracker(k)
		ours := []Route{
			{Dst: netip.MustParsePrefix("203.0.113.0/24"), Via: netip.MustParseAddr("198.51.100.1"), Dev: "dm0"},
			{Dst: netip.MustParsePrefix("198.51.100.7/32"), Dev: "dm1", Table: 646},
		}
		if _, _, err := tr.SyncRoutes(ours); err != nil {
			return err
		}
		ns.MustRun(t, "ip", "addr", "del", "198.51.100.2/24", "dev", "dm0")
		ns.MustRun(t, "ip", "route", "add", "203.0.113.0/24", "dev", "dm1")
		ns.MustRun(t, "ip", "route", "prepend", "198.51.100.7/32", "dev", "dm1", "table", "646", "proto", "boot")
		for round := range 2 { // the restore is retried
			evicted, err := tr.EvictAllAhead(646)
			if err != nil {
				return err
			}
			if err := tr.Restore(); err == nil {
				return fmt.Errorf("round %d: Restore with the gateway of a route not on-link: no error; the test expects the kernel's ENETUNREACH", round)
			}
			if round == 0 && (len(evicted) != 1 || evicted[0].Dst != ours[1].Dst || evicted[0].Protocol != unix.RTPROT_BOOT) {
				return fmt.Errorf("round %d: EvictAllAhead deleted %v; want the look-alike of proto boot ahead of ours", round, evicted)
			}
			if round == 1 && len(evicted) != 0 {
				return fmt.Errorf("round %d: EvictAllAhead deleted %v; want nothing", round, evicted)
			}
			for _, c := range [][2]string{
				{"main", "203.0.113.0/24 dev dm1 scope link \n"},
				{"646", "198.51.100.7 dev dm1 proto 64 scope link \n"},
			} {
				if got := ns.MustRun(t, "ip", "-4", "route", "show", "table", c[0]); got != c[1] {
					return fmt.Errorf("round %d: ip route show table %s:\n%s\nwant\n%s", round, c[0], got, c[1])
				}
			}
		}
		// IPv6: a route at a lower metric than ours in table 646 is
		// ahead of ours only while ours is there behind it.
		v6 := Route{Dst: netip.MustParsePrefix("2001:db8:64::/96"), Dev: "dm1", Table: 646}
		if _, _, err := tr.SyncRoutes(append(ours, v6)); err != nil && !strings.Contains(err.Error(), "unreachable") {
			return err
		}
		ns.MustRun(t, "ip", "-6", "route", "del", "2001:db8:64::/96", "dev", "dm1", "table", "646")
		ns.MustRun(t, "ip", "-6", "route", "add", "blackhole", "2001:db8:64::/96", "table", "646", "metric", "100")
		if evicted, err := tr.EvictAllAhead(646); err != nil || len(evicted) != 0 {
			return fmt.Errorf("ipv6, ours gone: EvictAllAhead deleted %v (%v); want nothing", evicted, err)
		}
		if err := tr.Reinstall([]Route{v6}); err != nil {
			return err
		}
		if evicted, err := tr.EvictAllAhead(646); err != nil || len(evicted) != 1 || evicted[0].Metric != 100 {
			return fmt.Errorf("ipv6, ours back: EvictAllAhead deleted %v (%v); want the blackhole at metric 100", evicted, err)
		}
		var got []string
		for _, l := range strings.SplitAfter(ns.MustRun(t, "ip", "-6", "route", "show", "table", "646"), "\n") {
			if strings.Contains(l, "2001:db8:64::/96") {
				got = append(got, l)
			}
		}
		if want := "2001:db8:64::/96 dev dm1 proto 64 metric 1024 pref medium\n"; strings.Join(got, "") != want {
			return fmt.Errorf("ip -6 route show table 646:\n%s\nwant\n%s", strings.Join(got, ""), want)
		}
		return tr.Teardown()
	})
	if err != nil {
		t.Fatal(err)
	}
}
