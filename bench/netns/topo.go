package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// The address plan. Only documentation prefixes (RFC 5737, RFC 3849) carry
// traffic.
//
//	client ns                router ns                          server ns
//	cli0 192.0.2.2/24   --- rtr4 192.0.2.1/24
//	     2001:db8:1::2/64        2001:db8:1::1/64
//	                         [tun: 198.51.100.0/24, 2001:db8:64::/96]
//	                         rtr6 2001:db8:6::1/64   --- srv0 2001:db8:6::10/64
//	                              203.0.113.1/28              203.0.113.10/28
//
// Native IPv6 forwarding: 2001:db8:1::2 -> 2001:db8:6::10. Native IPv4:
// 192.0.2.2 -> 203.0.113.10. Translated: 192.0.2.2 -> 198.51.100.10, which
// the EAM maps to 2001:db8:6::10; the server sees the client as
// 2001:db8:64::c000:202 (RFC 6052 /96).
const (
	client4    = "192.0.2.2"
	client6    = "2001:db8:1::2"
	server4    = "203.0.113.10"
	server6    = "2001:db8:6::10"
	public4    = "198.51.100.10"
	publicNet4 = "198.51.100.0/24"
	prefix6    = "2001:db8:64::/96"
	clientAs6  = "2001:db8:64::c000:202"
	taygaSelf4 = "203.0.113.65"
	mtu4       = 1500
	mtu6       = 1520 // >= mtu4 + 20: a translated full-size packet fits (RFC 7755)
	macClient  = "02:62:6e:00:00:01"
	macRouter4 = "02:62:6e:00:00:02"
	macRouter6 = "02:62:6e:00:00:03"
	macServer  = "02:62:6e:00:00:04"
	nsPrefix   = "bn-"
	clientIf   = "cli0"
	router4If  = "rtr4"
	router6If  = "rtr6"
	serverIf   = "srv0"
)

// topology names the three namespaces of one harness run. The owner's PID is
// part of each name, so concurrent runs never collide and a later run can
// remove what a killed one left behind.
type topology struct {
	Client, Router, Server string
}

func newTopology(pid int) topology {
	p := nsPrefix + strconv.Itoa(pid) + "-"
	return topology{Client: p + "cli", Router: p + "rtr", Server: p + "srv"}
}

func (t topology) all() []string { return []string{t.Client, t.Router, t.Server} }

// veths lists each veth end as {namespace, interface}.
func (t topology) veths() [][2]string {
	return [][2]string{{t.Client, clientIf}, {t.Router, router4If}, {t.Router, router6If}, {t.Server, serverIf}}
}

var staleNS = regexp.MustCompile(`^` + nsPrefix + `([0-9]+)-(cli|rtr|srv)$`)

// staleNamespaces returns the harness namespaces (from `ip netns list`
// output) whose owning process no longer exists.
func staleNamespaces(list string, alive func(pid int) bool) []string {
	var out []string
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := staleNS.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || alive(pid) {
			continue
		}
		out = append(out, f[0])
	}
	sort.Strings(out)
	return out
}

func pidAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

// removeStale deletes namespaces left by harness runs that were killed.
func removeStale(ctx context.Context) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, ns := range staleNamespaces(string(out), pidAlive) {
		fmt.Fprintf(os.Stderr, "bench: removing stale namespace %s\n", ns)
		_ = exec.CommandContext(ctx, "ip", "netns", "del", ns).Run()
	}
}

// up creates the namespaces, veth pairs, addresses, routes and static
// neighbours. Offloads stay at the veth defaults (TSO, GSO and checksum
// offload on), except for what condition c switches on (GRO, which a veth
// leaves off but a Linux NIC driver turns on by default, and GRO's
// forwarding variants).
func (t topology) up(ctx context.Context, c condition) error {
	t.down(ctx)
	for _, ns := range t.all() {
		if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"ip", "-n", t.Client, "link", "add", clientIf, "address", macClient, "type", "veth",
			"peer", "name", router4If, "netns", t.Router, "address", macRouter4},
		{"ip", "-n", t.Server, "link", "add", serverIf, "address", macServer, "type", "veth",
			"peer", "name", router6If, "netns", t.Router, "address", macRouter6},
	}
	quiet := []string{"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.all.router_solicitations=0", "net.ipv6.conf.default.router_solicitations=0",
		"net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0"}
	for _, ns := range t.all() {
		steps = append(steps, append([]string{"ip", "netns", "exec", ns, "sysctl", "-qw"}, quiet...))
	}
	steps = append(steps,
		[]string{"ip", "netns", "exec", t.Router, "sysctl", "-qw",
			"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
			"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
			"net.ipv6.auto_flowlabels=0"},
	)
	batch := map[string][]string{
		t.Client: {
			"link set lo up",
			fmt.Sprintf("link set %s mtu %d up", clientIf, mtu4),
			fmt.Sprintf("addr add %s/24 dev %s", client4, clientIf),
			fmt.Sprintf("addr add %s/64 dev %s nodad", client6, clientIf),
			"route add default via 192.0.2.1",
			"route add ::/0 via 2001:db8:1::1",
			fmt.Sprintf("neigh replace 192.0.2.1 lladdr %s dev %s nud permanent", macRouter4, clientIf),
			fmt.Sprintf("neigh replace 2001:db8:1::1 lladdr %s dev %s nud permanent", macRouter4, clientIf),
		},
		t.Router: {
			"link set lo up",
			fmt.Sprintf("link set %s mtu %d up", router4If, mtu4),
			fmt.Sprintf("link set %s mtu %d up", router6If, mtu6),
			fmt.Sprintf("addr add 192.0.2.1/24 dev %s", router4If),
			fmt.Sprintf("addr add 2001:db8:1::1/64 dev %s nodad", router4If),
			fmt.Sprintf("addr add 203.0.113.1/28 dev %s", router6If),
			fmt.Sprintf("addr add 2001:db8:6::1/64 dev %s nodad", router6If),
			fmt.Sprintf("neigh replace %s lladdr %s dev %s nud permanent", client4, macClient, router4If),
			fmt.Sprintf("neigh replace %s lladdr %s dev %s nud permanent", client6, macClient, router4If),
			fmt.Sprintf("neigh replace %s lladdr %s dev %s nud permanent", server4, macServer, router6If),
			fmt.Sprintf("neigh replace %s lladdr %s dev %s nud permanent", server6, macServer, router6If),
		},
		t.Server: {
			"link set lo up",
			fmt.Sprintf("link set %s mtu %d up", serverIf, mtu6),
			fmt.Sprintf("addr add %s/28 dev %s", server4, serverIf),
			fmt.Sprintf("addr add %s/64 dev %s nodad", server6, serverIf),
			"route add default via 203.0.113.1",
			"route add ::/0 via 2001:db8:6::1",
			fmt.Sprintf("neigh replace 203.0.113.1 lladdr %s dev %s nud permanent", macRouter6, serverIf),
			fmt.Sprintf("neigh replace 2001:db8:6::1 lladdr %s dev %s nud permanent", macRouter6, serverIf),
		},
	}
	for _, s := range steps {
		if _, err := run(ctx, s...); err != nil {
			return err
		}
	}
	for _, ns := range t.all() {
		if err := ipBatch(ctx, ns, batch[ns]); err != nil {
			return err
		}
	}
	if c != condNoGRO {
		if err := t.setCondition(ctx, c); err != nil {
			return err
		}
	}
	// rp_filter of the interfaces themselves (the max of all/default/iface applies).
	for _, ifc := range []string{router4If, router6If} {
		if _, err := runIn(ctx, t.Router, "sysctl", "-qw", "net.ipv4.conf."+ifc+".rp_filter=0"); err != nil {
			return err
		}
	}
	return nil
}

// setCondition switches GRO and its forwarding variants on every veth as
// condition c says. With GRO on, a veth receives through NAPI and merges
// TCP segments into super-packets, as a NIC driver does by default; off is
// the veth default. rx-udp-gro-forwarding and rx-gro-list only act with GRO
// on.
func (t topology) setCondition(ctx context.Context, c condition) error {
	// Threaded NAPI needs the NAPI instance that GRO gives a veth: on
	// after GRO, off before. A veth without NAPI refuses any write
	// (EIO), so it is written only when it has to change.
	threaded := func(ns, ifc string, on bool) error {
		v := "0"
		if on {
			v = "1"
		}
		f := "/sys/class/net/" + ifc + "/threaded"
		_, err := runIn(ctx, ns, "sh", "-c", `[ "$(cat `+f+`)" = `+v+` ] || echo `+v+` > `+f)
		return err
	}
	for _, p := range t.veths() {
		if !c.Threaded {
			if err := threaded(p[0], p[1], false); err != nil {
				return err
			}
		}
		if _, err := runIn(ctx, p[0], append([]string{"ethtool", "-K", p[1]}, ethtoolFeatures(c)...)...); err != nil {
			return err
		}
		if c.Threaded {
			if err := threaded(p[0], p[1], true); err != nil {
				return err
			}
		}
	}
	return nil
}

// ethtoolFeatures are the `ethtool -K IFACE` arguments of condition c.
func ethtoolFeatures(c condition) []string {
	onOff := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	return []string{"gro", onOff(c.GRO), "rx-udp-gro-forwarding", onOff(c.UDPFwd), "rx-gro-list", onOff(c.FragList)}
}

// tunQueues describes a tun's transmit side, where packets wait for the
// translator: the number of queues the translator attached, the length of
// each queue and the qdisc (best effort, for the report).
func tunQueues(ctx context.Context, ns, tun string) string {
	var parts []string
	if out, err := runIn(ctx, ns, "ls", "/sys/class/net/"+tun+"/queues"); err == nil {
		n := 0
		for _, f := range strings.Fields(out) {
			if strings.HasPrefix(f, "tx-") {
				n++
			}
		}
		parts = append(parts, fmt.Sprintf("%d tx queue(s)", n))
	}
	if out, err := runIn(ctx, ns, "cat", "/sys/class/net/"+tun+"/tx_queue_len"); err == nil {
		parts = append(parts, "txqueuelen "+strings.TrimSpace(out))
	}
	if out, err := runIn(ctx, ns, "tc", "qdisc", "show", "dev", tun); err == nil {
		parts = append(parts, "qdisc "+qdiscSummary(out))
	}
	return strings.Join(parts, ", ")
}

// qdiscSummary names the root qdisc in `tc qdisc show` output and how many
// child qdiscs hang below it.
func qdiscSummary(out string) string {
	root, kids := "", 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "qdisc" {
			continue
		}
		if strings.Contains(line, " root ") && root == "" {
			root = f[1]
		} else {
			kids++
		}
	}
	if root == "" {
		return "none"
	}
	if kids > 0 {
		return fmt.Sprintf("%s (%d children)", root, kids)
	}
	return root
}

// ipBatch runs ip commands in one namespace with `ip -batch`, so that a
// failing line is reported with its number.
func ipBatch(ctx context.Context, ns string, lines []string) error {
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s -batch: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// down deletes the namespaces; their veths and tuns go with them. Processes
// inside must have been stopped first (they would keep a namespace alive).
func (t topology) down(ctx context.Context) {
	for _, ns := range t.all() {
		_ = exec.CommandContext(ctx, "ip", "netns", "del", ns).Run()
	}
}

// offloadFeatures are the `ethtool -k` features that decide how the kernel
// hands packets to the veths and tuns (super-packets or not).
var offloadFeatures = []string{
	"tx-checksumming", "scatter-gather", "tcp-segmentation-offload",
	"generic-segmentation-offload", "generic-receive-offload",
	"rx-gro-list", "rx-udp-gro-forwarding", "tx-udp-segmentation",
}

// parseEthtoolK returns the on/off state of the features that ethtool -k
// prints as "name: on" (with an optional " [fixed]").
func parseEthtoolK(out string, want []string) map[string]string {
	keep := map[string]bool{}
	for _, w := range want {
		keep[w] = true
	}
	res := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		name, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !keep[name] {
			continue
		}
		f := strings.Fields(val)
		if len(f) > 0 {
			res[name] = f[0]
		}
	}
	return res
}

// offloads records the offload state of one interface.
func offloads(ctx context.Context, ns, ifc string) (map[string]string, error) {
	out, err := runIn(ctx, ns, "ethtool", "-k", ifc)
	if err != nil {
		return nil, err
	}
	return parseEthtoolK(out, offloadFeatures), nil
}
