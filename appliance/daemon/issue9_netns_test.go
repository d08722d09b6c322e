package daemon

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/map646/map646/internal/netnstest"
)

// The attacks of issue 9, replayed against the real daemon in the
// namespaces of newTopo.

// configExtra is tp.config plus HCL blocks after the translator block.
func (tp *topo) configExtra(t *testing.T, name, extra string) string {
	t.Helper()
	p := tp.config(t, name, nil)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, append(b, extra...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// httpGetIn fetches url's path from addr inside ns (HTTP/1.0 over a
// socket made in the namespace) and returns the status line and body.
func httpGetIn(t *testing.T, ns *netnstest.NS, addr, path string) string {
	t.Helper()
	var out string
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path); err != nil {
			return err
		}
		b, err := io.ReadAll(c)
		out = string(b)
		return err
	})
	if err != nil {
		t.Fatalf("GET %s%s in %s: %v", addr, path, ns.Name, err)
	}
	return out
}

func waitUntil(t *testing.T, d *daemonProc, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("not within %v: %s\n%s", limit, what, d.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func healthyNow(d *daemonProc) bool {
	st, err := QueryStats(d.sock)
	return err == nil && st.Healthy
}

// TestTunFlapAndDeletedRoutesAreRestored: `ip link set tun down` makes the
// daemon unhealthy (/healthz 503, map646_datapath_healthy 0) for as long as
// the tun stays down, since its routes cannot be restored through a down
// link; `up` brings the routes back within a bounded time and traffic
// flows again. A route deleted by hand comes back too.
func TestTunFlapAndDeletedRoutesAreRestored(t *testing.T) {
	tp := newTopo(t)
	cfg := tp.configExtra(t, "map646.hcl", "metrics {\n  listen = \"127.0.0.1:9646\"\n}\n")
	d := tp.startDaemon(t, cfg)
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("ping before: %d/%d\n%s", recv, sent, d.out)
	}

	tp.x.MustRun(t, "ip", "link", "set", "dmtun", "down")
	waitUntil(t, d, "unhealthy after the tun went down", 5*time.Second, func() bool { return !healthyNow(d) })
	time.Sleep(2 * DefaultHealthInterval) // still down: it must stay unhealthy
	if healthyNow(d) {
		t.Fatalf("healthy again while the tun is down\n%s", d.out)
	}
	if h := httpGetIn(t, tp.x, "127.0.0.1:9646", "/healthz"); !strings.HasPrefix(h, "HTTP/1.0 503") {
		t.Errorf("/healthz while the tun is down:\n%s", h)
	}
	if m := httpGetIn(t, tp.x, "127.0.0.1:9646", "/metrics"); !strings.Contains(m, "\nmap646_datapath_healthy 0\n") {
		t.Errorf("map646_datapath_healthy is not 0 while the tun is down")
	}

	tp.x.MustRun(t, "ip", "link", "set", "dmtun", "up")
	took := waitUntil(t, d, "routes back after the tun came up", 5*time.Second, func() bool {
		out := tp.x.MustRun(t, "ip", "route", "show", "table", "646")
		out6 := tp.x.MustRun(t, "ip", "-6", "route", "show", "table", "646")
		return strings.Contains(out, "198.51.100.10 dev dmtun") && strings.Contains(out6, "2001:db8:64::/96 dev dmtun") && healthyNow(d)
	})
	t.Logf("routes restored and healthy %v after the tun came back up", took.Round(time.Millisecond))
	if h := httpGetIn(t, tp.x, "127.0.0.1:9646", "/healthz"); !strings.HasPrefix(h, "HTTP/1.0 200") {
		t.Errorf("/healthz after the tun came back:\n%s", h)
	}
	if sent, recv := ping(t, tp.cli, "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("ping after the tun came back: %d/%d\n%s", recv, sent, d.out)
	}

	for _, del := range [][]string{
		{"ip", "route", "del", "198.51.100.10", "table", "646"},
		{"ip", "-6", "route", "del", "2001:db8:64::/96", "table", "646"},
	} {
		tp.x.MustRun(t, del...)
		took := waitUntil(t, d, "a deleted route restored: "+strings.Join(del, " "), 5*time.Second, func() bool {
			out, _ := tp.x.Output(slicesReplace(del, "del", "show")...)
			return strings.Contains(out, "dev dmtun")
		})
		t.Logf("%q undone in %v", strings.Join(del, " "), took.Round(time.Millisecond))
	}
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("ping after the routes were restored: %d/%d\n%s", recv, sent, d.out)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.out)
	}
	if l := tp.leftovers(t); l != "" {
		t.Errorf("left after SIGTERM:\n%s", l)
	}
}

func slicesReplace(s []string, old, new string) []string {
	r := make([]string, len(s))
	for i, v := range s {
		if v == old {
			v = new
		}
		r[i] = v
	}
	return r
}

// TestSecondRunInTheNamespaceIsRefused: a second daemon in the same
// namespace (its own control socket and even another tun name) exits
// non-zero at once, and the first keeps its routes and its traffic.
func TestSecondRunInTheNamespaceIsRefused(t *testing.T) {
	tp := newTopo(t)
	d := tp.startDaemon(t, tp.config(t, "map646.hcl", nil))
	routes := tp.x.MustRun(t, "ip", "route", "show", "table", "646")

	other := filepath.Join(tp.dir, "other.hcl")
	b, _ := os.ReadFile(filepath.Join(tp.dir, "map646.hcl"))
	if err := os.WriteFile(other, []byte(strings.Replace(string(b), "dmtun", "dmtun2", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", tp.x.Name, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MAP646_TEST_DAEMON="+other+","+filepath.Join(tp.dir, "ctl2.sock"))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err == nil || !strings.Contains(string(out), "another map646 (pid ") {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	t.Logf("second run refused in %v: %s", took.Round(time.Millisecond), strings.TrimSpace(string(out)))
	if took > 5*time.Second {
		t.Errorf("the second run took %v to give up", took)
	}
	if now := tp.x.MustRun(t, "ip", "route", "show", "table", "646"); now != routes {
		t.Errorf("routes changed by the refused run:\n%s\nwere\n%s", now, routes)
	}
	if out, err := tp.x.Output("ip", "link", "show", "dmtun2"); err == nil {
		t.Errorf("the refused run made a tun: %s", out)
	}
	if sent, recv := ping(t, tp.cli, "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("ping through the first daemon: %d/%d\n%s", recv, sent, d.out)
	}
	if !healthyNow(d) {
		t.Error("the first daemon is not healthy")
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.out)
	}
}

// TestRoutesOfOthersAreLeftAlone: routes the operator had before the
// daemon started (one to a mapped prefix, one to the destination of a
// route block) are neither replaced nor deleted at stop, and are reported.
func TestRoutesOfOthersAreLeftAlone(t *testing.T) {
	tp := newTopo(t)
	tp.x.MustRun(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.2")
	tp.x.MustRun(t, "ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.2")
	before := tp.x.MustRun(t, "ip", "route", "show")
	cfg := tp.configExtra(t, "map646.hcl", "route {\n  to  = \"203.0.113.0/24\"\n  via = \"2001:db8:6::10\"\n}\nroute {\n  to  = \"203.0.113.128/25\"\n  via = \"2001:db8:6::10\"\n}\n")
	d := tp.startDaemon(t, cfg)
	st, err := QueryStats(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.RoutesPreexisting != 1 {
		t.Errorf("routes_preexisting = %d, want 1", st.RoutesPreexisting)
	}
	if !strings.Contains(d.out.String(), "route already present") || !strings.Contains(d.out.String(), "203.0.113.0/24 via 2001:db8:6::10") {
		t.Errorf("no report of the route that was there:\n%s", d.out)
	}
	if out := tp.x.MustRun(t, "ip", "route", "show", "203.0.113.0/24"); !strings.Contains(out, "via 192.0.2.2") {
		t.Errorf("the operator's route was replaced: %s", out)
	}
	if out := tp.x.MustRun(t, "ip", "route", "show", "203.0.113.128/25"); !strings.Contains(out, "via inet6 2001:db8:6::10") {
		t.Errorf("the daemon's own route block is missing: %q", out)
	}
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("ping: %d/%d\n%s", recv, sent, d.out)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.out)
	}
	if after := tp.x.MustRun(t, "ip", "route", "show"); after != before {
		t.Errorf("main table after stop:\n%s\nbefore start:\n%s", after, before)
	}
}

// TestUntranslatedTrafficIsNotForwarded: with forwarding on and a native
// path through the translator's namespace in both families, the running
// daemon lets only translated traffic through; stopped, it leaves the
// namespace forwarding as before.
func TestUntranslatedTrafficIsNotForwarded(t *testing.T) {
	tp := newTopo(t)
	// Native paths: cli 2001:db8:c::2 <-> srv, and srv 203.0.113.5 <-> cli.
	for _, c := range [][]string{
		{"x", "ip addr add 2001:db8:c::1/64 dev dmx4 nodad"},
		{"x", "ip addr add 203.0.113.1/24 dev dmx6"},
		{"cli", "ip addr add 2001:db8:c::2/64 dev dmc0 nodad"},
		{"cli", "ip -6 route add default via 2001:db8:c::1"},
		{"srv", "ip addr add 203.0.113.5/24 dev dms0"},
		{"srv", "ip route add 192.0.2.0/24 via 203.0.113.1"},
		{"srv", "ip -6 route add 2001:db8:c::/64 via 2001:db8:6::1"},
		{"x", "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"},
		// Strict reverse-path filtering: its lookup (as from lo) must
		// still find the clients through the main table.
		{"x", "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.dmx4.rp_filter=1"},
	} {
		ns := map[string]*netnstest.NS{"x": tp.x, "cli": tp.cli, "srv": tp.srv}[c[0]]
		ns.MustRun(t, strings.Fields(c[1])...)
	}
	native := func() (v4, v6 int) {
		_, v4 = ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "1", "203.0.113.5")
		_, v6 = ping(t, tp.srv, "-6", "-c", "2", "-i", "0.2", "-W", "1", "2001:db8:c::2")
		return v4, v6
	}
	if v4, v6 := native(); v4 != 2 || v6 != 2 {
		t.Fatalf("the native paths do not work without the daemon: %d %d", v4, v6)
	}

	d := tp.startDaemon(t, tp.config(t, "map646.hcl", nil))
	// The rules of policyRules, in order: everything that is not to a
	// mapped address, from the appliance itself or from the tun meets the
	// unreachable rule.
	wantRules := []string{
		"6460:\tfrom all lookup 646 proto 64",
		"6461:\tfrom all iif lo lookup main proto 64",
		"6462:\tfrom all iif dmtun lookup main proto 64",
		"6463:\tfrom all unreachable proto 64",
	}
	for _, fam := range []string{"-4", "-6"} {
		if got := extraRules(t, tp.x, fam); !slices.Equal(got, wantRules) {
			t.Errorf("ip %s rule show while running:\n%s\nwant\n%s", fam, strings.Join(got, "\n"), strings.Join(wantRules, "\n"))
		}
	}
	if v4, v6 := native(); v4 != 0 || v6 != 0 {
		t.Errorf("untranslated packets forwarded while the daemon runs: IPv4 %d/2, IPv6 %d/2 replies", v4, v6)
	}
	if sent, recv := ping(t, tp.cli, "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("translated ping: %d/%d\n%s", recv, sent, d.out)
	}
	// The appliance's own addresses still answer from both sides.
	if _, r := ping(t, tp.cli, "-c", "1", "-W", "2", "192.0.2.1"); r != 1 {
		t.Error("the appliance's IPv4 address does not answer")
	}
	if _, r := ping(t, tp.srv, "-6", "-c", "1", "-W", "2", "2001:db8:6::1"); r != 1 {
		t.Error("the appliance's IPv6 address does not answer")
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.out)
	}
	for _, fam := range []string{"-4", "-6"} {
		if extra := extraRules(t, tp.x, fam); len(extra) > 0 {
			t.Errorf("ip %s rules left after stop:\n%s", fam, strings.Join(extra, "\n"))
		}
	}
	if v4, v6 := native(); v4 != 2 || v6 != 2 {
		t.Errorf("native forwarding not as before after the daemon stopped: %d %d", v4, v6)
	}
}
