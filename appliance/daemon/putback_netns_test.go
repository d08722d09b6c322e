package daemon

import (
	"strings"
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
