package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/map646/map646/internal/netnstest"
)

// Review H3-1: a neighbour on one side's link must not have the
// translator take a packet of the other family from it. In newTopo's
// namespaces, dmx4 is the IPv4 side and dmx6 the IPv6 side.

// linkLocal is the IPv6 link-local address of dev in ns.
func linkLocal(t *testing.T, ns *netnstest.NS, dev string) string {
	t.Helper()
	for _, f := range strings.Fields(ns.MustRun(t, "ip", "-6", "addr", "show", "dev", dev, "scope", "link")) {
		if strings.HasPrefix(f, "fe80::") {
			return strings.Split(f, "/")[0]
		}
	}
	t.Fatalf("no link-local address on %s: %s", dev, ns.MustRun(t, "ip", "-6", "addr"))
	return ""
}

// echoRequests listens in ns for ICMP (network "ip4:icmp") or ICMPv6
// ("ip6:ipv6-icmp") echo requests and sends the source of each.
func echoRequests(t *testing.T, ns *netnstest.NS, network string) <-chan string {
	t.Helper()
	var c net.PacketConn
	if err := ns.Do(func() error {
		var err error
		c, err = net.ListenPacket(network, "")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	request := byte(8) // ICMP echo request
	if strings.HasPrefix(network, "ip6") {
		request = 128
	}
	got := make(chan string, 64)
	go func() {
		b := make([]byte, 2000)
		for {
			n, from, err := c.ReadFrom(b)
			if err != nil {
				return
			}
			if n > 0 && b[0] == request {
				select {
				case got <- from.String():
				default:
				}
			}
		}
	}()
	return got
}

// spoofFromIPv4Side is H3's attack: the client, an on-link neighbour of
// the IPv4 edge, routes the /96 to the appliance's link-local address on
// dmx4 and pings itself (192.0.2.2) from the server's address. It reports
// whether the client received the echo request as IPv4 (from the
// server's public address).
func spoofFromIPv4Side(t *testing.T, tp *topo) bool {
	t.Helper()
	ll := linkLocal(t, tp.x, "dmx4")
	// The appliance's own link-local address still answers on that
	// link: the local table comes before rule 6459 (neighbour discovery
	// with it, which the ping needs).
	if out, err := tp.cli.Output("ping", "-6", "-n", "-c", "1", "-W", "2", ll+"%dmc0"); err != nil {
		t.Errorf("ping6 of the appliance's link-local address on the IPv4 side: %v\n%s", err, out)
	}
	tp.cli.Run("ip", "addr", "add", "2001:db8:6::10/128", "dev", "dmc0", "nodad")
	tp.cli.Run("ip", "-6", "route", "replace", "2001:db8:64::/96", "via", ll, "dev", "dmc0")
	got := echoRequests(t, tp.cli, "ip4:icmp")
	out, _ := tp.cli.Output("ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-I", "2001:db8:6::10", "2001:db8:64::c000:202")
	select {
	case from := <-got:
		t.Logf("relayed as IPv4 from %s; ping6: %s", from, out)
		return true
	case <-time.After(time.Second):
		return false
	}
}

// spoofFromIPv6Side is the mirror: the server sends IPv4 from an address
// that is not its own (a client's, 192.0.2.99) to the server's own public
// address over the IPv6-side link. It reports whether the server received
// the echo request as IPv6 from that client's translated address.
func spoofFromIPv6Side(t *testing.T, tp *topo) bool {
	t.Helper()
	mac := ""
	if f := strings.Fields(tp.x.MustRun(t, "cat", "/sys/class/net/dmx6/address")); len(f) == 1 {
		mac = f[0]
	}
	tp.srv.Run("ip", "addr", "add", "192.0.2.99/32", "dev", "dms0")
	tp.srv.Run("ip", "route", "replace", "198.51.100.10/32", "dev", "dms0", "src", "192.0.2.99")
	tp.srv.Run("ip", "neigh", "replace", "198.51.100.10", "lladdr", mac, "dev", "dms0", "nud", "permanent")
	got := echoRequests(t, tp.srv, "ip6:ipv6-icmp")
	tp.srv.Output("ping", "-4", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-I", "192.0.2.99", "198.51.100.10")
	deadline := time.After(time.Second)
	for {
		select {
		case from := <-got:
			if strings.HasPrefix(from, "2001:db8:64::") {
				t.Logf("relayed as IPv6 from %s", from)
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// legitimate checks that translation works both ways: the client pings the
// server's public address, the server the client's translated one.
func legitimate(t *testing.T, tp *topo, d *daemonProc) {
	t.Helper()
	if sent, recv := ping(t, tp.cli, "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.10"); recv == 0 {
		t.Errorf("IPv4 client to server: %d/%d answered\n%s", recv, sent, d.out)
	}
	if sent, recv := ping(t, tp.srv, "-6", "-c", "3", "-i", "0.2", "-W", "2", "-I", "2001:db8:6::10", "2001:db8:64::c000:202"); recv == 0 {
		t.Errorf("IPv6 server to client: %d/%d answered\n%s", recv, sent, d.out)
	}
}

// TestWrongSideRefusedHostMode: with no side known the daemon warns at
// start; a reload that gives dmx4 and dmx6 interface blocks of one family
// each adds rule 6459 for both, after which neither H3's attack from the
// IPv4 link nor its mirror from the IPv6 link is translated, while the
// appliance's link-local address and translation both ways keep working.
func TestWrongSideRefusedHostMode(t *testing.T) {
	tp := newTopo(t)
	cfg := tp.config(t, "map646.hcl", nil)
	d := tp.startDaemon(t, cfg)
	waitUntil(t, d, "the start warning of unguarded sides", 5*time.Second, func() bool {
		return strings.Contains(d.out.String(), "the translator accepts IPv6 to the prefix from every interface and IPv4 to the mapped addresses from every interface")
	})
	if out := tp.x.MustRun(t, "ip", "-6", "rule", "show", "pref", "6459"); out != "" {
		t.Fatalf("rule 6459 with no side known: %s", out)
	}
	tp.configExtra(t, "map646.hcl", `interface "dmx4" {
  addresses = ["192.0.2.1/24"]
}
interface "dmx6" {
  addresses = ["2001:db8:6::1/64"]
}
`)
	if _, err := RequestReload(d.sock); err != nil {
		t.Fatalf("reload: %v\n%s", err, d.out)
	}
	for fam, want := range map[string]string{"-6": "iif dmx4 unreachable proto 64", "-4": "iif dmx6 unreachable proto 64"} {
		if out := tp.x.MustRun(t, "ip", fam, "rule", "show", "pref", "6459"); !strings.Contains(out, want) {
			t.Errorf("ip %s rule show pref 6459 after the reload: %q, want %q", fam, out, want)
		}
	}
	legitimate(t, tp, d)
	if spoofFromIPv4Side(t, tp) {
		t.Error("IPv6 from the IPv4-side link, with a server's source, left as IPv4 from the server's public address")
	}
	if spoofFromIPv6Side(t, tp) {
		t.Error("IPv4 from the IPv6-side link, with a client's source, reached a server as that client")
	}
	legitimate(t, tp, d)
	// Ours like the other policy rules: put back when deleted from
	// outside, deleted at stop.
	tp.x.MustRun(t, "ip", "-6", "rule", "del", "pref", "6459")
	waitUntil(t, d, "rule 6459 put back", 3*DefaultHealthInterval, func() bool {
		return strings.Contains(tp.x.MustRun(t, "ip", "-6", "rule", "show", "pref", "6459"), "iif dmx4 unreachable")
	})
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, d.out)
	}
	for _, fam := range []string{"-4", "-6"} {
		if extra := extraRules(t, tp.x, fam); len(extra) > 0 {
			t.Errorf("ip %s rules left after stop: %q", fam, extra)
		}
	}
}

// TestWrongSideRefusedTunList: a host whose interfaces are not map646's
// names its IPv4 side in tun.ipv4_interfaces; H3's attack is refused, and
// the side still unknown is warned about.
func TestWrongSideRefusedTunList(t *testing.T) {
	tp := newTopo(t)
	cfg := tp.config(t, "map646.hcl", nil)
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(b), "  tun {\n", "  tun {\n    ipv4_interfaces = [\"dmx4\"]\n", 1)
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	d := tp.startDaemon(t, cfg)
	waitUntil(t, d, "the start warning of the IPv6 side", 5*time.Second, func() bool {
		return strings.Contains(d.out.String(), "the translator accepts IPv4 to the mapped addresses from every interface:")
	})
	legitimate(t, tp, d)
	if spoofFromIPv4Side(t, tp) {
		t.Error("IPv6 from the IPv4-side link, with a server's source, left as IPv4 from the server's public address")
	}
}

// TestWrongSideDroppedNICMode: in NIC mode with dmx4 and dmx6 as the two
// NICs, H3's attack and its mirror are dropped and counted as wrong_side,
// while the appliance's link-local address and translation both ways
// keep working.
func TestWrongSideDroppedNICMode(t *testing.T) {
	tp := newTopo(t)
	cfg := filepath.Join(tp.dir, "nic.hcl")
	body := "translator {\n  prefix = \"2001:db8:64::/96\"\n  mapping {\n    ipv4 = \"198.51.100.10\"\n    ipv6 = \"2001:db8:6::10\"\n  }\n" +
		"  nic {\n    ipv4 = \"dmx4\"\n    ipv6 = \"dmx6\"\n    queues = 2\n  }\n}\n"
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	d := tp.startDaemon(t, cfg)
	legitimate(t, tp, d)
	if spoofFromIPv4Side(t, tp) {
		t.Error("IPv6 from the IPv4 NIC, with a server's source, left as IPv4 from the server's public address")
	}
	if spoofFromIPv6Side(t, tp) {
		t.Error("IPv4 from the IPv6 NIC, with a client's source, reached a server as that client")
	}
	legitimate(t, tp, d)
	var wrong uint64
	waitUntil(t, d, "the spoofed packets counted as wrong_side", 5*time.Second, func() bool {
		st, err := QueryStats(d.sock)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range st.Link {
			if c.Kind == "wrong_side" {
				wrong = c.Value
			}
		}
		return wrong >= 6 // three echo requests each way
	})
	t.Logf("wrong_side %d", wrong)
}
