package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sysctlIn reads a sysctl in ns.
func (tp *topo) sysctl(t *testing.T, key string) string {
	t.Helper()
	return strings.TrimSpace(tp.x.MustRun(t, "sysctl", "-n", key))
}

// statsRepairs is the daemon's count of repairs of kind what.
func statsRepairs(d *daemonProc, what string) uint64 {
	st, err := QueryStats(d.sock)
	if err != nil {
		return 0
	}
	for _, c := range st.Repairs {
		if c.Kind == what {
			return c.Value
		}
	}
	return 0
}

// TestForwardingTurnedOffIsPutBack: in host mode the kernel forwards
// into and out of the tun. Forwarding turned off from outside (IPv4
// globally, IPv6 globally, IPv4 on the tun: `sysctl --system` with a
// hardening baseline) black-holed every packet while the daemon said it
// was healthy; now it is put back within a health poll or two and the
// traffic flows again.
func TestForwardingTurnedOffIsPutBack(t *testing.T) {
	tp := newTopo(t)
	d := tp.startDaemon(t, tp.config(t, "map646.hcl", nil))
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("ping before: %d/%d\n%s", recv, sent, d.out)
	}
	for i, key := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.dmtun.forwarding"} {
		tp.x.MustRun(t, "sysctl", "-qw", key+"=0")
		took := waitUntil(t, d, key+" back to 1", 5*time.Second, func() bool { return tp.sysctl(t, key) == "1" })
		t.Logf("%s=0 undone in %v", key, took.Round(time.Millisecond))
		if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
			t.Errorf("ping after %s was put back: %d/%d", key, recv, sent)
		}
		if n := statsRepairs(d, "sysctl"); n != uint64(i+1) {
			t.Errorf("%d sysctl repairs counted after %s; want %d", n, key, i+1)
		}
		if !healthyNow(d) {
			t.Errorf("unhealthy after %s was put back", key)
		}
	}
	if !strings.Contains(d.out.String(), "a forwarding sysctl was changed from outside") {
		t.Errorf("no warning logged:\n%s", d.out)
	}
}

// TestNICModeForwardingTurnedOnIsPutBack: NIC mode turns the kernel's
// forwarding off, because the kernel sees a copy of every frame off the
// NICs. Someone turning it back on (a container runtime) made the
// appliance route IPv6 natively between its NICs, past the mapping
// table, while healthy; now it is turned off again.
func TestNICModeForwardingTurnedOnIsPutBack(t *testing.T) {
	tp := newTopo(t)
	tp.x.MustRun(t, "ip", "addr", "add", "2001:db8:4::1/64", "dev", "dmx4", "nodad")
	tp.cli.MustRun(t, "ip", "addr", "add", "2001:db8:4::2/64", "dev", "dmc0", "nodad")
	tp.cli.MustRun(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:4::1")
	tp.srv.MustRun(t, "ip", "-6", "route", "add", "2001:db8:4::/64", "via", "2001:db8:6::1")
	p := filepath.Join(tp.dir, "nic.hcl")
	cfg := "translator {\n  prefix = \"2001:db8:64::/96\"\n  mapping {\n    ipv4 = \"198.51.100.10\"\n    ipv6 = \"2001:db8:6::10\"\n  }\n" +
		"  nic {\n    ipv4 = \"dmx4\"\n    ipv6 = \"dmx6\"\n    queues = 2\n  }\n}\n"
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := tp.startDaemon(t, p)
	tp.x.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", "net.ipv4.ip_forward=1")
	waitUntil(t, d, "forwarding off again", 5*time.Second, func() bool {
		return tp.sysctl(t, "net.ipv6.conf.all.forwarding") == "0" && tp.sysctl(t, "net.ipv4.ip_forward") == "0" &&
			tp.sysctl(t, "net.ipv4.conf.dmx4.forwarding") == "0"
	})
	if sent, recv := ping(t, tp.cli, "-6", "-c", "3", "-i", "0.3", "-W", "1", "2001:db8:6::10"); recv > 0 {
		t.Errorf("native IPv6 transit between the NICs: %d/%d", recv, sent)
	}
	if n := statsRepairs(d, "sysctl"); n < 2 {
		t.Errorf("%d sysctl repairs counted; want at least 2", n)
	}
	if !healthyNow(d) {
		t.Errorf("unhealthy once forwarding was off again\n%s", d.out)
	}
}

// TestReplacedRoutesArePutBack: `ip route replace` of the translator's
// routes in its table (a /32 of a mapping, the /96 of the prefix) with a
// blackhole came without a deletion and stayed, a black hole while
// healthy; now they are put back and the traffic flows again.
func TestReplacedRoutesArePutBack(t *testing.T) {
	tp := newTopo(t)
	d := tp.startDaemon(t, tp.config(t, "map646.hcl", nil))
	for _, c := range []struct{ replace, show []string }{
		{[]string{"ip", "route", "replace", "blackhole", "198.51.100.10/32", "table", "646", "proto", "static"},
			[]string{"ip", "route", "show", "198.51.100.10/32", "table", "646"}},
		{[]string{"ip", "-6", "route", "replace", "blackhole", "2001:db8:64::/96", "table", "646", "proto", "static"},
			[]string{"ip", "-6", "route", "show", "2001:db8:64::/96", "table", "646"}},
	} {
		tp.x.MustRun(t, c.replace...)
		took := waitUntil(t, d, strings.Join(c.replace, " ")+" undone", 5*time.Second, func() bool {
			out := tp.x.MustRun(t, c.show...)
			return strings.Contains(out, "dev dmtun") && !strings.Contains(out, "blackhole")
		})
		t.Logf("%q undone in %v", strings.Join(c.replace, " "), took.Round(time.Millisecond))
		if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
			t.Errorf("ping after %v was undone: %d/%d", c.replace, recv, sent)
		}
	}
	if n := statsRepairs(d, "route"); n != 2 {
		t.Errorf("%d route repairs counted; want 2", n)
	}
}
