package daemon

import (
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDeletedPolicyRulesArePutBack: `ip rule del pref 6460` (and `ip
// rule flush`, as systemd-networkd's ManageForeignRoutingPolicyRules does)
// would black-hole every IPv4->IPv6 packet while the daemon stayed
// healthy; the daemon puts its rules back and traffic flows again.
func TestDeletedPolicyRulesArePutBack(t *testing.T) {
	tp := newTopo(t)
	cfg := tp.configExtra(t, "map646.hcl", "")
	d := tp.startDaemon(t, cfg)
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("ping before: %d/%d\n%s", recv, sent, d.out)
	}
	hasRule := func() bool {
		return strings.Contains(tp.x.MustRun(t, "ip", "-4", "rule", "show", "pref", "6460"), "6460:")
	}
	for _, del := range [][]string{{"ip", "rule", "del", "pref", "6460"}, {"ip", "rule", "flush"}} {
		tp.x.MustRun(t, del...)
		took := waitUntil(t, d, "IPv4 rule 6460 back after "+strings.Join(del, " "), 3*DefaultHealthInterval, hasRule)
		t.Logf("%s: rule back after %v", strings.Join(del, " "), took)
		if sent, recv := ping(t, tp.cli, "-c", "3", "-i", "0.2", "-W", "1", "198.51.100.10"); recv == 0 {
			t.Errorf("after %s: ping %d/%d, healthy=%v\n%s", strings.Join(del, " "), recv, sent, healthyNow(d), tp.x.MustRun(t, "ip", "rule", "show"))
		}
	}
	if !healthyNow(d) {
		t.Errorf("unhealthy after the rules were put back\n%s", d.out)
	}
}

// TestDeletedInterfaceAddressIsPutBack: an interface block's address (the
// servers' next hop) deleted from outside comes back, and traffic flows.
func TestDeletedInterfaceAddressIsPutBack(t *testing.T) {
	tp := newTopo(t)
	tp.x.MustRun(t, "ip", "addr", "del", "2001:db8:6::1/64", "dev", "dmx6")
	cfg := tp.configExtra(t, "map646.hcl", "interface \"dmx6\" {\n  addresses = [\"2001:db8:6::1/64\"]\n}\n")
	d := tp.startDaemon(t, cfg)
	waitUntil(t, d, "healthy", 5*time.Second, func() bool { return healthyNow(d) })
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("ping before: %d/%d\n%s", recv, sent, d.out)
	}
	tp.x.MustRun(t, "ip", "addr", "del", "2001:db8:6::1/64", "dev", "dmx6")
	tp.srv.MustRun(t, "ip", "-6", "neigh", "flush", "dev", "dms0")
	took := waitUntil(t, d, "the address back", 3*DefaultHealthInterval, func() bool {
		return strings.Contains(tp.x.MustRun(t, "ip", "-6", "addr", "show", "dev", "dmx6"), "2001:db8:6::1/64")
	})
	t.Logf("address back after %v", took)
	if sent, recv := ping(t, tp.cli, "-c", "3", "-i", "0.2", "-W", "1", "198.51.100.10"); recv == 0 {
		t.Errorf("after the address came back: ping %d/%d, healthy=%v\n%s", recv, sent, healthyNow(d), d.out)
	}
}

// TestOthersLookAlikeRulesAreLeftAlone: rules of someone else's with the
// priority and table of ours but another selector (from, fwmark) come and
// go without the daemon taking them for ours (no restore logged); ours,
// deleted while they stay, comes back: the kernel's EEXIST, which the
// "from" look-alike causes (rule_exists ignores a source prefix the
// request leaves out), is not taken for ours being there. Traffic flows.
func TestOthersLookAlikeRulesAreLeftAlone(t *testing.T) {
	tp := newTopo(t)
	cfg := tp.configExtra(t, "map646.hcl", "")
	d := tp.startDaemon(t, cfg)
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("ping before: %d/%d\n%s", recv, sent, d.out)
	}
	lookAlikes := [][]string{
		{"pref", "6460", "from", "192.0.2.0/24", "lookup", "646"},
		{"pref", "6460", "fwmark", "1", "lookup", "646"},
	}
	rule := func(op string, args ...string) {
		tp.x.MustRun(t, append([]string{"ip", "-4", "rule", op}, args...)...)
	}
	for _, la := range lookAlikes {
		rule("add", la...)
	}
	for _, la := range lookAlikes {
		rule("del", la...)
	}
	time.Sleep(2 * DefaultHealthInterval) // the events, and two rule dumps
	if out := d.out.String(); strings.Contains(out, "policy rule") {
		t.Errorf("someone else's rules deleted, and the daemon restored its own:\n%s", out)
	}

	for _, la := range lookAlikes {
		rule("add", la...)
	}
	rule("del", "pref", "6460") // the first one at 6460: ours, added before them
	show := func() string { return tp.x.MustRun(t, "ip", "-4", "rule", "show", "pref", "6460") }
	took := waitUntil(t, d, "our rule 6460 back beside the look-alikes", 3*DefaultHealthInterval, func() bool {
		return strings.Contains(show(), "6460:\tfrom all lookup 646")
	})
	t.Logf("rule back after %v", took)
	for _, want := range []string{"6460:\tfrom 192.0.2.0/24 lookup 646", "6460:\tfrom all fwmark 0x1 lookup 646", "6460:\tfrom all lookup 646 proto 64"} {
		if n := strings.Count(show(), want+"\n"); n != 1 {
			t.Errorf("%q %d times, want once:\n%s", want, n, show())
		}
	}
	if out := d.out.String(); !strings.Contains(out, "a policy rule of the translator was deleted") {
		t.Errorf("the deletion of ours was not seen as such:\n%s", out)
	}
	if sent, recv := ping(t, tp.cli, "-c", "3", "-i", "0.2", "-W", "1", "198.51.100.10"); recv == 0 {
		t.Errorf("after our rule came back: ping %d/%d, healthy=%v\n%s", recv, sent, healthyNow(d), show())
	}
	// Ours now comes after the look-alikes; at stop it goes, and they
	// stay (a delete request without our protocol would take the first).
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.out)
	}
	want := []string{"6460:\tfrom 192.0.2.0/24 lookup 646", "6460:\tfrom all fwmark 0x1 lookup 646"}
	if got := extraRules(t, tp.x, "-4"); !slices.Equal(got, want) {
		t.Errorf("ip -4 rules after stop:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestOthersIdenticalRuleDeletedIsNotOurs: the kernel keeps a rule
// identical to ours but of another protocol beside ours ("6460: lookup
// 646 proto boot" next to "proto 64"); deleting it is not a deletion of
// ours (review H11): no warning, no repair counted.
func TestOthersIdenticalRuleDeletedIsNotOurs(t *testing.T) {
	tp := newTopo(t)
	d := tp.startDaemon(t, tp.configExtra(t, "map646.hcl", ""))
	waitUntil(t, d, "healthy", 5*time.Second, func() bool { return healthyNow(d) })
	tp.x.MustRun(t, "ip", "-4", "rule", "add", "pref", "6460", "lookup", "646", "proto", "boot")
	tp.x.MustRun(t, "ip", "-4", "rule", "del", "pref", "6460", "lookup", "646", "proto", "boot")
	time.Sleep(2 * DefaultHealthInterval)
	if out := d.out.String(); strings.Contains(out, "a policy rule of the translator was deleted") {
		t.Errorf("someone else's rule deleted, taken for ours:\n%s", out)
	}
	if n := strings.Count(tp.x.MustRun(t, "ip", "-4", "rule", "show", "pref", "6460"), "lookup 646 proto 64\n"); n != 1 {
		t.Errorf("our rule %d times, want once", n)
	}
}

// TestRuleFoundAtStartIsTakenOver: a rule identical to ours that the
// kernel had at start, of another protocol ("proto boot": an operator's,
// or a crashed map646's older than the protocol), is replaced by ours,
// with protocol 64, so that the health poll's dump finds ours by its
// protocol and the stop deletes ours and no look-alike; at stop it goes.
func TestRuleFoundAtStartIsTakenOver(t *testing.T) {
	tp := newTopo(t)
	tp.x.MustRun(t, "ip", "-4", "rule", "add", "pref", "6460", "lookup", "646", "proto", "boot")
	d := tp.startDaemon(t, tp.configExtra(t, "map646.hcl", ""))
	waitUntil(t, d, "healthy", 5*time.Second, func() bool { return healthyNow(d) })
	show := func() string { return tp.x.MustRun(t, "ip", "-4", "rule", "show", "pref", "6460") }
	if got := show(); strings.Count(got, "6460:") != 1 || !strings.Contains(got, "lookup 646 proto 64") {
		t.Fatalf("the rule found at start not replaced by ours:\n%s", got)
	}
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Errorf("ping: %d/%d\n%s", recv, sent, d.out)
	}
	if out := d.out.String(); strings.Contains(out, "a policy rule of the translator was deleted") {
		t.Errorf("the rule taken over, deleted at start, taken for ours:\n%s", out)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.out)
	}
	if got := show(); got != "" {
		t.Errorf("ip -4 rule at 6460 after stop:\n%s", got)
	}
}

// TestOthersRouteReplacedAtAnotherMetric: a route of someone else's to
// one of our destinations in our table but at another metric (ours are
// at metric 0 for IPv4) is a route of its own, not ours: replacing it is
// not a replacement of ours (review H11).
func TestOthersRouteReplacedAtAnotherMetric(t *testing.T) {
	tp := newTopo(t)
	d := tp.startDaemon(t, tp.configExtra(t, "map646.hcl", ""))
	waitUntil(t, d, "healthy", 5*time.Second, func() bool { return healthyNow(d) })
	tp.x.MustRun(t, "ip", "-4", "route", "add", "198.51.100.10/32", "dev", "dmx4", "table", "646", "metric", "5")
	tp.x.MustRun(t, "ip", "-4", "route", "replace", "198.51.100.10/32", "dev", "dmx6", "table", "646", "metric", "5")
	time.Sleep(2 * DefaultHealthInterval)
	tp.x.MustRun(t, "ip", "-4", "route", "del", "198.51.100.10/32", "table", "646", "metric", "5")
	if out := d.out.String(); strings.Contains(out, "was replaced") || strings.Contains(out, "route of the translator was deleted") {
		t.Errorf("someone else's route at another metric replaced, taken for ours:\n%s", out)
	}
}

// TestIdenticalRouteReplacedThenDeletedIsPutBack: `ip route replace` of
// a route of the translator with one that looks the same (its device,
// table, metric) but is of iproute2's default protocol (boot) is someone
// else's route: ours is put back (protocol 64) at once, so that deleting
// it later (`ip route del`, `ip route flush table 646`) is seen and
// repaired. Review H10: it was taken for ours as it was, and its
// deletion (proto boot, which the watcher ignores) left the route
// missing while the daemon said it was healthy and BGP announced.
func TestIdenticalRouteReplacedThenDeletedIsPutBack(t *testing.T) {
	tp := newTopo(t)
	d := tp.startDaemon(t, tp.configExtra(t, "map646.hcl", ""))
	waitUntil(t, d, "healthy", 5*time.Second, func() bool { return healthyNow(d) })
	show := func() string { return tp.x.MustRun(t, "ip", "route", "show", "198.51.100.10/32", "table", "646") }
	if got := show(); !strings.Contains(got, "dev dmtun proto 64") {
		t.Fatalf("ours before: %q", got)
	}
	tp.x.MustRun(t, "ip", "route", "replace", "198.51.100.10/32", "dev", "dmtun", "table", "646")
	waitUntil(t, d, "ours (proto 64) back in place of the look-alike", 5*time.Second, func() bool {
		return strings.Contains(show(), "dev dmtun proto 64")
	})
	tp.x.MustRun(t, "ip", "route", "del", "198.51.100.10/32", "table", "646")
	waitUntil(t, d, "ours back after the deletion", 5*time.Second, func() bool {
		return strings.Contains(show(), "dev dmtun proto 64")
	})
	if n := statsRepairs(d, "route"); n != 2 {
		t.Errorf("%d route repairs counted; want 2 (the replacement, the deletion)", n)
	}
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Errorf("ping after the repairs: %d/%d\n%s", recv, sent, d.out)
	}
	if !healthyNow(d) {
		t.Errorf("unhealthy after the repairs\n%s", d.out)
	}
}

// TestRoutesPutAheadAreDeleted: a route put ahead of one of the
// translator's in its table without replacing it (`ip route prepend` of
// a blackhole at the /32 of a mapping; an IPv6 blackhole at a lower
// metric than the /96 of the prefix) came without a deletion or a
// replacement: ours stayed, behind it, and every packet went into the
// black hole while the daemon said it was healthy. Now the route ahead
// is deleted, counted as a route repair, and traffic flows again.
func TestRoutesPutAheadAreDeleted(t *testing.T) {
	tp := newTopo(t)
	d := tp.startDaemon(t, tp.configExtra(t, "map646.hcl", ""))
	waitUntil(t, d, "healthy", 5*time.Second, func() bool { return healthyNow(d) })
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("ping before: %d/%d\n%s", recv, sent, d.out)
	}
	for _, c := range []struct{ add, show []string }{
		{[]string{"ip", "route", "prepend", "blackhole", "198.51.100.10/32", "table", "646"},
			[]string{"ip", "route", "show", "198.51.100.10/32", "table", "646"}},
		{[]string{"ip", "-6", "route", "add", "blackhole", "2001:db8:64::/96", "table", "646", "metric", "100"},
			[]string{"ip", "-6", "route", "show", "2001:db8:64::/96", "table", "646"}},
	} {
		tp.x.MustRun(t, c.add...)
		took := waitUntil(t, d, strings.Join(c.add, " ")+" undone", 5*time.Second, func() bool {
			out := tp.x.MustRun(t, c.show...)
			return strings.Contains(out, "dev dmtun") && !strings.Contains(out, "blackhole")
		})
		t.Logf("%q undone in %v", strings.Join(c.add, " "), took.Round(time.Millisecond))
		if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
			t.Errorf("ping after %v was undone: %d/%d", c.add, recv, sent)
		}
	}
	if n := statsRepairs(d, "route"); n != 2 {
		t.Errorf("%d route repairs counted; want 2", n)
	}
	if !healthyNow(d) {
		t.Errorf("unhealthy after the routes ahead were deleted\n%s", d.out)
	}
	if !strings.Contains(d.out.String(), "a route was put ahead of one of the translator's") {
		t.Errorf("no warning logged:\n%s", d.out)
	}
}
